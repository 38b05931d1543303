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
import hashlib
import inspect
import io
import json
import logging
import math
import os
import random
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

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

#: ``generate(image, prompt, num_videos, seed) -> list of (F, 3, H, W) uint8 videos``.
VideoGenerator = Callable[[Any, "str | None", int, int], Sequence[torch.Tensor]]
ScoreFn = Callable[[torch.Tensor, torch.Tensor], float]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_REFERENCE_STEMS = ("reference", "image")
_GROUP_COLUMNS = ("sample_id", "image_id", "image_name", "source_id")
_CLIPSIM = "clipsim"
_FVD = "fvd"


# ---------------------------------------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class CandidateGroup:
    """The ``N`` candidate videos generated for one reference image.

    Attributes:
        sample_id: identifies the image (used for seeding the random selector and in the report).
        reference: the reference image: a path, a PIL image or a ``(3, H, W)`` uint8 tensor.
        videos: the candidates: paths (files or frame folders) or ``(F, 3, H, W)`` tensors (uint8 or float in
            ``[0, 1]``).
        prompt: the text prompt, if any.
        labels: one oracle label per candidate (higher is better), if known.
        video_ids: names of the candidates in the report; default: file stems, or ``candidate_<k>``.
    """

    sample_id: str
    reference: Any
    videos: list[Any]
    prompt: str | None = None
    labels: list[float] | None = None
    video_ids: list[str] | None = None

    def __post_init__(self):
        self.sample_id = str(self.sample_id)
        self.videos = list(self.videos)
        if not self.videos:
            raise ValueError(f"sample {self.sample_id!r} has no candidate videos")
        if self.labels is not None:
            self.labels = [float(x) for x in self.labels]
            if len(self.labels) != len(self.videos):
                raise ValueError(
                    f"sample {self.sample_id!r}: {len(self.labels)} labels for {len(self.videos)} candidate videos"
                )
        if self.video_ids is None:
            self.video_ids = [
                Path(v).stem if isinstance(v, (str, os.PathLike)) else f"candidate_{k}"
                for k, v in enumerate(self.videos)
            ]
        self.video_ids = [str(v) for v in self.video_ids]
        if len(self.video_ids) != len(self.videos):
            raise ValueError(
                f"sample {self.sample_id!r}: {len(self.video_ids)} video_ids for {len(self.videos)} videos"
            )

    def __len__(self) -> int:
        return len(self.videos)

    @property
    def video_paths(self) -> list[str | None]:
        """Path of every candidate, ``None`` for in-memory tensors."""
        return [os.fspath(v) if isinstance(v, (str, os.PathLike)) else None for v in self.videos]

    @property
    def reference_path(self) -> str | None:
        return os.fspath(self.reference) if isinstance(self.reference, (str, os.PathLike)) else None

    def load_reference(self) -> torch.Tensor:
        """The reference image as a ``(3, H, W)`` uint8 tensor."""
        return _as_image_tensor(self.reference)

    def load_videos(self, num_frames: int | None = None) -> list[torch.Tensor]:
        """Every candidate as an ``(F, 3, H, W)`` uint8 tensor (``num_frames`` uniformly sampled frames if set)."""
        return [_as_video_tensor(v, num_frames) for v in self.videos]


def _as_image_tensor(image: Any) -> torch.Tensor:
    from ..video import load_image, to_uint8

    if isinstance(image, torch.Tensor):
        tensor = image
    elif isinstance(image, np.ndarray):
        tensor = torch.from_numpy(image)
        if tensor.ndim == 3 and tensor.shape[-1] == 3 and tensor.shape[0] != 3:
            tensor = tensor.permute(2, 0, 1)  # HWC arrays (PIL / OpenCV layout)
    elif isinstance(image, Mapping) and ("bytes" in image or "path" in image):  # a datasets.Image dict
        from PIL import Image

        image = Image.open(io.BytesIO(image["bytes"])) if image.get("bytes") else image["path"]
        return load_image(image)
    else:
        return load_image(image)
    if tensor.ndim != 3 or tensor.shape[0] != 3:
        raise ValueError(f"a reference image tensor must be (3, H, W), got {tuple(tensor.shape)}")
    return to_uint8(tensor.cpu()).contiguous()


def _as_video_tensor(video: Any, num_frames: int | None = None) -> torch.Tensor:
    from ..video import read_video, sample_frame_indices, to_uint8

    if isinstance(video, (str, os.PathLike)):
        return read_video(video, num_frames=num_frames)
    tensor = torch.as_tensor(video)
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"a video tensor must be (F, 3, H, W), got {tuple(tensor.shape)}")
    tensor = to_uint8(tensor.cpu())
    if num_frames is not None and tensor.shape[0] != num_frames:
        tensor = tensor[sample_frame_indices(tensor.shape[0], num_frames=num_frames)]
    return tensor.contiguous()


