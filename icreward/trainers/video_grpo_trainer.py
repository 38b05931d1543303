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
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import TrainerCallback

from ..adapters import VideoModelAdapter
from ..losses import group_advantages, grpo_clipped_loss
from ..rewards.combined import CombinedReward
from .adapter_lora import batch_breakdown, describe_lora, seeded_generator
from .prompt_rewards import PromptRewardTrainerBase
from .video_grpo_config import VideoGRPOConfig
from .video_grpo_sampling import (
    GRPOPolicy,
    RepeatBlockSampler,
    SDETrajectory,
    flow_sde_schedule,
    sample_sde_trajectory,
    second_sigma,
)

logger = logging.getLogger(__name__)

__all__ = ["SDETrajectory", "VideoGRPOTrainer", "flow_sde_schedule", "sample_sde_trajectory"]

_CITATION = """\
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
"""


@dataclass
class _Samples:
    row_ids: list[str]
    latents: torch.Tensor  # (T + 1, N, ...)
    old_log_probs: torch.Tensor  # (T, N)
    trained: torch.Tensor  # (N, K) indices of the trained transitions
    advantages: torch.Tensor  # (N,)
    conditions: dict[str, Any]
    negative: dict[str, Any] | None


class VideoGRPOTrainer(PromptRewardTrainerBase):
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

    _name = "VideoGRPOTrainer"
    _paper = {
        "description": "group relative policy optimisation on the SDE form of the flow-matching sampler (Flow-GRPO).",
        "citation": _CITATION,
    }
    _tag_names = ["icreward", "grpo", "flow-grpo", "diffusers", "lora"]

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
        sigma_max = second_sigma(sigmas)
        self._setup_lora(
            adapter,
            peft_config,
            requirement="VideoGRPOTrainer trains LoRA adapters (the KL reference is the LoRA-disabled network)",
        )
        self._init_lora_trainer(adapter)
        self._setup_reward(reward_funcs, args.reward_weights or self._unit_weights(reward_funcs))
        self._timesteps, self._sigmas = timesteps, sigmas
        self._check_trained_expert(adapter, timesteps)
        self._allow_unused_experts(adapter, args)
        train_dataset, eval_dataset = self._load_rows(train_dataset, eval_dataset)
        self._buffer: dict[int, _Samples] = {}

        policy = GRPOPolicy(
            adapter, noise_level=args.noise_level, guidance_scale=args.guidance_scale, sigma_max=sigma_max
        )
        super().__init__(
            model=policy,
            args=args,
            data_collator=data_collator or self._collator(args),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        self._place_and_prepare()

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
        return RepeatBlockSampler(len(dataset), block, args.num_iterations, args.seed)

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
        noise = self._row_noise(shape, generators).to(args.device)
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
        self._store(per_sample, True, per_row=False)
        per_group = {
            "reward_std": group_std,
            "frac_reward_zero_std": (group_std <= 1e-8 * total.abs().max().clamp_min(1.0)).float(),
        }
        for name, value in rewards.rewards.items():
            per_group[f"rewards/{name}/std"] = value.detach().float().reshape(-1, copies).std(dim=1, unbiased=False)
        self._store(per_group, True, {f"rewards/{n}/nonfinite": float(c) for n, c in rewards.num_nonfinite.items()})
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
        self._store(per_sample, True, scalars, per_row=False)

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
        noise = self._row_noise(self._latent_shape(), generators).to(args.device)
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
    def _summarise_metric(self, name: str, values: list[float]) -> dict[str, float]:
        """Also the smallest and largest within-group spread (``reward_std/min``, ``reward_std/max``)."""
        metrics = super()._summarise_metric(name, values)
        if name == "reward_std":
            metrics["reward_std/min"], metrics["reward_std/max"] = min(values), max(values)
        return metrics

    # ------------------------------------------------------------------------------------------------ saving
    def _training_summary(self) -> list[str]:
        """Rewards, KL, sampling, LoRA, batch and the sampled groups' first and last mean reward."""
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
        return training
