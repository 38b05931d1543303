"""The base of the trainers that sample videos for (reference image, prompt) rows and score them with rewards
(:class:`~icreward.trainers.reward_feedback_trainer.RewardFeedbackTrainer`,
:class:`~icreward.trainers.video_grpo_trainer.VideoGRPOTrainer`): the reward(s) in one
:class:`~icreward.rewards.combined.CombinedReward`, the rows checked and handed to the rewards before training, and
the conditions of a batch."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from datasets import Dataset

from ..rewards.combined import BaseVideoReward, CombinedReward, as_video_reward
from .base_trainer import BaseVideoLoRATrainer
from .prompt_data import (
    ROW_KEY_COLUMN,
    RewardFeedbackCollator,
    describe_value,
    load_ground_truth_frames,
    load_prompt_dataset,
    open_image,
    with_row_keys,
)

__all__ = ["DEFAULT_REWARD_WEIGHT", "PromptRewardTrainerBase"]

#: IPRO's face-reward weight, the default weight of every reward.
DEFAULT_REWARD_WEIGHT = 0.1


class PromptRewardTrainerBase(BaseVideoLoRATrainer):
    """A :class:`BaseVideoLoRATrainer` over ``image`` / ``prompt`` / ``ground_truth`` rows scored by ``self.reward``.

    Its ``__init__`` calls :meth:`_setup_reward` (before ``Trainer.__init__``), loads the datasets with
    :meth:`_load_rows`, and after ``Trainer.__init__`` calls :meth:`_place_and_prepare`.
    """

    def _setup_reward(self, reward_funcs: Any, reward_weights: list[float] | None) -> None:
        self.reward = self._build_reward(reward_funcs, reward_weights)
        self.reward.eval().requires_grad_(False)

    @staticmethod
    def _load_rows(train_dataset: Any, eval_dataset: Any) -> tuple[Dataset, Dataset | None]:
        """Both datasets loaded (:func:`load_prompt_dataset`) with their row-key and row-id columns."""
        train_dataset = with_row_keys(load_prompt_dataset(train_dataset))
        if eval_dataset is not None:
            eval_dataset = with_row_keys(load_prompt_dataset(eval_dataset))
        return train_dataset, eval_dataset

    def _collator(self, args: Any) -> RewardFeedbackCollator:
        """The default collator (``self.reward`` says whether it loads ground-truth frames)."""
        return RewardFeedbackCollator(
            height=args.height,
            width=args.width,
            load_ground_truth_frames=self.reward.needs_ground_truth_frames,
            ground_truth_max_frames=args.ground_truth_max_frames,
        )

    def _place_and_prepare(self) -> None:
        """Move the encoders, frozen denoisers (Wan 2.2's untrained expert samples the high-noise steps) and rewards
        to the device; then fail on bad rows before the first step, and build per-row reward state (face pools)
        once."""
        device = self.args.device
        self._move_encoders(device)
        self._move_frozen_denoisers(device)
        self.reward.to(device)
        self._prepare_rewards(self.train_dataset, "train_dataset")
        if self.eval_dataset is not None:
            self._prepare_rewards(self.eval_dataset, "eval_dataset")

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
    def _with_row_keys(dataset: Dataset) -> Dataset:
        """:func:`~icreward.trainers.prompt_data.with_row_keys`."""
        return with_row_keys(dataset)

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
            key = row[ROW_KEY_COLUMN]
            if not isinstance(row["prompt"], str):
                raise ValueError(f"{what} row {index}: prompt must be a string, got {type(row['prompt']).__name__}")
            if key in done:
                continue
            described = describe_value(row["image"])
            try:
                reference = load_image(open_image(row["image"])).float() / 255.0
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
                            f"{what} row {index}: cannot use ground_truth {describe_value(ground_truth)}: {error}"
                        ) from error
                elif isinstance(ground_truth, (str, os.PathLike)) and not os.path.exists(ground_truth):
                    raise ValueError(f"{what} row {index}: ground_truth {ground_truth} does not exist")
            try:
                self.reward.prepare(reference, frames, key=key)
            except FaceNotFoundError as error:
                raise FaceNotFoundError(f"{what} row {index} (image {described}): {error}") from error
            done.add(key)

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
