"""Validation videos of the reward-feedback trainer: sampled from fixed noise before training and every
``validation_steps`` optimiser steps, saved, scored, logged and sent to wandb / tensorboard."""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from .reward_feedback_sampling import sample_with_truncated_backprop

logger = logging.getLogger("icreward.trainers.reward_feedback_trainer")

__all__ = ["ValidationVideosMixin"]


class _ValidationCallback(TrainerCallback):
    """Generate validation videos before training and every ``validation_steps`` optimiser steps."""

    def __init__(self, trainer: Any):
        self.trainer = trainer

    def on_train_begin(self, args, state, control, **kwargs):
        if state.global_step == 0:
            self.trainer.generate_validation_videos()

    def on_step_end(self, args, state, control, **kwargs):
        if args.validation_steps and state.global_step % args.validation_steps == 0:
            self.trainer.generate_validation_videos()


class ValidationVideosMixin:
    """:meth:`generate_validation_videos` for a :class:`~icreward.trainers.base_trainer.BaseVideoLoRATrainer` that
    samples with :func:`sample_with_truncated_backprop` (``self._validation_rows``, ``self._validation_collator``,
    ``self._encode_conditions``, ``self._draw_noise``, ``self.reward``); :meth:`_add_validation` registers the
    callback."""

    def _add_validation(self, rows: list[dict[str, Any]], collator: Any) -> None:
        self._validation_collator = collator
        self._validation_rows = rows
        self._warned_video_trackers: set[str] = set()
        if rows:
            self.add_callback(_ValidationCallback(self))

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
