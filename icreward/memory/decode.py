"""Accounting of the chunked, checkpointed differentiable VAE decode on ``meta``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from .saved_tensors import saved_bytes, storage_key


@dataclasses.dataclass
class DecodeAccounting:
    """Bytes of the checkpointed differentiable decode of ``frames`` latent frames (chunks of ``frames_per_chunk``)."""

    frames: int
    frames_per_chunk: int
    held: int  # saved between forward and backward: each chunk's input slice and incoming cache, and the output
    recompute: int  # the largest chunk's activations, alive while that chunk is recomputed in the backward
    plain: int | None = None  # everything the plain (un-checkpointed) decode saves, when measured


def account_decode(
    vae: nn.Module,
    z_shape: tuple[int, ...],
    dtype: torch.dtype,
    *,
    frames_per_chunk: int | None = None,
    measure_plain: bool = False,
    plain_decode: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> DecodeAccounting:
    """Account the chunked, checkpointed differentiable decode (:mod:`icreward.adapters.differentiable_decode`) of a
    ``z_shape`` VAE input on ``meta``, exactly as the adapters run it under autograd. A VAE without a chunked decode
    is accounted as its plain decode (``plain_decode(vae, z)``, default ``vae.decode(z)``), everything saved held
    (``frames_per_chunk`` is then 0)."""
    from ..adapters.differentiable_decode import (
        DEFAULT_FRAMES_PER_CHUNK,
        decode_chunks,
        decode_plan,
        supports_checkpointed_decode,
    )

    chunk = DEFAULT_FRAMES_PER_CHUNK if frames_per_chunk is None else int(frames_per_chunk)
    excluded = {storage_key(p) for p in vae.parameters()} | {storage_key(b) for b in vae.buffers()}
    z = torch.empty(z_shape, device="meta", dtype=dtype, requires_grad=True)
    if not supports_checkpointed_decode(vae):
        run = plain_decode or (lambda v, x: v.decode(x, return_dict=False)[0])
        plain = saved_bytes(lambda: run(vae, z), excluded)
        return DecodeAccounting(z_shape[2], 0, plain, 0, plain)

    def checkpointed():
        plan = decode_plan(vae, z, frames_per_chunk=chunk)
        outs, _ = decode_chunks(plan.calls, plan.state, plan.params)
        return plan.finish(outs)

    held = saved_bytes(checkpointed, excluded)
    # The recompute of one chunk keeps all of that chunk's activations. Chunks after the second see the same shapes
    # (a full cache, the same slice length) as the second; a shorter last chunk keeps less.
    plan = decode_plan(vae, z, frames_per_chunk=chunk)
    state, recompute = plan.state, 0
    for step, piece in plan.calls[:2]:
        # as in the backward: the chunk's inputs (slice and incoming cache) are leaves that require grad
        leaves, spec = torch.utils._pytree.tree_flatten(state)
        leaves = [t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) else t for t in leaves]
        chunk_state = torch.utils._pytree.tree_unflatten(leaves, spec)
        inputs = {storage_key(t) for t in leaves if isinstance(t, torch.Tensor)} | {storage_key(piece)}
        recompute = max(recompute, saved_bytes(lambda s=step, p=piece, c=chunk_state: s(p, c), excluded, inputs))
        with torch.no_grad():
            _, state = step(piece, state)
    plain = saved_bytes(lambda: vae.decode(z).sample, excluded) if measure_plain else None
    return DecodeAccounting(z_shape[2], chunk, held, recompute, plain)
