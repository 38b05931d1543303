"""Policy pipelines by name: the offline tiny policies of the examples and ``icreward pipeline``, or any Hub id or
local diffusers folder an adapter supports."""

from __future__ import annotations

__all__ = ["TINY_POLICIES", "load_policy_pipeline"]

#: Policy names the examples and ``icreward pipeline`` accept for the offline tiny pipelines, and their families.
TINY_POLICIES: dict[str, str] = {"tiny-wan2.1": "wan21", "tiny-wan2.2": "wan22", "tiny-cogvideox": "cogvideox"}


def load_policy_pipeline(name: str, *, seed: int = 0, torch_dtype=None):
    """The pipeline to sample from or fine-tune: a tiny offline one by name (:data:`TINY_POLICIES`, built with
    ``seed``), or a Hub id / local diffusers folder loaded through :func:`icreward.adapters.get_adapter`."""
    if name in TINY_POLICIES:
        # The tiny policies are the offline factories of icreward.testing; only this branch needs them.
        from icreward.testing.tiny_pipelines import tiny_pipeline

        return tiny_pipeline(TINY_POLICIES[name], seed=seed)
    from icreward.adapters import get_adapter

    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    return get_adapter(name, **kwargs).pipeline