def _natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def load_candidates(
    source: Any,
    *,
    group_by: str | Sequence[str] | None = None,
    reference_column: str | None = None,
    video_column: str = "video",
    prompt_column: str = "prompt",
    label_column: str | None = None,
    video_id_column: str | None = None,
) -> list[CandidateGroup]:
    """Load candidate videos grouped by reference image.

    Args:
        source: one of

            * a :class:`datasets.Dataset` (or a list of row dicts) with one row per candidate: a reference column
              (``image`` or ``reference``), ``video`` (path) and optionally ``prompt`` and a label column;
            * a folder with one subfolder per image, holding ``reference.<ext>`` (or ``image.<ext>``), the
              candidate videos (any suffix :func:`icreward.video.read_video` decodes, natural order), an optional
              ``prompt.txt`` and an optional ``labels.json`` mapping video file names to oracle labels. This is what
              :func:`generate_candidates` writes;
            * a list of :class:`CandidateGroup` (returned as is).
        group_by: column(s) that identify the image of a row. Default: the first of ``sample_id``, ``image_id``,
            ``image_name``, ``source_id`` that exists; else the reference path; else the reference pixels.
        reference_column: default ``image`` if present, else ``reference``.
        video_column, prompt_column: columns of the videos and prompts (a missing prompt column is fine).
        label_column: column of oracle labels (higher is better), needed by the ``"oracle"`` selector.
        video_id_column: column naming each candidate (default: the video file stem).

    Returns:
        One :class:`CandidateGroup` per image, in order of first appearance.
    """
    if isinstance(source, (str, os.PathLike)):
        return _load_candidate_folders(Path(source))
    if isinstance(source, Sequence) and source and all(isinstance(g, CandidateGroup) for g in source):
        return list(source)
    rows = _rows(source)
    if not rows:
        raise ValueError("no candidates: the dataset is empty")
    columns = set(rows[0])
    if reference_column is None:
        reference_column = next((c for c in ("image", "reference") if c in columns), None)
        if reference_column is None:
            raise ValueError(f"no reference-image column: expected 'image' or 'reference', got {sorted(columns)}")
    for name in (reference_column, video_column, label_column, video_id_column):
        if name is not None and name not in columns:
            raise ValueError(f"column {name!r} not found in the candidates (columns: {sorted(columns)})")
    keys = _group_keys(rows, group_by, reference_column, columns)

    groups: dict[Any, list[Mapping[str, Any]]] = {}
    for key, row in zip(keys, rows):
        groups.setdefault(key, []).append(row)
    out = []
    for index, (key, members) in enumerate(groups.items()):
        prompts = {m.get(prompt_column) for m in members}
        if len(prompts) > 1:
            logger.warning("sample %r has candidates with different prompts; using the first", key)
        out.append(
            CandidateGroup(
                sample_id=str(key) if not isinstance(key, bytes) else f"image_{index}",
                reference=members[0][reference_column],
                videos=[m[video_column] for m in members],
                prompt=members[0].get(prompt_column),
                labels=[m[label_column] for m in members] if label_column else None,
                video_ids=[str(m[video_id_column]) for m in members] if video_id_column else None,
            )
        )
    return out


def _rows(source: Any) -> list[Mapping[str, Any]]:
    try:
        from datasets import Dataset
    except ImportError:  # pragma: no cover - datasets is a dependency
        Dataset = ()  # noqa: N806
    if isinstance(source, Dataset):
        return list(source)
    if isinstance(source, Iterable) and not isinstance(source, (str, bytes, Mapping)):
        rows = list(source)
        if not all(isinstance(r, Mapping) for r in rows):
            raise TypeError("candidates must be a datasets.Dataset, a folder, row dicts or CandidateGroup objects")
        return rows
    raise TypeError(f"cannot read candidates from {type(source).__name__}")


def _group_keys(
    rows: list[Mapping[str, Any]], group_by: str | Sequence[str] | None, reference_column: str, columns: set[str]
) -> list[Any]:
    if group_by is not None:
        names = [group_by] if isinstance(group_by, str) else list(group_by)
        missing = [n for n in names if n not in columns]
        if missing:
            raise ValueError(f"group_by columns {missing} not found (columns: {sorted(columns)})")
        return [r[names[0]] if len(names) == 1 else "/".join(str(r[n]) for n in names) for r in rows]
    name = next((c for c in _GROUP_COLUMNS if c in columns), None)
    if name is not None:
        return [r[name] for r in rows]
    references = [r[reference_column] for r in rows]
    if all(isinstance(ref, (str, os.PathLike)) for ref in references):
        return [os.fspath(ref) for ref in references]
    # No id column and in-memory images: group identical pixels together.
    logger.info("grouping candidates by reference-image content (pass group_by= to name an id column)")
    return [hashlib.sha1(_as_image_tensor(ref).numpy().tobytes()).digest() for ref in references]


