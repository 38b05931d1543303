"""`icreward human-study`: parses the command line and calls the library (moving here from `icreward.evaluation.human_study`)."""

from icreward.evaluation.human_study import main

__all__ = ["main"]
