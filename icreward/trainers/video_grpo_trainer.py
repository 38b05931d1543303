"""Online RL of the Flow-GRPO family for image-to-video flow-matching models, with LoRA.

```python
from peft import LoraConfig
from icreward import VideoGRPOConfig, VideoGRPOTrainer
from icreward.rewards.combined import FaceReward

trainer = VideoGRPOTrainer(
    model=pipe,                                   # a diffusers Wan 2.1 / Wan 2.2 I2V pipeline, or an adapter
    reward_funcs={"face": FaceReward("dlib")},    # any reward RewardFeedbackTrainer accepts; need not be differentiable
    args=VideoGRPOConfig(output_dir="wan-grpo", num_generations=8, num_inference_steps=10),
    train_dataset="rows.jsonl",                   # rows: image, prompt, optional ground_truth
    peft_config=LoraConfig(r=32, lora_alpha=32),
)
trainer.train()
trainer.save_model()                              # LoRA in diffusers format + model card
pipe.load_lora_weights("wan-grpo")
```

Each sampling round, for a batch of (reference image, prompt) rows:

1. encode the conditions once and repeat each row's ``G = num_generations`` times (a group stays on one process);
2. sample each video with the SDE form of the flow-matching ODE on the pipeline scheduler's own sigmas
   (:func:`flow_sde_schedule`): ``x_{k+1} ~ N(mean_k, std_k^2)`` from :func:`icreward.losses.flow_sde_transition`,
   where the mean uses the velocity of the LoRA policy (classifier-free guided when ``guidance_scale > 1``); keep
   every ``x_k`` and the log-probability of every transition (:func:`icreward.losses.gaussian_log_prob`), without
   gradients;
3. decode ``x_0`` with the frozen VAE, score it, and turn each group's rewards into advantages
   (:func:`icreward.losses.group_advantages`, clamped to ``advantage_clip_max``);
4. for ``num_iterations`` optimiser steps (the same rows come back; their samples are reused), recompute the
   log-probability of each video's trained transitions (``timestep_fraction`` of the ``T``, a random subset per video)
   under the current policy with gradients, and minimise the clipped surrogate
   (:func:`icreward.losses.grpo_clipped_loss`) plus ``beta`` times the KL of the transition to the LoRA-disabled
   reference's (:func:`icreward.losses.gaussian_transition_kl`), averaged over videos and trained transitions.

Logged metrics follow TRL's GRPO names where the concept is the same: ``reward`` (mean weighted reward of the sampled
videos), ``reward_std`` (mean within-group standard deviation; ``reward_std/min`` and ``reward_std/max`` over the
groups of the logging window, since IPRO argues group spreads collapse for same-prompt videos), ``frac_reward_zero_std``
(groups without any spread, i.e. without learning signal), ``rewards/<name>/mean`` and ``rewards/<name>/std``, ``kl``,
``clip_ratio/low_mean``, ``clip_ratio/high_mean``, ``clip_ratio/region_mean``, plus ``loss/policy`` and ``loss/kl``.
Reward metrics are logged on the steps that sample (every ``num_iterations``-th). Evaluation samples one video per row
with the deterministic ODE (Euler on the same sigmas) from the row's fixed noise and logs ``eval_reward`` and
``eval_rewards/<name>/mean``.

Randomness: a video's initial noise, its subset of trained transitions and every SDE noise draw come from its own
generator, keyed by (``seed``, sampling round, row id, index in the group) (evaluation: (``seed``, row id)), so two
processes with ``b`` rows each train like one process with ``2b`` rows, and ``resume_from_checkpoint`` replays a run.

Only flow-matching families are supported (Wan 2.1 I2V, Wan 2.2 I2V A14B). CogVideoX (v-prediction DDIM) is refused
with an error: its stochastic sampler would be DDIM with ``eta > 0`` (the DDPO transition), which is not implemented.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import Trainer, TrainerCallback

from ..adapters import VideoModelAdapter
from ..losses import (
    flow_sde_transition,
    gaussian_log_prob,
    gaussian_transition_kl,
    group_advantages,
    grpo_clipped_loss,
)
from ..rewards.combined import CombinedReward
from .adapter_lora import (
    AdapterLoRATrainerMixin,
    batch_breakdown,
    describe_lora,
    render_lora_model_card,
    seeded_generator,
)
from .checkpointing import CompleteCheckpointMixin
from .reward_feedback_trainer import RewardFeedbackCollator, RewardFeedbackTrainer, load_prompt_dataset
from .video_grpo_config import VideoGRPOConfig

logger = logging.getLogger(__name__)

__all__ = ["SDETrajectory", "VideoGRPOTrainer", "flow_sde_schedule", "sample_sde_trajectory"]


# ---------------------------------------------------------------------------------------------------------------
# The SDE sampler
# ---------------------------------------------------------------------------------------------------------------


def flow_sde_schedule(adapter: VideoModelAdapter, num_inference_steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The model timesteps ``(T,)`` and sigmas ``(T + 1,)`` (from 1 down to 0) of the pipeline's own flow-matching
    scheduler for ``num_inference_steps`` (its shift and spacing; a copy is set, the pipeline's is untouched).

    Raises for a family that is not flow matching (CogVideoX's v-prediction DDIM has no sigmas in this sense) and for
    a scheduler without flow sigmas (e.g. UniPC without ``use_flow_sigmas``).
    """
    if adapter.prediction_type != "flow":
        raise ValueError(
            f"VideoGRPOTrainer samples with the SDE form of the flow-matching ODE, but {adapter.family} predicts "
            f"{adapter.prediction_type!r} (a DDIM-family sampler): its stochastic transition would be DDIM with eta > 0, "
            "which this trainer does not implement. Use a flow-matching family (Wan 2.1 / Wan 2.2 I2V), or "
            "VideoDPOTrainer / RewardFeedbackTrainer for this model."
        )
    if type(adapter).denoise_step is not VideoModelAdapter.denoise_step:
        raise ValueError(
            f"{type(adapter).__name__} has a sampler step of its own (denoise_step; e.g. LTX-Video keeps its "
            "conditioning tokens out of the update): VideoGRPOTrainer's SDE transition assumes every latent follows "
            "the plain flow-matching update, so it does not support this family"
        )
    scheduler = copy.deepcopy(adapter.scheduler)
    scheduler.set_timesteps(num_inference_steps, device="cpu")
    sigmas = getattr(scheduler, "sigmas", None)
    name = type(scheduler).__name__
    if sigmas is None or getattr(scheduler.config, "use_flow_sigmas", True) is False:
        raise ValueError(f"the pipeline's scheduler {name} has no flow-matching sigmas (set use_flow_sigmas=True)")
    timesteps = torch.as_tensor(scheduler.timesteps).float()[:num_inference_steps]
    sigmas = torch.as_tensor(sigmas).float()[: num_inference_steps + 1]
    if len(timesteps) != num_inference_steps or len(sigmas) != num_inference_steps + 1:
        raise ValueError(
            f"{name} gave {len(timesteps)} timesteps / {len(sigmas)} sigmas for {num_inference_steps} steps"
        )
    if float(sigmas[-1]) != 0.0 or float(sigmas[0]) > 1.0 or not bool((sigmas[1:] < sigmas[:-1]).all()):
        raise ValueError(f"{name}'s sigmas must decrease from <= 1 to 0, got {sigmas.tolist()}")
    _check_euler_parametrisation(adapter, timesteps)
    return timesteps, sigmas


