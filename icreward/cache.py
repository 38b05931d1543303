"""The icreward cache folder: ``$ICREWARD_CACHE``, defaulting to ``$XDG_CACHE_HOME/icreward`` or
``~/.cache/icreward``. Each cache (converted dlib weights, the bundled sample, backbone features) is a versioned
folder below it."""

from __future__ import annotations

import os
from pathlib import Path


def icreward_cache_root() -> Path:
    """``$ICREWARD_CACHE`` (``~`` expanded); unset or empty: ``$XDG_CACHE_HOME/icreward``, or ``~/.cache/icreward``."""
    root = os.environ.get("ICREWARD_CACHE")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(xdg, "icreward")
    return Path(root).expanduser()
