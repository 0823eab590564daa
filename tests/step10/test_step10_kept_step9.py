"""Step 10 keeps step 9's error pages (404 and 500, no traceback shown), judged by step 9's own checks.

They need an app that starts, which on the new engine is task 1. See tests/carried.py.
"""

from tests.carried import carry

# Checks that ask for poll pages (a missing poll's 404 included) need task 2's views, the vote's 302 task 3's.
NEEDS = {
    "test_not_found_shows_the_404_page": 2,
    "test_pages_still_work": 2,
    "test_the_app_keeps_serving_after_an_error": 2,
    "test_redirect_passes_through": 3,
}

carry("tests.step9.test_step9_middlewares", {1: 1, 2: 1}, globals(), needs=NEEDS)
