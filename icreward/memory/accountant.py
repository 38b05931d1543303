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

    def pre_hook(index):
        def hook(module, args, kwargs):
            current[0] = index
            for t in _tensors((args, kwargs)):
                key = _storage_key(t)
                if key not in excluded:
                    inputs.setdefault(key, _storage_bytes(t))

        return hook

    def post_hook(module, args, output):
        current[0] = None

    def pack(t):
        key = _storage_key(t)
        if key not in excluded and key not in saved:
            saved[key] = (_storage_bytes(t), current[0])
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


def lora_parameter_count(model: nn.Module, target_modules: Iterable[str], rank: int) -> int:
    """LoRA parameters peft adds: ``r * (in + out)`` per targeted ``nn.Linear`` (name equal to or ending in ``.t``)."""
    targets = list(target_modules)
    count = 0
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and any(name == t or name.endswith("." + t) for t in targets):
            count += rank * (module.in_features + module.out_features)
    return count


# ------------------------------------------------------------------------------------------------ recipes
_FAMILIES = {
    "WanTransformer3DModel": "wan",
    "CogVideoXTransformer3DModel": "cogvideox",
}


def _default_targets(hub_id: str, family: str) -> tuple[str, ...]:
    if family == "cogvideox":
        from ..adapters.cogvideox import CogVideoXI2VAdapter

        return tuple(CogVideoXI2VAdapter.default_lora_target_modules)
    from ..adapters.published_configs import get_published_config
    from ..adapters.wan import Wan22Adapter, WanI2VAdapter

    entry = get_published_config(hub_id)
    adapter = Wan22Adapter if "transformer_2" in entry.components else WanI2VAdapter
    return tuple(adapter.default_lora_target_modules)


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


