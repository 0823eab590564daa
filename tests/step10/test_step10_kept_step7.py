"""Step 10 keeps step 7's voting and results, judged by step 7's own checks, concurrency included.

The vote (function and form) is task 3 on the new engine, the results page task 2. See tests/carried.py.
"""

from tests.carried import carry

# Step 9's 404 page replaces the text of every 404, so the checks that a 404 names what is missing stay
# behind (step 9's own checks of the 404 page come along instead); vote() and get_question still name it.
SUPERSEDED_BY_STEP9 = ("test_foreign_choice_404_says_what_is_missing", "test_results_404_names_the_poll")

carry("tests.step7.test_step7_voting", {1: 3, 2: 3, 3: 2}, globals(), leave=SUPERSEDED_BY_STEP9)
