"""Best-of-N selection with reward models: the ICReward paper's naive-sampling evaluation (Table 1, Figure 3).

For every reference image a policy samples ``N`` candidate videos (the paper: 5 Open-Sora samples). Each
*selection method* picks one candidate per image; the picked videos are then scored with metrics the selectors did
not use:

* **CLIPSim** (:class:`~icreward.metrics.CLIPSimilarity`): mean cosine between the CLIP embedding of the reference
  image and of every frame of the picked video, averaged over images (Table 1 "Avg. CLIPSim", Figure 3 per image).
* **FVD** (:class:`~icreward.metrics.FrechetVideoDistance`): Frechet distance between I3D features of the set of
  picked videos (one per image) and a reference set. Table 1 does not say what its reference set is. Here it is
  ``real_videos`` when given (e.g. ground-truth clips), and otherwise **each reference image repeated as a static
  video** with the frame count and resolution of its candidates. The static reference measures how far the picks
  drift from the reference appearance, but it also rewards *not moving*: a frozen copy of the reference has the
  lowest possible FVD. Report a motion metric (e.g. :func:`~icreward.metrics.dynamic_degree` through ``metrics``)
  next to it. FVD needs at least two images, is strongly biased by the number of videos (published numbers use
  thousands) and is only comparable between methods evaluated on the same images with the same I3D weights.
* any per-video metric ``fn(reference, video)`` (I2V consistency, dynamic degree, FaceSim, ...), and the
  **oracle label** of the pick when the candidates carry labels (e.g. VBench++ scores or human ratings).

Selection methods (the values of ``selectors``, see :func:`as_selector`):

* ``"random"``: a seeded uniform pick (the paper's "random"); the seed and the image id fix the pick, so reruns and
  subsets give the same picks.
* a reward model with a ``score(references, videos)`` method (:class:`~icreward.ICRewardModel`,
  :class:`~icreward.MLPRewardModel`): the candidate with the highest score. The MLP baseline's score is its average
  per-frame reward, which is how the paper ranks with it.
* ``"oracle"``: the candidate with the highest label (an upper bound for any selector).
* any callable ``fn(reference (3, H, W) uint8, video (F, 3, H, W) uint8) -> float`` (higher is better).

Candidates come from :func:`load_candidates` (a :class:`datasets.Dataset` grouped by image, or a folder per image),
or are generated with a policy by :func:`generate_candidates` (any ``generate(image, prompt, num_videos, seed)``
callable, e.g. :func:`pipeline_generator` around a diffusers image-to-video pipeline).

Example:

```python
from icreward import ICRewardModel, MLPRewardModel
from icreward.evaluation.best_of_n import load_candidates, run_best_of_n
from icreward.metrics import CLIPSimilarity, FrechetVideoDistance

report = run_best_of_n(
    load_candidates("outputs/candidates"),  # outputs/candidates/<image>/{reference.png, *.mp4}
    {"random": "random", "MLP": MLPRewardModel.from_pretrained("mlp"), "ICReward": ICRewardModel.from_pretrained("icr")},
    clipsim=CLIPSimilarity.from_transformers("openai/clip-vit-base-patch32"),
    fvd=FrechetVideoDistance(checkpoint="rgb_imagenet.pt"),
    output_dir="outputs/best_of_n",  # report.json, report.md, per_sample_clipsim.png, summary.png
)
print(report.to_markdown())
```
"""

from __future__ import annotations

import difflib
import inspect
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from icreward.evaluation.best_of_n_candidates import (
    CandidateGroup,
    VideoGenerator,  # noqa: F401  (importable from here as before)
    as_image_tensor,
    as_video_tensor,
    generate_candidates,
    load_candidates,
    pipeline_generator,
    tqdm_disable,
)
from icreward.evaluation.best_of_n_report import CLIPSIM_METRIC as _CLIPSIM
from icreward.evaluation.best_of_n_report import FVD_METRIC as _FVD
from icreward.evaluation.best_of_n_report import BestOfNReport, finite_mean
from icreward.evaluation.best_of_n_selectors import (
    OracleSelector,
    RandomSelector,
    RewardModelSelector,
    ScoreFn,  # noqa: F401  (importable from here as before)
    ScoreSelector,
    Selection,
    Selector,
    as_score_fn,
    as_selector,
    metric_value,
)

