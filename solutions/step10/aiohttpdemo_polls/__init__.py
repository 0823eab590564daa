"""The polls app of the aiohttp tutorial, as it stands after this step."""