def _check_euler_parametrisation(adapter: VideoModelAdapter, timesteps: torch.Tensor) -> None:
    """The family's deterministic step must be the Euler step ``x + (s' - s) v`` with ``s = t / num_train_timesteps``
    (the ODE whose SDE form is sampled): checked numerically on a random tensor."""
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(2, 3, 2, 2, 2, generator=g), torch.randn(2, 3, 2, 2, 2, generator=g)
    t = torch.stack([timesteps[0], timesteps[-1]])
    t_next = torch.zeros(2)
    try:
        stepped = adapter.scheduler_step(x, v, t, t_next)
    except Exception as error:
        raise ValueError(f"cannot check the flow-matching step of {type(adapter).__name__}: {error}") from error
    expected = x + (t_next - t).view(-1, 1, 1, 1, 1) / adapter.num_train_timesteps * v
    if stepped.shape != x.shape or not torch.allclose(stepped.float(), expected, rtol=1e-4, atol=1e-5):
        raise ValueError(
            f"{type(adapter).__name__}.scheduler_step is not the flow-matching Euler step x + (s' - s) v with s = t / "
            f"{adapter.num_train_timesteps}: VideoGRPOTrainer's SDE transition does not apply to it"
        )


def _sigma_max(sigmas: torch.Tensor) -> float | None:
    """The schedule's second sigma (Flow-GRPO): the noise scale of the first step uses it in place of a first sigma
    at or just below 1. None for a one-step schedule."""
    return float(sigmas[1]) if len(sigmas) > 2 else None


def _guided_velocity(
    adapter: VideoModelAdapter,
    latents: torch.Tensor,
    timesteps: torch.Tensor,
    conditions: Mapping[str, Any],
    negative_conditions: Mapping[str, Any] | None,
    guidance_scale: float,
) -> torch.Tensor:
    """The (classifier-free guided) velocity; ``timesteps`` one per sample."""
    if guidance_scale == 1.0:
        return adapter.predict(latents, timesteps, dict(conditions))
    if negative_conditions is None:
        raise ValueError("guidance_scale != 1 needs negative_conditions")
    both = {
        k: torch.cat([negative_conditions[k], conditions[k]]) if torch.is_tensor(conditions[k]) else conditions[k]
        for k in conditions
    }
    uncond, cond = adapter.predict(torch.cat([latents, latents]), torch.cat([timesteps, timesteps]), both).chunk(2)
    return uncond + guidance_scale * (cond - uncond)


