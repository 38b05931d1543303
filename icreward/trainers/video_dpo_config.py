"""Training arguments of :class:`~icreward.trainers.video_dpo_trainer.VideoDPOTrainer` (TRL-style dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .diffusion_config import DiffusionTrainingConfig, shared_field

__all__ = ["VideoDPOConfig"]


@dataclass
class VideoDPOConfig(DiffusionTrainingConfig):
    r"""Configuration of :class:`VideoDPOTrainer`, a :class:`~transformers.TrainingArguments` subclass (through
    :class:`~icreward.trainers.diffusion_config.DiffusionTrainingConfig`, the fields it shares with
    :class:`~icreward.trainers.reward_feedback_config.RewardFeedbackConfig`).

    Diffusion-DPO (Wallace et al., 2023) on image-to-video diffusion models, in its flow-matching form for Wan
    (Flow-DPO, as in VideoAlign) and its epsilon / v form for CogVideoX. Each step draws one noise tensor and one
    timestep per pair, shared by winner and loser, and minimises
    ``-logsigmoid(-0.5 * beta * ((mse_w - ref_mse_w) - (mse_l - ref_mse_l)))``
    (see :func:`icreward.losses.diffusion_dpo_loss`).

    Everything ``TrainingArguments`` accepts works too (``output_dir``, ``learning_rate``, ``max_steps``,
    ``gradient_accumulation_steps``, ``eval_strategy``, ``save_steps``, ``use_cpu``, ``push_to_hub`` ...). Defaults
    differ where video LoRA training or CPU runs need it: ``bf16=False`` (TRL's ``True`` raises on CPU; turn it on
    on GPUs), ``remove_unused_columns=False`` (the collator reads the pair columns), ``learning_rate=1e-4`` (LoRA),
    ``logging_steps=10``.

    Choosing ``beta``: it multiplies a difference of per-sample MSEs, so its scale depends on the prediction space
    and on how the MSE is averaged. Diffusion-DPO used 2500-5000 for epsilon-prediction image models (SD 1.5 /
    SDXL, MSE averaged per element); flow-matching video DPO code uses about 100 on velocity MSEs, which are
    larger. Too large a beta saturates the sigmoid after a few steps; too small a beta reduces DPO to
    noisy SFT on the winner minus an "unlearning" term on the loser.
    """

    beta: float = field(
        default=100.0,
        metadata={
            "help": "DPO temperature on MSE differences. ~100 for flow matching (Wan); 2500-5000 is the published "
            "range for epsilon-prediction (Diffusion-DPO on SD/SDXL). 0 makes the loss constant."
        },
    )
    loss_type: str = field(
        default="dpo",
        metadata={
            "help": "'dpo' (Diffusion-/Flow-DPO against the frozen reference) or 'sft' (plain denoising loss on the "
            "chosen videos only, the supervised baseline).",
            "choices": ["dpo", "sft"],
        },
    )
    timestep_sampling: str = field(
        default="uniform",
        metadata={
            "help": "How training timesteps are drawn: 'uniform', or 'logit_normal' (sigmoid of a normal; SD3/Wan).",
            "choices": ["uniform", "logit_normal"],
        },
    )
    logit_mean: float = field(default=0.0, metadata={"help": "Mean of the normal for 'logit_normal' sampling."})
    logit_std: float = field(default=1.0, metadata={"help": "Std of the normal for 'logit_normal' sampling."})
    precompute_latents: bool = field(
        default=True,
        metadata={
            "help": "Encode every pair once (VAE, text and image encoders) into an on-disk safetensors cache "
            "before training; steps then run only the denoiser, and the encoders are moved to CPU."
        },
    )
    latent_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Directory of the latent cache; defaults to `<output_dir>/_latent_cache` (never pushed to the Hub). "
            "Safe to share between runs."
        },
    )
    precompute_batch_size: int = field(default=1, metadata={"help": "Pairs per encoder batch when precomputing."})
    image_column: str | None = field(
        default=None,
        metadata={"help": "Reference-image column of the pair dataset; 'image' or else 'reference' when unset."},
    )
    validate_pairs: bool = field(
        default=True,
        metadata={"help": "Check every pair (files exist, decode, chosen/rejected same length and size) up front."},
    )
    plot_preference_curves: bool = field(
        default=True,
        metadata={
            "help": "Write preference accuracy over steps and the running win rate (ICReward Figs. 5 and 6) to "
            "`<output_dir>/preference_curves.json` and PNGs during training."
        },
    )
    # Fields of DiffusionTrainingConfig (default, choices and checks there) with this config's own help text
    num_frames: int = shared_field(
        "num_frames", help="Frames per video (evenly sampled from each file); 4k + 1 for Wan/CogVideoX."
    )
    height: int = shared_field("height", help="Video height; videos and images are cover-resized to it.")
    width: int = shared_field("width", help="Video width; videos and images are cover-resized to it.")
    wan22_train_expert: str = shared_field(
        "wan22_train_expert",
        help="Wan 2.2 A14B: which expert gets LoRA: 'low_noise' (transformer_2, as in IPRO), 'high_noise' "
        "(transformer) or 'both'. Timesteps are drawn from the trained experts' range.",
    )
    remove_unused_columns: bool = shared_field(
        "remove_unused_columns", help="Keep all dataset columns; the pair collator needs them."
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "AdamW learning rate (LoRA parameters)."})
    logging_steps: float = field(default=10, metadata={"help": "Log every N steps (or fraction of training)."})

    def __post_init__(self):
        if self.loss_type not in ("dpo", "sft"):
            raise ValueError(f"loss_type must be 'dpo' or 'sft', got {self.loss_type!r}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if self.timestep_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"timestep_sampling must be 'uniform' or 'logit_normal', got {self.timestep_sampling!r}")
        if self.logit_std <= 0:
            raise ValueError(f"logit_std must be > 0, got {self.logit_std}")
        if int(self.precompute_batch_size) <= 0:
            raise ValueError(f"precompute_batch_size must be positive, got {self.precompute_batch_size}")
        super().__post_init__()  # the shared fields (wan22_train_expert, video size), then TrainingArguments
