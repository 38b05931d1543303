"""A tiny image-to-video policy pretrained on real generated clips, shipped with the package.

* :func:`load_pretrained_policy`: the shipped ``WanImageToVideoPipeline`` (weights in ``pretrained/``);
* :func:`pretrain_policy` / ``icreward pretrain-policy``: how it was trained (resumable);
* :class:`FrameAnchoredPixelVAE`: the parameter-free codec that stands in for ``AutoencoderKLWan``.

See ``docs/policy.md``.
"""

from __future__ import annotations

from pathlib import Path

from .pretrain import (
    PolicyPretrainingConfig,
    build_policy_pipeline,
    load_policy_from_folder,
    pretrain_policy,
    save_policy,
)
from .vae import FrameAnchoredPixelVAE

__all__ = [
    "PRETRAINED_DIR",
    "FrameAnchoredPixelVAE",
    "PolicyPretrainingConfig",
    "build_policy_pipeline",
    "load_policy_from_folder",
    "load_pretrained_policy",
    "pretrain_policy",
    "save_policy",
]

#: The shipped policy (written by ``icreward pretrain-policy``, see ``pretrained/README.md``).
PRETRAINED_DIR = Path(__file__).parent / "pretrained"


def load_pretrained_policy(torch_dtype=None):
    """The shipped pretrained policy as a ``WanImageToVideoPipeline`` (CPU, eval mode, progress bar off)."""
    if not (PRETRAINED_DIR / "transformer").is_dir():
        raise FileNotFoundError(f"the pretrained policy is missing from {PRETRAINED_DIR} (a broken install?)")
    pipe = load_policy_from_folder(PRETRAINED_DIR, torch_dtype=torch_dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe
