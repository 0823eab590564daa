"""`python -m aiohttpdemo_polls` starts the server."""

from .main import main

main()
