"""Coverage-guided fuzzing (atheris/libFuzzer) of every parser of outside input.

`targets/` holds one module per parser, `run.py` the command that fuzzes one of them,
`corpus/` the checked-in seeds, `test_fuzz.py` the short run in the test suite. See
README.md beside this file.
"""
