"""Step 10 keeps step 8's static files, traversal refused, judged by step 8's own checks.

They need an app that starts, which on the new engine is task 1. See tests/carried.py.
"""

from tests.carried import carry

carry("tests.step8.test_step8_static", {1: 1, 2: 1}, globals())
