"""Code that runs in the judge: the pytest process that decides a verdict.

Nothing here imports, executes or renders anything from the tree under test. The learner's code runs in
processes of its own (learner_process.py starts them), and guard.py makes any slip fail loudly.
"""