@dataclass
class SDETrajectory:
    """What :func:`sample_sde_trajectory` returns.

    Attributes:
        latents: ``(T + 1, N, ...)``: ``x_0`` is the initial noise, ``latents[-1]`` the sample.
        log_probs: ``(T, N)``: log-probability of each transition under the sampling policy (zeros for the ODE).
    """

    latents: torch.Tensor
    log_probs: torch.Tensor


@torch.no_grad()
def sample_sde_trajectory(
    adapter: VideoModelAdapter,
    noise: torch.Tensor,
    conditions: Mapping[str, Any],
    timesteps: torch.Tensor,
    sigmas: torch.Tensor,
    *,
    noise_level: float,
    generators: Sequence[torch.Generator] | None = None,
    negative_conditions: Mapping[str, Any] | None = None,
    guidance_scale: float = 1.0,
) -> SDETrajectory:
    """Sample from ``noise`` with the SDE (``noise_level > 0``; sample ``n``'s noise drawn from ``generators[n]``) or
    the ODE (``noise_level = 0``: Euler on the same sigmas), keeping every intermediate latent and the log-probability
    of every transition. No gradients."""
    num_steps = len(timesteps)
    if len(sigmas) != num_steps + 1:
        raise ValueError(f"need T + 1 = {num_steps + 1} sigmas, got {len(sigmas)}")
    if noise_level > 0 and (generators is None or len(generators) != noise.shape[0]):
        raise ValueError("the SDE needs one generator per sample")
    sigma_max = _sigma_max(sigmas)
    x = noise.float()
    latents, log_probs = [x], []
    for i in range(num_steps):
        t = timesteps[i].to(x.device).expand(x.shape[0])
        v = _guided_velocity(adapter, x, t, conditions, negative_conditions, guidance_scale)
        mean, std = flow_sde_transition(x, v, sigmas[i], sigmas[i + 1], noise_level, sigma_max)
        if noise_level > 0:
            eps = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators]).to(x.device)
            x = mean + std * eps
            log_probs.append(gaussian_log_prob(x, mean, std))
        else:
            x = mean
            log_probs.append(torch.zeros(x.shape[0], device=x.device))
        latents.append(x)
    return SDETrajectory(torch.stack(latents), torch.stack(log_probs))


class _GRPOPolicy(nn.Module):
    """The module the Trainer optimises (and DDP wraps): the trained transitions' log-probabilities and KL in one
    forward. Only the trained denoiser(s) are submodules."""

    def __init__(
        self, adapter: VideoModelAdapter, *, noise_level: float, guidance_scale: float, sigma_max: float | None
    ):
        super().__init__()
        self.denoisers = nn.ModuleDict(adapter.trainable_modules)
        self.adapter = adapter
        self.noise_level = noise_level
        self.guidance_scale = guidance_scale
        self.sigma_max = sigma_max

    def forward(
        self,
        latents: torch.Tensor,
        next_latents: torch.Tensor,
        timesteps: torch.Tensor,
        sigmas: torch.Tensor,
        next_sigmas: torch.Tensor,
        conditions: dict[str, torch.Tensor],
        negative_conditions: dict[str, torch.Tensor] | None = None,
        compute_kl: bool = True,
    ) -> dict[str, torch.Tensor | None]:
        """``latents`` / ``next_latents``: ``(K, N, ...)`` transitions; ``timesteps`` / sigmas ``(K, N)``. Returns
        ``log_prob`` ``(K, N)`` (with gradients) and ``kl`` ``(K, N)`` (None without)."""
        log_probs, kls = [], []
        for k in range(latents.shape[0]):
            x = latents[k]
            v = _guided_velocity(self.adapter, x, timesteps[k], conditions, negative_conditions, self.guidance_scale)
            mean, std = flow_sde_transition(x, v, sigmas[k], next_sigmas[k], self.noise_level, self.sigma_max)
            log_probs.append(gaussian_log_prob(next_latents[k], mean, std))
            if compute_kl:
                with torch.no_grad(), self.adapter.disable_lora():
                    v_ref = _guided_velocity(
                        self.adapter, x, timesteps[k], conditions, negative_conditions, self.guidance_scale
                    )
                    ref_mean, _ = flow_sde_transition(
                        x, v_ref, sigmas[k], next_sigmas[k], self.noise_level, self.sigma_max
                    )
                kls.append(gaussian_transition_kl(mean, ref_mean, std))
        return {"log_prob": torch.stack(log_probs), "kl": torch.stack(kls) if compute_kl else None}

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        """Per-block gradient checkpointing of the denoiser(s) (called by the Trainer for ``activation_checkpointing``)."""
        self.adapter.enable_gradient_checkpointing()

    def activation_checkpointing_disable(self) -> None:
        for module in self.adapter.trainable_modules.values():
            if hasattr(module, "disable_gradient_checkpointing"):
                module.disable_gradient_checkpointing()

    gradient_checkpointing_enable = activation_checkpointing_enable
    gradient_checkpointing_disable = activation_checkpointing_disable


