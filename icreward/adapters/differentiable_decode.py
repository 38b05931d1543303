"""A gradient-checkpointed, chunked differentiable VAE decode for causal video VAEs.

Reward-feedback training backpropagates the reward through the frozen VAE's decode. Diffusers' causal video VAEs
decode a few latent frames at a time and carry a cache of each causal convolution's last input frames from one call
to the next (``AutoencoderKLWan``: one latent frame per decoder call, ``feat_cache``; ``AutoencoderKLCogVideoX``: two
latent frames per call, ``conv_cache``). Under autograd that decode keeps every call's activations for backward
(about 9 GiB per latent frame for the Wan VAE at 480x832 in bf16).

:func:`differentiable_decode` runs the same decoder calls, in the same order and on the same slices, but each chunk
of calls is one :class:`_CheckpointedStep`: its forward runs without autograd and keeps only the chunk's inputs (the
latent slice and the cache handed over by the previous chunk); its backward recomputes the chunk with autograd and
returns the gradients of the latent slice and of the incoming cache, so the gradient flows back through the cache
into earlier chunks exactly as in the plain decode. Values and gradients equal the plain decode's (same operations,
recomputed); what stays alive between the forward and the backward is the chunks' inputs and outputs plus, during
the backward, one chunk's recomputed activations.

The VAE's weights may be frozen (the usual case) or trainable: parameters that require gradients get them.
Tiled decoding (``vae.enable_tiling()``) is not chunked here: it falls back to the plain ``vae.decode``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten, tree_unflatten

__all__ = [
    "DEFAULT_FRAMES_PER_CHUNK",
    "DecodePlan",
    "checkpointed_cogvideox_decode",
    "checkpointed_wan_decode",
    "cogvideox_decode_plan",
    "decode_chunks",
    "decode_plan",
    "differentiable_decode",
    "supports_checkpointed_decode",
    "wan_decode_plan",
]

_StepFn = Callable[[torch.Tensor, Any], tuple[torch.Tensor, Any]]

#: Latent frames (Wan) or decoder calls (CogVideoX) per checkpointed chunk: the fewest activations recomputed at once.
DEFAULT_FRAMES_PER_CHUNK = 1


def _split_state(state: Any) -> tuple[list[torch.Tensor], tuple[Any, list[Any], list[int]]]:
    """The tensors of a cache pytree (lists / dicts of tensors, ``None`` and markers such as Wan's ``"Rep"``)."""
    leaves, spec = tree_flatten(state)
    index = [i for i, leaf in enumerate(leaves) if isinstance(leaf, torch.Tensor)]
    skeleton = [None if i in set(index) else leaf for i, leaf in enumerate(leaves)]
    return [leaves[i] for i in index], (spec, skeleton, index)


def _join_state(tensors: Sequence[torch.Tensor], layout: tuple[Any, list[Any], list[int]]) -> Any:
    spec, skeleton, index = layout
    leaves = list(skeleton)
    for i, t in zip(index, tensors, strict=True):
        leaves[i] = t
    return tree_unflatten(leaves, spec)


class _CheckpointedStep(torch.autograd.Function):
    """``(out, new_state) = step(x, state)`` run without autograd; recomputed with autograd in backward.

    Inputs: ``step``, a holder dict (receives the output state's layout), the input state's layout, the number of
    state tensors, ``x``, the state tensors, then the trainable parameters the step uses. Only ``x`` and the state
    tensors are saved for backward (parameters are held by their module anyway).
    """

    @staticmethod
    def forward(ctx, step, holder, layout, n_state, x, *flat):
        state_tensors, params = flat[:n_state], flat[n_state:]
        ctx.step, ctx.layout, ctx.n_state, ctx.params = step, layout, n_state, params
        ctx.save_for_backward(x, *state_tensors)
        ctx.set_materialize_grads(False)
        with torch.no_grad():
            out, new_state = step(x, _join_state(state_tensors, layout))
        new_tensors, holder["layout"] = _split_state(new_state)
        inputs = {id(t) for t in (x, *state_tensors)}
        # a tensor handed through unchanged must still be a new output of this node
        outputs = [t.clone() if id(t) in inputs else t for t in (out, *new_tensors)]
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads):
        x, *state_tensors = ctx.saved_tensors
        inputs = [t.detach().requires_grad_(t.requires_grad) for t in (x, *state_tensors)]
        with torch.enable_grad():
            out, new_state = ctx.step(inputs[0], _join_state(inputs[1:], ctx.layout))
        new_tensors, _ = _split_state(new_state)
        pairs = [(o, g) for o, g in zip((out, *new_tensors), grads, strict=True) if g is not None and o.requires_grad]
        wrt = [t for t in (*inputs, *ctx.params) if t.requires_grad]
        found: dict[int, torch.Tensor | None] = {}
        if pairs and wrt:
            outputs, grad_outputs = zip(*pairs, strict=True)
            result = torch.autograd.grad(outputs, wrt, grad_outputs, allow_unused=True)
            found = {id(t): g for t, g in zip(wrt, result, strict=True)}
        input_grads = [found.get(id(t)) if t.requires_grad else None for t in inputs]
        param_grads = [found.get(id(p)) for p in ctx.params]
        return (None, None, None, None, *input_grads, *param_grads)


