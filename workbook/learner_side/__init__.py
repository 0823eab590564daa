"""Code that runs inside the learner's process, never in the judge.

Nothing here imports from the rest of the `workbook` package: the harness is started as a script by path,
in a fresh interpreter whose only window on the workbook is the tree under test.
"""
