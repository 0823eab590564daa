"""Step 10 keeps step 8's static files, traversal refused, judged by step 8's own checks.

They need an app that starts, which on the new engine is task 1. See tests/carried.py.
"""

from tests.carried import carry

# The stylesheet is looked for on every page, poll and results pages too: those are written in task 2.
NEEDS = {"test_every_page_links_the_stylesheet": 2}

carry("tests.step8.test_step8_static", {1: 1, 2: 1}, globals(), needs=NEEDS)
