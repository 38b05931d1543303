"""Training arguments of :class:`~icreward.trainers.video_grpo_trainer.VideoGRPOTrainer` (TRL-style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .diffusion_config import DiffusionTrainingConfig, RewardSamplingFields, shared_field

__all__ = ["VideoGRPOConfig"]


@dataclass
class VideoGRPOConfig(DiffusionTrainingConfig):
    r"""Configuration of :class:`VideoGRPOTrainer`, a :class:`~transformers.TrainingArguments` subclass (through
    :class:`~icreward.trainers.diffusion_config.DiffusionTrainingConfig`, the fields it shares with the DPO and
    reward-feedback configs).

    Online RL of the Flow-GRPO family (Liu et al., 2025) for image-to-video flow-matching models. For each
    (reference image, prompt) row the trainer samples a group of ``num_generations`` (G) videos with the SDE form of
    the flow-matching ODE (its noise scale ``noise_level``), scores them, normalises the rewards within the group
    into advantages ``A``, and minimises over the trained denoising steps

    ``loss = mean_k max(-A rho_k, -A clip(rho_k, 1 - epsilon, 1 + epsilon)) + beta * KL_k``

    with ``rho_k`` the ratio of the per-step Gaussian transition probabilities of the current and the sampling policy,
    and ``KL_k`` the KL of the current policy's transition to the LoRA-disabled reference's (same variance, closed
    form). Names follow TRL's ``GRPOConfig`` where the concept is the same (``num_generations``, ``beta``,
    ``epsilon``, ``num_iterations``, ``scale_rewards``).

    ``per_device_train_batch_size`` counts *rows* (prompts); each row becomes G videos, so a micro-step samples
    ``per_device_train_batch_size * num_generations`` videos and a group never spans processes.

    Defaults follow Flow-GRPO where it states them: ``noise_level=0.7``, ``epsilon=1e-4`` (its clip range: the
    per-step log-probabilities are means over all latent elements, so ratios stay very close to 1), ``beta=0.004``,
    ``advantage_clip_max=5``, ``timestep_fraction`` well below 1 (0.6 in its video configs; 1 here is the exact
    objective), 10 sampling steps in training.
    """

    num_generations: int = field(
        default=4, metadata={"help": "G: videos sampled per (reference image, prompt) row; the advantage group."}
    )
    num_inference_steps: int = field(
        default=10,
        metadata={"help": "T: SDE sampler steps from pure noise to the video, on the pipeline scheduler's sigmas."},
    )
    noise_level: float = field(
        default=0.7,
        metadata={
            "help": "a: the SDE's noise scale, std_t = a * sqrt(sigma / (1 - sigma)) (Flow-GRPO: 0.7). 0 would be "
            "the deterministic ODE, which has no transition probability: it is refused."
        },
    )
    timestep_fraction: float = field(
        default=1.0,
        metadata={
            "help": "Train on round(fraction * T) of the T sampled transitions (at least 1), a random subset per video "
            "drawn from its own generator (Flow-GRPO's timestep_fraction)."
        },
    )
    num_iterations: int = field(
        default=1,
        metadata={
            "help": "mu: optimiser steps per sampled batch (TRL's num_iterations). Above 1 the same rows come back for "
            "mu steps and their samples and old log-probabilities are reused; the ratio then departs from 1 and "
            "clipping acts."
        },
    )
    epsilon: float = field(default=1e-4, metadata={"help": "Clip range of the ratio (Flow-GRPO: 1e-4)."})
    beta: float = field(
        default=0.004,
        metadata={
            "help": "Weight of the KL of each trained transition to the LoRA-disabled reference's (Flow-GRPO: 0.004). "
            "0 skips the reference forward passes."
        },
    )
    scale_rewards: bool = field(
        default=True,
        metadata={"help": "Divide centred rewards by the group's standard deviation (+1e-4); False only centres."},
    )
    advantage_clip_max: float | None = field(
        default=5.0, metadata={"help": "Clamp advantages to [-max, max] (Flow-GRPO: 5); None disables."}
    )
    reward_weights: list[float] | None = RewardSamplingFields.reward_weights(
        "1 to every reward (the advantage is invariant to a common scale)."
    )
    guidance_scale: float = RewardSamplingFields.guidance_scale(
        "Classifier-free guidance while sampling and in the trained transitions (the policy is the guided one). "
        "Above 1 every denoiser call runs twice."
    )
    negative_prompt: str = RewardSamplingFields.negative_prompt()
    backward_chunk_size: int | None = field(
        default=None,
        metadata={
            "help": "Videos per forward/backward in a training step; each trained transition gets its own backward "
            "anyway. None: all videos of the micro-batch (rows x num_generations) at once. Lower it to bound memory."
        },
    )
    ground_truth_max_frames: int | None = field(
        default=None,
        metadata={"help": "Frames read from each row's ground-truth clip for rewards that use it; None reads all."},
    )
    num_frames: int = shared_field("num_frames", help="Frames per generated video; 4k + 1 for Wan.")
    height: int = shared_field("height", help="Video height; reference images are cover-resized to it.")
    width: int = shared_field("width", help="Video width; reference images are cover-resized to it.")
    learning_rate: float = field(default=1e-4, metadata={"help": "Learning rate (Flow-GRPO's LoRA runs: 1e-4)."})
    max_steps: int = field(default=100, metadata={"help": "Optimiser steps."})
    per_device_train_batch_size: int = field(
        default=1, metadata={"help": "Rows (prompts) per device per micro-step; each gives num_generations videos."}
    )
    per_device_eval_batch_size: int = field(
        default=1, metadata={"help": "Rows per device in evaluation (one deterministic ODE sample per row)."}
    )
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimiser step."})
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Learning-rate schedule."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps (or fraction of training)."})

    def __post_init__(self):
        if self.num_generations < 2:
            raise ValueError(
                f"num_generations must be >= 2 (advantages are relative to the group), got {self.num_generations}"
            )
        if self.num_inference_steps < 2:
            raise ValueError(
                f"num_inference_steps must be >= 2 (the first step's noise scale borrows the second sigma), got "
                f"{self.num_inference_steps}"
            )
        if not self.noise_level > 0:
            raise ValueError(
                f"noise_level must be > 0: the deterministic sampler has no transition probability, got {self.noise_level}"
            )
        if not 0 < self.timestep_fraction <= 1:
            raise ValueError(f"timestep_fraction must be in (0, 1], got {self.timestep_fraction}")
        if self.num_iterations < 1:
            raise ValueError(f"num_iterations must be >= 1, got {self.num_iterations}")
        if self.epsilon <= 0:
            raise ValueError(f"epsilon must be > 0, got {self.epsilon}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.advantage_clip_max is not None and self.advantage_clip_max <= 0:
            raise ValueError(f"advantage_clip_max must be > 0 or None, got {self.advantage_clip_max}")
        RewardSamplingFields.check(self)
        if self.backward_chunk_size is not None and self.backward_chunk_size < 1:
            raise ValueError(f"backward_chunk_size must be >= 1 or None, got {self.backward_chunk_size}")
        if self.ground_truth_max_frames is not None and self.ground_truth_max_frames < 1:
            raise ValueError(f"ground_truth_max_frames must be >= 1 or None, got {self.ground_truth_max_frames}")
        super().__post_init__()
        if self.num_iterations > 1 and self.save_strategy == "steps" and self.save_steps % self.num_iterations:
            raise ValueError(
                f"save_steps ({self.save_steps}) must be a multiple of num_iterations ({self.num_iterations}): a "
                "checkpoint in the middle of a sampled batch's updates would not hold its samples, so resuming from it "
                "could not replay the run"
            )

    @property
    def num_train_transitions(self) -> int:
        """How many of the T transitions of each video are trained."""
        return max(1, round(self.timestep_fraction * self.num_inference_steps))