def _load_candidate_folders(root: Path) -> list[CandidateGroup]:
    from ..video import IMAGE_EXTENSIONS, VIDEO_EXTENSIONS

    if not root.is_dir():
        raise FileNotFoundError(f"candidate folder {root} does not exist")
    groups = []
    for folder in sorted(
        (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: _natural_key(p.name)
    ):
        files = sorted((p for p in folder.iterdir() if not p.name.startswith(".")), key=lambda p: _natural_key(p.name))
        references = [
            p for p in files if p.is_file() and p.stem in _REFERENCE_STEMS and p.suffix.lower() in IMAGE_EXTENSIONS
        ]
        if not references:
            raise FileNotFoundError(f"{folder} has no reference image (reference.png / image.png / ...)")
        videos = [p for p in files if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS]
        if not videos:
            raise FileNotFoundError(f"{folder} has no candidate videos ({', '.join(sorted(VIDEO_EXTENSIONS))})")
        prompt_file = folder / "prompt.txt"
        prompt = prompt_file.read_text(encoding="utf-8").strip() if prompt_file.exists() else None
        labels = None
        if (folder / "labels.json").exists():
            table = json.loads((folder / "labels.json").read_text(encoding="utf-8"))
            missing = [v.name for v in videos if v.name not in table]
            if missing:
                raise ValueError(f"{folder / 'labels.json'} has no label for {missing}")
            labels = [float(table[v.name]) for v in videos]
        groups.append(
            CandidateGroup(
                sample_id=folder.name,
                reference=str(references[0]),
                videos=[str(v) for v in videos],
                prompt=prompt,
                labels=labels,
            )
        )
    if not groups:
        raise FileNotFoundError(f"{root} has no per-image subfolders")
    return groups


# ---------------------------------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------------------------------


def _frames_to_uint8(frames: Any) -> torch.Tensor:
    """A pipeline's frames (``(F, C, H, W)`` float [0, 1] tensor or array, or a list of PIL images) -> uint8."""
    from ..video import to_uint8

    if isinstance(frames, (list, tuple)) and frames and not isinstance(frames[0], (torch.Tensor, np.ndarray)):
        frames = np.stack([np.asarray(f.convert("RGB")) for f in frames]).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(frames))
    tensor = torch.as_tensor(np.asarray(frames) if isinstance(frames, np.ndarray) else frames)
    if tensor.ndim == 4 and tensor.shape[1] != 3 and tensor.shape[-1] == 3:
        tensor = tensor.permute(0, 3, 1, 2)  # numpy output is (F, H, W, C)
    if tensor.ndim != 4 or tensor.shape[1] != 3:
        raise ValueError(f"expected one video of frames (F, 3, H, W), got shape {tuple(tensor.shape)}")
    return to_uint8(tensor.detach().float().cpu()) if tensor.dtype != torch.uint8 else tensor.cpu()


def pipeline_generator(
    pipeline: Any,
    *,
    num_frames: int,
    height: int,
    width: int,
    generator_device: str | torch.device = "cpu",
    **call_kwargs: Any,
) -> VideoGenerator:
    """Wrap a diffusers image-to-video pipeline as a ``generate(image, prompt, num_videos, seed)`` callable.

    Candidate ``k`` of an image is sampled with its own ``torch.Generator`` seeded ``seed + k``, one pipeline call per
    video, so a candidate does not depend on how many others are drawn and memory stays that of one sample. The
    pipeline is called as ``pipeline(image=<PIL image>, prompt=..., num_frames=..., height=..., width=...,
    generator=..., output_type="pt", **call_kwargs)`` (Wan, CogVideoX, LTX, HunyuanVideo image-to-video pipelines
    accept this), and ``.frames[0]`` is taken as the video.

    Args:
        pipeline: the diffusers pipeline (e.g. ``WanImageToVideoPipeline``).
        num_frames, height, width: generation size.
        generator_device: device of the seeded generators (CPU generators are reproducible across devices).
        call_kwargs: any other pipeline argument (``num_inference_steps``, ``guidance_scale``, ...).
    """
    if "output_type" in call_kwargs:
        raise ValueError("pipeline_generator sets output_type='pt' itself")

    def generate(image: Any, prompt: str | None, num_videos: int, seed: int) -> list[torch.Tensor]:
        from PIL import Image

        if not isinstance(image, Image.Image):
            image = Image.fromarray(_as_image_tensor(image).permute(1, 2, 0).numpy())
        videos = []
        for k in range(num_videos):
            generator = torch.Generator(device=generator_device).manual_seed(seed + k)
            output = pipeline(
                image=image,
                prompt=prompt or "",
                num_frames=num_frames,
                height=height,
                width=width,
                generator=generator,
                output_type="pt",
                **call_kwargs,
            )
            videos.append(_frames_to_uint8(output.frames[0]))
        return videos

    return generate


