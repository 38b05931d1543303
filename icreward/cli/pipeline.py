"""`icreward pipeline`: parses the command line and calls the library (moving here from `icreward.evaluation.paper_pipeline`)."""

from icreward.evaluation.paper_pipeline import main

__all__ = ["main"]
