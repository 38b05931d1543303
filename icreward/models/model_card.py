"""Hub model cards for the reward models, filled from the config and (when available) the training run."""

from __future__ import annotations

import json
from typing import Any

from huggingface_hub import ModelCard, ModelCardData

__all__ = ["ICREWARD_CITATION", "create_reward_model_card"]

ICREWARD_CITATION = """@misc{liang2025icreward,
  title  = {ICReward: Learning Image-to-Video Consistency Rewards},
  author = {Liang, Agnes and Zbizika, Renee},
  year   = {2025},
  note   = {Stanford University}
}"""

_TEMPLATE = """---
{card_data}
---

# {title}

{description}

## What it scores
Given a **reference image** and a **video**, the model returns a score in `[0, 1]`: how faithfully the video
keeps the look of the image (subject identity, colours, objects, background), independent of camera or subject
motion. {architecture}

- Backbone: `{backbone}` ({backbone_type}, {backbone_state})
- Frames per video: {num_frames}, input size: {image_size} px

## Usage
```python
from icreward import {model_class}
model = {model_class}.from_pretrained("{repo_id}")
score = model.score("reference.png", "video.mp4")   # tensor in [0, 1]
```

## Training data
{training_data}

## Evaluation
{metrics}

## Training procedure
{training}

## Intended use
Ranking and filtering image-to-video generations (best-of-N selection), building preference pairs for
DPO-style fine-tuning, and as a differentiable reward for reward-feedback learning.

## Limitations
- Trained on proxy labels ({label_source}), not on human judgements; the ICReward paper names this its main
  limitation. Validate on human preferences before relying on it.
- A reward optimised against becomes a target: check fine-tuned models with metrics it was not trained on
  (reward hacking).
- Generalisation to unseen prompts, motion types and domains is not established.

## Citation
```bibtex
{citation}
```
"""


def _format_metrics(metrics: dict[str, Any] | None) -> str:
    if not metrics:
        return "No evaluation recorded with this checkpoint."
    rows = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        rows.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(rows)


def create_reward_model_card(
    model,
    *,
    repo_id: str | None = None,
    dataset_name: str | None = None,
    training_data: str | None = None,
    label_source: str = "VBench++ I2V consistency scores or the bundled stress-test suite",
    metrics: dict[str, Any] | None = None,
    training_args: dict[str, Any] | None = None,
    license: str = "apache-2.0",
) -> ModelCard:
    """Build a :class:`huggingface_hub.ModelCard` for an ICReward or MLP reward model (works offline)."""
    config = model.config
    is_icreward = config.model_type == "icreward"
    model_class = "ICRewardModel" if is_icreward else "MLPRewardModel"
    if is_icreward:
        architecture = (
            "An attention-based Image Consistency head lets every frame token attend to the reference image's "
            f"tokens (cross-attention, {config.head_num_layers} blocks, width {config.head_hidden_size}), pools over "
            f"space and time and outputs the heads {config.heads} (weights {config.head_weights})."
        )
        title = "ICReward: image-to-video consistency reward model"
    else:
        architecture = (
            "The ICReward paper's baseline: an MLP over concatenated features of the reference image and each "
            "frame; the video's score is the average frame reward."
        )
        title = "MLP baseline reward model (image-to-video consistency)"
    card_data = ModelCardData(
        library_name="icreward",
        license=license,
        tags=["icreward", "reward-model", "image-to-video", "video-consistency"],
        datasets=[dataset_name] if dataset_name else None,
        base_model=config.backbone_name_or_path
        if config.backbone_name_or_path and "/" in str(config.backbone_name_or_path)
        else None,
    )
    trainable = "frozen" if config.freeze_backbone and not getattr(config, "backbone_lora", None) else "fine-tuned"
    if getattr(config, "backbone_lora", None):
        trainable = "LoRA-tuned"
    training = (
        "Not recorded."
        if not training_args
        else "```json\n" + json.dumps(training_args, indent=2, default=str) + "\n```"
    )
    content = _TEMPLATE.format(
        card_data=card_data.to_yaml(),
        title=title,
        description=f"A `{model_class}` from [icreward](https://github.com/icreward/icreward), implementing the ICReward paper.",
        architecture=architecture,
        backbone=config.backbone_name_or_path or config.backbone_config.get("model_type", config.backbone_type),
        backbone_type=config.backbone_type,
        backbone_state=trainable,
        num_frames=config.num_frames,
        image_size=config.image_size,
        model_class=model_class,
        repo_id=repo_id or "path/to/this/model",
        training_data=training_data or (f"`{dataset_name}`" if dataset_name else "Not recorded."),
        metrics=_format_metrics(metrics),
        training=training,
        label_source=label_source,
        citation=ICREWARD_CITATION,
    )
    return ModelCard(content)