def generate_candidates(
    images: Sequence[Any],
    generate: VideoGenerator,
    *,
    prompts: Sequence[str | None] | None = None,
    num_videos: int = 5,
    seed: int = 0,
    sample_ids: Sequence[str] | None = None,
    output_dir: str | os.PathLike | None = None,
    fps: float = 8.0,
    progress: bool = True,
) -> list[CandidateGroup]:
    """Sample ``num_videos`` candidates per reference image with a policy.

    Args:
        images: reference images (paths, PIL images or ``(3, H, W)`` uint8 tensors).
        generate: ``generate(image, prompt, num_videos, seed) -> list of (F, 3, H, W) videos`` (uint8, or float in
            ``[0, 1]``); :func:`pipeline_generator` builds one from a diffusers pipeline. Image ``i`` is generated
            with seed ``seed + 1000 * i``.
        prompts: one prompt per image (``None`` entries allowed).
        num_videos: candidates per image (the paper: 5).
        seed: base seed.
        sample_ids: names of the images (default ``image_00000``, ...).
        output_dir: when set, writes ``<output_dir>/<sample_id>/{reference.png, prompt.txt, candidate_<k>.mp4}``
            (the layout :func:`load_candidates` reads) and the groups point to these files, which the human study
            needs; otherwise the videos stay in memory.
        fps: frame rate of the written videos.
        progress: show a progress bar over the images (tqdm; hidden when not on a terminal or notebook).
    """
    from ..video import write_video

    if num_videos < 1:
        raise ValueError(f"num_videos must be >= 1, got {num_videos}")
    prompts = list(prompts) if prompts is not None else [None] * len(images)
    sample_ids = (
        [str(s) for s in sample_ids] if sample_ids is not None else [f"image_{i:05d}" for i in range(len(images))]
    )
    if len(prompts) != len(images) or len(sample_ids) != len(images):
        raise ValueError(f"got {len(images)} images, {len(prompts)} prompts and {len(sample_ids)} sample_ids")
    if len(set(sample_ids)) != len(sample_ids):
        raise ValueError("sample_ids must be unique")
    groups = []
    rows = zip(images, prompts, sample_ids)
    for i, (image, prompt, sample_id) in enumerate(
        tqdm(rows, total=len(images), desc="generating candidates", unit="image", disable=_no_progress(progress))
    ):
        reference = _as_image_tensor(image)
        videos = [_frames_to_uint8(v) for v in generate(image, prompt, num_videos, seed + 1000 * i)]
        if len(videos) != num_videos:
            raise ValueError(f"generate returned {len(videos)} videos for {sample_id!r}, expected {num_videos}")
        video_ids = [f"candidate_{k}" for k in range(num_videos)]
        stored_reference: Any = reference
        stored_videos: list[Any] = videos
        if output_dir is not None:
            folder = Path(output_dir) / sample_id
            folder.mkdir(parents=True, exist_ok=True)
            from PIL import Image

            stored_reference = str(folder / "reference.png")
            Image.fromarray(reference.permute(1, 2, 0).numpy()).save(stored_reference)
            if prompt is not None:
                (folder / "prompt.txt").write_text(prompt, encoding="utf-8")
            stored_videos = [str(write_video(folder / f"{vid}.mp4", v, fps=fps)) for vid, v in zip(video_ids, videos)]
        groups.append(CandidateGroup(sample_id, stored_reference, stored_videos, prompt=prompt, video_ids=video_ids))
        logger.info("generated %d candidates for %s", num_videos, sample_id)
    return groups


# ---------------------------------------------------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------------------------------------------------


@dataclass
class Selection:
    """What a selector picked for one image: the candidate ``index`` and, if it scored them, every ``score``."""

    index: int
    scores: list[float] | None = None


class Selector(ABC):
    """Base class of selection methods: picks one candidate of a group.

    Subclass it for a custom rule; ``reference`` and ``videos`` are the decoded uint8 tensors of the group.
    """

    @abstractmethod
    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        """Return the :class:`Selection` for ``group``."""


def _argmax_first(scores: Sequence[float]) -> int:
    # NaN never wins; ties go to the first candidate (input order), as in pairs_from_reward_model_picks.
    values = np.array([s if math.isfinite(s) else -np.inf for s in scores], dtype=np.float64)
    if np.all(values == -np.inf):
        return 0
    return int(np.argmax(values))


class RandomSelector(Selector):
    """Uniform random pick, seeded by ``seed`` and the image's ``sample_id`` (not by the order of the images)."""

    def __init__(self, seed: int = 0):
        self.seed = int(seed)

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        # random.Random seeds from a string through SHA-512: stable across runs and platforms.
        return Selection(index=random.Random(f"{self.seed}:{group.sample_id}").randrange(len(videos)))

    def __repr__(self) -> str:
        return f"RandomSelector(seed={self.seed})"


class OracleSelector(Selector):
    """Picks the candidate with the highest oracle label (``CandidateGroup.labels``)."""

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        if group.labels is None:
            raise ValueError(
                f"the oracle selector needs labels, but sample {group.sample_id!r} has none (load the candidates with "
                "label_column=..., or write labels.json in each candidate folder)"
            )
        return Selection(index=_argmax_first(group.labels), scores=list(group.labels))

    def __repr__(self) -> str:
        return "OracleSelector()"


class ScoreSelector(Selector):
    """Picks the candidate that ``score_fn(reference, video)`` rates highest (lowest if ``higher_is_better=False``).

    ``score_fn`` receives uint8 tensors and may return a float, a 0-d tensor, or a metric result with a ``mean``
    (e.g. :class:`~icreward.metrics.CLIPSimilarity` and :class:`~icreward.metrics.FaceSim` modules).
    """

    def __init__(self, score_fn: Callable[[torch.Tensor, torch.Tensor], Any], higher_is_better: bool = True):
        self.score_fn = as_score_fn(score_fn)
        self.higher_is_better = higher_is_better

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        scores = [self.score_fn(reference, v) for v in videos]
        ranked = scores if self.higher_is_better else [-s for s in scores]
        return Selection(index=_argmax_first(ranked), scores=scores)


class RewardModelSelector(Selector):
    """Picks the candidate with the highest reward-model score (``model.score(references, videos)``).

    All candidates of an image are scored in batches of ``batch_size``. For :class:`~icreward.MLPRewardModel` the
    score is the average per-frame reward, the paper's ranking rule.
    """

    def __init__(self, model: Any, *, processor: Any = None, batch_size: int = 8):
        if not hasattr(model, "score"):
            raise TypeError(f"{type(model).__name__} has no score(references, videos) method")
        self.model = model
        self.processor = processor
        self.batch_size = batch_size

    def __call__(self, group: CandidateGroup, reference: torch.Tensor, videos: list[torch.Tensor]) -> Selection:
        with torch.no_grad():
            scores = self.model.score(
                [reference] * len(videos), list(videos), processor=self.processor, batch_size=self.batch_size
            )
        scores = [float(s) for s in torch.as_tensor(scores).reshape(-1)]
        return Selection(index=_argmax_first(scores), scores=scores)

    def __repr__(self) -> str:
        return f"RewardModelSelector({type(self.model).__name__})"