def _checkpointed_call(step: _StepFn, x: torch.Tensor, state: Any, params: Sequence[nn.Parameter]):
    state_tensors, layout = _split_state(state)
    holder: dict[str, Any] = {}
    outputs = _CheckpointedStep.apply(step, holder, layout, len(state_tensors), x, *state_tensors, *params)
    return outputs[0], _join_state(outputs[1:], holder["layout"])


def decode_chunks(
    calls: Sequence[tuple[_StepFn, torch.Tensor]],
    state: Any,
    params: Sequence[nn.Parameter] = (),
    *,
    checkpoint: bool = True,
) -> tuple[list[torch.Tensor], Any]:
    """Run each ``(step, chunk)`` in order, threading the cache ``state``; each call checkpointed when
    ``checkpoint`` and autograd records. Returns the chunks' outputs and the final state."""
    outs = []
    for step, chunk in calls:
        if checkpoint and torch.is_grad_enabled():
            out, state = _checkpointed_call(step, chunk, state, params)
        else:
            out, state = step(chunk, state)
        outs.append(out)
    return outs, state


def _trainable(module: nn.Module) -> list[nn.Parameter]:
    return [p for p in module.parameters() if p.requires_grad]


# ------------------------------------------------------------------------------------------------ Wan
@dataclasses.dataclass
class DecodePlan:
    """A VAE decode as an ordered list of ``(step, chunk)`` calls threading a cache, and what follows them.

    ``decode_chunks(plan.calls, plan.state, plan.params)`` then ``plan.finish(outputs)`` is the decode; the memory
    accountant runs the same plan on ``meta`` tensors to count what each chunk keeps.
    """

    calls: list[tuple[_StepFn, torch.Tensor]]
    state: Any
    params: list[nn.Parameter]
    finish: Callable[[list[torch.Tensor]], torch.Tensor]


def wan_decode_plan(vae: nn.Module, z: torch.Tensor, *, frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK):
    """``AutoencoderKLWan._decode`` as chunks of ``frames_per_chunk`` latent frames: one decoder call per latent
    frame (``first_chunk=True`` for frame 0), the causal ``feat_cache`` threaded through, then un-patchify and clamp.
    """
    from diffusers.models.autoencoders.autoencoder_kl_wan import unpatchify

    if frames_per_chunk < 1:
        raise ValueError(f"frames_per_chunk must be >= 1, got {frames_per_chunk}")
    x = vae.post_quant_conv(z)

    def make_step(start: int) -> _StepFn:
        def step(chunk: torch.Tensor, cache: list[Any]) -> tuple[torch.Tensor, list[Any]]:
            cache = list(cache)  # the recompute must start from the same cache
            outs = []
            for j in range(chunk.shape[2]):
                outs.append(
                    vae.decoder(chunk[:, :, j : j + 1], feat_cache=cache, feat_idx=[0], first_chunk=start + j == 0)
                )
            return torch.cat(outs, dim=2), cache

        return step

    def finish(outs: list[torch.Tensor]) -> torch.Tensor:
        out = torch.cat(outs, dim=2)
        if vae.config.patch_size is not None:
            out = unpatchify(out, patch_size=vae.config.patch_size)
        return torch.clamp(out, min=-1.0, max=1.0)

    starts = range(0, x.shape[2], frames_per_chunk)
    calls = [(make_step(start), x[:, :, start : start + frames_per_chunk]) for start in starts]
    state: list[Any] = [None] * vae._cached_conv_counts["decoder"]
    return DecodePlan(calls, state, _trainable(vae.decoder), finish)


def checkpointed_wan_decode(
    vae: nn.Module, z: torch.Tensor, *, frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK, checkpoint: bool = True
) -> torch.Tensor:
    """``AutoencoderKLWan.decode(z).sample`` (clamped to ``[-1, 1]``), checkpointed per chunk of latent frames.

    ``z`` is the VAE's input (already un-normalised), ``(B, C, F', h, w)``. The causal ``feat_cache`` is carried
    from chunk to chunk (and its gradient back), so the result equals the plain decode.
    """
    plan = wan_decode_plan(vae, z, frames_per_chunk=frames_per_chunk)
    outs, _ = decode_chunks(plan.calls, plan.state, plan.params, checkpoint=checkpoint)
    return plan.finish(outs)


