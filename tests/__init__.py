"""The workbook test suites: one folder per step, plus the tooling tests in tests/workbook."""