def _is_reward_model(obj: Any) -> bool:
    # The reward models' batch API: score(references, videos) -> (N,) scores.
    return callable(getattr(obj, "score", None)) and not isinstance(obj, Selector)


def as_score_fn(obj: Any) -> ScoreFn:
    """Turn a reward model, a metric module or a callable into ``fn(reference, video) -> float``.

    * objects with ``score(references, videos)`` (the reward models): ``float(obj.score(reference, video))``;
    * callables returning a number, a 0-d tensor, or a result with ``mean`` (``CLIPSimResult``, ``FaceSimResult``).
      A ``FaceSimResult`` without any detected face gives NaN (undefined), never a fake 0.
    """
    if _is_reward_model(obj):

        def reward_model_score(reference: torch.Tensor, video: torch.Tensor) -> float:
            with torch.no_grad():
                return float(obj.score(reference, video))

        return reward_model_score
    if not callable(obj):
        raise TypeError(f"expected a reward model or a callable fn(reference, video), got {type(obj).__name__}")

    def score(reference: torch.Tensor, video: torch.Tensor) -> float:
        with torch.no_grad():
            return metric_value(obj(reference, video))

    return score


def metric_value(result: Any) -> float:
    """A metric's output as a float: numbers, 0-d tensors, and results with ``mean`` (NaN when no face was found)."""
    if isinstance(result, (int, float, np.number)):  # numpy scalars have a .mean() method: handle them first
        return float(result)
    if getattr(result, "has_face", True) is False:
        return float("nan")
    if hasattr(result, "mean") and not isinstance(result, (torch.Tensor, np.ndarray)):
        return metric_value(result.mean)
    if isinstance(result, (torch.Tensor, np.ndarray)):
        if result.size != 1 if isinstance(result, np.ndarray) else result.numel() != 1:
            raise ValueError(f"a metric must return one value per video, got shape {tuple(result.shape)}")
        return float(result.item())
    raise TypeError(
        f"a metric returned {type(result).__name__}; expected a number, a 0-d tensor or a result with .mean"
    )


def as_selector(obj: Any, *, seed: int = 0) -> Selector:
    """Build a selector: ``"random"``, ``"oracle"``, a :class:`Selector`, a reward model, or a score callable."""
    if isinstance(obj, str):
        if obj == "random":
            return RandomSelector(seed)
        if obj == "oracle":
            return OracleSelector()
        raise ValueError(f"unknown selector {obj!r}: the named selectors are 'random' and 'oracle'")
    if isinstance(obj, Selector):
        return obj
    if _is_reward_model(obj):
        return RewardModelSelector(obj)
    if callable(obj):
        return ScoreSelector(obj)
    raise TypeError(f"cannot use {type(obj).__name__} as a selector")


# ---------------------------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------------------------


def _clean(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def _nan(values: Iterable[Any]) -> list[float]:
    return [float("nan") if v is None else float(v) for v in values]


def _mean(values: Sequence[float]) -> float | None:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.mean(finite)) if finite else None


def _fmt(value: float | None, digits: int = 4) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


