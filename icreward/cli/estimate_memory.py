"""`icreward estimate-memory`: parses the command line and calls the library (moving here from `icreward.memory.accountant`)."""

from icreward.memory.accountant import main

__all__ = ["main"]
