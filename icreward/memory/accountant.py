"""Accounted training memory of a recipe at the published full size, without a GPU.

The family's published transformer(s) (:mod:`icreward.adapters.published_configs`) are built on the ``meta`` device,
LoRA is injected with peft, and one training forward is run on ``meta`` tensors of the recipe's latent shape under
:func:`torch.autograd.graph.saved_tensors_hooks`; the unique storages saved for backward (parameters excluded) are
the activations. Each storage is tagged with the transformer block that saved it, which gives both the activations
without checkpointing and with the transformer's own per-block gradient checkpointing (non-block saves + every
block's inputs, which checkpointing keeps alive, + the largest single block recomputed during backward).

Modelling assumptions (printed with every estimate):

- attention saves what fused (flash / memory-efficient) kernels save: q, k, v, the output and an fp32 log-sum-exp;
  on ``meta``/CPU PyTorch would pick the math kernel, which keeps the full attention matrix;
- LoRA parameters, their gradients and AdamW's two moments are fp32; the LoRA forward runs in the weights' dtype
  (as under bf16 autocast);
- transient memory (gradients of activations, allocator fragmentation, CUDA context) is not counted;
- phases not built here (the differentiable VAE decode of reward feedback, the reward models, the text / image
  encoders and the VAE weights) are reported as "not counted", never as zero.

Usage: ``icreward estimate-memory --config examples/configs/dpo_wan21_i2v_480p.yaml [--override key=value ...]``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch import nn

GIB = 2**30
_ORIG_SDPA = torch.nn.functional.scaled_dot_product_attention


# ------------------------------------------------------------------------------------------------ counting
def _storage_key(t: torch.Tensor) -> int:
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


def _tensors(obj: Any) -> Iterable[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


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
    excluded = {_storage_key(p) for p in model.parameters()} | {_storage_key(b) for b in model.buffers()}
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
            for t in _tensors((args, kwargs)):
                key = _storage_key(t)
                if key not in excluded:
                    inputs.setdefault(key, _storage_bytes(t))
                    alive.append(t)

        return hook

    def post_hook(module, args, output):
        current[0] = None

    def pack(t):
        key = _storage_key(t)
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
        call.setdefault(_storage_key(t), _storage_bytes(t))
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


# ------------------------------------------------------------------------------------------------ families
@dataclasses.dataclass
class FamilyInputs:
    """What the accountant needs from a model family: the denoiser's forward inputs on ``meta`` at the recipe's
    size, its checkpointable blocks, the latent shape and the VAE input shape of ``n`` decoded latent frames."""

    kwargs: dict[str, Any]
    blocks_attr: str  # the model attribute holding its ModuleList of repeated blocks
    latent_shape: tuple[int, ...]
    num_latent_frames: int
    decode_input_shape: Callable[[int], tuple[int, ...]]
    # how the adapter decodes a VAE without a chunked decode, ``decode(vae, z) -> video`` (default ``vae.decode``)
    plain_decode: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None


FamilyBuilder = Callable[[nn.Module, nn.Module, dict[str, Any], int, torch.dtype, str], FamilyInputs]
_FAMILY_BUILDERS: dict[str, FamilyBuilder] = {}
_FAMILY_TARGETS: dict[str, Callable[[str], tuple[str, ...]]] = {}


def register_accounting_family(
    transformer_class: str, builder: FamilyBuilder, default_targets: Callable[[str], tuple[str, ...]]
) -> None:
    """Teach the accountant a model family: ``builder(model, vae, recipe, forward_batch, dtype, source)`` returns
    its :class:`FamilyInputs`; ``default_targets(hub_id)`` its adapter's default LoRA targets. With a published
    config entry (:mod:`icreward.adapters.published_configs`) that is all a family needs."""
    _FAMILY_BUILDERS[transformer_class] = builder
    _FAMILY_TARGETS[transformer_class] = default_targets


def _wan_inputs(model, vae, recipe, forward_batch, dtype, source) -> FamilyInputs:
    frames, height, width = (int(_field(recipe, k, source)) for k in ("num_frames", "height", "width"))
    t, s = int(vae.config.scale_factor_temporal), int(vae.config.scale_factor_spatial)
    if (frames - 1) % t or height % (2 * s) or width % (2 * s):
        raise ValueError(f"{source}: Wan needs num_frames = 4k+1 and height/width divisible by {2 * s}")
    latent_frames = (frames - 1) // t + 1
    shape = (forward_batch, int(model.config.in_channels), latent_frames, height // s, width // s)
    text_len = int(recipe.get("max_sequence_length") or 512)
    kwargs = {
        "hidden_states": torch.empty(shape, device="meta", dtype=dtype),
        "timestep": torch.empty(forward_batch, device="meta"),
        "encoder_hidden_states": torch.empty(
            forward_batch, text_len, model.config.text_dim, device="meta", dtype=dtype
        ),
    }
    if model.config.image_dim is not None:
        # CLIP ViT-H/14 at 224: 16 x 16 patches + the class token
        kwargs["encoder_hidden_states_image"] = torch.empty(
            forward_batch, 257, model.config.image_dim, device="meta", dtype=dtype
        )
    batch = int(recipe.get("per_device_train_batch_size", 1))
    z = int(vae.config.z_dim)
    return FamilyInputs(
        kwargs=kwargs,
        blocks_attr="blocks",
        latent_shape=(batch, z, latent_frames, height // s, width // s),
        num_latent_frames=latent_frames,
        decode_input_shape=lambda n: (batch, z, n, height // s, width // s),
    )


def _cogvideox_inputs(model, vae, recipe, forward_batch, dtype, source) -> FamilyInputs:
    frames, height, width = (int(_field(recipe, k, source)) for k in ("num_frames", "height", "width"))
    t = int(vae.config.temporal_compression_ratio)
    s = 2 ** (len(vae.config.block_out_channels) - 1)
    p = int(model.config.patch_size)
    if (frames - 1) % t or height % (s * p) or width % (s * p):
        raise ValueError(f"{source}: CogVideoX needs num_frames = 4k+1 and height/width divisible by {s * p}")
    latent_frames = (frames - 1) // t + 1
    shape = (forward_batch, latent_frames, int(model.config.in_channels), height // s, width // s)
    text_len = int(recipe.get("max_sequence_length") or model.config.max_text_seq_length)
    tokens = latent_frames * (height // s // p) * (width // s // p)
    head_dim = int(model.config.attention_head_dim)
    rotary = None
    if model.config.use_rotary_positional_embeddings:
        rotary = (torch.empty(tokens, head_dim, device="meta"), torch.empty(tokens, head_dim, device="meta"))
    kwargs = {
        "hidden_states": torch.empty(shape, device="meta", dtype=dtype),
        "timestep": torch.empty(forward_batch, device="meta"),
        "encoder_hidden_states": torch.empty(
            forward_batch, text_len, model.config.text_embed_dim, device="meta", dtype=dtype
        ),
        "image_rotary_emb": rotary,
    }
    batch = int(recipe.get("per_device_train_batch_size", 1))
    c = int(vae.config.latent_channels)
    return FamilyInputs(
        kwargs=kwargs,
        blocks_attr="transformer_blocks",
        latent_shape=(batch, latent_frames, c, height // s, width // s),
        num_latent_frames=latent_frames,
        # decode_latents permutes (B, F, C, h, w) to the VAE's (B, C, F, h, w)
        decode_input_shape=lambda n: (batch, c, n, height // s, width // s),
    )


def _wan_targets(hub_id: str) -> tuple[str, ...]:
    from ..adapters.published_configs import get_published_config
    from ..adapters.wan import Wan22Adapter, WanI2VAdapter

    adapter = Wan22Adapter if "transformer_2" in get_published_config(hub_id).components else WanI2VAdapter
    return tuple(adapter.default_lora_target_modules)


def _cogvideox_targets(hub_id: str) -> tuple[str, ...]:
    from ..adapters.cogvideox import CogVideoXI2VAdapter

    return tuple(CogVideoXI2VAdapter.default_lora_target_modules)


register_accounting_family("WanTransformer3DModel", _wan_inputs, _wan_targets)
register_accounting_family("CogVideoXTransformer3DModel", _cogvideox_inputs, _cogvideox_targets)


# ------------------------------------------------------------------------------------------------ recipes
def _parse_value(text: str) -> Any:
    import yaml

    return yaml.safe_load(text)


def load_recipe(path: str | Path, overrides: Iterable[str] = ()) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist")
    recipe = yaml.safe_load(path.read_text()) or {}
    if not isinstance(recipe, dict):
        raise ValueError(f"{path}: a recipe must be a mapping of fields, got {type(recipe).__name__}")
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--override expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        recipe[key.strip()] = _parse_value(value)
    return recipe


def _recipe_trainer(recipe: dict[str, Any], source: str) -> str:
    if "trainer" in recipe:
        return str(recipe["trainer"])
    if "num_generations" in recipe:  # before DPO: GRPO's KL weight is also called beta
        return "grpo"
    if "truncated_backprop_steps" in recipe or "kl_weight" in recipe:
        return "reward_feedback"
    if "loss_type" in recipe or "beta" in recipe:
        return "dpo"
    raise ValueError(f"{source}: cannot tell the trainer (no loss_type / truncated_backprop_steps); set trainer=")


def _field(recipe: dict[str, Any], key: str, source: str) -> Any:
    if key not in recipe:
        raise ValueError(f"{source}: field {key!r} is required for memory accounting")
    return recipe[key]


def _dtype(recipe: dict[str, Any], source: str, assumptions: list[str]) -> torch.dtype:
    name = recipe.get("torch_dtype") or recipe.get("dtype")
    if name in (None, "auto"):
        name = "bfloat16"
        assumptions.append("the recipe sets no torch_dtype/dtype: frozen weights assumed bfloat16")
    dtype = getattr(torch, str(name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{source}: torch_dtype/dtype {name!r} is not a torch dtype")
    return dtype


def _param_bytes(modules: Iterable[nn.Module]) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


@dataclasses.dataclass
class DecodeAccounting:
    """Bytes of the checkpointed differentiable decode of ``frames`` latent frames (chunks of ``frames_per_chunk``)."""

    frames: int
    frames_per_chunk: int
    held: int  # saved between forward and backward: each chunk's input slice and incoming cache, and the output
    recompute: int  # the largest chunk's activations, alive while that chunk is recomputed in the backward
    plain: int | None = None  # everything the plain (un-checkpointed) decode saves, when measured


def _saved_bytes(fn: Callable[[], Any], excluded: set[int], skip: set[int] = frozenset()) -> int:
    saved: dict[int, int] = {}

    alive: list[torch.Tensor] = []  # keep counted storages referenced: keys are addresses

    def pack(t):
        key = _storage_key(t)
        if key not in excluded and key not in skip and key not in saved:
            saved[key] = _storage_bytes(t)
            alive.append(t)
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(saved.values())


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
    excluded = {_storage_key(p) for p in vae.parameters()} | {_storage_key(b) for b in vae.buffers()}
    z = torch.empty(z_shape, device="meta", dtype=dtype, requires_grad=True)
    if not supports_checkpointed_decode(vae):
        run = plain_decode or (lambda v, x: v.decode(x, return_dict=False)[0])
        plain = _saved_bytes(lambda: run(vae, z), excluded)
        return DecodeAccounting(z_shape[2], 0, plain, 0, plain)

    def checkpointed():
        plan = decode_plan(vae, z, frames_per_chunk=chunk)
        outs, _ = decode_chunks(plan.calls, plan.state, plan.params)
        return plan.finish(outs)

    held = _saved_bytes(checkpointed, excluded)
    # The recompute of one chunk keeps all of that chunk's activations. Chunks after the second see the same shapes
    # (a full cache, the same slice length) as the second; a shorter last chunk keeps less.
    plan = decode_plan(vae, z, frames_per_chunk=chunk)
    state, recompute = plan.state, 0
    for step, piece in plan.calls[:2]:
        # as in the backward: the chunk's inputs (slice and incoming cache) are leaves that require grad
        leaves, spec = torch.utils._pytree.tree_flatten(state)
        leaves = [t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) else t for t in leaves]
        chunk_state = torch.utils._pytree.tree_unflatten(leaves, spec)
        inputs = {_storage_key(t) for t in leaves if isinstance(t, torch.Tensor)} | {_storage_key(piece)}
        recompute = max(recompute, _saved_bytes(lambda s=step, p=piece, c=chunk_state: s(p, c), excluded, inputs))
        with torch.no_grad():
            _, state = step(piece, state)
    plain = _saved_bytes(lambda: vae.decode(z).sample, excluded) if measure_plain else None
    return DecodeAccounting(z_shape[2], chunk, held, recompute, plain)


@dataclasses.dataclass
class MemoryEstimate:
    recipe: str
    hub_id: str
    trainer: str
    latent_shape: tuple[int, ...]
    rows: dict[str, float | None]  # GiB; None = not counted
    phases: dict[str, float]  # GiB at each phase of a step; the peak is their maximum
    not_counted: list[str]
    assumptions: list[str]
    activations_variants: dict[str, float]  # GiB of activations with / without per-block checkpointing
    budget_gib: float
    seconds: float

    @property
    def peak_gib(self) -> float:
        return float(self.rows["peak"])

    @property
    def fits(self) -> bool:
        return self.peak_gib <= self.budget_gib


def estimate_recipe_memory(
    recipe: dict[str, Any],
    *,
    source: str = "recipe",
    budget_gib: float = 72.0,
    block_checkpointing: bool | None = None,
    exact: bool = False,
) -> MemoryEstimate:
    """Account one training step of ``recipe`` at its model's published size.

    ``exact`` runs the forward through every transformer block; by default two short forwards (2 and 3 blocks)
    are extrapolated to the full depth (:func:`measure_repeated_blocks`), which gives the same bytes when the
    repeated blocks save identically (checked; otherwise the full forward runs).

    ``block_checkpointing`` forces the transformer's per-block gradient checkpointing on/off; ``None`` uses what the
    trainers do: all three enable it with ``activation_checkpointing`` (reward feedback also checkpoints each trained
    denoiser call as a whole).
    """
    from peft import LoraConfig, inject_adapter_in_model

    from ..adapters.published_configs import build_meta_components, get_published_config

    start = time.perf_counter()
    hub_id = str(_field(recipe, "model_name_or_path", source))
    entry = get_published_config(hub_id)
    trainer = _recipe_trainer(recipe, source)
    if trainer not in ("dpo", "grpo", "reward_feedback"):
        raise ValueError(f"{source}: no memory accounting for trainer {trainer!r}")
    assumptions: list[str] = []
    not_counted: list[str] = []
    dtype = _dtype(recipe, source, assumptions)
    autocast = torch.bfloat16 if recipe.get("bf16") else torch.float16 if recipe.get("fp16") else None

    names = [n for n in ("transformer", "transformer_2") if n in entry.components]
    encoder_names = [n for n in entry.components if n not in names]
    built = build_meta_components(hub_id, dtype=dtype, components=(*names, *encoder_names))
    vae = built["vae"]
    expert = recipe.get("wan22_train_expert", "low_noise")
    trained_names = [names[0]]
    if len(names) == 2:
        if expert not in ("low_noise", "high_noise", "both"):
            raise ValueError(f"{source}: wan22_train_expert {expert!r} is not low_noise, high_noise or both")
        trained_names = {"low_noise": ["transformer_2"], "high_noise": ["transformer"], "both": names}[expert]
    frozen_names = [n for n in names if n not in trained_names]
    model = built[trained_names[0]]
    builder = _FAMILY_BUILDERS.get(type(model).__name__)
    if builder is None:
        raise ValueError(
            f"{source}: no memory accounting for {type(model).__name__} (register_accounting_family); "
            f"known: {sorted(_FAMILY_BUILDERS)}"
        )

    batch = int(recipe.get("per_device_train_batch_size", 1))
    rank = int(_field(recipe, "lora_r", source))
    targets = recipe.get("lora_target_modules") or _FAMILY_TARGETS[type(model).__name__](hub_id)
    if isinstance(targets, str):
        targets = [targets]
    trained_w = _param_bytes(built[n] for n in trained_names)  # before LoRA is injected
    lora_params = 0
    for name in trained_names:
        lora_params += lora_parameter_count(built[name], targets, rank)
        built[name].requires_grad_(False)
        inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets)), built[name])
        for p in built[name].parameters():
            if p.requires_grad:  # the trainers train LoRA in float32 whatever the base dtype
                p.data = p.data.float()
    injected = sum(p.numel() for n in trained_names for p in built[n].parameters() if p.requires_grad)
    if injected != lora_params:
        raise RuntimeError(f"LoRA count {lora_params} differs from peft's {injected} for targets {targets}")

    checkpointing = bool(recipe.get("activation_checkpointing", recipe.get("gradient_checkpointing", False)))
    guided = float(recipe.get("guidance_scale", 1.0)) > 1.0
    if trainer == "dpo":
        forward_batch = 2 * batch  # chosen + rejected in one policy forward
    elif trainer == "grpo":
        forward_batch = int(recipe.get("backward_chunk_size", 1)) * (2 if guided else 1)
    else:
        forward_batch = batch * (2 if guided else 1)
    family = builder(model, vae, recipe, forward_batch, dtype, source)

    def forward():
        return model(**family.kwargs, return_dict=False)

    with AutocastEmulation(autocast) if autocast is not None else contextlib.nullcontext():
        acts = measure_repeated_blocks(
            forward, model, family.blocks_attr, call_inputs=list(_tensors(family.kwargs)), exact=exact
        )
    assumptions.append(
        f"LoRA parameters float32 (as the trainers cast them); {'bf16' if autocast == torch.bfloat16 else 'fp16'} "
        "autocast modelled on matmul-like ops (recipe bf16/fp16)"
        if autocast is not None
        else "LoRA parameters float32 (as the trainers cast them); no autocast (recipe bf16/fp16 unset): peft casts "
        "each LoRA layer's input to float32"
    )

    # ---- weights by phase
    frozen_w = _param_bytes(built[n] for n in frozen_names)
    encoders = {n: _param_bytes([built[n]]) for n in encoder_names}
    encoders_w = sum(encoders.values())
    offload_frozen = bool(recipe.get("offload_frozen_denoisers", False))
    precompute = trainer == "dpo" and bool(recipe.get("precompute_latents", True))
    trainable = lora_params * 4
    optimizer_state = 2 * trainable
    per_block = checkpointing if block_checkpointing is None else bool(block_checkpointing)
    step_acts = acts.block_checkpointed if per_block else acts.total
    phases: dict[str, float] = {}
    resident_frozen = 0 if (offload_frozen or trainer == "dpo") else frozen_w
    if trainer == "dpo":
        # the DPO trainer runs only the trained expert; Wan 2.2's frozen one is never moved to the device
        if frozen_names:
            assumptions.append(f"DPO: the frozen expert(s) {frozen_names} stay in CPU memory (never run)")
    elif frozen_names:
        assumptions.append(
            f"frozen expert(s) {frozen_names}: "
            + (
                "offloaded (offload_frozen_denoisers): on the device only for the no-grad steps that run them"
                if offload_frozen
                else "held on the device throughout"
            )
        )
    static = trained_w + resident_frozen + trainable + trainable + optimizer_state
    offload_encoders = bool(recipe.get("offload_encoders", False))
    vae_w = encoders.get("vae", 0)
    encoders_in_step = 0 if precompute else (vae_w if offload_encoders else encoders_w)
    if precompute:
        phases["precompute latents (encoders on the device, no autograd)"] = static + encoders_w
        assumptions.append("DPO precompute_latents: VAE and text/image encoders move to the CPU after caching")
    elif offload_encoders:
        # EncoderOffload: each encoder visits the device for its own call, before anything of the step is alive
        largest = max((b for n, b in encoders.items() if n != "vae"), default=0)
        phases["encoding a batch (offloaded encoder on the device, no autograd)"] = static + vae_w + largest
    static_step = static + encoders_in_step
    if trainer != "dpo" and offload_frozen and frozen_names:
        phases["sampling with the frozen expert (no autograd)"] = static_step + frozen_w
    decode_row: float | None = None
    held_denoiser = step_acts
    if trainer == "dpo":
        phases["training step (forward + backward)"] = static_step + step_acts
        assumptions.append(f"DPO: one policy forward on chosen+rejected (batch {forward_batch}); reference is no-grad")
    elif trainer == "grpo":
        phases["training piece (forward + backward)"] = static_step + step_acts
        assumptions.append(
            f"GRPO: one forward/backward per trained transition on {forward_batch} latent(s) "
            "(backward_chunk_size, x2 under guidance); sampling, reference and decode without autograd"
        )
    else:
        k = int(recipe.get("truncated_backprop_steps", 1))
        if checkpointing:
            # each of the K denoiser calls is checkpointed whole: K calls' inputs are kept, one call is recomputed
            held_calls, recompute = k * acts.call_inputs, step_acts
        else:
            held_calls, recompute = k * step_acts, 0
        held_denoiser = held_calls + recompute
        subset = recipe.get("decode_frame_subset")
        frames = family.num_latent_frames if subset is None else min(int(subset), family.num_latent_frames)
        dec = account_decode(vae, family.decode_input_shape(frames), dtype, plain_decode=family.plain_decode)
        decode_row = (dec.held + dec.recompute) / GIB
        with_autocast = static_step + held_calls
        phases["decode backward (one chunk recomputed)"] = with_autocast + dec.held + dec.recompute
        phases["denoiser backward (one call recomputed)"] = with_autocast + recompute
        assumptions.append(
            f"reward feedback: K={k} differentiable denoiser calls"
            + (f" (batch {forward_batch}: CFG)" if guided else "")
            + (", each checkpointed whole (activation_checkpointing)" if checkpointing else ", no checkpointing")
        )
        if dec.frames_per_chunk:
            assumptions.append(
                f"differentiable decode of {frames} latent frames, gradient-checkpointed per {dec.frames_per_chunk} "
                f"latent frame(s): {dec.held / GIB:.2f} GiB held (chunk inputs and carried caches) + "
                f"{dec.recompute / GIB:.2f} GiB while one chunk is recomputed"
            )
        else:
            assumptions.append(
                f"differentiable decode of {frames} latent frames: {type(vae).__name__} has no chunked decode, so "
                f"the plain decode runs under autograd and keeps {dec.held / GIB:.2f} GiB"
            )
        not_counted.append("reward models and their activations (face embedder, reward model)")
    assumptions.append(
        "per-block gradient checkpointing of the transformer: "
        + ("on" if per_block else "off")
        + (" (as the trainer does with activation_checkpointing)" if block_checkpointing is None else " (forced)")
    )
    if encoder_names:
        assumptions.append(
            "encoders ("
            + ", ".join(f"{n} {b / GIB:.2f}" for n, b in encoders.items())
            + " GiB) "
            + (
                "off the device during training steps"
                if precompute
                else "text/image encoders offloaded to the CPU between calls (offload_encoders), the VAE held"
                if offload_encoders
                else "held on the device (encoded every step)"
            )
        )
    not_counted += [
        "transient memory: gradients of activations, no-grad activations (sampling, encoders), allocator "
        "fragmentation, CUDA context",
    ]

    rows: dict[str, float | None] = {
        "weights": (trained_w + resident_frozen) / GIB,
        "encoders": encoders_in_step / GIB,
        "trainable": trainable / GIB,
        "grads": trainable / GIB,
        "optimizer": optimizer_state / GIB,
        "activations": held_denoiser / GIB,
    }
    if decode_row is not None:
        rows["vae_decode"] = decode_row
    peak = max(phases.values())
    rows["peak"] = peak / GIB
    if trainer == "reward_feedback":
        no_block_total = (k * acts.call_inputs + acts.total) if checkpointing else k * acts.total
        with_block_total = (
            (k * acts.call_inputs + acts.block_checkpointed) if checkpointing else k * acts.block_checkpointed
        )
    else:
        no_block_total, with_block_total = acts.total, acts.block_checkpointed
    return MemoryEstimate(
        recipe=source,
        hub_id=hub_id,
        trainer=trainer,
        latent_shape=family.latent_shape,
        rows=rows,
        phases={k_: v / GIB for k_, v in phases.items()},
        not_counted=not_counted,
        assumptions=assumptions,
        activations_variants={
            "without per-block checkpointing": no_block_total / GIB,
            "with per-block checkpointing": with_block_total / GIB,
        },
        budget_gib=float(budget_gib),
        seconds=time.perf_counter() - start,
    )


def format_estimate(est: MemoryEstimate) -> str:
    lines = [
        f"{est.recipe}: {est.trainer} on {est.hub_id}, latents {est.latent_shape}",
        f"{'part':<14}{'GiB':>12}",
    ]
    for name, value in est.rows.items():
        if name == "peak":
            continue
        lines.append(f"{name:<14}{'not counted' if value is None else f'{value:.2f}':>12}")
    lines.append("phases (the peak is the largest):")
    for name, value in est.phases.items():
        lines.append(f"  {value:8.2f} GiB  {name}")
    lines.append(f"{'peak':<14}{est.peak_gib:>12.2f}")
    for name, value in est.activations_variants.items():
        lines.append(f"  denoiser activations {name}: {value:.2f} GiB")
    verdict = "fits" if est.fits else "does NOT fit"
    lines.append(f"peak {est.peak_gib:.2f} GiB {verdict} the {est.budget_gib:g} GiB budget (counted parts only)")
    lines.extend(f"assumption: {a}" for a in est.assumptions)
    lines.extend(f"not counted: {n}" for n in est.not_counted)
    lines.append(f"accounted in {est.seconds:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="icreward estimate-memory",
        description="Accounted training memory of a recipe at the published full size (meta device, no GPU). "
        "Exit status 1 when the counted peak exceeds --budget_gib.",
    )
    parser.add_argument("--config", required=True, help="A recipe, e.g. examples/configs/dpo_wan21_i2v_480p.yaml")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE", help="Override a field.")
    parser.add_argument("--budget_gib", type=float, default=72.0)
    parser.add_argument(
        "--exact", action="store_true", help="Run every transformer block instead of extrapolating from 2 and 3."
    )
    parser.add_argument(
        "--block_checkpointing",
        choices=("trainer", "on", "off"),
        default="trainer",
        help="Per-block gradient checkpointing of the transformer: as the trainer does, or forced on/off.",
    )
    args = parser.parse_args(argv)
    recipe = load_recipe(args.config, args.override)
    block = {"trainer": None, "on": True, "off": False}[args.block_checkpointing]
    est = estimate_recipe_memory(
        recipe, source=str(args.config), budget_gib=args.budget_gib, block_checkpointing=block, exact=args.exact
    )
    print(format_estimate(est))
    return 0 if est.fits else 1
