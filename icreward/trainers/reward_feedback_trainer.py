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

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import TrainerCallback

from ..adapters import VideoModelAdapter
from .adapter_lora import batch_breakdown, describe_lora, seeded_generator
from .prompt_data import RewardFeedbackCollator, load_ground_truth_frames, load_prompt_dataset, prompt_row_id
from .prompt_rewards import DEFAULT_REWARD_WEIGHT, PromptRewardTrainerBase  # noqa: F401 (old import path)
from .reward_feedback_config import RewardFeedbackConfig
from .reward_feedback_sampling import RewardFeedbackPolicy, TruncatedSample, sample_with_truncated_backprop
from .reward_feedback_validation import ValidationVideosMixin

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

_CITATION = """\
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
"""


class RewardFeedbackTrainer(ValidationVideosMixin, PromptRewardTrainerBase):
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

    _name = "RewardFeedbackTrainer"
    _paper = {
        "description": "reward feedback learning with truncated backpropagation through the sampler (DRaFT-K) and a "
        "velocity KL regulariser, following IPRO (identity-preserving image-to-video generation via reward-guided "
        "optimisation).",
        "citation": _CITATION,
    }
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
        self._init_lora_trainer(adapter)
        self._setup_reward(reward_funcs, args.reward_weights)

        self._check_trained_steps(adapter, adapter.sampler(args.num_inference_steps).timesteps, args)
        frame_axis = self._latent_frame_axis(adapter) if args.decode_frame_subset is not None else None
        self._allow_unused_experts(adapter, args)
        train_dataset, eval_dataset = self._load_rows(train_dataset, eval_dataset)
        self._eval_batch_index = 0
        self._warned_no_reward_gradient = False
        self._warned_no_reward_signal: set[str] = set()

        policy = RewardFeedbackPolicy(
            adapter,
            num_inference_steps=args.num_inference_steps,
            num_grad_steps=args.truncated_backprop_steps,
            kl_step_weights=args.kl_step_weights,
            compute_kl=args.kl_weight > 0,
            guidance_scale=args.guidance_scale,
            frame_axis=frame_axis,
        )
        collator = self._collator(args)
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
        self._place_and_prepare()
        validation_source = self.eval_dataset if self.eval_dataset is not None else self.train_dataset
        count = min(args.num_validation_videos, len(validation_source))
        self._add_validation([validation_source[i] for i in range(count)] if args.validation_steps else [], collator)

    # ------------------------------------------------------------------------------------------------ setup
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

    # ------------------------------------------------------------------------------------------------- step
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
            generators = self._row_generators(training, row_ids)  # evaluation and validation: the eval key
            noise = self._row_noise(shape, generators)
            starts = [self._decode_start(g) for g in generators]
            starts = None if starts[0] is None else starts
        return noise.to(self.args.device), starts, generators

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

    # ------------------------------------------------------------------------------------------ evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
        self._eval_batch_index = 0
        return super().evaluate(
            eval_dataset=eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix
        )

    # ----------------------------------------------------------------------------------------------- saving
    def _training_summary(self) -> list[str]:
        """Rewards, KL, sampling, LoRA, batch and the weighted reward's first and last logged values."""
        args = self.args
        train_logs = [log for log in self.state.log_history if "reward" in log]
        rewards = ", ".join(f"`{name}` (weight {weight:g})" for name, weight in self.reward.weights.items())
        kl = (
            f"velocity KL against the LoRA-disabled model, weight {args.kl_weight:g}"
            if args.kl_weight > 0
            else "no KL"
        )
        effective_batch, breakdown = batch_breakdown(args)
        training = [
            f"- rewards: {rewards}; {kl}",
            f"- sampling: {args.num_inference_steps} steps from pure noise, gradients through the last "
            f"{args.truncated_backprop_steps}; guidance scale {args.guidance_scale:g}; video size {args.num_frames} "
            f"frames at {args.height}x{args.width}",
            f"- LoRA: {describe_lora(self.adapter)}",
            f"- learning rate {args.learning_rate}, effective batch {effective_batch} ({breakdown}), {args.max_steps} "
            f"steps, seed {args.seed}",
        ]
        if self.train_dataset is not None:
            training.append(f"- training rows: {len(self.train_dataset)}")
        if train_logs:
            first_log, last_log = train_logs[0], train_logs[-1]
            training.append(
                f"- weighted reward: {first_log['reward']:.4f} at step {first_log.get('step')} -> "
                f"{last_log['reward']:.4f} at step {last_log.get('step')}"
            )
        return training
