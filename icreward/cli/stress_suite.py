"""`icreward stress-suite`: parses the command line and calls the library (moving here from `icreward.data.stress_suite`)."""

from icreward.data.stress_suite import main

__all__ = ["main"]