# ------------------------------------------------------------------------------------------------ CogVideoX
def _cogvideox_batches(vae: nn.Module, num_frames: int) -> list[tuple[int, int]]:
    """The latent-frame windows ``AutoencoderKLCogVideoX._decode`` hands to its decoder, in order."""
    size = int(vae.num_latent_frames_batch_size)
    remaining = num_frames % size
    windows = []
    for i in range(max(num_frames // size, 1)):
        start = size * i + (0 if i == 0 else remaining)
        windows.append((start, size * (i + 1) + remaining))
    return windows


def cogvideox_decode_plan(vae: nn.Module, z: torch.Tensor, *, batches_per_chunk: int = 1) -> DecodePlan:
    """``AutoencoderKLCogVideoX._decode`` as chunks of ``batches_per_chunk`` decoder calls (diffusers' own windows:
    two latent frames per call, the odd remainder in the first), the ``conv_cache`` threaded through."""
    if batches_per_chunk < 1:
        raise ValueError(f"batches_per_chunk must be >= 1, got {batches_per_chunk}")
    windows = _cogvideox_batches(vae, z.shape[2])
    groups = [windows[i : i + batches_per_chunk] for i in range(0, len(windows), batches_per_chunk)]
    calls = []
    for group in groups:
        first = group[0][0]
        bounds = [(a - first, b - first) for a, b in group]

        def step(chunk: torch.Tensor, conv_cache: Any, bounds=bounds) -> tuple[torch.Tensor, Any]:
            pieces = []
            for a, b in bounds:
                piece = chunk[:, :, a:b]
                if vae.post_quant_conv is not None:
                    piece = vae.post_quant_conv(piece)
                piece, conv_cache = vae.decoder(piece, conv_cache=conv_cache)
                pieces.append(piece)
            return torch.cat(pieces, dim=2), conv_cache

        calls.append((step, z[:, :, first : group[-1][1]]))
    return DecodePlan(calls, None, _trainable(vae), lambda outs: torch.cat(outs, dim=2))


def checkpointed_cogvideox_decode(
    vae: nn.Module, z: torch.Tensor, *, batches_per_chunk: int = 1, checkpoint: bool = True
) -> torch.Tensor:
    """``AutoencoderKLCogVideoX.decode(z).sample``, checkpointed per decoder call (or ``batches_per_chunk`` calls).

    The windows are diffusers' own and the decoder's ``conv_cache`` is carried from call to call, so the result
    equals the plain decode.
    """
    plan = cogvideox_decode_plan(vae, z, batches_per_chunk=batches_per_chunk)
    outs, _ = decode_chunks(plan.calls, plan.state, plan.params, checkpoint=checkpoint)
    return plan.finish(outs)


# ------------------------------------------------------------------------------------------------ dispatch
def supports_checkpointed_decode(vae: nn.Module) -> bool:
    """Whether :func:`differentiable_decode` chunks and checkpoints this VAE (Wan and CogVideoX, untiled)."""
    if getattr(vae, "use_tiling", False):
        return False
    return type(vae).__name__ in ("AutoencoderKLWan", "AutoencoderKLCogVideoX")


def decode_plan(vae: nn.Module, z: torch.Tensor, *, frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK) -> DecodePlan:
    """The chunked decode :func:`differentiable_decode` runs for ``vae`` (see :func:`supports_checkpointed_decode`)."""
    if not supports_checkpointed_decode(vae):
        raise ValueError(f"no chunked decode for {type(vae).__name__} (tiled or not a Wan / CogVideoX VAE)")
    if type(vae).__name__ == "AutoencoderKLWan":
        return wan_decode_plan(vae, z, frames_per_chunk=frames_per_chunk)
    return cogvideox_decode_plan(vae, z, batches_per_chunk=frames_per_chunk)


def differentiable_decode(
    vae: nn.Module, z: torch.Tensor, *, frames_per_chunk: int = DEFAULT_FRAMES_PER_CHUNK
) -> torch.Tensor:
    """``vae.decode(z).sample``, gradient-checkpointed per chunk when autograd records and the VAE supports it.

    Under ``torch.no_grad()`` (sampling, evaluation) or for other VAEs this is the plain decode.
    """
    if torch.is_grad_enabled() and supports_checkpointed_decode(vae):
        plan = decode_plan(vae, z, frames_per_chunk=frames_per_chunk)
        outs, _ = decode_chunks(plan.calls, plan.state, plan.params)
        return plan.finish(outs)
    return vae.decode(z, return_dict=False)[0]