logger = logging.getLogger(__name__)

__all__ = [
    "BestOfNReport",
    "CandidateGroup",
    "OracleSelector",
    "RandomSelector",
    "RewardModelSelector",
    "ScoreSelector",
    "Selection",
    "Selector",
    "as_score_fn",
    "as_selector",
    "generate_candidates",
    "load_candidates",
    "metric_value",
    "pipeline_generator",
    "run_best_of_n",
]

# Old private names, kept importable for modules that used them from here (icreward.evaluation.paper_pipeline).
_as_image_tensor, _as_video_tensor = as_image_tensor, as_video_tensor


# ---------------------------------------------------------------------------------------------------------------------
# Runner
# ---------------------------------------------------------------------------------------------------------------------


def _static_clip(reference: torch.Tensor, num_frames: int, height: int, width: int) -> torch.Tensor:
    if reference.shape[-2:] != (height, width):
        resized = F.interpolate(reference[None].float(), size=(height, width), mode="bilinear", antialias=True)
        reference = resized[0].round().clamp(0, 255).to(torch.uint8)
    return reference[None].expand(num_frames, -1, -1, -1).contiguous()


def run_best_of_n(
    candidates: Any,
    selectors: Mapping[str, Any],
    *,
    clipsim: Any = None,
    fvd: Any = None,
    real_videos: Sequence[Any] | None = None,
    metrics: Mapping[str, Callable[[torch.Tensor, torch.Tensor], Any]] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    label_name: str = "oracle_label",
    num_frames: int | None = None,
    seed: int = 0,
    output_dir: str | os.PathLike | None = None,
    progress: bool = True,
    **load_kwargs: Any,
) -> BestOfNReport:
    """Run every selection method on every image and evaluate the picks (Table 1, Figure 3).

    Args:
        candidates: a list of :class:`CandidateGroup`, or anything :func:`load_candidates` reads (``load_kwargs``
            are passed to it: ``label_column``, ``group_by``, ...).
        selectors: ``name -> selector`` (see :func:`as_selector`): ``"random"``, ``"oracle"``, reward models, score
            callables or :class:`Selector` objects, in report order.
        clipsim: a :class:`~icreward.metrics.CLIPSimilarity` (or a CLIP model, wrapped in one) for CLIPSim.
        fvd: a :class:`~icreward.metrics.FrechetVideoDistance` for the FVD of each method's picks (needs >= 2
            images; its ``num_frames`` must not exceed the candidates' frame count).
        real_videos: the FVD reference set; default: each reference image as a static video (see the module
            docstring for what that measures).
        metrics: extra per-video metrics ``name -> fn(reference, video)`` on uint8 tensors, returning a number, a
            0-d tensor, a result with ``mean``, or a dict of numbers (one metric ``name/key`` per entry).
        higher_is_better: direction of the extra metrics (default: higher is better).
        label_name: report name of the oracle label metric (present when every group has labels).
        num_frames: frames decoded per video for selection and metrics (uniformly sampled); ``None``: all frames.
        seed: seed of the ``"random"`` selector.
        output_dir: when set, the report is saved there (:meth:`BestOfNReport.save`).
        progress: show a progress bar over the images (tqdm; hidden when not on a terminal or notebook).
        load_kwargs: passed to :func:`load_candidates`; any other keyword raises :class:`TypeError`.

    Returns:
        A :class:`BestOfNReport`.
    """
    if not selectors:
        raise ValueError("no selectors given")
    _check_load_kwargs(load_kwargs)
    groups = load_candidates(candidates, **load_kwargs)
    chosen = {name: as_selector(sel, seed=seed) for name, sel in selectors.items()}
    run = _BestOfNRun(chosen, _as_clipsim(clipsim), _extra_metrics(metrics, label_name), label_name, fvd, real_videos)
    run.has_labels = all(g.labels is not None for g in groups)
    for g, group in enumerate(tqdm(groups, desc="best-of-N", unit="image", disable=tqdm_disable(progress))):
        run.add(g, group, group.load_reference(), group.load_videos(num_frames))
        logger.info(
            "best-of-n: %s (%d/%d) picks %s",
            group.sample_id,
            g + 1,
            len(groups),
            {n: s[-1] for n, s in run.selections.items()},
        )
    settings = {"seed": seed, "num_frames": num_frames, "selectors": {n: repr(s) for n, s in chosen.items()}}
    report = run.report(groups, higher_is_better, settings)
    if output_dir is not None:
        report.save(output_dir)
    return report