# ---------------------------------------------------------------------------------------------------------------
# Repeating batches for num_iterations > 1
# ---------------------------------------------------------------------------------------------------------------


class _RepeatBlockSampler(torch.utils.data.Sampler):
    """A seeded shuffle of the dataset cut into blocks of ``block`` indices (one optimiser step of the global batch),
    each yielded ``repeats`` times in a row, so the same rows come back for ``num_iterations`` steps."""

    def __init__(self, num_rows: int, block: int, repeats: int, seed: int):
        self.num_rows, self.block, self.repeats, self.seed, self.epoch = num_rows, block, repeats, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_rows * self.repeats

    def __iter__(self):
        order = torch.randperm(self.num_rows, generator=seeded_generator(self.seed, "grpo-order", self.epoch)).tolist()
        for start in range(0, self.num_rows, self.block):
            chunk = order[start : start + self.block]
            for _ in range(self.repeats):
                yield from chunk


# ---------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class _Samples:
    row_ids: list[str]
    latents: torch.Tensor  # (T + 1, N, ...)
    old_log_probs: torch.Tensor  # (T, N)
    trained: torch.Tensor  # (N, K) indices of the trained transitions
    advantages: torch.Tensor  # (N,)
    conditions: dict[str, Any]
    negative: dict[str, Any] | None


