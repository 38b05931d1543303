"""Diffusion-/Flow-DPO for image-to-video diffusion pipelines, as a :class:`transformers.Trainer` (TRL-style).

```python
from peft import LoraConfig
from icreward import VideoDPOConfig, VideoDPOTrainer

trainer = VideoDPOTrainer(
    model=pipe,                                   # a diffusers I2V pipeline (Wan 2.1/2.2, CogVideoX) or an adapter
    args=VideoDPOConfig(output_dir="wan-dpo", num_frames=81, height=480, width=832, beta=100),
    train_dataset="pairs.jsonl",                  # rows: image, prompt, chosen, rejected (see icreward.data.dpo_pairs)
    peft_config=LoraConfig(r=32, lora_alpha=32),  # target modules default per model family
)
trainer.train()
trainer.save_model()                              # LoRA in diffusers format + model card
pipe.load_lora_weights("wan-dpo")
```

Per step and pair, one noise tensor and one timestep are drawn and shared by the winner (chosen) and the loser
(rejected); the policy (LoRA enabled) and the reference (the same network with LoRA disabled, or ``ref_model``)
predict the denoising target for both, and the loss is :func:`icreward.losses.diffusion_dpo_loss` on the four
per-sample MSEs.

Logged metrics (TRL DPO names; ``eval_`` prefix on evaluation). With per-sample MSEs ``m`` (policy) and ``r``
(reference), the implicit rewards are ``rewards/chosen = -0.5 * beta * (m_w - r_w)`` and
``rewards/rejected = -0.5 * beta * (m_l - r_l)``: half of ``beta`` times the improvement of the policy over the
reference on that video, the diffusion analogue of ``beta * (log pi - log pi_ref)``. ``rewards/margins`` is their
difference (the argument of the DPO sigmoid) and ``rewards/accuracies`` the fraction of pairs where the policy
improved the winner more than the loser, ``(m_w - r_w) < (m_l - r_l)`` (defined for ``beta = 0`` too). Also
logged: ``mse/chosen``, ``mse/rejected`` (policy), ``mse/ref_chosen``, ``mse/ref_rejected``, ``dpo_loss`` (also
under ``loss_type="sft"`` in evaluation) and ``num_pairs``. All are exact means over the pairs seen since the last
log, gathered across processes.

Randomness. Each pair's noise and timestep come from its own generator, seeded from (``seed``, global step, pair)
in training and (``seed``, pair) in evaluation, where the pair is its :func:`pair_id`. A pair therefore gets the same
noise whatever batch, process or accumulation micro-batch it lands in: two processes with batch 2 train exactly
like one process with batch 4 (or batch 2 and two accumulation steps), up to float rounding, and
``resume_from_checkpoint`` replays a run exactly. Every evaluation scores a pair under the same noise, so the
preference-accuracy curve moves only when the model does. The loss is the mean over the process's pairs; with
equal per-process batches, DDP's gradient averaging (and the Trainer's division by the accumulation steps) makes it
the mean over the global batch. A custom collator that returns no ``pair_ids`` falls back to one generator per
micro-batch, seeded from (``seed``, process, step, micro-batch): reproducible, but tied to the process layout.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from datasets import Dataset
from torch import nn
from transformers import TrainerCallback
from transformers.trainer_utils import EvalPrediction

from ..adapters import VideoModelAdapter
from ..data.dpo_pairs import decode_pair_videos, load_dpo_pairs, load_reference_image, validate_dpo_pairs
from ..losses import diffusion_dpo_loss, dpo_implicit_accuracy, per_sample_mse
from .adapter_lora import batch_breakdown, describe_lora, row_id
from .base_trainer import BaseVideoLoRATrainer
from .latent_cache import LatentCache
from .preference_curves import PreferenceCurveCallback
from .video_dpo_config import VideoDPOConfig

logger = logging.getLogger(__name__)

__all__ = ["PreferenceCurveCallback", "VideoDPODataCollator", "VideoDPOTrainer"]

_CACHE_KEY_COLUMN = "__latent_cache_key"


class VideoDPODataCollator:
    """Collate pair rows into a batch.

    With a :class:`LatentCache` and rows carrying a cache key, returns cached ``latents_chosen``,
    ``latents_rejected`` and ``conditions`` (no decoding, no encoders). Otherwise decodes the videos and
    reference images: ``chosen`` / ``rejected`` ``uint8 (B, F, 3, H, W)``, ``images`` (PIL) and ``prompts``.
    """

    def __init__(self, *, num_frames: int, height: int, width: int, cache: LatentCache | None = None):
        self.num_frames, self.height, self.width = num_frames, height, width
        self.cache = cache

    def __call__(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        pair_ids = [pair_id(row) for row in rows]
        if self.cache is not None and _CACHE_KEY_COLUMN in rows[0]:
            batch = LatentCache.collate([self.cache.load(row[_CACHE_KEY_COLUMN]) for row in rows])
            return {**batch, "pair_ids": pair_ids}
        size = {"num_frames": self.num_frames, "height": self.height, "width": self.width}
        return {
            "images": [load_reference_image(r["image"], height=self.height, width=self.width) for r in rows],
            "prompts": [r["prompt"] for r in rows],
            "chosen": decode_pair_videos([r["chosen"] for r in rows], **size),
            "rejected": decode_pair_videos([r["rejected"] for r in rows], **size),
            "pair_ids": pair_ids,
        }


def pair_id(row: dict[str, Any]) -> str:
    """A stable identifier of a pair, used to seed its noise: a :func:`~icreward.trainers.adapter_lora.row_id` of
    the row's own ``row_id`` column when it has one (ids that survive moving the files), else of its prompt, video
    paths and image path."""
    if row.get("row_id") is not None:
        return row_id("row_id", str(row["row_id"]))
    payload = [str(row.get("prompt")), str(row.get("chosen")), str(row.get("rejected"))]
    if isinstance(row.get("image"), (str, os.PathLike)):
        payload.append(os.fspath(row["image"]))
    return row_id(*payload)


class _DenoiserPolicy(nn.Module):
    """The module the Trainer optimises and (under DDP) wraps: the trained denoiser(s), forward = adapter.predict.

    The VAE and encoders are deliberately not submodules, so the Trainer neither moves, wraps nor saves them.
    """

    def __init__(self, adapter: VideoModelAdapter):
        super().__init__()
        self.denoisers = nn.ModuleDict(adapter.trainable_modules)
        self.adapter = adapter

    def forward(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, conditions: dict[str, torch.Tensor]):
        return self.adapter.predict(noisy_latents, timesteps, conditions)

    def activation_checkpointing_enable(self, **kwargs: Any) -> None:
        self.adapter.enable_gradient_checkpointing()

    gradient_checkpointing_enable = activation_checkpointing_enable


_CITATION = """\
@misc{liang2025icreward,
    title  = {{ICReward: Learning Image-to-Video Consistency Rewards}},
    author = {Agnes Liang and Renee Zbizika},
    year   = {2025},
    note   = {Stanford University}
}

