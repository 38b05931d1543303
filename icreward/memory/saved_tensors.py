"""Counting what a forward saves for backward: unique storages, per checkpointable block, extrapolated over
repeated blocks; fused-attention saves and autocast emulated on ``meta``."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

GIB = 2**30
_ORIG_SDPA = torch.nn.functional.scaled_dot_product_attention


# ------------------------------------------------------------------------------------------------ counting
def storage_key(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


def _storage_bytes(t: torch.Tensor) -> int:
    return t.untyped_storage().nbytes()


class _FusedAttentionSaves(torch.autograd.Function):
    """``scaled_dot_product_attention`` that saves what fused kernels save (q, k, v, out, fp32 log-sum-exp)."""

    @staticmethod
    def forward(ctx, q, k, v, kwargs):
        with torch.no_grad():
            out = _ORIG_SDPA(q, k, v, **kwargs)
        lse = q.new_empty(q.shape[:-1], dtype=torch.float32)
        ctx.kwargs = kwargs
        ctx.save_for_backward(q, k, v, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, _, _ = ctx.saved_tensors
        with torch.enable_grad():
            inputs = [t.detach().requires_grad_(True) for t in (q, k, v)]
            out = _ORIG_SDPA(*inputs, **ctx.kwargs)
            grads = torch.autograd.grad(out, inputs, grad_out)
        return (*grads, None)


def _fused_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, **extra):
    kwargs = dict(attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale, **extra)
    return _FusedAttentionSaves.apply(query, key, value, kwargs)


@contextlib.contextmanager
def fused_attention_accounting():
    """Replace ``F.scaled_dot_product_attention`` by :class:`_FusedAttentionSaves` for the duration."""
    torch.nn.functional.scaled_dot_product_attention = _fused_sdpa
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention = _ORIG_SDPA


def iter_tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from iter_tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from iter_tensors(o)


@dataclasses.dataclass
class SavedActivations:
    """Bytes saved for backward by one forward, split by the block that saved them."""

    total: int  # everything saved, no checkpointing
    outside_blocks: int  # saved outside the checkpointable blocks
    block_internal: list[int]  # saved inside each block (excluding that block's inputs)
    block_inputs: int  # unique bytes of all blocks' tensor inputs (what per-block checkpointing keeps alive)
    block_checkpointed: int  # outside ∪ block inputs + the largest block (recomputed in backward)
    call_inputs: int  # unique bytes of the tensors passed to the measured call


def measure_saved_activations(
    fn: Callable[[], Any],
    model: nn.Module,
    blocks: Iterable[nn.Module] = (),
    call_inputs: Iterable[torch.Tensor] = (),
) -> SavedActivations:
    """Run ``fn()`` and count the unique storages saved for backward, excluding ``model``'s parameters/buffers."""
    excluded = {storage_key(p) for p in model.parameters()} | {storage_key(b) for b in model.buffers()}
    blocks = list(blocks)
    current: list[int | None] = [None]
    saved: dict[int, tuple[int, int | None]] = {}
    inputs: dict[int, int] = {}
    # Storages are keyed by address: every tensor whose key is recorded stays referenced until the end, so that no
    # later storage can reuse a recorded address.
    alive: list[torch.Tensor] = []

    def pre_hook(index):
        def hook(module, args, kwargs):
            current[0] = index
            for t in iter_tensors((args, kwargs)):
                key = storage_key(t)
                if key not in excluded:
                    inputs.setdefault(key, _storage_bytes(t))
                    alive.append(t)

        return hook

    def post_hook(module, args, output):
        current[0] = None

    def pack(t):
        key = storage_key(t)
        if key not in excluded and key not in saved:
            saved[key] = (_storage_bytes(t), current[0])
            alive.append(t)
        return t

    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(pre_hook(i), with_kwargs=True))
        handles.append(block.register_forward_hook(post_hook))
    try:
        with fused_attention_accounting(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
    finally:
        for h in handles:
            h.remove()

    total = sum(b for b, _ in saved.values())
    outside = {k: b for k, (b, tag) in saved.items() if tag is None}
    internal = [0] * len(blocks)
    for k, (b, tag) in saved.items():
        if tag is not None and k not in inputs:
            internal[tag] += b
    kept = {**outside, **inputs}
    call = {}
    for t in call_inputs:
        call.setdefault(storage_key(t), _storage_bytes(t))
    return SavedActivations(
        total=total,
        outside_blocks=sum(outside.values()),
        block_internal=internal,
        block_inputs=sum(inputs.values()),
        block_checkpointed=sum(kept.values()) + (max(internal) if internal else 0),
        call_inputs=sum(call.values()),
    )


def measure_repeated_blocks(
    fn: Callable[[], Any],
    model: nn.Module,
    blocks_attr: str,
    call_inputs: Iterable[torch.Tensor] = (),
    *,
    exact: bool = False,
) -> SavedActivations:
    """:func:`measure_saved_activations` of ``fn()`` with ``model.<blocks_attr>`` as the blocks, fast.

    A transformer repeats one block ``L`` times; every block after the first sees the same shapes and saves the same
    bytes. The forward is run with the first 2 and the first 3 blocks only, and each additive count is extended
    linearly to ``L`` blocks (the third block's increment, ``L - 3`` more times). If the two short runs disagree on
    what is saved outside the blocks, or the second and third blocks save different amounts, the full forward runs
    instead (as with ``exact=True``).
    """
    blocks = getattr(model, blocks_attr)
    call_inputs = list(call_inputs)
    depth = len(blocks)
    if exact or depth <= 4:
        return measure_saved_activations(fn, model, blocks=list(blocks), call_inputs=call_inputs)
    runs = []
    try:
        for m in (2, 3):
            setattr(model, blocks_attr, nn.ModuleList(list(blocks)[:m]))
            runs.append(
                measure_saved_activations(fn, model, blocks=list(getattr(model, blocks_attr)), call_inputs=call_inputs)
            )
    finally:
        setattr(model, blocks_attr, blocks)
    two, three = runs
    repeated = (
        two.outside_blocks == three.outside_blocks
        and two.block_internal == three.block_internal[:2]
        and three.block_internal[1] == three.block_internal[2]
    )
    if not repeated:
        return measure_saved_activations(fn, model, blocks=list(blocks), call_inputs=call_inputs)
    more = depth - 3

    def extend(field: str) -> int:
        return getattr(three, field) + more * (getattr(three, field) - getattr(two, field))

    return SavedActivations(
        total=extend("total"),
        outside_blocks=three.outside_blocks,
        block_internal=three.block_internal + [three.block_internal[2]] * more,
        block_inputs=extend("block_inputs"),
        block_checkpointed=extend("block_checkpointed"),
        call_inputs=three.call_inputs,
    )


def lora_parameter_count(model: nn.Module, target_modules: Iterable[str], rank: int) -> int:
    """LoRA parameters peft adds: ``r * (in + out)`` per targeted ``nn.Linear`` (name equal to or ending in ``.t``)."""
    targets = list(target_modules)
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            count += rank * (module.in_features + module.out_features)
    return count


# ------------------------------------------------------------------------------------------------ autocast
class AutocastEmulation(torch.overrides.TorchFunctionMode):
    """What CUDA autocast does to the ops that dominate memory, on any device (``meta`` has no autocast): the
    floating inputs of matmul-like ops (linear, convolutions, matmul/bmm/baddbmm/addmm) are cast to ``dtype`` first,
    so e.g. a float32 LoRA layer saves a ``dtype`` copy of its input, as it does under ``torch.autocast``."""

    _OPS = {
        torch.nn.functional.linear,
        torch.nn.functional.conv1d,
        torch.nn.functional.conv2d,
        torch.nn.functional.conv3d,
        torch.matmul,
        torch.bmm,
        torch.baddbmm,
        torch.addmm,
        torch.Tensor.matmul,
        torch.Tensor.__matmul__,
    }

    def __init__(self, dtype: torch.dtype):
        super().__init__()
        self.dtype = dtype

    def _cast(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor) and x.is_floating_point() and x.dtype != self.dtype:
            return x.to(self.dtype)
        return x

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._OPS:
            args = tuple(self._cast(a) for a in args)
            kwargs = {k: self._cast(v) for k, v in kwargs.items()}
        return func(*args, **kwargs)


def saved_bytes(fn: Callable[[], Any], excluded: set[int], skip: set[int] = frozenset()) -> int:
    saved: dict[int, int] = {}

    alive: list[torch.Tensor] = []  # keep counted storages referenced: keys are addresses

    def pack(t):
        key = storage_key(t)
        if key not in excluded and key not in skip and key not in saved:
            saved[key] = _storage_bytes(t)
            alive.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())