def _as_clipsim(clipsim: Any) -> Any:
    if clipsim is None:
        return None
    from ..metrics import CLIPSimilarity

    return clipsim if isinstance(clipsim, CLIPSimilarity) else CLIPSimilarity(clipsim)


def _extra_metrics(metrics: Mapping[str, Any] | None, label_name: str) -> dict[str, Callable]:
    extra = {name: _as_metric_fn(fn) for name, fn in (metrics or {}).items()}
    reserved = {_CLIPSIM, _FVD, label_name}
    if reserved & set(extra):
        raise ValueError(f"metric names {sorted(reserved & set(extra))} are reserved")
    return extra


class _BestOfNRun:
    """What :func:`run_best_of_n` accumulates image by image, and the report made from it."""

    def __init__(self, chosen, clipsim, extra, label_name, fvd, real_videos):
        self.chosen, self.clipsim, self.extra, self.label_name = chosen, clipsim, extra, label_name
        self.fvd, self.real_videos = fvd, real_videos
        self.has_labels = False
        self.selections: dict[str, list[int]] = {name: [] for name in chosen}
        self.selector_scores: dict[str, list[list[float]] | None] = {name: [] for name in chosen}
        self.candidate_metrics: dict[str, list[list[float]]] = {}
        self.fvd_features: list[torch.Tensor] = []
        self.fvd_static: list[torch.Tensor] = []

    def add(self, g: int, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> None:
        """Run every selector on one image's candidates and measure the candidates."""
        for name, selector in self.chosen.items():
            picked = selector(group, reference, videos)
            if not 0 <= picked.index < len(videos):
                raise ValueError(f"selector {name!r} picked candidate {picked.index} of {len(videos)}")
            self.selections[name].append(int(picked.index))
            if picked.scores is None:
                self.selector_scores[name] = None
            elif self.selector_scores[name] is not None:
                self.selector_scores[name].append([float(s) for s in picked.scores])
        for metric, values in self._measure(group, reference, videos).items():
            if g > 0 and metric not in self.candidate_metrics:
                raise ValueError(f"metric {metric!r} appeared for sample {group.sample_id!r} but not before it")
            self.candidate_metrics.setdefault(metric, []).append(values)
        if self.fvd is not None:
            self.fvd_features.append(self.fvd.extract_features(videos))
            if self.real_videos is None:
                count = self.fvd.num_frames or videos[0].shape[0]
                self.fvd_static.append(_static_clip(reference, count, *videos[0].shape[-2:]))

    def _measure(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]):
        per_video: dict[str, list[float]] = {}
        if self.clipsim is not None:
            with torch.no_grad():
                per_video[_CLIPSIM] = [float(self.clipsim(reference, v).mean) for v in videos]
        if self.has_labels:
            per_video[self.label_name] = list(group.labels)
        for name, fn in self.extra.items():
            for k, video in enumerate(videos):
                for key, value in fn(reference, video).items():
                    metric = name if key is None else f"{name}/{key}"
                    per_video.setdefault(metric, [float("nan")] * len(videos))[k] = value
        return per_video

    def report(self, groups: list[CandidateGroup], higher_is_better, settings: dict[str, Any]) -> BestOfNReport:
        higher_is_better = dict(higher_is_better or {})
        unknown = set(higher_is_better) - set(self.extra)
        if unknown:
            raise ValueError(
                f"higher_is_better names unknown metrics {sorted(unknown)}; the metrics are {sorted(self.extra)}"
            )
        # A dict-valued metric "name" expands to "name/key" entries, which inherit its direction.
        directions = {
            name: bool(higher_is_better.get(name, higher_is_better.get(name.split("/", 1)[0], True)))
            for name in self.candidate_metrics
        }
        summary: dict[str, dict[str, float | None]] = {name: {} for name in self.chosen}
        all_candidates: dict[str, float | None] = {}
        for metric, values in self.candidate_metrics.items():
            for name in self.chosen:
                summary[name][metric] = finite_mean([values[g][k] for g, k in enumerate(self.selections[name])])
            all_candidates[metric] = finite_mean([v for row in values for v in row])
        if self.fvd is not None:
            directions[_FVD] = False
            self._add_fvd(len(groups), summary, all_candidates, settings)
        return BestOfNReport(
            methods=list(self.chosen),
            sample_ids=[g.sample_id for g in groups],
            video_ids=[list(g.video_ids) for g in groups],
            video_paths=[g.video_paths for g in groups],
            reference_paths=[g.reference_path for g in groups],
            prompts=[g.prompt for g in groups],
            selections=self.selections,
            selector_scores=self.selector_scores,
            candidate_metrics=self.candidate_metrics,
            summary=summary,
            all_candidates=all_candidates,
            higher_is_better=directions,
            settings=settings,
        )

    def _add_fvd(self, num_groups: int, summary, all_candidates, settings: dict[str, Any]) -> None:
        from ..metrics import frechet_distance

        if self.real_videos is not None:
            real = self.fvd.extract_features([as_video_tensor(v) for v in self.real_videos])
            settings["fvd_reference"] = f"{real.shape[0]} real videos"
        else:
            real = self.fvd.extract_features(self.fvd_static)
            settings["fvd_reference"] = "reference images repeated as static videos"
        settings["fvd_num_videos"] = num_groups
        if num_groups < 2 or real.shape[0] < 2:
            logger.warning("FVD needs at least 2 images and 2 reference videos; it is not reported")
            settings["fvd_reference"] += " (too few videos: FVD not computed)"
        else:
            for name in self.chosen:
                picked = torch.stack([self.fvd_features[g][k] for g, k in enumerate(self.selections[name])])
                summary[name][_FVD] = frechet_distance(real, picked)
            all_candidates[_FVD] = frechet_distance(real, torch.cat(self.fvd_features))


