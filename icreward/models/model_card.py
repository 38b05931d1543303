"""Hub metadata for the reward models: model cards filled from the config and (when available) the training run,
and Hub upload errors that say what went wrong (:func:`explain_hub_errors`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

__all__ = [
    "ICREWARD_CITATION",
    "PIPELINE_TAG",
    "HubUnreachableError",
    "create_reward_model_card",
    "explain_hub_errors",
    "hub_unreachable",
    "is_hub_id",
]


class HubUnreachableError(ConnectionError):
    """A Hub request failed because ``HF_HUB_OFFLINE`` is set or the Hub cannot be reached; says which, and what
    to do. The original error is its ``__cause__``."""


_NETWORK_ERRORS = {"ConnectError", "ConnectTimeout", "ConnectionError", "OfflineModeIsEnabled"}
_NETWORK_MODULES = ("httpx", "httpx2", "requests", "huggingface_hub", "urllib3")


def hub_unreachable(error: BaseException) -> bool:
    """True for connection failures of huggingface_hub's HTTP clients (httpx, requests) and its offline refusal."""
    return any(
        cls.__name__ in _NETWORK_ERRORS and cls.__module__.split(".")[0] in _NETWORK_MODULES
        for cls in type(error).__mro__
    )


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


@contextlib.contextmanager
def explain_hub_errors(action: str) -> Iterator[None]:
    """Re-raise a Hub connection failure inside the block as :class:`HubUnreachableError` naming ``action`` (e.g.
    ``"push_to_hub('org/name')"``), whether ``HF_HUB_OFFLINE`` is set, and the fix."""
    try:
        yield
    except Exception as error:
        if not hub_unreachable(error):
            raise
        if _offline():
            reason, fix = "HF_HUB_OFFLINE=1 is set", "unset HF_HUB_OFFLINE on a machine with network access"
        else:
            reason, fix = "the Hugging Face Hub cannot be reached", "check the network (and proxy settings)"
        raise HubUnreachableError(
            f"{action} failed: {reason} ({type(error).__name__}: {error}). Uploads need the Hub: {fix} and log in "
            "(`hf auth login`); to keep the model locally, use save_pretrained(folder)."
        ) from error


ICREWARD_CITATION = """@misc{liang2025icreward,
  title  = {ICReward: Learning Image-to-Video Consistency Rewards},
  author = {Liang, Agnes and Zbizika, Renee},
  year   = {2025},
  note   = {Stanford University}
}"""

_TEMPLATE_PATH = Path(__file__).with_name("templates") / "reward_model_card.md"

#: Trainer bookkeeping that ``Trainer.evaluate`` adds to its metrics: not results, so not in the card.
_RUNTIME_METRICS = ("runtime", "samples_per_second", "steps_per_second", "epoch")

#: The Hub task a reward model's evaluation results are filed under (a scalar score of a video, as TRL files its
#: sequence-classification reward models under text-classification).
PIPELINE_TAG = "video-classification"

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")


def is_hub_id(name: str | None) -> bool:
    """``org/name`` that is not a local path: the only kind of name the card's ``datasets`` / ``base_model`` hold."""
    return bool(name) and bool(_HUB_ID.match(str(name))) and not os.path.exists(str(name))


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _result_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """The evaluation results in ``metrics``, without the trainer's runtime fields."""
    return {
        key: value
        for key, value in (metrics or {}).items()
        if not any(key == name or key.endswith(f"_{name}") for name in _RUNTIME_METRICS)
    }


def _format_metrics(metrics: dict[str, Any] | None) -> str:
    metrics = _result_metrics(metrics)
    if not metrics:
        return "No evaluation recorded with this checkpoint."
    rows = ["| metric | value |", "|---|---|"]
    for key, value in metrics.items():
        rows.append(f"| {key} | {value:.4f} |" if isinstance(value, float) else f"| {key} | {value} |")
    return "\n".join(rows)


