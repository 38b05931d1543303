"""`icreward human-agreement`: parses the command line and calls the library (moving here from `icreward.evaluation.human_agreement`)."""

from icreward.evaluation.human_agreement import main

__all__ = ["main"]
