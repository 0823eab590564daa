"""Grading a class: `nox -s grade -- SUBMISSIONS` (`python -m workbook grade`), one small module per job.

    submissions.py  finding, unpacking and vetting what the learners handed in
    sandbox.py      the instructor's files, snapshotted once, and the folder each step is graded in
    database.py     a PostgreSQL role of its own for each step of each learner
    running.py      the test processes (a warm fork server, timeouts, kills) and the whole class's run
    scores.py       turning what a test process left behind into points and short reasons
    progress.py     the progress bar on stderr
    outputs.py      the gradebook, results.json (Gradescope's; Classroom 50's result.json), report.html,
                    grades.json and run.json
    shards.py       one slice of a class (--shard K/N), and merging the slices' outputs (grade-merge)
    contract.py     the JSON schemas of what grading exchanges (schemas/), checked with a size cap
    cli.py          the command line

Import from the module that does the job (`from workbook.grading.running import grade_submissions`):
this package re-exports nothing, so each name has one home.
"""
