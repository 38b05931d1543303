"""A persistent, content-addressed cache of frozen-backbone features on disk.

Encoding the videos with a frozen backbone dominates reward-model training on a CPU, and ``icreward demo``,
``icreward pipeline``, ``icreward compare``, ``examples/train_reward.py`` and the Python API all encode the same
bundled videos. :class:`FeatureCache` is a drop-in for the in-memory ``feature_store`` dict of
:func:`icreward.trainers.reward_data.encode_dataset_features` (and so of ``RewardModelTrainer(feature_store=...)``
and ``compare_reward_models(feature_store=...)``): the same ``(backbone_fingerprint, reference_key, video_key)`` keys,
the same entries, kept in memory and written to disk as safetensors.

What an entry's address covers:

- the backbone fingerprint (:func:`icreward.trainers.reward_data.backbone_fingerprint`): backbone type and config
  (which names the checkpoint), a hash of every backbone weight, and the processor's settings (frame count,
  resizing, normalisation), so any change of backbone, weights or preprocessing misses the cache;
- the SHA-256 of the reference image's and the video's file contents (a frame folder: of its files' names and
  contents; an in-memory array: the ``sha:`` digest of its pixels), not their paths, so a moved or renamed file hits
  and an overwritten one misses.

Location: ``$ICREWARD_CACHE/features_v1`` (``ICREWARD_CACHE`` defaults to ``$XDG_CACHE_HOME/icreward`` or
``~/.cache/icreward``, where the bundled sample is built too). ``ICREWARD_FEATURE_CACHE=0`` disables it
(:func:`default_feature_store` then returns a plain dict); ``ICREWARD_FEATURE_CACHE=/some/dir`` moves it. Entries are
written atomically (temporary file + rename), so concurrent processes may share one cache. Delete the folder to
clear it.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

__all__ = ["FeatureCache", "default_feature_cache_dir", "default_feature_store", "feature_cache_enabled"]

_VERSION = 1
_ENTRY_FIELDS = ("ref_tokens", "ref_pooled", "frame_tokens", "frame_pooled")
_DISABLED = {"0", "false", "no", "off"}


def feature_cache_enabled() -> bool:
    """False when ``ICREWARD_FEATURE_CACHE`` is ``0`` / ``false`` / ``no`` / ``off``."""
    return os.environ.get("ICREWARD_FEATURE_CACHE", "").strip().lower() not in _DISABLED


def default_feature_cache_dir() -> Path:
    """``$ICREWARD_FEATURE_CACHE`` when it names a folder, else ``$ICREWARD_CACHE/features_v1``."""
    explicit = os.environ.get("ICREWARD_FEATURE_CACHE", "").strip()
    if explicit and explicit.lower() not in _DISABLED | {"1", "true", "yes", "on"}:
        return Path(explicit).expanduser()
    from ..cache import icreward_cache_root

    return icreward_cache_root() / f"features_v{_VERSION}"


def default_feature_store() -> MutableMapping:
    """The store the trainers and commands use when given none: a :class:`FeatureCache` at the default folder, or a
    plain in-memory dict when ``ICREWARD_FEATURE_CACHE=0``."""
    return FeatureCache() if feature_cache_enabled() else {}


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class FeatureCache(MutableMapping):
    """``(fingerprint, reference_key, video_key) -> {"ref_tokens", "ref_pooled", "frame_tokens", "frame_pooled"}``
    in memory, backed by safetensors files addressed by content (see the module docstring).

    Args:
        cache_dir: folder of the cache (default: :func:`default_feature_cache_dir`).
        read_only: look entries up on disk but never write (e.g. a shared, pre-filled cache).

    ``hits`` / ``misses`` / ``writes`` count disk lookups and writes, for logs and tests.
    """

    def __init__(self, cache_dir: str | os.PathLike | None = None, *, read_only: bool = False):
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_feature_cache_dir()
        self.read_only = read_only
        self._memory: dict[Any, dict[str, torch.Tensor]] = {}
        self._digests: dict[tuple[str, int, int], str] = {}
        self.hits = 0
        self.misses = 0
        self.writes = 0

    def __repr__(self) -> str:
        return f"FeatureCache({str(self.cache_dir)!r}, in_memory={len(self._memory)})"

    # -- addressing ----------------------------------------------------------------------------------------------
    def _content_digest(self, media_key: str) -> str:
        """SHA-256 of what ``media_key`` (a path, or a ``sha:`` digest of in-memory pixels) holds."""
        if media_key.startswith("sha:"):
            return media_key
        path = Path(media_key)
        try:
            stat = path.stat()
        except OSError as err:
            raise FileNotFoundError(f"feature cache: cannot read {media_key!r} to address its features") from err
        memo = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
        digest = self._digests.get(memo)
        if digest is None:
            if path.is_dir():  # a frame folder: its files' names and contents
                h = hashlib.sha256()
                for child in sorted(p for p in path.iterdir() if p.is_file()):
                    h.update(child.name.encode() + b"\0" + _file_digest(child).encode())
                digest = "dir:" + h.hexdigest()
            else:
                digest = _file_digest(path)
            self._digests[memo] = digest
        return digest

    def path_for(self, key: tuple[str, str, str]) -> Path:
        """The file that holds (or would hold) ``key``'s features."""
        fingerprint, reference, video = key
        address = hashlib.sha256(
            "\n".join([fingerprint, self._content_digest(reference), self._content_digest(video)]).encode()
        ).hexdigest()
        return self.cache_dir / fingerprint / address[:2] / f"{address}.safetensors"

    @staticmethod
    def _check_key(key: Any) -> tuple[str, str, str]:
        if not (isinstance(key, tuple) and len(key) == 3 and all(isinstance(k, str) for k in key)):
            raise KeyError(f"feature cache keys are (fingerprint, reference, video) strings, got {key!r}")
        return key

    # -- mapping -------------------------------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        if key in self._memory:
            return True
        try:
            self[key]
        except KeyError:
            return False
        return True

    def __getitem__(self, key: Any) -> dict[str, torch.Tensor]:
        if key in self._memory:
            return self._memory[key]
        path = self.path_for(self._check_key(key))
        if not path.is_file():
            self.misses += 1
            raise KeyError(key)
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            entry = load_file(path)
        except (OSError, SafetensorError) as err:  # a truncated or foreign file: treat as missing, re-encode
            logger.warning("feature cache: ignoring unreadable %s (%s)", path, err)
            self.misses += 1
            raise KeyError(key) from err
        if set(entry) != set(_ENTRY_FIELDS):
            logger.warning("feature cache: ignoring %s with tensors %s", path, sorted(entry))
            self.misses += 1
            raise KeyError(key)
        self.hits += 1
        self._memory[key] = entry
        return entry

    def __setitem__(self, key: Any, entry: dict[str, torch.Tensor]) -> None:
        self._memory[key] = entry
        if self.read_only:
            return
        path = self.path_for(self._check_key(key))
        if path.is_file():
            return
        from safetensors.torch import save_file

        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({k: entry[k].detach().cpu().contiguous() for k in _ENTRY_FIELDS}, tmp)
        os.replace(tmp, path)
        self.writes += 1

    def __delitem__(self, key: Any) -> None:
        """Forget ``key`` in memory (files on disk are immutable and shared; delete the folder to clear)."""
        del self._memory[key]

    def __iter__(self) -> Iterator:
        return iter(self._memory)

    def __len__(self) -> int:
        return len(self._memory)
