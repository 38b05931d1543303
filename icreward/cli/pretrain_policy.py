"""`icreward pretrain-policy`: parses the command line and calls the library (moving here from `icreward.policy.pretrain`)."""

from icreward.policy.pretrain import main

__all__ = ["main"]
