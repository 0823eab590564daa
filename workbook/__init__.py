"""The polls workbook's tooling: `python -m workbook --help` lists its commands."""

import os as _os

# The process that started this interpreter, noted before anything slow is imported: `python -m workbook`
# compares it with its parent once it has asked to die with that parent, to notice one that died meanwhile.
STARTED_BY = _os.getppid()
