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

Command line: ``icreward estimate-memory --config examples/configs/dpo_wan21_i2v_480p.yaml [--override key=value ...]``
(:mod:`icreward.cli.estimate_memory`).

The accountant is split by concern: :mod:`.saved_tensors` (counting what a forward saves, autocast emulation),
:mod:`.families` (each model family's inputs on ``meta``), :mod:`.recipes` (loading and reading recipes),
:mod:`.decode` (the differentiable VAE decode), :mod:`.report` (the result and its printed report); this module runs
the estimate in named phases. Every name those modules define is importable from here too.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .decode import DecodeAccounting, account_decode
from .families import (
    FAMILY_BUILDERS,
    FAMILY_TARGETS,
    FamilyBuilder,
    FamilyInputs,
    register_accounting_family,
)
from .recipes import load_recipe, recipe_dtype, recipe_field, recipe_trainer
from .report import MemoryEstimate, format_estimate
from .saved_tensors import (
    GIB,
    AutocastEmulation,
    SavedActivations,
    fused_attention_accounting,
    iter_tensors,
    lora_parameter_count,
    measure_repeated_blocks,
    measure_saved_activations,
)

__all__ = [
    "GIB",
    "AutocastEmulation",
    "DecodeAccounting",
    "FamilyBuilder",
    "FamilyInputs",
    "MemoryEstimate",
    "SavedActivations",
    "account_decode",
    "estimate_recipe_memory",
    "format_estimate",
    "fused_attention_accounting",
    "load_recipe",
    "lora_parameter_count",
    "measure_repeated_blocks",
    "measure_saved_activations",
    "register_accounting_family",
]


def _param_bytes(modules: Iterable[nn.Module]) -> int:
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


# ------------------------------------------------------------------------------------------------ estimate phases
@dataclasses.dataclass
class _Models:
    """The recipe's published components on ``meta``: which denoiser(s) are trained, which frozen, the encoders."""

    built: dict[str, nn.Module]
    encoder_names: list[str]
    trained_names: list[str]
    frozen_names: list[str]
    builder: FamilyBuilder

    @property
    def model(self) -> nn.Module:
        return self.built[self.trained_names[0]]

    @property
    def vae(self) -> nn.Module:
        return self.built["vae"]


def _build_models(recipe: dict[str, Any], source: str, hub_id: str, entry: Any, dtype: torch.dtype) -> _Models:
    from ..adapters.published_configs import build_meta_components

    names = [n for n in ("transformer", "transformer_2") if n in entry.components]
    encoder_names = [n for n in entry.components if n not in names]
    built = build_meta_components(hub_id, dtype=dtype, components=(*names, *encoder_names))
    expert = recipe.get("wan22_train_expert", "low_noise")
    trained_names = [names[0]]
    if len(names) == 2:
        if expert not in ("low_noise", "high_noise", "both"):
            raise ValueError(f"{source}: wan22_train_expert {expert!r} is not low_noise, high_noise or both")
        trained_names = {"low_noise": ["transformer_2"], "high_noise": ["transformer"], "both": names}[expert]
    frozen_names = [n for n in names if n not in trained_names]
    model = built[trained_names[0]]
    builder = FAMILY_BUILDERS.get(type(model).__name__)
    if builder is None:
        raise ValueError(
            f"{source}: no memory accounting for {type(model).__name__} (register_accounting_family); "
            f"known: {sorted(FAMILY_BUILDERS)}"
        )
    return _Models(built, encoder_names, trained_names, frozen_names, builder)


def _inject_lora(recipe: dict[str, Any], source: str, hub_id: str, models: _Models) -> tuple[int, int]:
    """Inject the recipe's LoRA into the trained denoiser(s) (float32, as the trainers train it); returns the
    trained denoisers' weight bytes before injection and the LoRA parameter count (checked against peft's)."""
    from peft import LoraConfig, inject_adapter_in_model

    built, trained_names = models.built, models.trained_names
    rank = int(recipe_field(recipe, "lora_r", source))
    targets = recipe.get("lora_target_modules") or FAMILY_TARGETS[type(models.model).__name__](hub_id)
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
    return trained_w, lora_params


def _forward_batch(recipe: dict[str, Any], trainer: str, batch: int, guided: bool) -> int:
    if trainer == "dpo":
        return 2 * batch  # chosen + rejected in one policy forward
    if trainer == "grpo":
        return int(recipe.get("backward_chunk_size", 1)) * (2 if guided else 1)
    return batch * (2 if guided else 1)


def _measure_denoiser(
    models: _Models, family: FamilyInputs, autocast: torch.dtype | None, exact: bool, assumptions: list[str]
) -> SavedActivations:
    model = models.model

    def forward():
        return model(**family.kwargs, return_dict=False)

    with AutocastEmulation(autocast) if autocast is not None else contextlib.nullcontext():
        acts = measure_repeated_blocks(
            forward, model, family.blocks_attr, call_inputs=list(iter_tensors(family.kwargs)), exact=exact
        )
    assumptions.append(
        f"LoRA parameters float32 (as the trainers cast them); {'bf16' if autocast == torch.bfloat16 else 'fp16'} "
        "autocast modelled on matmul-like ops (recipe bf16/fp16)"
        if autocast is not None
        else "LoRA parameters float32 (as the trainers cast them); no autocast (recipe bf16/fp16 unset): peft casts "
        "each LoRA layer's input to float32"
    )
    return acts


@dataclasses.dataclass
class _Weights:
    """Bytes of weights and optimizer state resident during the step, and the encoder/offload settings."""

    trained: int
    resident_frozen: int
    frozen: int
    encoders: dict[str, int]
    trainable: int
    precompute: bool
    offload_encoders: bool

    @property
    def optimizer_state(self) -> int:
        return 2 * self.trainable  # AdamW's two fp32 moments

    @property
    def static(self) -> int:
        """Denoiser weights held, LoRA parameters, their gradients and the optimizer state."""
        return self.trained + self.resident_frozen + self.trainable + self.trainable + self.optimizer_state

    @property
    def encoders_in_step(self) -> int:
        if self.precompute:
            return 0
        return self.encoders.get("vae", 0) if self.offload_encoders else sum(self.encoders.values())

    @property
    def static_step(self) -> int:
        return self.static + self.encoders_in_step


def _weight_phases(
    recipe: dict[str, Any],
    trainer: str,
    models: _Models,
    trained_w: int,
    lora_params: int,
    phases: dict[str, float],
    assumptions: list[str],
) -> _Weights:
    """The weights by phase: the phases before the training step (precompute, encoding, frozen-expert sampling)."""
    built, frozen_names = models.built, models.frozen_names
    frozen_w = _param_bytes(built[n] for n in frozen_names)
    encoders = {n: _param_bytes([built[n]]) for n in models.encoder_names}
    encoders_w = sum(encoders.values())
    offload_frozen = bool(recipe.get("offload_frozen_denoisers", False))
    precompute = trainer == "dpo" and bool(recipe.get("precompute_latents", True))
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
    offload_encoders = bool(recipe.get("offload_encoders", False))
    weights = _Weights(trained_w, resident_frozen, frozen_w, encoders, lora_params * 4, precompute, offload_encoders)
    static = weights.static
    if precompute:
        phases["precompute latents (encoders on the device, no autograd)"] = static + encoders_w
        assumptions.append("DPO precompute_latents: VAE and text/image encoders move to the CPU after caching")
    elif offload_encoders:
        # EncoderOffload: each encoder visits the device for its own call, before anything of the step is alive
        largest = max((b for n, b in encoders.items() if n != "vae"), default=0)
        vae_w = encoders.get("vae", 0)
        phases["encoding a batch (offloaded encoder on the device, no autograd)"] = static + vae_w + largest
    if trainer != "dpo" and offload_frozen and frozen_names:
        phases["sampling with the frozen expert (no autograd)"] = weights.static_step + frozen_w
    return weights


def _policy_step_phase(
    trainer: str, step_bytes: int, forward_batch: int, phases: dict[str, float], assumptions: list[str]
) -> None:
    """DPO's training step / GRPO's training piece: one forward + backward of the trained denoiser."""
    if trainer == "dpo":
        phases["training step (forward + backward)"] = step_bytes
        assumptions.append(f"DPO: one policy forward on chosen+rejected (batch {forward_batch}); reference is no-grad")
    else:
        phases["training piece (forward + backward)"] = step_bytes
        assumptions.append(
            f"GRPO: one forward/backward per trained transition on {forward_batch} latent(s) "
            "(backward_chunk_size, x2 under guidance); sampling, reference and decode without autograd"
        )


def _reward_feedback_phases(
    recipe: dict[str, Any],
    models: _Models,
    family: FamilyInputs,
    acts: SavedActivations,
    step_acts: int,
    static_step: int,
    dtype: torch.dtype,
    forward_batch: int,
    phases: dict[str, float],
    assumptions: list[str],
) -> tuple[int, float]:
    """Reward feedback's backward phases (K differentiable denoiser calls, the differentiable decode); returns the
    denoiser activations held and the decode's GiB."""
    vae = models.vae
    checkpointing = bool(recipe.get("activation_checkpointing", recipe.get("gradient_checkpointing", False)))
    guided = float(recipe.get("guidance_scale", 1.0)) > 1.0
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
    return held_denoiser, decode_row


def _setting_assumptions(
    models: _Models,
    weights: _Weights,
    per_block: bool,
    block_checkpointing: bool | None,
    assumptions: list[str],
    not_counted: list[str],
) -> None:
    assumptions.append(
        "per-block gradient checkpointing of the transformer: "
        + ("on" if per_block else "off")
        + (" (as the trainer does with activation_checkpointing)" if block_checkpointing is None else " (forced)")
    )
    if models.encoder_names:
        assumptions.append(
            "encoders ("
            + ", ".join(f"{n} {b / GIB:.2f}" for n, b in weights.encoders.items())
            + " GiB) "
            + (
                "off the device during training steps"
                if weights.precompute
                else "text/image encoders offloaded to the CPU between calls (offload_encoders), the VAE held"
                if weights.offload_encoders
                else "held on the device (encoded every step)"
            )
        )
    not_counted += [
        "transient memory: gradients of activations, no-grad activations (sampling, encoders), allocator "
        "fragmentation, CUDA context",
    ]


def _activation_variants(recipe: dict[str, Any], trainer: str, acts: SavedActivations) -> dict[str, float]:
    """The denoiser activations with and without per-block checkpointing (GiB)."""
    if trainer == "reward_feedback":
        checkpointing = bool(recipe.get("activation_checkpointing", recipe.get("gradient_checkpointing", False)))
        k = int(recipe.get("truncated_backprop_steps", 1))
        no_block_total = (k * acts.call_inputs + acts.total) if checkpointing else k * acts.total
        with_block_total = (
            (k * acts.call_inputs + acts.block_checkpointed) if checkpointing else k * acts.block_checkpointed
        )
    else:
        no_block_total, with_block_total = acts.total, acts.block_checkpointed
    return {
        "without per-block checkpointing": no_block_total / GIB,
        "with per-block checkpointing": with_block_total / GIB,
    }


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
    from ..adapters.published_configs import get_published_config

    start = time.perf_counter()
    hub_id = str(recipe_field(recipe, "model_name_or_path", source))
    entry = get_published_config(hub_id)
    trainer = recipe_trainer(recipe, source)
    if trainer not in ("dpo", "grpo", "reward_feedback"):
        raise ValueError(f"{source}: no memory accounting for trainer {trainer!r}")
    assumptions: list[str] = []
    not_counted: list[str] = []
    dtype = recipe_dtype(recipe, source, assumptions)
    autocast = torch.bfloat16 if recipe.get("bf16") else torch.float16 if recipe.get("fp16") else None
    models = _build_models(recipe, source, hub_id, entry, dtype)
    batch = int(recipe.get("per_device_train_batch_size", 1))
    trained_w, lora_params = _inject_lora(recipe, source, hub_id, models)

    checkpointing = bool(recipe.get("activation_checkpointing", recipe.get("gradient_checkpointing", False)))
    guided = float(recipe.get("guidance_scale", 1.0)) > 1.0
    forward_batch = _forward_batch(recipe, trainer, batch, guided)
    family = models.builder(models.model, models.vae, recipe, forward_batch, dtype, source)
    acts = _measure_denoiser(models, family, autocast, exact, assumptions)

    phases: dict[str, float] = {}
    weights = _weight_phases(recipe, trainer, models, trained_w, lora_params, phases, assumptions)
    per_block = checkpointing if block_checkpointing is None else bool(block_checkpointing)
    step_acts = acts.block_checkpointed if per_block else acts.total
    decode_row: float | None = None
    held_denoiser = step_acts
    if trainer in ("dpo", "grpo"):
        _policy_step_phase(trainer, weights.static_step + step_acts, forward_batch, phases, assumptions)
    else:
        held_denoiser, decode_row = _reward_feedback_phases(
            recipe, models, family, acts, step_acts, weights.static_step, dtype, forward_batch, phases, assumptions
        )
        not_counted.append("reward models and their activations (face embedder, reward model)")
    _setting_assumptions(models, weights, per_block, block_checkpointing, assumptions, not_counted)

    rows: dict[str, float | None] = {
        "weights": (weights.trained + weights.resident_frozen) / GIB,
        "encoders": weights.encoders_in_step / GIB,
        "trainable": weights.trainable / GIB,
        "grads": weights.trainable / GIB,
        "optimizer": weights.optimizer_state / GIB,
        "activations": held_denoiser / GIB,
    }
    if decode_row is not None:
        rows["vae_decode"] = decode_row
    rows["peak"] = max(phases.values()) / GIB
    return MemoryEstimate(
        recipe=source,
        hub_id=hub_id,
        trainer=trainer,
        latent_shape=family.latent_shape,
        rows=rows,
        phases={k_: v / GIB for k_, v in phases.items()},
        not_counted=not_counted,
        assumptions=assumptions,
        activations_variants=_activation_variants(recipe, trainer, acts),
        budget_gib=float(budget_gib),
        seconds=time.perf_counter() - start,
    )
