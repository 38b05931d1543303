"""Reward feedback learning (DRaFT-K with a velocity KL regulariser, as in IPRO) for image-to-video pipelines.

```python
from peft import LoraConfig
from icreward import RewardFeedbackConfig, RewardFeedbackTrainer
from icreward.rewards.combined import FaceReward

trainer = RewardFeedbackTrainer(
    model=pipe,                                   # a diffusers I2V pipeline (Wan 2.1/2.2, CogVideoX) or an adapter
    reward_funcs={"face": (FaceReward("dlib"), 0.1)},
    args=RewardFeedbackConfig(output_dir="wan-ipro", num_inference_steps=8, truncated_backprop_steps=4),
    train_dataset="rows.jsonl",                   # rows: image, prompt, optional ground_truth (video or frame folder)
    peft_config=LoraConfig(r=32, lora_alpha=32),
)
trainer.train()
trainer.save_model()                              # LoRA in diffusers format + model card
pipe.load_lora_weights("wan-ipro")                # the model card shows the call (Wan 2.2's low-noise expert
                                                  # needs weight_name=... and load_into_transformer_2=True)
```

Each micro-step, for a batch of (reference image, prompt) rows:

1. encode the conditions (text, image) without gradients and draw pure noise ``x_T``;
2. run the sampler through all ``T`` steps with the pipeline's own sampler (``adapter.sampler(T)``: for diffusers
   pipelines a copy of ``pipe.scheduler`` stepped as the pipeline steps it, so with gradients off the sample is the
   pipeline's; the pipelines' ``__call__`` runs under ``no_grad``): the first ``T - K`` steps without autograd, the
   last ``K`` with it (DRaFT-K). With ``activation_checkpointing`` each trained denoiser call is checkpointed as a
   whole and the transformer checkpoints per block (scheduler steps are never recomputed);
3. on the ``K`` trained steps, also predict the velocity with the LoRA disabled on the same ``x_t`` (no
   gradients): the KL regulariser is :func:`icreward.losses.velocity_kl` of the two;
4. decode with the frozen VAE (optionally a window of latent frames) to ``[0, 1]`` and score with the rewards;
5. minimise ``-sum_i w_i * reward_i + kl_weight * KL``.

Logged metrics (``eval_`` prefix on evaluation): ``reward`` (the weighted total), ``rewards/<name>`` (each reward,
unweighted), ``rewards/<name>/<stat>`` (reward diagnostics, e.g. ``rewards/face/faces_found_rate``),
``rewards/<name>/nonfinite`` (scores replaced by the NaN guard), ``kl``, ``loss/reward``, ``loss/kl``, and the
Trainer's ``loss``, ``grad_norm`` and ``learning_rate``. Validation rounds log ``validation/reward`` and
``validation/rewards/<name>``.

Randomness. A step's only random draws are each row's initial noise ``x_T``, with ``decode_frame_subset`` the start
of its decoded window of latent frames, and with a stochastic scheduler (``CogVideoXDPMScheduler``) each step's noise
(the sampler's timesteps and its last ``K`` steps are fixed). All come from the row's own generator, seeded from
(``seed``, global step, row) in training and (``seed``, row) in evaluation and validation, where the row is its
:func:`prompt_row_id` (prompt and image; repeated rows are told apart). A row therefore gets the same noise and
window whatever batch, process or accumulation micro-batch it lands in: two processes with batch ``b`` train like
one process with batch ``2b`` (or batch ``b`` and two accumulation steps), up to float rounding;
``resume_from_checkpoint`` replays a run exactly; and every evaluation and validation round samples a row from the
same noise, so its curve moves only when the model does. The loss is the mean of ``-reward`` and of
``kl_weight * KL`` over the process's rows (no term is normalised over the batch); with equal per-process batches,
DDP's gradient averaging and the Trainer's division by the accumulation steps make it the mean over the global batch.
A custom collator that returns no ``row_ids`` falls back to one generator per micro-batch, seeded from (``seed``,
process, step, micro-batch): reproducible, but tied to the process layout. Rewards that draw random numbers
themselves, and dropout in the trained network, use the global RNG and are outside this guarantee.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import PIL.Image
import torch
from datasets import Dataset
from torch import nn
from torch.utils.checkpoint import checkpoint
from transformers import Trainer, TrainerCallback

from ..adapters import VideoModelAdapter
from ..adapters.base import DenoisingSampler, StatelessSampler
from ..losses import velocity_kl
from ..rewards.combined import BaseVideoReward, CombinedReward, as_video_reward
from .adapter_lora import (
    AdapterLoRATrainerMixin,
    batch_breakdown,
    describe_lora,
    image_identity,
    render_lora_model_card,
    row_id,
    seeded_generator,
)
from .checkpointing import CompleteCheckpointMixin
from .reward_feedback_config import RewardFeedbackConfig

logger = logging.getLogger(__name__)

__all__ = [
    "RewardFeedbackCollator",
    "RewardFeedbackTrainer",
    "TruncatedSample",
    "load_ground_truth_frames",
    "load_prompt_dataset",
    "prompt_row_id",
    "sample_with_truncated_backprop",
]

_ROW_KEY_COLUMN = "__reward_row_key"
_ROW_ID_COLUMN = "__reward_row_id"
#: IPRO's face-reward weight, the default weight of every reward.
DEFAULT_REWARD_WEIGHT = 0.1


# ---------------------------------------------------------------------------------------------------------------
# Sampling with truncated backpropagation (DRaFT-K)
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class TruncatedSample:
    """Result of :func:`sample_with_truncated_backprop`.

    Attributes:
        latents: the final latents ``x_0`` (with an autograd graph through the last ``K`` steps when grad mode is on).
        velocities: the policy's predictions on the ``K`` trained steps, in sampling order.
        reference_velocities: the LoRA-disabled predictions on the same inputs (empty unless requested).
        grad_timesteps: the ``K`` timesteps of the trained steps.
    """

    latents: torch.Tensor
    velocities: list[torch.Tensor]
    reference_velocities: list[torch.Tensor]
    grad_timesteps: torch.Tensor


def _concat_conditions(first: Mapping[str, Any], second: Mapping[str, Any]) -> dict[str, Any]:
    if set(first) != set(second):
        raise ValueError(f"condition keys differ: {sorted(first)} vs {sorted(second)}")
    return {k: torch.cat([first[k], second[k]]) if torch.is_tensor(first[k]) else first[k] for k in first}


def sample_with_truncated_backprop(
    adapter: VideoModelAdapter,
    latents: torch.Tensor,
    conditions: Mapping[str, torch.Tensor],
    sampler: DenoisingSampler | int | torch.Tensor | Sequence[float],
    *,
    num_grad_steps: int,
    negative_conditions: Mapping[str, torch.Tensor] | None = None,
    guidance_scale: float = 1.0,
    compute_reference: bool = False,
    checkpoint_steps: bool = False,
    generator: torch.Generator | list[torch.Generator] | None = None,
) -> TruncatedSample:
    """Sample from ``latents`` (pure noise) through every step, with autograd only on the last ``num_grad_steps``.

    The first ``T - num_grad_steps`` steps run under ``torch.no_grad()``, so their activations are never stored and
    peak memory does not depend on the number of steps. The trained steps run in the caller's grad mode (under an
    outer ``no_grad`` nothing is trained, which is how evaluation and validation sample). Every step, trained or not,
    is a step of the same sampler: the family's (``adapter.sampler``), which for diffusers pipelines is a copy of the
    pipeline's own scheduler, so with gradients off this returns what the pipeline samples from the same noise.

    Args:
        adapter: the model family's adapter (``predict``, ``sampler``, ``disable_lora``).
        latents: initial noise ``x_T``, shaped like the family's latents.
        conditions: from ``adapter.prepare_conditions``.
        sampler: a fresh ``adapter.sampler(T)`` (samplers keep multistep state: one per call), or ``T`` (an int) to
            make one here, or ``T + 1`` timesteps (stepped with the adapter's pure ``denoise_step``).
        num_grad_steps: ``K``, between 0 and ``T``.
        negative_conditions: conditions of the negative prompt, for classifier-free guidance.
        guidance_scale: CFG scale; 1 (the default, as IPRO) runs the denoiser once per step.
        compute_reference: also predict with the LoRA disabled on the trained steps' inputs (for the KL term).
        checkpoint_steps: checkpoint each trained denoiser call as a whole: only its inputs are kept, and the call
            is recomputed during the backward pass. Only the denoiser call is checkpointed, never the sampler step:
            a multistep scheduler's state advances exactly once per step, and its history tensors are ordinary
            graph nodes. (The trainer also turns on the denoiser's own per-block checkpointing, which then bounds
            the memory of that recomputation.)
        generator: the sampling generator(s) (one, or one per sample), for samplers with stochastic steps.
    """
    if isinstance(sampler, int):
        sampler = adapter.sampler(sampler, device=latents.device)
    elif not isinstance(sampler, DenoisingSampler):
        sampler = StatelessSampler(adapter, sampler)
    num_steps = sampler.num_steps
    if not 0 <= num_grad_steps <= num_steps:
        raise ValueError(
            f"num_grad_steps must be between 0 and the number of steps ({num_steps}), got {num_grad_steps}"
        )
    guided = guidance_scale != 1.0
    if guided and negative_conditions is None:
        raise ValueError("guidance_scale != 1 needs negative_conditions")
    batch = latents.shape[0]
    both_conditions = _concat_conditions(negative_conditions, conditions) if guided else None

    def velocity(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        t = t.to(x.device).expand(batch)
        if not guided:
            return adapter.predict(x, t, conditions)
        uncond, cond = adapter.predict(torch.cat([x, x]), torch.cat([t, t]), both_conditions).chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    timesteps = sampler.timesteps
    first_grad_step = num_steps - num_grad_steps
    latents = latents.detach()
    with torch.no_grad():
        for i in range(first_grad_step):
            v = velocity(latents, timesteps[i])
            latents = sampler.step(i, latents, v, conditions, generator=generator)
    velocities, reference_velocities = [], []
    for i in range(first_grad_step, num_steps):
        t = timesteps[i]
        if checkpoint_steps and torch.is_grad_enabled():
            v = checkpoint(velocity, latents, t, use_reentrant=False)
        else:
            v = velocity(latents, t)
        if compute_reference:
            with torch.no_grad(), adapter.disable_lora():
                reference_velocities.append(velocity(latents.detach(), t))
        velocities.append(v)
        latents = sampler.step(i, latents, v, conditions, generator=generator)
    grad_timesteps = torch.as_tensor(timesteps[first_grad_step:num_steps]).float().cpu()
    return TruncatedSample(latents, velocities, reference_velocities, grad_timesteps)


class _RewardFeedbackPolicy(nn.Module):
    """The module the Trainer optimises and (under DDP) wraps: sampling, KL and decoding in one forward.

    One forward per micro-step keeps DDP's contract (several denoiser calls happen inside it). Only the trained
    denoiser(s) are submodules, so the Trainer neither moves, wraps nor saves the VAE, encoders or rewards.
    """

    def __init__(
        self,
        adapter: VideoModelAdapter,
        *,
        num_inference_steps: int,
        num_grad_steps: int,
        kl_step_weights: list[float] | None,
        compute_kl: bool,
        guidance_scale: float,
        frame_axis: int | None,
    ):
        super().__init__()
        self.denoisers = nn.ModuleDict(adapter.trainable_modules)
        self.adapter = adapter
        self.num_inference_steps = num_inference_steps
        self.num_grad_steps = num_grad_steps
        self.kl_step_weights = kl_step_weights
        self.compute_kl = compute_kl
        self.guidance_scale = guidance_scale
        self.frame_axis = frame_axis
        self.checkpoint_steps = False

    def forward(
        self,
        noise: torch.Tensor,
        conditions: dict[str, torch.Tensor],
        negative_conditions: dict[str, torch.Tensor] | None = None,
        decode_starts: Sequence[int] | None = None,
        decode_length: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
    ) -> dict[str, torch.Tensor | None]:
        """Sample from ``noise``, return the decoded ``video`` and the per-sample ``kl`` (None without KL).

        With ``decode_length``, only latent frames ``decode_starts[i] : decode_starts[i] + decode_length`` of sample
        ``i`` are decoded (one window per sample, so a sample's window does not depend on its batch). ``generator``
        (one per sample) feeds samplers with stochastic steps.
        """
        sample = sample_with_truncated_backprop(
            self.adapter,
            noise,
            conditions,
            self.new_sampler(noise.device),
            num_grad_steps=self.num_grad_steps,
            negative_conditions=negative_conditions,
            guidance_scale=self.guidance_scale,
            compute_reference=self.compute_kl,
            checkpoint_steps=self.checkpoint_steps,
            generator=generator,
        )
        kl = None
        if self.compute_kl and sample.velocities:
            kl = velocity_kl(sample.velocities, sample.reference_velocities, self.kl_step_weights)
        latents = sample.latents
        if decode_length is not None:
            if len(decode_starts) != latents.shape[0]:
                raise ValueError(f"got {len(decode_starts)} decode_starts for a batch of {latents.shape[0]}")
            if len(set(decode_starts)) == 1:
                latents = latents.narrow(self.frame_axis, decode_starts[0], decode_length)
            else:
                axis = self.frame_axis - 1  # of one sample
                windows = [
                    x.narrow(axis, start, decode_length) for x, start in zip(latents, decode_starts, strict=True)
                ]
                latents = torch.stack(windows)
        return {"video": self.adapter.decode_latents(latents), "kl": kl}

    def new_sampler(self, device: torch.device | str | None = None) -> DenoisingSampler:
        """A fresh run of the family's sampler (samplers are stateful: one per sampled batch)."""
        return self.adapter.sampler(self.num_inference_steps, device=device)

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """Called by the Trainer for ``activation_checkpointing``: checkpoint each trained denoiser call as a whole
        (only its inputs are kept across the K steps) AND turn on the denoiser's own per-block gradient checkpointing
        (``adapter.enable_gradient_checkpointing``), so that recomputing one call in the backward pass keeps only the
        blocks' inputs plus one block's activations instead of the whole call's."""
        self.checkpoint_steps = True
        try:
            self.adapter.enable_gradient_checkpointing()
        except TypeError as error:  # a plug-in denoiser without per-block checkpointing: whole calls only
            logger.warning(
                "per-block gradient checkpointing is unavailable (%s): checkpointing whole calls only", error
            )

    def activation_checkpointing_disable(self) -> None:
        self.checkpoint_steps = False
        self.adapter.disable_gradient_checkpointing()

    gradient_checkpointing_enable = activation_checkpointing_enable
    gradient_checkpointing_disable = activation_checkpointing_disable

    @property
    def is_activation_checkpointing(self) -> bool:
        return self.checkpoint_steps


# ---------------------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------------------


def load_prompt_dataset(data: Any) -> Dataset:
    """Rows of ``image`` (path or PIL), ``prompt`` and optional ``ground_truth`` as a ``datasets.Dataset``.

    Accepts a ``Dataset``, a list of dicts, or a ``.jsonl`` / ``.json`` file (relative paths in ``image`` and
    ``ground_truth`` are resolved against the file's folder). ``ground_truth`` is a video file, a folder of frames,
    or a list of frame images: the real clip whose faces form IPRO's face pool.
    """
    base_dir: Path | None = None
    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.is_file():
            raise FileNotFoundError(f"dataset file {path} does not exist")
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".jsonl":
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        elif path.suffix == ".json":
            rows = json.loads(text)
        else:
            raise ValueError(f"unsupported dataset file {path}: use .jsonl or .json (or pass a datasets.Dataset)")
        data, base_dir = rows, path.parent
    if isinstance(data, (list, tuple)):
        if not data or not all(isinstance(row, Mapping) for row in data):
            raise ValueError("a dataset given as a list must be a non-empty list of dicts (image, prompt, ...)")
        rows = [dict(row) for row in data]
        if base_dir is not None:
            for row in rows:
                for column in ("image", "ground_truth"):
                    row[column] = _resolve_paths(row.get(column), base_dir)
        data = Dataset.from_list(rows)
    if not isinstance(data, Dataset):
        raise TypeError(
            f"expected a datasets.Dataset, a list of dicts or a .jsonl/.json path, got {type(data).__name__} "
            "(iterable datasets are not supported: rows are checked before training)"
        )
    missing = [c for c in ("image", "prompt") if c not in data.column_names]
    if missing:
        raise ValueError(f"dataset lacks column(s) {missing}; rows need image, prompt and optionally ground_truth")
    if len(data) == 0:
        raise ValueError("the dataset is empty")
    return data


def _resolve_paths(value: Any, base_dir: Path) -> Any:
    if isinstance(value, str) and value and not os.path.isabs(value):
        return str(base_dir / value)
    if isinstance(value, list):
        return [_resolve_paths(v, base_dir) for v in value]
    return value


def _open_image(image: Any) -> PIL.Image.Image | str | os.PathLike:
    """A row's image as something :func:`icreward.video.load_image` reads (datasets' undecoded dicts included)."""
    if isinstance(image, Mapping):  # datasets.Image(decode=False): {"bytes": ..., "path": ...}
        if image.get("bytes"):
            return PIL.Image.open(io.BytesIO(image["bytes"]))
        if image.get("path"):
            return image["path"]
        raise ValueError("image dict has neither bytes nor path")
    return image


def load_ground_truth_frames(value: Any, *, max_frames: int | None = None) -> torch.Tensor | None:
    """A row's ``ground_truth`` as ``uint8 (P, 3, H, W)`` at its own resolution, or None when the row has none.

    ``value``: a video file or a folder of frames (read with :func:`icreward.video.read_video`, ``max_frames`` evenly
    spaced frames), or a list of frame images (paths or PIL). All frames must share one size.
    """
    from ..video import load_image, read_video

    if value is None or (isinstance(value, str) and not value):
        return None
    if isinstance(value, (str, os.PathLike)):
        return read_video(value, max_frames=max_frames)
    if isinstance(value, (list, tuple)):
        if not value:
            return None
        frames = [load_image(_open_image(frame)) for frame in value]
        if max_frames is not None and len(frames) > max_frames:
            from ..video import sample_frame_indices

            frames = [frames[i] for i in sample_frame_indices(len(frames), max_frames)]
        for i, frame in enumerate(frames):
            if frame.shape != frames[0].shape:
                raise ValueError(
                    f"ground-truth frames must share one size: frame {i} is {frame.shape[2]}x{frame.shape[1]} but "
                    f"frame 0 is {frames[0].shape[2]}x{frames[0].shape[1]}"
                )
        return torch.stack(frames)
    raise ValueError(
        f"ground_truth must be a video path, a frame folder or a list of frames, got {type(value).__name__}"
    )


def _row_key(row: Mapping[str, Any]) -> str:
    """Stable id of a row's (reference image, ground truth): per-row reward state (face pools) is cached under it."""
    image = row["image"]
    if isinstance(image, (str, os.PathLike)):
        image_id = os.path.abspath(os.fspath(image))
    else:
        opened = _open_image(image)
        if isinstance(opened, PIL.Image.Image):
            digest = hashlib.sha1(opened.convert("RGB").tobytes())
            digest.update(repr(opened.size).encode())
            image_id = digest.hexdigest()
        else:
            image_id = os.path.abspath(os.fspath(opened))
    ground_truth = row.get("ground_truth")
    return hashlib.sha1(json.dumps([image_id, repr(ground_truth)]).encode()).hexdigest()


def prompt_row_id(row: Mapping[str, Any]) -> str:
    """A stable identifier of a row (its prompt and its image: the path as given, or a digest of an in-memory
    image's content), used to seed its sampling noise and frame window: a
    :func:`~icreward.trainers.adapter_lora.row_id`. The trainer disambiguates repeated rows (``#2``, ``#3`` ...).
    """
    return row_id(str(row.get("prompt")), image_identity(row["image"]))


class RewardFeedbackCollator:
    """Collate ``image`` / ``prompt`` / ``ground_truth`` rows into what the trainer and the rewards read.

    Returns ``images`` (RGB PIL, cover-resized to ``height x width``, the conditioning images), ``reference_images``
    (the same as ``(B, 3, H, W)`` float in ``[0, 1]``), ``prompts``, ``keys`` (ids of the reference image and ground
    truth, under which the rewards keep per-row state such as face pools), ``row_ids`` (ids of the rows, which seed
    their noise: :func:`prompt_row_id`, or the trainer's precomputed column), ``ground_truth`` (the raw column) and,
    with ``load_ground_truth_frames``, ``ground_truth_frames`` (``uint8`` clips at their own resolution, or None).
    A custom collator may leave out ``row_ids``: the trainer then seeds noise per micro-batch and process.
    """

    def __init__(
        self,
        *,
        height: int,
        width: int,
        load_ground_truth_frames: bool = False,
        ground_truth_max_frames: int | None = None,
    ):
        self.height, self.width = height, width
        self.load_ground_truth_frames = load_ground_truth_frames
        self.ground_truth_max_frames = ground_truth_max_frames

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        import numpy as np

        from ..data.dpo_pairs import load_reference_image

        images = [load_reference_image(_open_image(r["image"]), height=self.height, width=self.width) for r in rows]
        reference = torch.stack([torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1) for image in images])
        batch = {
            "images": images,
            "reference_images": reference.float() / 255.0,
            "prompts": [r["prompt"] for r in rows],
            "keys": [r[_ROW_KEY_COLUMN] if _ROW_KEY_COLUMN in r else _row_key(r) for r in rows],
            "row_ids": [r[_ROW_ID_COLUMN] if _ROW_ID_COLUMN in r else prompt_row_id(r) for r in rows],
            "ground_truth": [r.get("ground_truth") for r in rows],
        }
        if self.load_ground_truth_frames:
            batch["ground_truth_frames"] = [
                load_ground_truth_frames(r.get("ground_truth"), max_frames=self.ground_truth_max_frames) for r in rows
            ]
        return batch


# ---------------------------------------------------------------------------------------------------------------
# Validation videos
# ---------------------------------------------------------------------------------------------------------------


class _ValidationCallback(TrainerCallback):
    """Generate validation videos before training and every ``validation_steps`` optimiser steps."""

    def __init__(self, trainer: RewardFeedbackTrainer):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.trainer.generate_validation_videos()

    def on_step_end(self, args, state, control, **kwargs):
        if args.validation_steps and state.global_step % args.validation_steps == 0:
            self.trainer.generate_validation_videos()


# ---------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------


class RewardFeedbackTrainer(CompleteCheckpointMixin, AdapterLoRATrainerMixin, Trainer):
    """Reward feedback learning with truncated backpropagation and a velocity KL regulariser (DRaFT-K / IPRO).

    Args:
        model: a diffusers image-to-video pipeline (``WanImageToVideoPipeline`` for Wan 2.1 and Wan 2.2 A14B,
            ``CogVideoXImageToVideoPipeline``), a Hub id / local folder of one, or a
            :class:`~icreward.adapters.VideoModelAdapter`. LoRA goes into its denoiser (for Wan 2.2, the expert(s)
            chosen by ``args.wan22_train_expert``; IPRO trains only the low-noise expert).
        reward_funcs: what to maximise: a :class:`~icreward.rewards.combined.VideoReward` (any
            ``(video, reference_images, batch) -> (B,)`` callable, a ``FaceIdentityReward``, an ``ICRewardModel``
            ...), a list of them (weights from ``args.reward_weights``, default 0.1 each), a mapping
            ``{name: reward}`` or ``{name: (reward, weight)}``, or a
            :class:`~icreward.rewards.combined.CombinedReward`. Reward parameters are frozen; rewards that are
            modules are moved to the training device.
        args: a :class:`RewardFeedbackConfig`.
        train_dataset, eval_dataset: rows with ``image`` (path or PIL), ``prompt`` and optional ``ground_truth``
            (video file or frame folder for the face pool): a ``datasets.Dataset``, a list of dicts or a
            ``.jsonl``/``.json`` path. Every row is loaded and passed to the rewards' ``prepare`` before training, so
            that a bad row (unreadable file, ground-truth frames of different sizes, a reference without a
            detectable face for a face reward) fails with a message naming it. ``eval_dataset`` gives the mean
            reward of samples from fixed noise.
        processing_class: unused by the loss (pipelines carry their own tokenizers); saved if given.
        callbacks, optimizers: as in :class:`transformers.Trainer`.
        peft_config: a peft ``LoraConfig``; ``target_modules=None`` uses the family's defaults. Required unless the
            model already carries a LoRA adapter (the KL reference is the adapter-disabled network).
        data_collator: defaults to :class:`RewardFeedbackCollator`.
        reward: alias of ``reward_funcs``.
    """

    _tag_names = ["icreward", "reward-feedback", "draft", "ipro", "diffusers", "lora"]

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: RewardFeedbackConfig | None = None,
        train_dataset: Dataset | list | str | os.PathLike | None = None,
        eval_dataset: Dataset | list | str | os.PathLike | None = None,
        processing_class: Any | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        peft_config: Any | None = None,
        data_collator: Callable | None = None,
        *,
        reward: Any = None,
    ):
        if args is None:
            args = RewardFeedbackConfig(output_dir="reward-feedback")
        elif not isinstance(args, RewardFeedbackConfig):
            raise TypeError(f"args must be a RewardFeedbackConfig, got {type(args).__name__}")
        if reward is not None and reward_funcs is not None:
            raise ValueError("pass the reward as reward_funcs or as reward, not both")
        reward_funcs = reward if reward_funcs is None else reward_funcs
        if reward_funcs is None:
            raise ValueError("RewardFeedbackTrainer needs reward_funcs: the reward(s) to maximise")
        if train_dataset is None:
            raise ValueError("RewardFeedbackTrainer needs a train_dataset of (image, prompt[, ground_truth]) rows")

        adapter = self._resolve_adapter(model, args)
        self._setup_lora(
            adapter,
            peft_config,
            requirement="RewardFeedbackTrainer trains LoRA adapters (the KL reference is the LoRA-disabled network)",
        )
        self.adapter = adapter
        self.reward = self._build_reward(reward_funcs, args.reward_weights)
        self.reward.eval().requires_grad_(False)

        self._check_trained_steps(adapter, adapter.sampler(args.num_inference_steps).timesteps, args)
        frame_axis = self._latent_frame_axis(adapter) if args.decode_frame_subset is not None else None
        self._allow_unused_experts(adapter, args)

        train_dataset = self._with_row_keys(load_prompt_dataset(train_dataset))
        if eval_dataset is not None:
            eval_dataset = self._with_row_keys(load_prompt_dataset(eval_dataset))

        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._noise_step, self._noise_micro, self._eval_batch_index = -1, 0, 0
        self._latent_shape_cache: tuple[int, ...] | None = None
        self._warned_no_reward_gradient = False
        self._warned_no_reward_signal: set[str] = set()
        self._warned_video_trackers: set[str] = set()

        policy = _RewardFeedbackPolicy(
            adapter,
            num_inference_steps=args.num_inference_steps,
            num_grad_steps=args.truncated_backprop_steps,
            kl_step_weights=args.kl_step_weights,
            compute_kl=args.kl_weight > 0,
            guidance_scale=args.guidance_scale,
            frame_axis=frame_axis,
        )
        collator = RewardFeedbackCollator(
            height=args.height,
            width=args.width,
            load_ground_truth_frames=self.reward.needs_ground_truth_frames,
            ground_truth_max_frames=args.ground_truth_max_frames,
        )
        super().__init__(
            model=policy,
            args=args,
            data_collator=data_collator or collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self._validation_collator = collator
        device = self.args.device
        self._move_encoders(device)
        self._move_frozen_denoisers(device)
        self.reward.to(device)

        # Fail on bad rows before the first step, and build per-row reward state (face pools) once.
        self._prepare_rewards(self.train_dataset, "train_dataset")
        if self.eval_dataset is not None:
            self._prepare_rewards(self.eval_dataset, "eval_dataset")
        validation_source = self.eval_dataset if self.eval_dataset is not None else self.train_dataset
        count = min(args.num_validation_videos, len(validation_source))
        self._validation_rows = [validation_source[i] for i in range(count)] if args.validation_steps else []
        if self._validation_rows:
            self.add_callback(_ValidationCallback(self))

    # ------------------------------------------------------------------------------------------------ setup
    @staticmethod
    def _build_reward(reward_funcs: Any, reward_weights: list[float] | None) -> CombinedReward:
        """Normalise every accepted reward form into one :class:`CombinedReward`."""
        if isinstance(reward_funcs, CombinedReward):
            if reward_weights is not None:
                raise ValueError("reward_weights is set in the config but the CombinedReward carries its own weights")
            return reward_funcs
        if isinstance(reward_funcs, Mapping):
            names = list(reward_funcs)
            entries = [reward_funcs[n] for n in names]
            explicit = [isinstance(e, tuple) for e in entries]
            if any(explicit) and reward_weights is not None:
                raise ValueError(
                    "reward weights are given twice: in the {name: (reward, weight)} mapping and in "
                    "config.reward_weights; keep one"
                )
            rewards = [e[0] if isinstance(e, tuple) else e for e in entries]
            weights = [e[1] if isinstance(e, tuple) else None for e in entries]
        else:
            items = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
            rewards = [as_video_reward(r) for r in items]
            names = _unique_names(rewards)
            weights = [None] * len(rewards)
        if reward_weights is not None:
            if len(reward_weights) != len(rewards):
                raise ValueError(f"got {len(reward_weights)} reward_weights for {len(rewards)} rewards ({names})")
            weights = list(reward_weights)
        weights = [DEFAULT_REWARD_WEIGHT if w is None else float(w) for w in weights]
        return CombinedReward({n: (r, w) for n, r, w in zip(names, rewards, weights, strict=True)})

    @staticmethod
    def _check_trained_steps(adapter: VideoModelAdapter, timesteps: torch.Tensor, args: RewardFeedbackConfig) -> None:
        """The K trained steps (of the sampler's ``T`` timesteps) must reach the trained expert (Wan 2.2), or no LoRA
        parameter gets a gradient; with ``offload_frozen_denoisers`` they must all run a trained expert."""
        num_steps = len(timesteps)
        trained = torch.as_tensor(timesteps[num_steps - args.truncated_backprop_steps : num_steps]).float().cpu()
        low, high = adapter.timestep_bounds
        inside = (trained >= low) & (trained <= high)
        if not bool(inside.any()):
            raise ValueError(
                f"none of the K={args.truncated_backprop_steps} trained steps (timesteps "
                f"{[round(float(t), 1) for t in trained]}) falls in the trained expert's range [{low:.0f}, {high:.0f}] "
                f"of {adapter!r}: no LoRA parameter would receive a gradient. Raise truncated_backprop_steps or "
                "train the other expert (wan22_train_expert)."
            )
        if not bool(inside.all()):
            if args.offload_frozen_denoisers and adapter.frozen_denoisers:
                raise ValueError(
                    f"offload_frozen_denoisers=True, but {int((~inside).sum())} of the K={len(trained)} trained steps "
                    f"(timesteps {[round(float(t), 1) for t in trained]}) run a frozen expert "
                    f"({sorted(adapter.frozen_denoisers)}): backpropagating through an offloaded expert is not "
                    "supported. Lower truncated_backprop_steps, train both experts, or keep the experts on the device."
                )
            logger.info(
                "%d of the %d trained steps run the frozen expert: gradients pass through it to the trained one",
                int((~inside).sum()),
                len(trained),
            )

    @staticmethod
    def _latent_frame_axis(adapter: VideoModelAdapter) -> int:
        """The batched latent axis that indexes frames (``adapter.latent_frame_axis``), needed to decode a window."""
        axis = getattr(adapter, "latent_frame_axis", None)
        if axis is None:
            raise ValueError(
                f"decode_frame_subset needs to know which latent axis is time, but {type(adapter).__name__} does not "
                "say: give the adapter a `latent_frame_axis` attribute, or set decode_frame_subset=None"
            )
        return int(axis)

    @staticmethod
    def _with_row_keys(dataset: Dataset) -> Dataset:
        """Add the reward-state key and the noise id of every row as columns (computed once, read by the collator).

        Repeated rows (same prompt and image) get distinct noise ids, ``prompt_row_id(row) + "#k"`` for the k-th
        repeat in dataset order, so that an upsampled row is not sampled twice from the same noise in one step.
        """
        keys, ids, seen = [], [], Counter()
        for row in dataset:
            keys.append(_row_key(row))
            base = prompt_row_id(row)
            seen[base] += 1
            ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
        existing = [c for c in (_ROW_KEY_COLUMN, _ROW_ID_COLUMN) if c in dataset.column_names]
        if existing:
            dataset = dataset.remove_columns(existing)
        return dataset.add_column(_ROW_KEY_COLUMN, keys).add_column(_ROW_ID_COLUMN, ids)

    def _reward_uses_rows(self) -> bool:
        """Whether some reward overrides ``prepare`` (so ground-truth clips must be decoded up front)."""
        rewards = self.reward.rewards.values()
        return any(type(r).prepare is not BaseVideoReward.prepare for r in rewards)

    def _prepare_rewards(self, dataset: Dataset, what: str) -> None:
        """Load every row (reference image, ground truth) and hand it to the rewards' ``prepare``."""
        from ..rewards.face import FaceNotFoundError
        from ..video import load_image

        decode = self._reward_uses_rows()
        done: set[str] = set()
        for index in range(len(dataset)):
            row = dataset[index]
            key = row[_ROW_KEY_COLUMN]
            if not isinstance(row["prompt"], str):
                raise ValueError(f"{what} row {index}: prompt must be a string, got {type(row['prompt']).__name__}")
            if key in done:
                continue
            described = _describe(row["image"])
            try:
                reference = load_image(_open_image(row["image"])).float() / 255.0
            except Exception as error:
                raise ValueError(f"{what} row {index}: cannot load image {described}: {error}") from error
            ground_truth = row.get("ground_truth")
            frames = None
            if ground_truth not in (None, "", []):
                if decode:
                    try:
                        frames = load_ground_truth_frames(ground_truth, max_frames=self.args.ground_truth_max_frames)
                    except Exception as error:
                        raise ValueError(
                            f"{what} row {index}: cannot use ground_truth {_describe(ground_truth)}: {error}"
                        ) from error
                elif isinstance(ground_truth, (str, os.PathLike)) and not os.path.exists(ground_truth):
                    raise ValueError(f"{what} row {index}: ground_truth {ground_truth} does not exist")
            try:
                self.reward.prepare(reference, frames, key=key)
            except FaceNotFoundError as error:
                raise FaceNotFoundError(f"{what} row {index} (image {described}): {error}") from error
            done.add(key)

    # ------------------------------------------------------------------------------------------------- step
    def _row_generator(self, training: bool, row: str) -> torch.Generator:
        """A row's generator, keyed by (seed, global step, row) in training and (seed, row) in evaluation and
        validation: never by its batch, process or micro-batch."""
        if training:
            return seeded_generator(self.args.seed, "train", self.state.global_step, row)
        return seeded_generator(self.args.seed, "eval", row)

    def _batch_generator(self, training: bool) -> torch.Generator:
        """Fallback for batches without ``row_ids``: one generator per (seed, process, step, micro-batch) in training
        and per (seed, process, evaluation batch) in evaluation: reproducible, but tied to the process layout."""
        if training:
            index = ("train", *self._micro_batch_index())
        else:
            index = ("eval", self._eval_batch_index)  # the same noise at every evaluation
            self._eval_batch_index += 1
        return seeded_generator(self.args.seed, self.accelerator.process_index, *index)

    def _draw_noise(
        self, batch_size: int, training: bool, row_ids: Sequence[str] | None
    ) -> tuple[torch.Tensor, list[int] | None, torch.Generator | list[torch.Generator]]:
        """Every random draw of a step: each row's initial noise ``x_T``, (with ``decode_frame_subset``) the start
        of its decoded window of latent frames and, for samplers with stochastic steps (``CogVideoXDPMScheduler``),
        each step's noise, all from that row's own generator.

        A row's draws depend only on the seed, the row and (in training) the global step, so two processes with batch
        ``b`` sample exactly what one process with batch ``2b`` (or batch ``b`` and two accumulation steps) does, and
        resuming replays the run. Everything else in a step is deterministic (the sampler's timesteps and its last
        ``K`` steps are fixed). Returns the noise ``(B, *latent shape)`` on the training device, the window starts
        (None when the whole video is decoded) and the generator(s) the sampler's steps draw from.
        """
        shape = self._latent_shape()
        if row_ids is None:
            generator = self._batch_generator(training)
            noise = torch.randn((batch_size, *shape), generator=generator)
            start = self._decode_start(generator)
            starts = None if start is None else [start] * batch_size
            generators = generator
        else:
            if len(row_ids) != batch_size:
                raise ValueError(f"got {len(row_ids)} row_ids for a batch of {batch_size} rows")
            generators = [self._row_generator(training, row) for row in row_ids]
            noise = torch.stack([torch.randn(shape, generator=g) for g in generators])
            starts = [self._decode_start(g) for g in generators]
            starts = None if starts[0] is None else starts
        return noise.to(self.args.device), starts, generators

    def _latent_shape(self) -> tuple[int, ...]:
        """Per-sample latent shape for the configured video size (the adapter's ``latent_shape``)."""
        if self._latent_shape_cache is None:
            args = self.args
            shape = self.adapter.latent_shape(1, args.num_frames, args.height, args.width)
            self._latent_shape_cache = tuple(shape[1:])
        return self._latent_shape_cache

    def _encode_conditions(self, inputs: Mapping[str, Any]):
        args, device = self.args, self.args.device
        size = {"num_frames": args.num_frames, "height": args.height, "width": args.width}
        with torch.no_grad():
            conditions = self.adapter.prepare_conditions(inputs["images"], inputs["prompts"], **size)
            negative = None
            if args.guidance_scale != 1.0:
                negative_prompts = [args.negative_prompt] * len(inputs["prompts"])
                negative = self.adapter.prepare_conditions(inputs["images"], negative_prompts, **size)
        move = lambda c: None if c is None else {k: v.to(device) if torch.is_tensor(v) else v for k, v in c.items()}  # noqa: E731
        return move(conditions), move(negative)

    def _decode_length(self) -> int | None:
        """Latent frames decoded per sample (``decode_frame_subset``), or None when the whole video is decoded."""
        subset = self.args.decode_frame_subset
        if subset is None:
            return None
        num_latent_frames = self._latent_shape()[self.model_wrapped_policy.frame_axis - 1]
        return subset if subset < num_latent_frames else None

    def _decode_start(self, generator: torch.Generator) -> int | None:
        """The first latent frame of a decoded window, drawn from ``generator`` (None: the whole video)."""
        length = self._decode_length()
        if length is None:
            return None
        num_latent_frames = self._latent_shape()[self.model_wrapped_policy.frame_axis - 1]
        return int(torch.randint(0, num_latent_frames - length + 1, (1,), generator=generator))

    @property
    def model_wrapped_policy(self) -> _RewardFeedbackPolicy:
        """The unwrapped policy module (whatever DDP / accelerate wrapped around it)."""
        return self.accelerator.unwrap_model(self.model)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        args = self.args
        training = model.training
        conditions, negative = self._encode_conditions(inputs)
        noise, starts, generators = self._draw_noise(len(inputs["prompts"]), training, inputs.get("row_ids"))
        length = None if starts is None else self._decode_length()
        out = model(noise, conditions, negative, decode_starts=starts, decode_length=length, generator=generators)
        video, kl = out["video"], out["kl"]
        reference_images = inputs["reference_images"].to(video.device)
        rewards = self.reward.compute(video, reference_images, inputs)
        if training and torch.is_grad_enabled() and not rewards.total.requires_grad:
            self._warn_no_reward_gradient()
        if training:
            self._warn_no_reward_signal(rewards.stats, video.shape[0])

        # Means over this process's rows: with equal per-process batches, DDP's gradient averaging (and the Trainer's
        # division by the accumulation steps) makes the loss the mean over the global batch, whatever its layout.
        reward_loss = -rewards.total.mean()
        loss = reward_loss
        per_sample = {"reward": rewards.total, **{f"rewards/{name}": v for name, v in rewards.rewards.items()}}
        scalars = {f"rewards/{name}/nonfinite": float(n) for name, n in rewards.num_nonfinite.items()}
        scalars.update({f"rewards/{name}": value for name, value in rewards.stats.items()})
        scalars["loss/reward"] = float(reward_loss.detach())
        if kl is not None:
            kl_loss = args.kl_weight * kl.mean()
            loss = loss + kl_loss
            per_sample["kl"] = kl
            scalars["loss/kl"] = float(kl_loss.detach())
        self._store(per_sample, training, scalars)
        outputs = {"rewards": rewards.total.detach()}
        return (loss, outputs) if return_outputs else loss

    def _warn_no_reward_gradient(self) -> None:
        if not self._warned_no_reward_gradient:
            logger.warning(
                "the reward has no gradient with respect to the generated video (a non-differentiable reward, or one "
                "computed under no_grad): only the KL term trains the model"
            )
            self._warned_no_reward_gradient = True

    def _warn_no_reward_signal(self, stats: dict[str, float], batch_size: int) -> None:
        """Warn once per reward when it found nothing to score in a whole training batch (no face in any video): it
        then gives its constant no-face value with zero gradient, and a run can train with loss 0 and grad norm 0."""
        for key, value in stats.items():
            name, _, stat = key.rpartition("/")
            if stat == "no_face_videos" and value >= batch_size and name not in self._warned_no_reward_signal:
                self._warned_no_reward_signal.add(name)
                logger.warning(
                    "reward %r found no face in any of the %d generated videos of a training batch: it contributes "
                    "a constant with zero gradient (no training signal). Check that the policy generates faces at "
                    "this size and step count; the '%s' metric logs the rate. (Warned once per reward.)",
                    name,
                    batch_size,
                    f"rewards/{name}/faces_found_rate",
                )

    def _pop_metrics(self, mode: str) -> dict[str, float]:
        stored = self._metrics[mode]
        metrics = {}
        for name, values in stored.items():
            if not values:
                continue
            # replaced-score counts are totals over the logging window; everything else is a mean
            metrics[name] = sum(values) if name.endswith("/nonfinite") else sum(values) / len(values)
        stored.clear()
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            logs = {**logs, **self._pop_metrics("train")}
        super().log(logs, start_time)

    # ------------------------------------------------------------------------------------------ evaluation
    @staticmethod
    def _logits_and_labels(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prediction_step``'s logits (the weighted rewards, ``(N,)``) and zero labels."""
        rewards = outputs["rewards"]
        return rewards, torch.zeros_like(rewards)

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        self._eval_batch_index = 0
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    @torch.no_grad()
    def generate_validation_videos(self) -> dict[str, float]:
        """Sample the validation rows from fixed noise with the current LoRA, save, score and log them.

        Videos go to ``<output_dir>/validation/step-<global_step>/<i>.mp4`` with ``rewards.json`` beside them; the
        rewards are logged as ``validation/reward`` and ``validation/rewards/<name>``, and the videos are sent to
        wandb / tensorboard when those are in ``report_to``. Runs on the main process only (the other processes
        carry on), so it does not support sharded models (FSDP / ZeRO-3). Returns the logged metrics.
        """
        if not self._validation_rows or not self.is_world_process_zero():
            return {}
        from ..video import to_uint8, write_video

        args, adapter = self.args, self.adapter
        step = self.state.global_step
        out_dir = Path(args.output_dir) / "validation" / f"step-{step}"
        policy = self.model_wrapped_policy
        was_training = policy.training
        policy.eval()
        records, totals, per_reward, clips = [], [], defaultdict(list), []
        try:
            for i, row in enumerate(self._validation_rows):
                batch = self._prepare_inputs(self._validation_collator([row]))
                conditions, negative = self._encode_conditions(batch)
                # the row's evaluation noise: the same at every round, and for the row wherever it is listed
                noise, _, generators = self._draw_noise(1, False, batch["row_ids"])
                with self.accelerator.autocast():
                    sample = sample_with_truncated_backprop(
                        adapter,
                        noise,
                        conditions,
                        policy.new_sampler(noise.device),
                        num_grad_steps=0,
                        negative_conditions=negative,
                        guidance_scale=args.guidance_scale,
                        generator=generators,
                    )
                    video = adapter.decode_latents(sample.latents).float()
                rewards = self.reward.compute(video, batch["reference_images"].to(video.device), batch)
                path = write_video(out_dir / f"{i:02d}.mp4", video[0].cpu(), fps=args.validation_fps)
                clips.append(to_uint8(video[0].cpu()))
                totals.append(float(rewards.total[0]))
                for name, value in rewards.rewards.items():
                    per_reward[name].append(float(value[0]))
                records.append(
                    {
                        "video": path.name,
                        "prompt": row["prompt"],
                        "reward": totals[-1],
                        "rewards": {name: float(value[0]) for name, value in rewards.rewards.items()},
                        "stats": rewards.stats,
                    }
                )
        finally:
            policy.train(was_training)
        with open(out_dir / "rewards.json", "w", encoding="utf-8") as f:
            json.dump({"step": step, "videos": records}, f, indent=2)
        metrics = {"validation/reward": sum(totals) / len(totals)}
        metrics.update({f"validation/rewards/{n}": sum(v) / len(v) for n, v in per_reward.items()})
        # Trainer.log clears control.should_log; this runs inside on_step_end, before the step's own training log
        should_log = self.control.should_log
        self.log(metrics)
        self.control.should_log = should_log
        self._log_videos_to_trackers(clips, [r["prompt"] for r in records], out_dir, step)
        return metrics

    def _log_videos_to_trackers(
        self, clips: list[torch.Tensor], captions: list[str], out_dir: Path, step: int
    ) -> None:
        report_to = self.args.report_to or []
        if "wandb" in report_to:
            try:
                import wandb

                if wandb.run is not None:
                    videos = [
                        wandb.Video(str(out_dir / f"{i:02d}.mp4"), caption=caption, format="mp4")
                        for i, caption in enumerate(captions)
                    ]
                    wandb.log({"validation/videos": videos}, commit=False)
            except Exception as error:  # a tracker failure must not stop training
                self._warn_tracker("wandb", error)
        if "tensorboard" in report_to:
            from transformers.integrations import TensorBoardCallback

            for callback in self.callback_handler.callbacks:
                writer = getattr(callback, "tb_writer", None) if isinstance(callback, TensorBoardCallback) else None
                if writer is None:
                    continue
                try:  # add_video needs moviepy
                    writer.add_video(
                        "validation/videos", torch.stack(clips), global_step=step, fps=self.args.validation_fps
                    )
                except Exception as error:
                    self._warn_tracker("tensorboard", error)

    def _warn_tracker(self, tracker: str, error: Exception) -> None:
        if tracker not in self._warned_video_trackers:
            logger.warning("could not send validation videos to %s (%s); they are saved on disk", tracker, error)
            self._warned_video_trackers.add(tracker)

    # ----------------------------------------------------------------------------------------------- saving
    def _render_model_card(self, model_name: str, dataset_name: str | None, tags: list[str]) -> str:
        """A diffusers LoRA model card citing IPRO and DRaFT."""
        return _render_model_card(
            adapter=self.adapter,
            args=self.args,
            reward=self.reward,
            model_name=model_name,
            dataset_name=dataset_name,
            tags=tags,
            log_history=self.state.log_history,
            num_train_rows=len(self.train_dataset) if self.train_dataset is not None else None,
        )


def _unique_names(rewards: Sequence[BaseVideoReward]) -> list[str]:
    names: list[str] = []
    for reward in rewards:
        base = str(getattr(reward, "name", None) or type(reward).__name__).replace(".", "_")
        candidate, suffix = base, 1
        while candidate in names:
            suffix += 1
            candidate = f"{base}_{suffix}"
        names.append(candidate)
    return names


def _describe(value: Any) -> str:
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, PIL.Image.Image):
        return f"<PIL image {value.size[0]}x{value.size[1]}>"
    if isinstance(value, (list, tuple)):
        return f"<{len(value)} frames>"
    return f"<{type(value).__name__}>"


_CITATIONS = """\
```bibtex
@inproceedings{shen2026ipro,
    title     = {{Identity-Preserving Image-to-Video Generation via Reward-Guided Optimization}},
    author    = {Liao Shen and Wentao Jiang and Yiran Zhu and Jiahe Li and Tiezheng Ge and Zhiguo Cao and Bo Zheng},
    booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
    year      = {2026},
    eprint    = {2510.14255},
    archivePrefix = {arXiv}
}

@inproceedings{clark2024draft,
    title     = {{Directly Fine-Tuning Diffusion Models on Differentiable Rewards}},
    author    = {Kevin Clark and Paul Vicol and Kevin Swersky and David J. Fleet},
    booktitle = {The Twelfth International Conference on Learning Representations (ICLR)},
    year      = {2024},
    eprint    = {2309.17400},
    archivePrefix = {arXiv}
}
```
"""


def _render_model_card(
    *,
    adapter: VideoModelAdapter,
    args: RewardFeedbackConfig,
    reward: CombinedReward,
    model_name: str,
    dataset_name: str | None,
    tags: list[str],
    log_history: list[dict[str, Any]],
    num_train_rows: int | None,
) -> str:
    """A diffusers-style LoRA model card: YAML metadata, usage snippet, training summary, citations."""
    train_logs = [log for log in log_history if "reward" in log]
    first_log, last_log = (train_logs[0], train_logs[-1]) if train_logs else (None, None)
    rewards = ", ".join(f"`{name}` (weight {weight:g})" for name, weight in reward.weights.items())
    kl = f"velocity KL against the LoRA-disabled model, weight {args.kl_weight:g}" if args.kl_weight > 0 else "no KL"
    effective_batch, breakdown = batch_breakdown(args)
    training = [
        f"- rewards: {rewards}; {kl}",
        f"- sampling: {args.num_inference_steps} steps from pure noise, gradients through the last "
        f"{args.truncated_backprop_steps}; guidance scale {args.guidance_scale:g}; video size {args.num_frames} "
        f"frames at {args.height}x{args.width}",
        f"- LoRA: {describe_lora(adapter)}",
        f"- learning rate {args.learning_rate}, effective batch {effective_batch} ({breakdown}), {args.max_steps} "
        f"steps, seed {args.seed}",
    ]
    if num_train_rows is not None:
        training.append(f"- training rows: {num_train_rows}")
    if first_log is not None and last_log is not None:
        training.append(
            f"- weighted reward: {first_log['reward']:.4f} at step {first_log.get('step')} -> "
            f"{last_log['reward']:.4f} at step {last_log.get('step')}"
        )
    return render_lora_model_card(
        adapter,
        model_name=model_name,
        dataset_name=dataset_name,
        tags=tags,
        trainer_name="RewardFeedbackTrainer",
        description="reward feedback learning with truncated backpropagation through the sampler (DRaFT-K) and a "
        "velocity KL regulariser, following IPRO (identity-preserving image-to-video generation via reward-guided "
        "optimisation).",
        training=training,
        citations=_CITATIONS,
    )