@dataclasses.dataclass
class MemoryEstimate:
    recipe: str
    hub_id: str
    trainer: str
    latent_shape: tuple[int, ...]
    rows: dict[str, float | None]  # GiB; None = not counted
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
) -> MemoryEstimate:
    """Account one training step of ``recipe`` at its model's published size.

    ``block_checkpointing`` forces the transformer's per-block gradient checkpointing on/off; ``None`` uses what the
    trainer does today: DPO enables it with ``activation_checkpointing``, reward feedback checkpoints whole denoiser
    calls only.
    """
    from peft import LoraConfig, inject_adapter_in_model

    from ..adapters.published_configs import build_meta_components, get_published_config

    start = time.perf_counter()
    hub_id = str(_field(recipe, "model_name_or_path", source))
    entry = get_published_config(hub_id)
    trainer = _recipe_trainer(recipe, source)
    assumptions: list[str] = []
    dtype_name = recipe.get("dtype")
    if dtype_name is None:
        dtype_name = "bfloat16"
        assumptions.append("the recipe sets no dtype: frozen weights assumed bfloat16")
    dtype = getattr(torch, str(dtype_name), None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"{source}: dtype {dtype_name!r} is not a torch dtype")
    names = [n for n in ("transformer", "transformer_2") if n in entry.components]
    built = build_meta_components(hub_id, dtype=dtype, components=(*names, "vae"))
    vae = built.pop("vae")
    expert = recipe.get("wan22_train_expert", "low_noise")
    trained_name = names[0]
    if len(names) == 2:
        if expert not in ("low_noise", "high_noise"):
            raise ValueError(f"{source}: wan22_train_expert {expert!r} is not accounted (low_noise or high_noise)")
        trained_name = "transformer_2" if expert == "low_noise" else "transformer"
    model = built[trained_name]
    family = _FAMILIES.get(type(model).__name__)
    if family is None:
        raise ValueError(f"{source}: no memory accounting for {type(model).__name__}")

    weight_bytes = sum(p.numel() * p.element_size() for m in built.values() for p in m.parameters())

    batch = int(recipe.get("per_device_train_batch_size", 1))
    frames = int(_field(recipe, "num_frames", source))
    height, width = int(_field(recipe, "height", source)), int(_field(recipe, "width", source))
    rank = int(_field(recipe, "lora_r", source))
    targets = recipe.get("lora_target_modules") or _default_targets(hub_id, family)
    if isinstance(targets, str):
        targets = [targets]
    lora_params = lora_parameter_count(model, targets, rank)
    model.requires_grad_(False)
    inject_adapter_in_model(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets)), model)
    injected = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if injected != lora_params:
        raise RuntimeError(f"LoRA count {lora_params} differs from peft's {injected} for targets {targets}")

    if trainer == "dpo":
        forward_batch = 2 * batch  # chosen + rejected in one policy forward
    elif trainer == "grpo":
        # one forward/backward per trained transition and chunk of videos; classifier-free guidance doubles it
        guided = float(recipe.get("guidance_scale", 1.0)) > 1.0
        forward_batch = int(recipe.get("backward_chunk_size", 1)) * (2 if guided else 1)
    else:
        forward_batch = batch
    if family == "wan":
        t, s = int(vae.config.scale_factor_temporal), int(vae.config.scale_factor_spatial)
        if (frames - 1) % t or height % (2 * s) or width % (2 * s):
            raise ValueError(f"{source}: Wan needs num_frames = 4k+1 and height/width divisible by 16")
        shape = (forward_batch, int(model.config.in_channels), (frames - 1) // t + 1, height // s, width // s)
        text_len = int(recipe.get("max_sequence_length", 512))
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
        blocks = model.blocks
        latent_channels = int(vae.config.z_dim)
    else:
        t = int(vae.config.temporal_compression_ratio)
        s = 2 ** (len(vae.config.block_out_channels) - 1)
        p = int(model.config.patch_size)
        if (frames - 1) % t or height % (s * p) or width % (s * p):
            raise ValueError(f"{source}: CogVideoX needs num_frames = 4k+1 and height/width divisible by {s * p}")
        latent_frames = (frames - 1) // t + 1
        shape = (forward_batch, latent_frames, int(model.config.in_channels), height // s, width // s)
        text_len = int(recipe.get("max_sequence_length", model.config.max_text_seq_length))
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
        blocks = model.transformer_blocks
        latent_channels = int(vae.config.latent_channels)

    acts = measure_saved_activations(
        lambda: model(**kwargs, return_dict=False),
        model,
        blocks=blocks,
        call_inputs=[v for v in _tensors(kwargs)],
    )

    checkpointing = bool(recipe.get("activation_checkpointing", recipe.get("gradient_checkpointing", False)))
    not_counted: list[str] = [
        "text/image encoder and VAE weights (assumed off the GPU or precomputed)",
        "transient gradients of activations, allocator fragmentation, CUDA context",
    ]
    if trainer == "dpo":
        no_block, with_block = acts.total, acts.block_checkpointed
        per_block_default = checkpointing
        assumptions.append(f"DPO: one policy forward on chosen+rejected (batch {forward_batch}); reference is no-grad")
    elif trainer == "reward_feedback":
        k = int(recipe.get("truncated_backprop_steps", 1))
        if checkpointing:
            # each of the K denoiser calls is checkpointed whole: K calls' inputs are kept, one call is recomputed
            no_block = k * acts.call_inputs + acts.total
            with_block = k * acts.call_inputs + acts.block_checkpointed
        else:
            no_block = k * acts.total
            with_block = k * acts.block_checkpointed
        per_block_default = False
        not_counted.append("differentiable VAE decode (decode_frame_subset) and reward models")
        assumptions.append(
            f"reward feedback: K={k} differentiable denoiser calls, "
            + ("each checkpointed whole (trainer's activation_checkpointing)" if checkpointing else "no checkpointing")
        )
    elif trainer == "grpo":
        # Each piece's graph is freed by its own backward; sampling, the reference (KL) passes and the one-video
        # decode run without autograd, so one piece's activations are the peak.
        no_block, with_block = acts.total, acts.block_checkpointed
        per_block_default = checkpointing
        assumptions.append(
            f"GRPO: one forward/backward per trained transition on {forward_batch} latent(s) "
            "(backward_chunk_size, x2 under guidance); sampling, reference and decode without autograd"
        )
    else:
        raise ValueError(f"{source}: no memory accounting for trainer {trainer!r}")
    use_block = per_block_default if block_checkpointing is None else bool(block_checkpointing)
    activations = with_block if use_block else no_block
    assumptions.append(
        "per-block gradient checkpointing of the transformer: "
        + ("on" if use_block else "off")
        + (" (as the trainer does today)" if block_checkpointing is None else " (forced)")
    )

    trainable = lora_params * 4
    rows: dict[str, float | None] = {
        "weights": weight_bytes / GIB,
        "trainable": trainable / GIB,
        "grads": trainable / GIB,
        "optimizer": 2 * trainable / GIB,
        "activations": activations / GIB,
        "vae_decode": None if trainer == "reward_feedback" else 0.0,
    }
    if trainer != "reward_feedback":
        rows.pop("vae_decode")
    rows["peak"] = sum(v for v in rows.values() if v is not None)
    latent = list(shape)
    latent[0] = batch
    if family == "wan":
        latent[1] = latent_channels
    else:
        latent[2] = latent_channels
    return MemoryEstimate(
        recipe=source,
        hub_id=hub_id,
        trainer=trainer,
        latent_shape=tuple(latent),
        rows=rows,
        not_counted=not_counted,
        assumptions=assumptions,
        activations_variants={
            "without per-block checkpointing": no_block / GIB,
            "with per-block checkpointing": with_block / GIB,
        },
        budget_gib=float(budget_gib),
        seconds=time.perf_counter() - start,
    )


def format_estimate(est: MemoryEstimate) -> str:
    lines = [
        f"{est.recipe}: {est.trainer} on {est.hub_id}, latents {est.latent_shape}",
        f"{'phase':<14}{'GiB':>12}",
    ]
    for name, value in est.rows.items():
        lines.append(f"{name:<14}{'not counted' if value is None else f'{value:.2f}':>12}")
    for name, value in est.activations_variants.items():
        lines.append(f"  activations {name}: {value:.2f} GiB")
    verdict = "fits" if est.fits else "does NOT fit"
    lines.append(f"peak {est.peak_gib:.2f} GiB {verdict} the {est.budget_gib:g} GiB budget (counted phases only)")
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
        "--block_checkpointing",
        choices=("trainer", "on", "off"),
        default="trainer",
        help="Per-block gradient checkpointing of the transformer: as the trainer does today, or forced on/off.",
    )
    args = parser.parse_args(argv)
    recipe = load_recipe(args.config, args.override)
    block = {"trainer": None, "on": True, "off": False}[args.block_checkpointing]
    est = estimate_recipe_memory(
        recipe, source=str(args.config), budget_gib=args.budget_gib, block_checkpointing=block
    )
    print(format_estimate(est))
    return 0 if est.fits else 1
