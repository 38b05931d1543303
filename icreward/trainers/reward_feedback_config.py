"""Training arguments of :class:`~icreward.trainers.reward_feedback_trainer.RewardFeedbackTrainer` (TRL-style)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .diffusion_config import DiffusionTrainingConfig, RewardSamplingFields, shared_field

__all__ = ["RewardFeedbackConfig"]


@dataclass
class RewardFeedbackConfig(DiffusionTrainingConfig):
    r"""Configuration of :class:`RewardFeedbackTrainer`, a :class:`~transformers.TrainingArguments` subclass
    (through :class:`~icreward.trainers.diffusion_config.DiffusionTrainingConfig`, the fields it shares with
    :class:`~icreward.trainers.video_dpo_config.VideoDPOConfig`).

    Reward feedback learning for image-to-video diffusion models with truncated backpropagation (DRaFT-K, Clark et
    al., 2024) and a velocity KL regulariser, as in IPRO (identity-preserving I2V via reward-guided optimisation,
    arXiv 2510.14255). Each step samples a video from pure noise with the image condition through all
    ``num_inference_steps`` (T) sampler steps, with gradients only through the last ``truncated_backprop_steps`` (K),
    decodes it with the frozen VAE, scores it, and minimises

    ``loss = -sum_i w_i * reward_i + kl_weight * sum_k w_k * ||v_theta(x_k, t_k) - v_ref(x_k, t_k)||^2``

    over the K trained steps, ``v_ref`` being the same network with its LoRA disabled on the same ``x_k``.

    IPRO's recipe (Wan 2.2 A14B, low-noise expert only), which the defaults follow:

    ============================  ==============================================================================
    IPRO                          here
    ============================  ==============================================================================
    Adam, learning rate 2e-5      ``learning_rate=2e-5`` (LoRA fine-tuning often uses ~1e-4; IPRO states 2e-5)
    100 steps                     ``max_steps=100``
    batch size 64                 ``per_device_train_batch_size=1``, ``gradient_accumulation_steps=64``: on N
                                  processes use ``64 / N`` to keep the effective batch at 64
    K = 4                         ``truncated_backprop_steps=4``
    face reward weight 0.1        ``reward_weights=None`` means 0.1 for every reward
    KL weight 1                   ``kl_weight=1.0``
    Wan2.2-Lightning, 8 steps,    ``num_inference_steps=8``, ``guidance_scale=1.0``; with an undistilled base,
    no CFG                        raise the steps (20-50) or load a distilled LoRA into the pipeline first
    ============================  ==============================================================================

    Everything ``TrainingArguments`` accepts works too (``output_dir``, ``save_steps``, ``use_cpu``,
    ``report_to``, ``push_to_hub`` ...). Defaults differ where reward feedback or CPU runs need it: ``bf16=False``
    (TRL's ``True`` raises on CPU; turn it on on GPUs), ``remove_unused_columns=False`` (the collator reads the
    ``image`` / ``prompt`` / ``ground_truth`` columns), ``lr_scheduler_type="constant"``, ``logging_steps=1``.

    Sampler: training samples with the pipeline's own scheduler (a copy of ``pipe.scheduler``, with
    ``set_timesteps`` as the pipeline calls it: UniPC multistep with Wan's flow shift, FlowMatchEuler, CogVideoX's
    DDIM or DPM), so with gradients off a training sample is what the pipeline generates from the same noise; the
    last K steps are steps of that same scheduler, with gradients.

    Memory: activations are kept only for the last K steps, so peak memory does not grow with T.
    ``activation_checkpointing=True`` (alias ``gradient_checkpointing``) does two things: it checkpoints each of the
    K denoiser calls as a whole (only the call's input latents are kept between steps; the call is recomputed in
    the backward pass, one step at a time), and it turns on the transformer's own per-block gradient checkpointing
    (``enable_gradient_checkpointing``), so that this recomputation keeps only each block's input plus one block's
    activations instead of a whole call's (for Wan 14B at 81x480x832, about 27 GiB instead of about 435 GiB). Only
    the denoiser call is recomputed, never the scheduler step: a multistep scheduler's state (UniPC's history, the
    CogVideoX DPM solver's previous ``x0``) advances once per step and its history tensors stay in the graph
    (latent-sized). Cost: about two extra forward passes per trained step. ``decode_frame_subset`` decodes (and
    scores) only a window of latent frames; ``offload_frozen_denoisers`` keeps Wan 2.2's untrained expert on the CPU.
    """

    num_inference_steps: int = field(
        default=8,
        metadata={
            "help": "T: sampler steps from pure noise to the video. IPRO samples with the distilled Wan2.2-Lightning "
            "(8 steps, no CFG); undistilled models need 20-50 for clean samples."
        },
    )
    truncated_backprop_steps: int = field(
        default=4,
        metadata={
            "help": "K: only the last K sampler steps carry gradients (DRaFT-K); the first T - K run without autograd. "
            "IPRO uses K = 4 and found late (low-noise) steps better than early ones."
        },
    )
    kl_weight: float = field(
        default=1.0,
        metadata={
            "help": "Weight of the velocity KL regulariser against the LoRA-disabled network on the K trained steps "
            "(IPRO: 1). 0 skips the reference forward passes."
        },
    )
    kl_step_weights: list[float] | None = field(
        default=None,
        metadata={
            "help": "Per-step weights w_t of the KL term, one per trained step in sampling order (noisiest first); "
            "None gives 1 for every step."
        },
    )
    reward_weights: list[float] | None = RewardSamplingFields.reward_weights(
        "0.1 to every reward, IPRO's face-reward weight. Not allowed together with weights given in a "
        "{name: (reward, weight)} mapping."
    )
    guidance_scale: float = RewardSamplingFields.guidance_scale(
        "Classifier-free guidance during training samples and validation videos. Keep 1 for training, as IPRO (a "
        "distilled, guidance-free sampler): above 1 every step runs the denoiser twice (memory and time double on "
        "the K trained steps)."
    )
    negative_prompt: str = RewardSamplingFields.negative_prompt()
    decode_frame_subset: int | None = field(
        default=None,
        metadata={
            "help": "Decode and score only this many consecutive latent frames, a random window per row and step "
            "(about 4 video frames per latent frame for Wan/CogVideoX), to save VAE memory (as VADER). Windows not "
            "starting at frame 0 are decoded as a clip of their own by causal VAEs, an approximation. None decodes all."
        },
    )
    ground_truth_max_frames: int | None = field(
        default=None,
        metadata={
            "help": "Frames read from each row's ground-truth clip for the face pool (evenly spaced); None reads all "
            "frames, as IPRO's facial scoring mechanism."
        },
    )
    validation_steps: int | None = field(
        default=None,
        metadata={
            "help": "Every N optimiser steps (and before training), generate validation videos into "
            "`<output_dir>/validation/step-<N>/` (mp4 + rewards.json), log their rewards, and send the videos to "
            "wandb / tensorboard when those are in `report_to`. None disables."
        },
    )
    num_validation_videos: int = field(
        default=2,
        metadata={"help": "Validation videos per round: the first rows of eval_dataset, else of train_dataset."},
    )
    validation_fps: float = field(default=16.0, metadata={"help": "Frame rate of the saved validation videos."})
    offload_frozen_denoisers: bool = field(
        default=False,
        metadata={
            "help": "Wan 2.2 A14B: keep the untrained expert in CPU memory and move it to the device only for the "
            "sampler steps it runs (it goes back before the trained expert runs). Saves its weights (about 27 GiB "
            "in bf16 for A14B) at the cost of two host-device copies per sampled video; the K trained steps must then "
            "all run a trained expert. False keeps every expert on the training device."
        },
    )
    # Fields of DiffusionTrainingConfig (default, choices and checks there) with this config's own help text
    num_frames: int = shared_field("num_frames", help="Frames per generated video; 4k + 1 for Wan/CogVideoX.")
    height: int = shared_field("height", help="Video height; reference images are cover-resized to it.")
    width: int = shared_field("width", help="Video width; reference images are cover-resized to it.")
    wan22_train_expert: str = shared_field(
        "wan22_train_expert",
        help="Wan 2.2 A14B: which expert gets LoRA: 'low_noise' (transformer_2, as in IPRO), 'high_noise' or "
        "'both'. The K trained steps must reach the trained expert's timestep range.",
    )
    remove_unused_columns: bool = shared_field(
        "remove_unused_columns", help="Keep all dataset columns; the collator reads image/prompt/ground_truth."
    )
    learning_rate: float = field(default=2e-5, metadata={"help": "Learning rate (IPRO: 2e-5 with Adam)."})
    max_steps: int = field(default=100, metadata={"help": "Optimiser steps (IPRO: 100)."})
    per_device_train_batch_size: int = field(default=1, metadata={"help": "Videos per device per micro-step."})
    gradient_accumulation_steps: int = field(
        default=64,
        metadata={"help": "Micro-steps per optimiser step. IPRO's batch of 64 = processes x per-device batch x this."},
    )
    lr_scheduler_type: str = field(default="constant", metadata={"help": "Learning-rate schedule."})
    logging_steps: float = field(default=1, metadata={"help": "Log every N steps (or fraction of training)."})

    def __post_init__(self):
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if not 1 <= self.truncated_backprop_steps <= self.num_inference_steps:
            raise ValueError(
                f"truncated_backprop_steps (K) must be between 1 and num_inference_steps ({self.num_inference_steps}), "
                f"got {self.truncated_backprop_steps}"
            )
        if self.kl_weight < 0:
            raise ValueError(f"kl_weight must be >= 0, got {self.kl_weight}")
        if self.kl_step_weights is not None:
            self.kl_step_weights = [float(w) for w in self.kl_step_weights]
            if len(self.kl_step_weights) != self.truncated_backprop_steps:
                raise ValueError(
                    f"kl_step_weights needs one weight per trained step ({self.truncated_backprop_steps}), "
                    f"got {len(self.kl_step_weights)}"
                )
            if any(w < 0 for w in self.kl_step_weights):
                raise ValueError(f"kl_step_weights must be >= 0, got {self.kl_step_weights}")
        RewardSamplingFields.check(self)
        if self.decode_frame_subset is not None and self.decode_frame_subset < 1:
            raise ValueError(f"decode_frame_subset must be >= 1 or None, got {self.decode_frame_subset}")
        if self.validation_steps is not None and self.validation_steps < 1:
            raise ValueError(f"validation_steps must be >= 1 or None, got {self.validation_steps}")
        if self.num_validation_videos < 0:
            raise ValueError(f"num_validation_videos must be >= 0, got {self.num_validation_videos}")
        if self.ground_truth_max_frames is not None and self.ground_truth_max_frames < 1:
            raise ValueError(f"ground_truth_max_frames must be >= 1 or None, got {self.ground_truth_max_frames}")
        if self.validation_fps <= 0:
            raise ValueError(f"validation_fps must be positive, got {self.validation_fps}")
        super().__post_init__()  # the shared fields (wan22_train_expert, video size), then TrainingArguments