class VideoGRPOTrainer(CompleteCheckpointMixin, AdapterLoRATrainerMixin, Trainer):
    """Group relative policy optimisation on the SDE form of the flow-matching sampler (Flow-GRPO family), with LoRA.

    Args:
        model: a diffusers flow-matching image-to-video pipeline (``WanImageToVideoPipeline`` for Wan 2.1 and Wan
            2.2 A14B), a Hub id / local folder of one, or a :class:`~icreward.adapters.VideoModelAdapter`.
            CogVideoX is refused (see the module notes).
        reward_funcs: what to maximise, in any form :class:`RewardFeedbackTrainer` accepts (a reward callable
            ``(video, reference_images, batch) -> (B,)``, a list, ``{name: reward}``, ``{name: (reward, weight)}``,
            a :class:`~icreward.rewards.combined.CombinedReward`); it is scored without gradients, so it need not be
            differentiable. Weights default to 1.
        args: a :class:`VideoGRPOConfig`.
        train_dataset, eval_dataset: rows with ``image``, ``prompt`` and optional ``ground_truth`` (as for reward
            feedback). Every row is checked (and given to the rewards' ``prepare``) before training. ``eval_dataset``
            gives the mean reward of deterministic samples from fixed noise.
        peft_config: a peft ``LoraConfig``; required unless the model already carries a LoRA (the KL reference is
            the LoRA-disabled network).
        data_collator: defaults to :class:`~icreward.trainers.reward_feedback_trainer.RewardFeedbackCollator`.
    """

    _tag_names = ["icreward", "grpo", "flow-grpo", "diffusers", "lora"]
    # Reused from the reward-feedback trainer (same rows, same reward preparation).
    _reward_uses_rows = RewardFeedbackTrainer._reward_uses_rows
    _prepare_rewards = RewardFeedbackTrainer._prepare_rewards
    _encode_conditions = RewardFeedbackTrainer._encode_conditions
    _latent_shape = RewardFeedbackTrainer._latent_shape

    def __init__(
        self,
        model: Any,
        reward_funcs: Any = None,
        args: VideoGRPOConfig | None = None,
        train_dataset: Dataset | list | str | os.PathLike | None = None,
        eval_dataset: Dataset | list | str | os.PathLike | None = None,
        processing_class: Any | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        peft_config: Any | None = None,
        data_collator: Callable | None = None,
    ):
        if args is None:
            args = VideoGRPOConfig(output_dir="video-grpo")
        elif not isinstance(args, VideoGRPOConfig):
            raise TypeError(f"args must be a VideoGRPOConfig, got {type(args).__name__}")
        if reward_funcs is None:
            raise ValueError("VideoGRPOTrainer needs reward_funcs: the reward(s) to maximise")
        if train_dataset is None:
            raise ValueError("VideoGRPOTrainer needs a train_dataset of (image, prompt[, ground_truth]) rows")

        adapter = self._resolve_adapter(model, args)
        timesteps, sigmas = flow_sde_schedule(adapter, args.num_inference_steps)  # refuses non-flow families
        sigma_max = _sigma_max(sigmas)
        self._setup_lora(
            adapter,
            peft_config,
            requirement="VideoGRPOTrainer trains LoRA adapters (the KL reference is the LoRA-disabled network)",
        )
        self.adapter = adapter
        self.reward = RewardFeedbackTrainer._build_reward(
            reward_funcs, args.reward_weights or self._unit_weights(reward_funcs)
        )
        self.reward.eval().requires_grad_(False)
        self._timesteps, self._sigmas = timesteps, sigmas
        self._check_trained_expert(adapter, timesteps)
        self._allow_unused_experts(adapter, args)

        train_dataset = RewardFeedbackTrainer._with_row_keys(load_prompt_dataset(train_dataset))
        if eval_dataset is not None:
            eval_dataset = RewardFeedbackTrainer._with_row_keys(load_prompt_dataset(eval_dataset))

        self._metrics: dict[str, dict[str, list[float]]] = {"train": defaultdict(list), "eval": defaultdict(list)}
        self._noise_step, self._noise_micro = -1, 0
        self._latent_shape_cache: tuple[int, ...] | None = None
        self._buffer: dict[int, _Samples] = {}

        policy = _GRPOPolicy(
            adapter, noise_level=args.noise_level, guidance_scale=args.guidance_scale, sigma_max=sigma_max
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
        device = self.args.device
        self._move_encoders(device)
        self._move_frozen_denoisers(device)  # Wan 2.2's untrained expert samples the high-noise steps
        self.reward.to(device)
        self._prepare_rewards(self.train_dataset, "train_dataset")
        if self.eval_dataset is not None:
            self._prepare_rewards(self.eval_dataset, "eval_dataset")

    # ------------------------------------------------------------------------------------------------ setup
    @staticmethod
    def _unit_weights(reward_funcs: Any) -> list[float] | None:
        """Weight 1 for each reward given without one (the reward-feedback default is IPRO's 0.1)."""
        if isinstance(reward_funcs, CombinedReward):
            return None
        if isinstance(reward_funcs, Mapping):
            if any(isinstance(v, tuple) for v in reward_funcs.values()):
                return None
            return [1.0] * len(reward_funcs)
        return [1.0] * (len(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else 1)

    @staticmethod
    def _check_trained_expert(adapter: VideoModelAdapter, timesteps: torch.Tensor) -> None:
        """Some sampled step must reach the trained expert (Wan 2.2), or no LoRA parameter gets a gradient."""
        low, high = adapter.timestep_bounds
        if not bool(((timesteps >= low) & (timesteps <= high)).any()):
            raise ValueError(
                f"no sampler timestep ({[round(float(t), 1) for t in timesteps]}) falls in the trained expert's range "
                f"[{low:.0f}, {high:.0f}] of {adapter!r}"
            )

    def _get_train_sampler(self, train_dataset=None):
        args = self.args
        if args.num_iterations == 1:
            return super()._get_train_sampler(train_dataset)
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        block = args.per_device_train_batch_size * max(args.world_size, 1) * args.gradient_accumulation_steps
        return _RepeatBlockSampler(len(dataset), block, args.num_iterations, args.seed)

    @property
    def model_wrapped_policy(self) -> _GRPOPolicy:
        return self.accelerator.unwrap_model(self.model)

    # ------------------------------------------------------------------------------------------------ sampling
    def _generators(
        self, training: bool, row_ids: Sequence[str] | None, count: int, copies: int
    ) -> list[torch.Generator]:
        """One generator per video: keyed by (seed, sampling round, row, copy) in training and (seed, row) in
        evaluation; without row ids, by (seed, process, step, micro-batch, position) (tied to the process layout)."""
        args = self.args
        if row_ids is None:
            index = self._micro_batch_index() if training else ("eval", self.state.global_step)
            process = self.accelerator.process_index
            return [seeded_generator(args.seed, process, *index, n) for n in range(count * copies)]
        if len(row_ids) != count:
            raise ValueError(f"got {len(row_ids)} row_ids for a batch of {count} rows")
        if not training:
            return [seeded_generator(args.seed, "eval", row) for row in row_ids]
        sampling_round = self.state.global_step // args.num_iterations
        return [seeded_generator(args.seed, "grpo", sampling_round, row, g) for row in row_ids for g in range(copies)]

    @staticmethod
    def _repeat_rows(values: Mapping[str, Any] | None, copies: int, count: int) -> dict[str, Any] | None:
        """Each row's entry ``copies`` times in a row (tensors along dim 0, lists element-wise)."""
        if values is None:
            return None
        out = {}
        for key, value in values.items():
            if torch.is_tensor(value) and value.ndim and value.shape[0] == count:
                out[key] = value.repeat_interleave(copies, dim=0)
            elif isinstance(value, list) and len(value) == count:
                out[key] = [v for v in value for _ in range(copies)]
            else:
                out[key] = value
        return out

    def _sample_group(self, inputs: dict[str, Any]) -> _Samples:
        args, adapter = self.args, self.adapter
        count, copies = len(inputs["prompts"]), args.num_generations
        conditions, negative = self._encode_conditions(inputs)
        conditions = self._repeat_rows(conditions, copies, count)
        negative = self._repeat_rows(negative, copies, count)
        generators = self._generators(True, inputs.get("row_ids"), count, copies)
        shape = self._latent_shape()
        noise = torch.stack([torch.randn(shape, generator=g) for g in generators]).to(args.device)
        num_steps, num_trained = args.num_inference_steps, args.num_train_transitions
        trained = torch.stack([torch.randperm(num_steps, generator=g)[:num_trained].sort().values for g in generators])
        with self.accelerator.autocast():
            trajectory = sample_sde_trajectory(
                adapter,
                noise,
                conditions,
                self._timesteps,
                self._sigmas,
                noise_level=args.noise_level,
                generators=generators,
                negative_conditions=negative,
                guidance_scale=args.guidance_scale,
            )
            with torch.no_grad():  # one video at a time: VAE decoding memory does not grow with the group
                video = torch.cat([adapter.decode_latents(x[None]).float() for x in trajectory.latents[-1]])
        batch = self._repeat_rows(inputs, copies, count)
        with torch.no_grad():
            rewards = self.reward.compute(video, batch["reference_images"].to(video.device), batch)
        total = rewards.total.detach().float()
        advantages, group_std = group_advantages(total, copies, scale=args.scale_rewards)
        if args.advantage_clip_max is not None:
            advantages = advantages.clamp(-args.advantage_clip_max, args.advantage_clip_max)
        per_sample = {"reward": total}
        for name, value in rewards.rewards.items():
            per_sample[f"rewards/{name}/mean"] = value.detach()
        self._store_train(per_sample)
        per_group = {
            "reward_std": group_std,
            "frac_reward_zero_std": (group_std <= 1e-8 * total.abs().max().clamp_min(1.0)).float(),
        }
        for name, value in rewards.rewards.items():
            per_group[f"rewards/{name}/std"] = value.detach().float().reshape(-1, copies).std(dim=1, unbiased=False)
        self._store_train(per_group, {f"rewards/{n}/nonfinite": float(c) for n, c in rewards.num_nonfinite.items()})
        return _Samples(
            row_ids=list(inputs.get("row_ids") or []),
            latents=trajectory.latents,
            old_log_probs=trajectory.log_probs,
            trained=trained.to(args.device),
            advantages=advantages.to(args.device),
            conditions=conditions,
            negative=negative,
        )

    def _samples_for_step(self, inputs: dict[str, Any]) -> _Samples:
        """Sample at the first of each ``num_iterations`` steps; reuse the buffered samples of the same micro-batch
        in the others (the repeat sampler brings back the same rows, which is checked)."""
        step, micro = self._micro_batch_index()
        if step % self.args.num_iterations == 0:
            self._buffer[micro] = self._sample_group(inputs)
            return self._buffer[micro]
        samples = self._buffer.get(micro)
        if samples is None:
            raise RuntimeError(
                f"no buffered samples at step {step} (num_iterations={self.args.num_iterations}): resuming in the "
                "middle of a sampled batch's updates is not supported; save at multiples of num_iterations"
            )
        if inputs.get("row_ids") is not None and list(inputs["row_ids"]) != samples.row_ids:
            raise RuntimeError("the rows of a reused batch differ from the sampled ones (custom sampler?)")
        return samples

    # ------------------------------------------------------------------------------------------------ loss
    def _transition_terms(
        self, model: nn.Module, samples: _Samples, transitions: slice, columns: torch.Tensor
    ) -> dict[str, torch.Tensor | None]:
        """The trained transitions ``transitions`` (positions in each video's subset) of the videos ``columns``:
        per (transition, video) ``loss`` = clipped surrogate + ``beta`` * KL (with gradients), and the ``policy``,
        ``kl``, ``low`` and ``high`` (clipped) parts, each ``(K', n)``."""
        args = self.args
        steps = samples.trained[columns][:, transitions].T  # (K', n) sampler step indices
        cols = columns[None].expand_as(steps)
        num_samples = samples.trained.shape[0]

        def select(values):
            if values is None:
                return None
            return {
                k: v[columns] if torch.is_tensor(v) and v.ndim and v.shape[0] == num_samples else v
                for k, v in values.items()
            }

        sigmas = self._sigmas.to(steps.device)
        out = model(
            samples.latents[steps, cols],
            samples.latents[steps + 1, cols],
            self._timesteps.to(steps.device)[steps],
            sigmas[steps],
            sigmas[steps + 1],
            select(samples.conditions),
            select(samples.negative),
            compute_kl=args.beta > 0,
        )
        log_prob = out["log_prob"]
        advantages = samples.advantages[columns][None].expand_as(log_prob)
        old = samples.old_log_probs[steps, cols]
        policy, low, high = grpo_clipped_loss(
            log_prob.reshape(-1), old.reshape(-1), advantages.reshape(-1), args.epsilon
        )
        policy, low, high = policy.view_as(log_prob), low.view_as(log_prob), high.view_as(log_prob)
        kl = out["kl"]
        loss = policy if kl is None else policy + args.beta * kl
        return {"loss": loss, "policy": policy, "kl": kl, "low": low, "high": high}

    def _store_train(self, values: dict[str, torch.Tensor], scalars: dict[str, float] | None = None) -> None:
        """Gather training metrics from all processes (per video or per group, so not through ``gather_for_metrics``,
        whose end-of-epoch truncation counts dataset rows) and keep them until the next log."""
        for name, value in values.items():
            gathered = self.accelerator.gather(value.detach().float().reshape(-1).to(self.args.device))
            self._metrics["train"][name].extend(gathered.cpu().tolist())
        if scalars:
            gathered = self.accelerator.gather(torch.tensor([list(scalars.values())], device=self.args.device))
            for name, column in zip(scalars, gathered.cpu().T.tolist(), strict=True):
                self._metrics["train"][name].extend(column)

    def _store_transition_metrics(self, terms: dict[str, torch.Tensor | None]) -> None:
        """Per-video means over its trained transitions (``(K, N)`` inputs), as TRL names them."""
        low, high = terms["low"], terms["high"]
        per_sample = {
            "clip_ratio/low_mean": low.mean(0),
            "clip_ratio/high_mean": high.mean(0),
            "clip_ratio/region_mean": (low + high).mean(0),
        }
        scalars = {"loss/policy": float(terms["policy"].detach().mean())}
        if terms["kl"] is not None:
            per_sample["kl"] = terms["kl"].detach().mean(0)
            scalars["loss/kl"] = float(self.args.beta * terms["kl"].detach().mean())
        self._store_train(per_sample, scalars)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Training: the mean over this process's videos and trained transitions of the clipped surrogate plus
        ``beta`` * KL, in one graph (:meth:`training_step` computes the same gradient in pieces). Evaluation:
        ``-reward`` of deterministic samples."""
        if not model.training:
            return self._evaluation_loss(inputs, return_outputs)
        samples = self._samples_for_step(inputs)
        columns = torch.arange(samples.trained.shape[0], device=samples.trained.device)
        terms = self._transition_terms(model, samples, slice(None), columns)
        self._store_transition_metrics(terms)
        loss = terms["loss"].mean()
        return (loss, {"rewards": samples.advantages}) if return_outputs else loss

    def training_step(self, model: nn.Module, inputs: dict[str, Any], num_items_in_batch=None) -> torch.Tensor:
        """Sample (or reuse) the batch's groups, then one forward and backward per trained transition and chunk of
        ``backward_chunk_size`` videos (Flow-GRPO's loop), so activation memory is that of one denoiser call on one
        chunk, whatever the group size and number of trained transitions. Gradients are synchronised across
        processes only on the last piece. The accumulated gradient is that of :meth:`compute_loss`'s loss divided by
        the accumulation steps: the mean over videos and transitions, as each piece is weighted by its share."""
        model.train()
        if hasattr(self.optimizer, "train") and callable(self.optimizer.train):
            self.optimizer.train()
        inputs = self._prepare_inputs(inputs)
        samples = self._samples_for_step(inputs)
        num_samples, num_trained = samples.trained.shape
        device = samples.trained.device
        chunk = self.args.backward_chunk_size or num_samples
        pieces = [(k, start) for k in range(num_trained) for start in range(0, num_samples, chunk)]
        weight = 1.0 / (num_trained * num_samples * self.current_gradient_accumulation_steps)
        collected = {name: torch.zeros(num_trained, num_samples, device=device) for name in ("policy", "low", "high")}
        if self.args.beta > 0:
            collected["kl"] = torch.zeros(num_trained, num_samples, device=device)
        total = torch.zeros((), device=device)
        for index, (k, start) in enumerate(pieces):
            columns = torch.arange(start, min(start + chunk, num_samples), device=device)
            last = index == len(pieces) - 1
            with contextlib.nullcontext() if last else self.accelerator.no_sync(model):
                with self.compute_loss_context_manager():
                    terms = self._transition_terms(model, samples, slice(k, k + 1), columns)
                loss = terms["loss"].sum() * weight
                if not loss.requires_grad:
                    # Every transition of this piece ran a frozen expert (Wan 2.2): a zero that touches the trained
                    # parameters keeps backward (and DDP's gradient synchronisation) well defined.
                    loss = loss + sum(p.reshape(-1)[0] * 0.0 for p in model.parameters() if p.requires_grad)
                self.accelerator.backward(loss)
            total += loss.detach()
            for name, values in collected.items():
                values[k, columns] = terms[name].detach()[0]
        self._store_transition_metrics({**collected, "kl": collected.get("kl")})
        return total

    def _evaluation_loss(self, inputs: dict[str, Any], return_outputs: bool):
        """One deterministic (ODE) sample per row from the row's fixed noise; the loss is ``-reward``."""
        args, adapter = self.args, self.adapter
        conditions, negative = self._encode_conditions(inputs)
        count = len(inputs["prompts"])
        generators = self._generators(False, inputs.get("row_ids"), count, 1)
        noise = torch.stack([torch.randn(self._latent_shape(), generator=g) for g in generators]).to(args.device)
        with torch.no_grad(), self.accelerator.autocast():
            trajectory = sample_sde_trajectory(
                adapter,
                noise,
                conditions,
                self._timesteps,
                self._sigmas,
                noise_level=0.0,
                negative_conditions=negative,
                guidance_scale=args.guidance_scale,
            )
            video = adapter.decode_latents(trajectory.latents[-1]).float()
            rewards = self.reward.compute(video, inputs["reference_images"].to(video.device), inputs)
        total = rewards.total.detach().float()
        per_sample = {"reward": total, **{f"rewards/{n}/mean": v.detach() for n, v in rewards.rewards.items()}}
        self._store(per_sample, False)
        loss = -total.mean()
        return (loss, {"rewards": total}) if return_outputs else loss

    # ------------------------------------------------------------------------------------------------ logging
    def _pop_metrics(self, mode: str) -> dict[str, float]:
        stored = self._metrics[mode]
        metrics = {}
        for name, values in stored.items():
            if not values:
                continue
            if name.endswith("/nonfinite"):
                metrics[name] = sum(values)
                continue
            metrics[name] = sum(values) / len(values)
            if name == "reward_std":
                metrics["reward_std/min"], metrics["reward_std/max"] = min(values), max(values)
        stored.clear()
        return metrics

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.model.training and "loss" in logs:
            logs = {**logs, **self._pop_metrics("train")}
        super().log(logs, start_time)

    @staticmethod
    def _logits_and_labels(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        rewards = outputs["rewards"]
        return rewards, torch.zeros_like(rewards)

    # ------------------------------------------------------------------------------------------------ saving
    def _render_model_card(self, model_name: str, dataset_name: str | None, tags: list[str]) -> str:
        args = self.args
        train_logs = [log for log in self.state.log_history if "reward" in log and "loss" in log]
        rewards = ", ".join(f"`{name}` (weight {weight:g})" for name, weight in self.reward.weights.items())
        effective_batch, breakdown = batch_breakdown(args)
        training = [
            f"- rewards: {rewards}; KL to the LoRA-disabled model, beta {args.beta:g}",
            f"- sampling: {args.num_generations} videos per row with the flow SDE (noise level {args.noise_level:g}), "
            f"{args.num_inference_steps} steps, {args.num_train_transitions} trained transitions per video; guidance "
            f"scale {args.guidance_scale:g}; clip range {args.epsilon:g}; {args.num_iterations} update(s) per batch",
            f"- LoRA: {describe_lora(self.adapter)}",
            f"- learning rate {args.learning_rate}, {effective_batch} rows per step ({breakdown}), {args.max_steps} "
            f"steps, seed {args.seed}",
        ]
        if train_logs:
            first, last = train_logs[0], train_logs[-1]
            training.append(
                f"- mean reward of the sampled groups: {first['reward']:.4f} at step {first.get('step')} -> "
                f"{last['reward']:.4f} at step {last.get('step')}"
            )
        return render_lora_model_card(
            self.adapter,
            model_name=model_name,
            dataset_name=dataset_name,
            tags=tags,
            trainer_name="VideoGRPOTrainer",
            description="group relative policy optimisation on the SDE form of the flow-matching sampler (Flow-GRPO).",
            training=training,
            citations=_CITATIONS,
        )


_CITATIONS = """\
```bibtex
@article{liu2025flowgrpo,
    title   = {{Flow-GRPO: Training Flow Matching Models via Online RL}},
    author  = {Jie Liu and Gongye Liu and Jiajun Liang and Yangguang Li and Jiaheng Liu and Xintao Wang and Pengfei Wan
               and Di Zhang and Wanli Ouyang},
    journal = {arXiv preprint arXiv:2505.05470},
    year    = {2025}
}

@article{shao2024deepseekmath,
    title   = {{DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models}},
    author  = {Zhihong Shao and Peiyi Wang and Qihao Zhu and Runxin Xu and Junxiao Song and Mingchuan Zhang and Y. K. Li
               and Y. Wu and Daya Guo},
    journal = {arXiv preprint arXiv:2402.03300},
    year    = {2024}
}
```
"""