def _title_and_architecture(config, is_icreward: bool) -> tuple[str, str]:
    """The card's title and its architecture paragraph for an ICReward or MLP reward model config."""
    if is_icreward:
        architecture = (
            "An attention-based Image Consistency head lets every frame token attend to the reference image's "
            f"tokens (cross-attention, {_plural(config.head_num_layers, 'block')}, width {config.head_hidden_size}), "
            f"pools over space and time and outputs the heads {config.heads} (weights {config.head_weights})."
        )
        title = "ICReward: image-to-video consistency reward model"
    else:
        architecture = (
            "The ICReward paper's baseline: an MLP over concatenated features of the reference image and each "
            "frame; the video's score is the average frame reward."
        )
        title = "MLP baseline reward model (image-to-video consistency)"
    return title, architecture


def _card_data(
    model_name: str,
    backbone_id: str | None,
    dataset_name: str | None,
    metrics: dict[str, Any] | None,
    license: str,
    metrics_split: str,
) -> ModelCardData:
    """The card's Hub metadata: ``base_model`` / ``datasets`` only when Hub ids, float ``metrics`` as results."""
    base_model = backbone_id if is_hub_id(backbone_id) else None
    dataset_id = dataset_name if is_hub_id(dataset_name) else None
    results = {k: v for k, v in _result_metrics(metrics).items() if isinstance(v, int | float)}
    eval_results = [
        EvalResult(
            task_type=PIPELINE_TAG,
            task_name="image-to-video consistency scoring",
            dataset_type=dataset_id or "local",
            dataset_name=dataset_name or "not recorded",
            dataset_split=metrics_split,
            metric_type=key.removeprefix(f"{metrics_split}_"),
            metric_name=key,
            metric_value=float(value),
        )
        for key, value in results.items()
    ]
    return ModelCardData(
        library_name="icreward",
        pipeline_tag=PIPELINE_TAG,
        license=license,
        tags=["icreward", "reward-model", "image-to-video", "video-consistency"],
        datasets=[dataset_id] if dataset_id else None,
        base_model=base_model,
        model_name=model_name,
        eval_results=eval_results or None,
    )


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
    metrics_split: str = "test",
) -> ModelCard:
    """Build a :class:`huggingface_hub.ModelCard` for an ICReward or MLP reward model (works offline).

    Rendered from ``templates/reward_model_card.md``. Hub metadata: ``library_name: icreward``, ``pipeline_tag``
    (:data:`PIPELINE_TAG`), ``base_model`` and ``datasets`` only when they are Hub ids (``org/name``, not a local
    path; free-text data names go to the "Training data" section), and a ``model-index`` with the float
    ``metrics`` (trainer runtime fields left out) as results on ``metrics_split`` of the data.
    """
    config = model.config
    is_icreward = config.model_type == "icreward"
    model_class = "ICRewardModel" if is_icreward else "MLPRewardModel"
    title, architecture = _title_and_architecture(config, is_icreward)
    backbone_id = config.backbone_name_or_path
    card_data = _card_data(repo_id or title, backbone_id, dataset_name, metrics, license, metrics_split)
    trainable = "frozen" if config.freeze_backbone and not getattr(config, "backbone_lora", None) else "fine-tuned"
    if getattr(config, "backbone_lora", None):
        trainable = "LoRA-tuned"
    training = (
        "Not recorded."
        if not training_args
        else "```json\n" + json.dumps(training_args, indent=2, default=str) + "\n```"
    )
    if backbone_id:
        backbone = f"`{backbone_id}`"
    else:
        backbone = f"`{config.backbone_config.get('model_type', config.backbone_type)}` (random init, no checkpoint)"
    if training_data is None:
        training_data = f"`{dataset_name}`" if dataset_name else "Not recorded."
    content = _TEMPLATE_PATH.read_text(encoding="utf-8").format(
        card_data=card_data.to_yaml(),
        title=title,
        description=f"An `{model_class}` of the `icreward` library (`pip install icreward`), implementing the "
        "ICReward paper's image-to-video consistency reward.",
        architecture=architecture,
        backbone=backbone,
        backbone_type=config.backbone_type,
        backbone_state=trainable,
        num_frames=config.num_frames,
        image_size=config.image_size,
        repo_id=repo_id or "path/to/this/model",
        training_data=training_data,
        metrics=_format_metrics(metrics),
        training=training,
        label_source=label_source,
        citation=ICREWARD_CITATION,
    )
    return ModelCard(content)