@dataclass
class BestOfNReport:
    """Everything :func:`run_best_of_n` measured.

    Attributes:
        methods: selection-method names, in the order given.
        sample_ids: one per image.
        video_ids, video_paths: per image, per candidate (paths are ``None`` for in-memory videos).
        reference_paths, prompts: per image.
        selections: ``method -> picked candidate index per image``.
        selector_scores: ``method -> per image, the selector's score of every candidate`` (``None`` for random).
        candidate_metrics: ``metric -> per image, the metric of every candidate`` (``clipsim``, the oracle label,
            the custom metrics). Selections are evaluated by looking these up.
        summary: ``method -> metric -> mean over images of the picked candidate's metric``, plus ``fvd``.
        all_candidates: the same, averaged over every candidate (the expected value of a random pick) and the FVD
            of all candidates together; a baseline that does not depend on one random draw.
        higher_is_better: ``metric -> direction`` (FVD: lower is better).
        settings: how the run was configured (FVD reference set, frame counts, seed, ...).
    """

    methods: list[str]
    sample_ids: list[str]
    video_ids: list[list[str]]
    video_paths: list[list[str | None]]
    reference_paths: list[str | None]
    prompts: list[str | None]
    selections: dict[str, list[int]]
    selector_scores: dict[str, list[list[float]] | None]
    candidate_metrics: dict[str, list[list[float]]]
    summary: dict[str, dict[str, float | None]]
    all_candidates: dict[str, float | None]
    higher_is_better: dict[str, bool]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def metric_names(self) -> list[str]:
        """Per-video metrics, then ``fvd`` if it was computed."""
        names = list(self.candidate_metrics)
        if any(_FVD in s for s in self.summary.values()):
            names.append(_FVD)
        return names

    def per_sample(self, metric: str = _CLIPSIM) -> dict[str, list[float]]:
        """``method -> the picked candidate's metric for every image`` (Figure 3's bars)."""
        if metric not in self.candidate_metrics:
            raise KeyError(f"no per-video metric {metric!r}; available: {list(self.candidate_metrics)}")
        values = self.candidate_metrics[metric]
        return {m: [values[g][k] for g, k in enumerate(self.selections[m])] for m in self.methods}

    def agreement(self) -> dict[str, dict[str, float]]:
        """Fraction of images on which two methods picked the same candidate."""
        n = len(self.sample_ids)
        return {
            a: {b: sum(x == y for x, y in zip(self.selections[a], self.selections[b])) / n for b in self.methods}
            for a in self.methods
        }

    def to_dict(self) -> dict[str, Any]:
        return _clean(
            {
                "methods": self.methods,
                "summary": self.summary,
                "all_candidates": self.all_candidates,
                "higher_is_better": self.higher_is_better,
                "agreement": self.agreement(),
                "settings": self.settings,
                "samples": [
                    {
                        "sample_id": sid,
                        "prompt": self.prompts[g],
                        "reference": self.reference_paths[g],
                        "video_ids": self.video_ids[g],
                        "video_paths": self.video_paths[g],
                        "selections": {m: self.selections[m][g] for m in self.methods},
                        "selector_scores": {m: s[g] for m, s in self.selector_scores.items() if s is not None},
                        "metrics": {name: values[g] for name, values in self.candidate_metrics.items()},
                    }
                    for g, sid in enumerate(self.sample_ids)
                ],
            }
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BestOfNReport:
        samples = data["samples"]
        methods = list(data["methods"])
        metric_names = list(samples[0]["metrics"]) if samples else []
        scored = {m for s in samples for m in s["selector_scores"]}
        return cls(
            methods=methods,
            sample_ids=[s["sample_id"] for s in samples],
            video_ids=[list(s["video_ids"]) for s in samples],
            video_paths=[list(s["video_paths"]) for s in samples],
            reference_paths=[s["reference"] for s in samples],
            prompts=[s["prompt"] for s in samples],
            selections={m: [int(s["selections"][m]) for s in samples] for m in methods},
            selector_scores={
                m: ([_nan(s["selector_scores"][m]) for s in samples] if m in scored else None) for m in methods
            },
            candidate_metrics={name: [_nan(s["metrics"][name]) for s in samples] for name in metric_names},
            summary={m: dict(v) for m, v in data["summary"].items()},
            all_candidates=dict(data["all_candidates"]),
            higher_is_better=dict(data["higher_is_better"]),
            settings=dict(data.get("settings", {})),
        )

    def to_json(self, path: str | os.PathLike | None = None) -> str:
        """The report as JSON (written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text + "\n", encoding="utf-8")
        return text

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> BestOfNReport:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))

    def to_markdown(self) -> str:
        """Table 1 (means over images, FVD of the picked set), the per-image picks and method agreement."""
        metrics = self.metric_names
        arrows = {m: "↑" if self.higher_is_better.get(m, True) else "↓" for m in metrics}
        n_candidates = sorted({len(v) for v in self.video_ids})
        lines = [
            "# Best-of-N selection",
            "",
            f"{len(self.sample_ids)} images, {'/'.join(map(str, n_candidates))} candidates per image.",
        ]
        if _FVD in metrics:
            lines.append(f"FVD reference set: {self.settings.get('fvd_reference', 'n/a')}.")
        lines += [
            "",
            "| method | " + " | ".join(f"{m} {arrows[m]}" for m in metrics) + " |",
            "|---|" + "---|" * len(metrics),
        ]
        for method in self.methods:
            lines.append(f"| {method} | " + " | ".join(_fmt(self.summary[method].get(m)) for m in metrics) + " |")
        lines.append("| *all candidates* | " + " | ".join(_fmt(self.all_candidates.get(m)) for m in metrics) + " |")
        lines += ["", "## Picks per image", "", "| image | " + " | ".join(self.methods) + " |"]
        lines.append("|---|" + "---|" * len(self.methods))
        first = self.metric_names[0] if self.candidate_metrics else None
        for g, sid in enumerate(self.sample_ids):
            cells = []
            for method in self.methods:
                k = self.selections[method][g]
                value = f" ({first} {_fmt(self.candidate_metrics[first][g][k], 3)})" if first else ""
                cells.append(f"{self.video_ids[g][k]}{value}")
            lines.append(f"| {sid} | " + " | ".join(cells) + " |")
        agreement = self.agreement()
        lines += ["", "## Agreement (fraction of images with the same pick)", ""]
        lines.append("| | " + " | ".join(self.methods) + " |")
        lines.append("|---|" + "---|" * len(self.methods))
        for a in self.methods:
            lines.append(f"| {a} | " + " | ".join(f"{agreement[a][b]:.2f}" for b in self.methods) + " |")
        return "\n".join(lines) + "\n"

    def plot(self, output_dir: str | os.PathLike, *, max_samples: int | None = None) -> list[Path]:
        """Write ``per_sample_<metric>.png`` (Figure 3: per image, one bar per method, value on each bar) for every
        per-video metric, and ``summary.png`` (one panel per metric: each method's mean as a labelled point).

        ``max_samples``: at most this many images per figure (default: all); when fewer than all are drawn, the
        title says how many of how many (every image is in ``report.md`` / ``report.json``). Notes per metric in
        ``settings["metric_notes"]`` (e.g. ``"random-weight CLIP"``) are printed in the panel titles.
        """
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        colors = {m: f"C{i}" for i, m in enumerate(self.methods)}
        notes = dict(self.settings.get("metric_notes") or {})
        written = []
        total = len(self.sample_ids)
        shown = total if max_samples is None else min(max_samples, total)
        samples = self.sample_ids[:shown]
        for metric in self.candidate_metrics:
            values = self.per_sample(metric)
            fig = Figure(figsize=(max(4.0, 1.2 + 0.45 * len(samples) * len(self.methods)), 3.8), layout="constrained")
            FigureCanvasAgg(fig)
            ax = fig.add_subplot()
            width = 0.8 / len(self.methods)
            x = np.arange(len(samples))
            for i, method in enumerate(self.methods):
                heights = [v if math.isfinite(v) else 0.0 for v in values[method][: len(samples)]]
                bars = ax.bar(
                    x + (i - (len(self.methods) - 1) / 2) * width, heights, width, label=method, color=colors[method]
                )
                # Picks often differ in the second or third decimal (CLIPSim near 1): print the values.
                ax.bar_label(bars, fmt="%.3f", fontsize="xx-small", rotation=90, padding=2)
            ax.margins(y=0.2)
            ax.set_xticks(
                x, samples, rotation=30 if len(samples) > 4 else 0, ha="right" if len(samples) > 4 else "center"
            )
            ax.set_xlabel("reference image")
            ax.set_ylabel(metric + (f" ({notes[metric]})" if metric in notes else ""))
            title = f"{metric} of the top-1 video per image"
            if shown < total:
                title += f" (first {shown} of {total} images; all in report.md)"
            ax.set_title(title, fontsize="medium")
            # Above the axes, outside the bars: a legend inside would cover the values.
            fig.legend(loc="outside upper center", ncols=len(self.methods), fontsize="small", frameon=False)
            path = output_dir / f"per_sample_{_safe_name(metric)}.png"
            fig.savefig(path, dpi=120)
            written.append(path)

        metrics = self.metric_names
        if metrics:
            fig = Figure(figsize=(3.4 * len(metrics), 3.6), layout="constrained")
            FigureCanvasAgg(fig)
            for i, metric in enumerate(metrics):
                ax = fig.add_subplot(1, len(metrics), i + 1)
                points = [(k, self.summary[m].get(metric)) for k, m in enumerate(self.methods)]
                points = [(k, v) for k, v in points if v is not None and math.isfinite(v)]
                for k, value in points:
                    method = self.methods[k]
                    ax.plot([k], [value], "o", color=colors[method], markersize=8)
                    ax.annotate(f"{value:.4g}", (k, value), textcoords="offset points", xytext=(0, 7), ha="center")
                if points:  # the axis spans the values (a difference in the third decimal stays visible)
                    low, high = min(v for _, v in points), max(v for _, v in points)
                    pad = 0.25 * (high - low) if high > low else max(abs(high) * 0.05, 1e-3)
                    ax.set_ylim(low - pad, high + 2 * pad)
                ax.set_xlim(-0.5, len(self.methods) - 0.5)
                ax.set_xticks(range(len(self.methods)), self.methods, rotation=30, ha="right")
                ax.set_xlabel("selection method")
                direction = "higher is better" if self.higher_is_better.get(metric, True) else "lower is better"
                ax.set_ylabel(f"mean {metric} of the picks")
                ax.set_title(
                    f"{metric} ({direction})" + (f"\n{notes[metric]}" if metric in notes else ""), fontsize="medium"
                )
            path = output_dir / "summary.png"
            fig.savefig(path, dpi=120)
            written.append(path)
        return written

    def save(self, output_dir: str | os.PathLike) -> dict[str, Path]:
        """Write ``report.json``, ``report.md`` and the plots to ``output_dir``."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        self.to_json(output_dir / "report.json")
        (output_dir / "report.md").write_text(self.to_markdown(), encoding="utf-8")
        paths = {"json": output_dir / "report.json", "markdown": output_dir / "report.md"}
        for path in self.plot(output_dir):
            paths[path.stem] = path
        return paths

    def human_study_pairs(self, method_a: str, method_b: str, *, include_same_pick: bool = False) -> list[dict]:
        """Pairs for :class:`icreward.evaluation.human_study.HumanStudy`: per image, ``method_a``'s pick vs
        ``method_b``'s (Figure 4). Images where both picked the same video are left out unless ``include_same_pick``.
        """
        for method in (method_a, method_b):
            if method not in self.selections:
                raise KeyError(f"no method {method!r}; available: {self.methods}")
        pairs = []
        for g, sid in enumerate(self.sample_ids):
            a, b = self.selections[method_a][g], self.selections[method_b][g]
            if a == b and not include_same_pick:
                continue
            paths = self.video_paths[g]
            if paths[a] is None or paths[b] is None or self.reference_paths[g] is None:
                raise ValueError(
                    f"sample {sid!r} has in-memory videos or reference; a human study needs files "
                    "(generate the candidates with generate_candidates(..., output_dir=...))"
                )
            pairs.append(
                {
                    "sample_id": sid,
                    "reference": self.reference_paths[g],
                    "prompt": self.prompts[g],
                    "video_a": paths[a],
                    "video_b": paths[b],
                    "label_a": method_a,
                    "label_b": method_b,
                }
            )
        return pairs


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


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
    if clipsim is not None:
        from ..metrics import CLIPSimilarity

        clipsim = clipsim if isinstance(clipsim, CLIPSimilarity) else CLIPSimilarity(clipsim)
    extra = {name: _as_metric_fn(fn) for name, fn in (metrics or {}).items()}
    reserved = {_CLIPSIM, _FVD, label_name}
    if reserved & set(extra):
        raise ValueError(f"metric names {sorted(reserved & set(extra))} are reserved")
    has_labels = all(g.labels is not None for g in groups)

    selections: dict[str, list[int]] = {name: [] for name in chosen}
    selector_scores: dict[str, list[list[float]] | None] = {name: [] for name in chosen}
    candidate_metrics: dict[str, list[list[float]]] = {}
    fvd_features: list[torch.Tensor] = []
    fvd_static: list[torch.Tensor] = []

    for g, group in enumerate(tqdm(groups, desc="best-of-N", unit="image", disable=_no_progress(progress))):
        reference = group.load_reference()
        videos = group.load_videos(num_frames)
        for name, selector in chosen.items():
            picked = selector(group, reference, videos)
            if not 0 <= picked.index < len(videos):
                raise ValueError(f"selector {name!r} picked candidate {picked.index} of {len(videos)}")
            selections[name].append(int(picked.index))
            if picked.scores is None:
                selector_scores[name] = None
            elif selector_scores[name] is not None:
                selector_scores[name].append([float(s) for s in picked.scores])

        per_video: dict[str, list[float]] = {}
        if clipsim is not None:
            with torch.no_grad():
                per_video[_CLIPSIM] = [float(clipsim(reference, v).mean) for v in videos]
        if has_labels:
            per_video[label_name] = list(group.labels)
        for name, fn in extra.items():
            for k, video in enumerate(videos):
                for key, value in fn(reference, video).items():
                    metric = name if key is None else f"{name}/{key}"
                    per_video.setdefault(metric, [float("nan")] * len(videos))[k] = value
        for metric, values in per_video.items():
            if g > 0 and metric not in candidate_metrics:
                raise ValueError(f"metric {metric!r} appeared for sample {group.sample_id!r} but not before it")
            candidate_metrics.setdefault(metric, []).append(values)

        if fvd is not None:
            fvd_features.append(fvd.extract_features(videos))
            if real_videos is None:
                count = fvd.num_frames or videos[0].shape[0]
                fvd_static.append(_static_clip(reference, count, *videos[0].shape[-2:]))
        logger.info(
            "best-of-n: %s (%d/%d) picks %s",
            group.sample_id,
            g + 1,
            len(groups),
            {n: s[-1] for n, s in selections.items()},
        )

    higher_is_better = dict(higher_is_better or {})
    unknown = set(higher_is_better) - set(extra)
    if unknown:
        raise ValueError(f"higher_is_better names unknown metrics {sorted(unknown)}; the metrics are {sorted(extra)}")
    # A dict-valued metric "name" expands to "name/key" entries, which inherit its direction.
    directions = {
        name: bool(higher_is_better.get(name, higher_is_better.get(name.split("/", 1)[0], True)))
        for name in candidate_metrics
    }
    summary: dict[str, dict[str, float | None]] = {name: {} for name in chosen}
    all_candidates: dict[str, float | None] = {}
    for metric, values in candidate_metrics.items():
        for name in chosen:
            summary[name][metric] = _mean([values[g][k] for g, k in enumerate(selections[name])])
        all_candidates[metric] = _mean([v for row in values for v in row])

    settings: dict[str, Any] = {
        "seed": seed,
        "num_frames": num_frames,
        "selectors": {n: repr(s) for n, s in chosen.items()},
    }
    if fvd is not None:
        directions[_FVD] = False
        from ..metrics import frechet_distance

        if real_videos is not None:
            real = fvd.extract_features([_as_video_tensor(v) for v in real_videos])
            settings["fvd_reference"] = f"{real.shape[0]} real videos"
        else:
            real = fvd.extract_features(fvd_static)
            settings["fvd_reference"] = "reference images repeated as static videos"
        settings["fvd_num_videos"] = len(groups)
        if len(groups) < 2 or real.shape[0] < 2:
            logger.warning("FVD needs at least 2 images and 2 reference videos; it is not reported")
            settings["fvd_reference"] += " (too few videos: FVD not computed)"
        else:
            for name in chosen:
                picked = torch.stack([fvd_features[g][k] for g, k in enumerate(selections[name])])
                summary[name][_FVD] = frechet_distance(real, picked)
            all_candidates[_FVD] = frechet_distance(real, torch.cat(fvd_features))
    report = BestOfNReport(
        methods=list(chosen),
        sample_ids=[g.sample_id for g in groups],
        video_ids=[list(g.video_ids) for g in groups],
        video_paths=[g.video_paths for g in groups],
        reference_paths=[g.reference_path for g in groups],
        prompts=[g.prompt for g in groups],
        selections=selections,
        selector_scores=selector_scores,
        candidate_metrics=candidate_metrics,
        summary=summary,
        all_candidates=all_candidates,
        higher_is_better=directions,
        settings=settings,
    )
    if output_dir is not None:
        report.save(output_dir)
    return report


def _no_progress(progress: bool) -> bool | None:
    """tqdm's ``disable``: ``True`` when asked for no bar, ``None`` (hide when not on a terminal) otherwise."""
    return True if not progress else None


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