def _check_load_kwargs(load_kwargs: Mapping[str, Any]) -> None:
    """Refuse keywords that neither :func:`run_best_of_n` nor :func:`load_candidates` take, naming the close ones
    (``clip=`` -> ``clipsim``), instead of letting them fall through to :func:`load_candidates`."""
    allowed = set(inspect.signature(load_candidates).parameters) - {"source"}
    own = set(inspect.signature(run_best_of_n).parameters) - {"load_kwargs"}
    for key in load_kwargs:
        if key not in allowed:
            close = difflib.get_close_matches(key, sorted(own | allowed), n=2, cutoff=0.5)
            hint = f" (did you mean {' or '.join(repr(c) for c in close)}?)" if close else ""
            raise TypeError(
                f"run_best_of_n() got an unexpected keyword argument {key!r}{hint}; its own parameters are "
                f"{sorted(own)} and it passes {sorted(allowed)} to load_candidates()"
            )


def _as_metric_fn(fn: Any) -> Callable[[torch.Tensor, torch.Tensor], dict[str | None, float]]:
    if not callable(fn):
        raise TypeError(f"a metric must be callable fn(reference, video), got {type(fn).__name__}")

    def compute(reference: torch.Tensor, video: torch.Tensor) -> dict[str | None, float]:
        with torch.no_grad():
            result = fn(reference, video)
        if isinstance(result, Mapping):
            return {str(k): metric_value(v) for k, v in result.items()}
        return {None: metric_value(result)}

    return compute
