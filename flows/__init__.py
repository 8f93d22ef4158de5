"""Orchestration only: the @flow functions and the ``python -m flows`` command line."""
