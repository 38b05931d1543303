"""On-disk cache of VAE latents and encoded conditions for preference pairs (finetrainers-style precomputation).

With the cache, a training step only runs the denoiser: the VAE, the text encoder and the image encoder are
called once per pair, before training. One ``.safetensors`` file per pair holds::

    latents.chosen, latents.rejected    normalised VAE latents (adapter.prepare_latents)
    cond.<name>                         every tensor of adapter.prepare_conditions (prompt_embeds, ...)

The file name is a SHA-256 over everything that determines its content: each file's resolved path, size and
modification time (so editing a video invalidates its entry), the prompt, the frame count and size, the adapter
family and settings, and a fingerprint of the encoders' weights (so two models never share entries). Files are
written atomically, so concurrent processes and interrupted runs never leave a partial entry.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from safetensors.torch import load_file, save_file

from ..adapters.base import VideoModelAdapter
from ..data.dpo_pairs import decode_pair_videos, load_reference_image

logger = logging.getLogger(__name__)

__all__ = ["LatentCache", "file_signature"]

_CACHE_FORMAT = 1


def file_signature(path: str | os.PathLike) -> dict[str, Any]:
    """Resolved path, size and modification time (ns) of a file: changes whenever the file is replaced or edited."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    return {"path": str(resolved), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _image_signature(image: Any) -> Any:
    if isinstance(image, PIL.Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")  # in-memory images have no file: hash their pixels
        return {"pil_sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
    return file_signature(image)


def _weights_fingerprint(adapter: VideoModelAdapter) -> str:
    """A cheap digest of the frozen encoders: config plus a slice of each one's first and last parameter."""
    digest = hashlib.sha256()
    for name, module in sorted(adapter.frozen_modules.items()):
        digest.update(name.encode())
        config = getattr(module, "config", None)
        if config is not None:
            as_dict = config.to_dict() if hasattr(config, "to_dict") else dict(config)
            # Private entries are bookkeeping (diffusers' `_use_default_values` is a set turned into a list, whose
            # order changes with Python's per-process string hashing).
            as_dict = {k: v for k, v in as_dict.items() if not k.startswith("_")}
            digest.update(json.dumps(as_dict, sort_keys=True, default=str).encode())
        params = list(module.parameters())
        for param in params[:1] + params[-1:]:
            digest.update(param.detach().flatten()[:4096].float().cpu().numpy().tobytes())
    return digest.hexdigest()


class LatentCache:
    """Encode pairs once and serve their latents and conditions from disk.

    Args:
        cache_dir: where entries live (created if missing); safe to share between runs and processes.
        adapter: the model adapter whose encoders produce the entries.
        num_frames, height, width: the video size every pair is decoded to.
        extra_settings: anything else that changes the encoding and must change the key.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike,
        adapter: VideoModelAdapter,
        *,
        num_frames: int,
        height: int,
        width: int,
        extra_settings: dict[str, Any] | None = None,
    ):
        self.cache_dir = Path(cache_dir)
        self.adapter = adapter
        self.num_frames, self.height, self.width = int(num_frames), int(height), int(width)
        self.settings = {
            "format": _CACHE_FORMAT,
            "family": adapter.family,
            "adapter": type(adapter).__name__,
            "max_sequence_length": getattr(adapter, "max_sequence_length", None),
            "num_frames": self.num_frames,
            "height": self.height,
            "width": self.width,
            "weights": _weights_fingerprint(adapter),
            "encoding": adapter.encoding_settings(),
            **(extra_settings or {}),
        }

    def key(self, row: dict[str, Any]) -> str:
        """The cache key of a pair row (``image``, ``prompt``, ``chosen``, ``rejected``)."""
        payload = {
            "settings": self.settings,
            "image": _image_signature(row["image"]),
            "prompt": row["prompt"],
            "chosen": file_signature(row["chosen"]),
            "rejected": file_signature(row["rejected"]),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.cache_dir / key[:2] / f"{key}.safetensors"

    def __contains__(self, key: str) -> bool:
        return self.path(key).is_file()

    @torch.no_grad()
    def encode(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, torch.Tensor]]:
        """Run the VAE and encoders on ``rows``; returns one dict of CPU tensors per row (nothing is written)."""
        size = {"num_frames": self.num_frames, "height": self.height, "width": self.width}
        images = [load_reference_image(r["image"], height=self.height, width=self.width) for r in rows]
        prompts = [r["prompt"] for r in rows]
        conditions = self.adapter.prepare_conditions(images, prompts, **size)
        chosen = decode_pair_videos([r["chosen"] for r in rows], **size)
        rejected = decode_pair_videos([r["rejected"] for r in rows], **size)
        device = next(self.adapter.vae.parameters()).device
        latents = self.adapter.prepare_latents(torch.cat([chosen, rejected]).to(device))
        latents_chosen, latents_rejected = latents.chunk(2)
        entries = []
        for i in range(len(rows)):
            entry = {"latents.chosen": latents_chosen[i], "latents.rejected": latents_rejected[i]}
            entry.update({f"cond.{name}": value[i] for name, value in conditions.items()})
            entries.append({k: v.detach().float().cpu().contiguous() for k, v in entry.items()})
        return entries

    def write(self, key: str, entry: dict[str, torch.Tensor]) -> None:
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file(entry, str(tmp), metadata={"settings": json.dumps(self.settings, sort_keys=True)})
        os.replace(tmp, path)  # atomic: readers see the whole entry or none

    def load(self, key: str) -> dict[str, torch.Tensor]:
        path = self.path(key)
        if not path.is_file():
            raise KeyError(f"latent cache has no entry {key} (expected {path}); was precompute() run?")
        return load_file(str(path))

    def precompute(
        self,
        rows: Sequence[dict[str, Any]],
        *,
        batch_size: int = 1,
        process_index: int = 0,
        num_processes: int = 1,
    ) -> list[str]:
        """Encode every row missing from the cache; returns the keys of all rows (in order).

        With several processes, process ``p`` encodes rows ``p, p + n, ...``; call a barrier afterwards before
        reading entries written by other processes.
        """
        keys = [self.key(row) for row in rows]
        todo = [i for i, k in enumerate(keys) if i % num_processes == process_index and k not in self]
        if todo:
            logger.info("latent cache: encoding %d of %d pairs into %s", len(todo), len(rows), self.cache_dir)
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            for i, entry in zip(batch, self.encode([rows[i] for i in batch])):
                self.write(keys[i], entry)
        return keys

    @staticmethod
    def collate(entries: Sequence[dict[str, torch.Tensor]]) -> dict[str, Any]:
        """Stack cached entries into a batch: ``latents_chosen``, ``latents_rejected`` and ``conditions``."""
        batch: dict[str, Any] = {
            "latents_chosen": torch.stack([e["latents.chosen"] for e in entries]),
            "latents_rejected": torch.stack([e["latents.rejected"] for e in entries]),
        }
        names = sorted(k.removeprefix("cond.") for k in entries[0] if k.startswith("cond."))
        batch["conditions"] = {n: torch.stack([e[f"cond.{n}"] for e in entries]) for n in names}
        return batch