@inproceedings{wallace2024diffusiondpo,
    title     = {{Diffusion Model Alignment Using Direct Preference Optimization}},
    author    = {Bram Wallace and Meihua Dang and Rafael Rafailov and Linqi Zhou and Aaron Lou and Senthil Purushwalkam
                 and Stefano Ermon and Caiming Xiong and Shafiq Joty and Nikhil Naik},
    booktitle = {Proceedings of the IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR)},
    year      = {2024},
    eprint    = {2311.12908},
    archivePrefix = {arXiv}
}

@misc{liu2025videoalign,
    title  = {{Improving Video Generation with Human Feedback}},
    author = {Jie Liu and Gongye Liu and Jiajun Liang and Ziyang Yuan and Xiaokun Liu and Mingwu Zheng and Xiele Wu
              and Qulin Wang and Wenyu Qin and Menghan Xia and Xintao Wang and Xiaohong Liu and Fei Yang and
              Pengfei Wan and Di Zhang and Kun Gai and Yujiu Yang and Wanli Ouyang},
    year   = {2025},
    eprint = {2501.13918},
    archivePrefix = {arXiv}
}
"""


class VideoDPOTrainer(BaseVideoLoRATrainer):
    """Diffusion-DPO / Flow-DPO (and an SFT-on-chosen baseline) with LoRA on image-to-video diffusion pipelines.

    Args:
        model: a diffusers pipeline (``WanImageToVideoPipeline``, Wan 2.2 two-expert, ``CogVideoXImageToVideoPipeline``),
            a Hub id / local path of one, or a :class:`~icreward.adapters.VideoModelAdapter` (any family, e.g. your
            own Open-Sora adapter).
        ref_model: optional frozen reference (pipeline, name or adapter). By default the reference is ``model``
            itself with its LoRA disabled, which costs no memory.
        args: a :class:`VideoDPOConfig`.
        data_collator: defaults to :class:`VideoDPODataCollator` (cached latents or decoded videos).
        train_dataset, eval_dataset: preference pairs: a ``datasets.Dataset``, a list of row dicts or a
            ``.jsonl``/``.json`` path, with ``image`` (or ``reference``), ``prompt``, ``chosen``, ``rejected``.
            ``eval_dataset`` gives the held-out preference accuracy (the ICReward paper's Fig. 5).
        processing_class: unused by the loss (video pipelines carry their own tokenizers); saved if given.
        compute_metrics: receives ``EvalPrediction(predictions=(N, 2) [reward_chosen, reward_rejected],
            label_ids=zeros)`` when ``prediction_loss_only`` is off.
        callbacks, optimizers: as in :class:`transformers.Trainer`.
        peft_config: a peft ``LoraConfig`` injected into the trainable denoiser(s); ``target_modules=None`` uses the
            family's defaults. Required unless ``model`` already carries a LoRA adapter: only LoRA training is
            supported (the reference is the adapter-disabled network).
    """

    _name = "VideoDPOTrainer"
    _paper = {
        "description": "image-to-video preference optimisation towards videos that stay consistent with their "
        "reference image, following the ICReward recipe (pairs where the ICReward model's pick is preferred over the "
        "MLP baseline's pick).",
        "citation": _CITATION,
    }
    _tag_names = ["icreward", "video-dpo", "diffusers", "lora"]

    def __init__(
        self,
        model: Any,
        ref_model: Any | None = None,
        args: VideoDPOConfig | None = None,
        data_collator: Callable | None = None,
        train_dataset: Dataset | list | str | os.PathLike | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | list | str | os.PathLike | None = None,
        processing_class: Any | None = None,
        compute_metrics: Callable[[EvalPrediction], dict] | None = None,
        callbacks: list[TrainerCallback] | None = None,
        optimizers: tuple[torch.optim.Optimizer | None, torch.optim.lr_scheduler.LambdaLR | None] = (None, None),
        peft_config: Any | None = None,
    ):
        if args is None:
            args = VideoDPOConfig(output_dir="video-dpo")
        elif not isinstance(args, VideoDPOConfig):
            raise TypeError(f"args must be a VideoDPOConfig, got {type(args).__name__}")
        if train_dataset is None:
            raise ValueError("VideoDPOTrainer needs a train_dataset of preference pairs")

        # Check the data before touching the model: a bad pair should fail in seconds and leave the pipeline as is.
        train_dataset = self._prepare_pairs(train_dataset, args)
        if eval_dataset is not None:
            if isinstance(eval_dataset, dict):
                eval_dataset = {k: self._prepare_pairs(v, args) for k, v in eval_dataset.items()}
            else:
                eval_dataset = self._prepare_pairs(eval_dataset, args)

        adapter = self._resolve_adapter(model, args)
        self._setup_lora(adapter, peft_config, requirement="VideoDPOTrainer trains LoRA adapters")
        self._init_lora_trainer(adapter)
        self.ref_adapter = None if ref_model is None else self._resolve_adapter(ref_model, args)
        if self.ref_adapter is not None:
            self.ref_adapter.freeze()
        self._allow_unused_experts(adapter, args)

        self.latent_cache: LatentCache | None = None

        super().__init__(
            model=_DenoiserPolicy(adapter),
            args=args,
            data_collator=data_collator
            or VideoDPODataCollator(num_frames=args.num_frames, height=args.height, width=args.width),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            processing_class=processing_class,
            compute_metrics=compute_metrics,
            callbacks=callbacks,
            optimizers=optimizers,
        )
        device = self.args.device
        self._move_encoders(device)
        if self.ref_adapter is not None:
            for module in self.ref_adapter.trainable_modules.values():
                module.to(device)
        if args.precompute_latents:
            self._precompute_latents()
        if args.plot_preference_curves:
            self.add_callback(PreferenceCurveCallback())

    # ------------------------------------------------------------------------------------------------ setup
    @staticmethod
    def _prepare_pairs(dataset: Any, args: VideoDPOConfig) -> Dataset:
        dataset = load_dpo_pairs(dataset, image_column=args.image_column)
        if args.validate_pairs:
            validate_dpo_pairs(dataset)
        return dataset

    def _precompute_latents(self) -> None:
        args = self.args
        # "_" prefix: Trainer.push_to_hub skips "_*", so the cache is never uploaded with the LoRA.
        cache_dir = args.latent_cache_dir or os.path.join(args.output_dir, "_latent_cache")
        self.latent_cache = LatentCache(
            cache_dir, self.adapter, num_frames=args.num_frames, height=args.height, width=args.width
        )
        state = self.accelerator.state

        def _cache(dataset: Dataset) -> Dataset:
            keys = self.latent_cache.precompute(
                list(dataset),
                batch_size=args.precompute_batch_size,
                process_index=state.process_index,
                num_processes=state.num_processes,
            )
            if _CACHE_KEY_COLUMN in dataset.column_names:
                dataset = dataset.remove_columns(_CACHE_KEY_COLUMN)
            return dataset.add_column(_CACHE_KEY_COLUMN, keys)

        self.train_dataset = _cache(self.train_dataset)
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {k: _cache(v) for k, v in self.eval_dataset.items()}
        elif self.eval_dataset is not None:
            self.eval_dataset = _cache(self.eval_dataset)
        self.accelerator.wait_for_everyone()  # entries written by other processes are complete after this
        if isinstance(self.data_collator, VideoDPODataCollator):
            self.data_collator.cache = self.latent_cache
        # Steps only run the denoiser now: free the accelerator memory of the VAE and encoders.
        self._move_encoders("cpu")

    # ------------------------------------------------------------------------------------------------- loss
    def _pair_generators(self, training: bool, pair_ids: list[str]) -> list[torch.Generator]:
        """One generator per pair, keyed by the pair (and the step in training), never by the batch layout."""
        return self._row_generators(training, pair_ids)

    def _batch_generator(self, training: bool) -> torch.Generator:
        """Fallback for batches without ``pair_ids``: one generator per (process, step, micro-batch)."""
        mode = "train" if training else "eval"
        return self._generator("batch", mode, self.accelerator.process_index, *self._micro_batch_index())

    def _draw_noise(self, latents: torch.Tensor, training: bool, pair_ids: list[str] | None):
        """One timestep and one noise tensor per pair, drawn from that pair's own generator.

        A pair's draw depends only on the seed, the pair and (in training) the global step: not on its batch, the
        number of processes or gradient accumulation. So multi-process runs match single-process ones, resuming
        replays the run, and every evaluation scores a pair under the same noise.
        """
        args, adapter = self.args, self.adapter
        sampling = {"sampling": args.timestep_sampling, "logit_mean": args.logit_mean, "logit_std": args.logit_std}
        if pair_ids is None:
            generator = self._batch_generator(training)
            timesteps = adapter.sample_timesteps(latents.shape[0], generator=generator, device="cpu", **sampling)
            noise = torch.randn(latents.shape, generator=generator)
        else:
            if len(pair_ids) != latents.shape[0]:
                raise ValueError(f"got {len(pair_ids)} pair_ids for a batch of {latents.shape[0]} pairs")
            generators = self._pair_generators(training, pair_ids)
            timesteps = torch.cat(
                [adapter.sample_timesteps(1, generator=g, device="cpu", **sampling) for g in generators]
            )
            noise = self._row_noise(latents.shape[1:], generators)
        return timesteps.to(latents.device), noise.to(latents.device)

    def _encode_inputs(self, inputs: dict[str, Any]):
        device = self.args.device
        if "latents_chosen" in inputs:
            conditions = {k: v.to(device) for k, v in inputs["conditions"].items()}
            return inputs["latents_chosen"].to(device), inputs["latents_rejected"].to(device), conditions
        args = self.args
        with torch.no_grad():
            conditions = self.adapter.prepare_conditions(
                inputs["images"], inputs["prompts"], num_frames=args.num_frames, height=args.height, width=args.width
            )
            vae_device = next(self.adapter.vae.parameters()).device
            videos = torch.cat([inputs["chosen"], inputs["rejected"]]).to(vae_device)
            latents_chosen, latents_rejected = self.adapter.prepare_latents(videos).to(device).chunk(2)
        conditions = {k: v.to(device) for k, v in conditions.items()}
        return latents_chosen, latents_rejected, conditions

    def _reference_prediction(self, noisy, timesteps, conditions) -> torch.Tensor:
        with torch.no_grad(), self.accelerator.autocast():
            if self.ref_adapter is not None:
                return self.ref_adapter.predict(noisy, timesteps, conditions)
            with self.adapter.disable_lora():
                return self.adapter.predict(noisy, timesteps, conditions)

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        args, adapter = self.args, self.adapter
        training = model.training
        latents_w, latents_l, conditions = self._encode_inputs(inputs)
        timesteps, noise = self._draw_noise(latents_w, training, inputs.get("pair_ids"))

        if args.loss_type == "sft" and training:
            # The supervised baseline: flow-matching / denoising loss on the chosen videos only, no reference.
            noisy = adapter.add_noise(latents_w, noise, timesteps)
            mse_w = per_sample_mse(model(noisy, timesteps, conditions), adapter.target(latents_w, noise, timesteps))
            loss = mse_w.mean()
            self._store({"mse/chosen": mse_w}, training)
            return (loss, {"mse_chosen": mse_w.detach()}) if return_outputs else loss

        # Winner and loser share noise and timestep: the DPO difference then isolates the videos.
        latents = torch.cat([latents_w, latents_l])
        noise2, timesteps2 = torch.cat([noise, noise]), torch.cat([timesteps, timesteps])
        conditions2 = adapter.repeat_conditions(conditions, 2)
        noisy = adapter.add_noise(latents, noise2, timesteps2)
        target = adapter.target(latents, noise2, timesteps2)
        mse_w, mse_l = per_sample_mse(model(noisy, timesteps2, conditions2), target).chunk(2)
        ref_w, ref_l = per_sample_mse(self._reference_prediction(noisy, timesteps2, conditions2), target).chunk(2)

        dpo_losses = diffusion_dpo_loss(mse_w, mse_l, ref_w, ref_l, args.beta)
        loss = dpo_losses.mean() if args.loss_type == "dpo" else mse_w.mean()
        rewards_chosen = (-0.5 * args.beta * (mse_w - ref_w)).detach()
        rewards_rejected = (-0.5 * args.beta * (mse_l - ref_l)).detach()
        accuracies = dpo_implicit_accuracy(mse_w.detach(), mse_l.detach(), ref_w, ref_l)
        self._store(
            {
                "rewards/chosen": rewards_chosen,
                "rewards/rejected": rewards_rejected,
                "rewards/accuracies": accuracies,
                "rewards/margins": rewards_chosen - rewards_rejected,
                "mse/chosen": mse_w.detach(),
                "mse/rejected": mse_l.detach(),
                "mse/ref_chosen": ref_w,
                "mse/ref_rejected": ref_l,
                "dpo_loss": dpo_losses.detach(),
            },
            training,
        )
        outputs = {"rewards_chosen": rewards_chosen, "rewards_rejected": rewards_rejected, "accuracies": accuracies}
        return (loss, outputs) if return_outputs else loss

    @staticmethod
    def _logits_and_labels(outputs: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``prediction_step``'s logits ``(N, 2)`` [reward_chosen, reward_rejected] and zero labels."""
        logits = torch.stack([outputs["rewards_chosen"], outputs["rewards_rejected"]], dim=1)
        return logits, torch.zeros(logits.shape[0], device=logits.device)

    def _pop_metrics(self, mode: str) -> dict[str, float]:
        """Means over the pairs since the last log, and their count ``num_pairs``."""
        num_pairs = len(next(iter(self._metrics[mode].values()), []))
        metrics = super()._pop_metrics(mode)
        if metrics:
            metrics["num_pairs"] = num_pairs
        return metrics

    def _attach_train_metrics(self, logs: dict[str, float]) -> bool:
        return True  # every log while training, the final one of train() included

    # ----------------------------------------------------------------------------------------------- saving
    def _training_summary(self) -> list[str]:
        """Objective, sampling, LoRA, batch and the last held-out preference accuracy, for the model card."""
        args, adapter = self.args, self.adapter
        evals = [log for log in self.state.log_history if "eval_rewards/accuracies" in log]
        effective_batch, breakdown = batch_breakdown(args)
        if args.loss_type == "sft":
            objective = "supervised fine-tuning on the chosen videos (SFT baseline)"
        elif adapter.prediction_type == "flow":
            objective = f"Flow-DPO (Diffusion-DPO on velocity targets), beta = {args.beta}"
        else:
            objective = f"Diffusion-DPO on {adapter.prediction_type} targets, beta = {args.beta}"
        training = [
            f"- objective: {objective}; reference model: the base model (LoRA disabled)",
            f"- timestep sampling: {args.timestep_sampling}; video size: {args.num_frames} frames at "
            f"{args.height}x{args.width}",
            f"- LoRA: {describe_lora(adapter)}",
            f"- learning rate {args.learning_rate}, effective batch {effective_batch} pairs ({breakdown}), seed "
            f"{args.seed}",
        ]
        if self.train_dataset is not None:
            training.append(f"- training pairs: {len(self.train_dataset)}")
        if evals:
            training.append(
                f"- held-out preference accuracy at step {evals[-1].get('step')}: "
                f"{evals[-1]['eval_rewards/accuracies']:.3f}"
            )
        return training
