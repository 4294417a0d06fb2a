"""The project's stand-in for Kaggle's `kaggle_evaluation` package, for tests only: the same
names and the same contract (../shared/notes/aimo3-interface.md), none of Kaggle's code. Put
tests/harness on PYTHONPATH to use it."""
