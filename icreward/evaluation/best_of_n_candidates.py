"""Candidate videos for best-of-N selection (:mod:`icreward.evaluation.best_of_n`): one
:class:`CandidateGroup` per reference image, loaded from a dataset or folders, or generated with a policy."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

__all__ = [
    "CandidateGroup",
    "VideoGenerator",
    "as_image_tensor",
    "as_video_tensor",
    "frames_to_uint8",
    "generate_candidates",
    "load_candidates",
    "pipeline_generator",
    "tqdm_disable",
]

#: ``generate(image, prompt, num_videos, seed) -> list of (F, 3, H, W) uint8 videos``.
VideoGenerator = Callable[[Any, "str | None", int, int], Sequence[torch.Tensor]]

_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
_REFERENCE_STEMS = ("reference", "image")
_GROUP_COLUMNS = ("sample_id", "image_id", "image_name", "source_id")


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
        return as_image_tensor(self.reference)

    def load_videos(self, num_frames: int | None = None) -> list[torch.Tensor]:
        """Every candidate as an ``(F, 3, H, W)`` uint8 tensor (``num_frames`` uniformly sampled frames if set)."""
        return [as_video_tensor(v, num_frames) for v in self.videos]


def as_image_tensor(image: Any) -> torch.Tensor:
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


def as_video_tensor(video: Any, num_frames: int | None = None) -> torch.Tensor:
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
    return [hashlib.sha1(as_image_tensor(ref).numpy().tobytes()).digest() for ref in references]


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


def frames_to_uint8(frames: Any) -> torch.Tensor:
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
            image = Image.fromarray(as_image_tensor(image).permute(1, 2, 0).numpy())
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
            videos.append(frames_to_uint8(output.frames[0]))
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
        tqdm(rows, total=len(images), desc="generating candidates", unit="image", disable=tqdm_disable(progress))
    ):
        reference = as_image_tensor(image)
        videos = [frames_to_uint8(v) for v in generate(image, prompt, num_videos, seed + 1000 * i)]
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


def tqdm_disable(progress: bool) -> bool | None:
    """tqdm's ``disable``: ``True`` when asked for no bar, ``None`` (hide when not on a terminal) otherwise."""
    return True if not progress else None


# Public classes keep the module path they had before the split into sibling modules (reprs, pickles, docs).
for _cls in (CandidateGroup,):
    _cls.__module__ = "icreward.evaluation.best_of_n"
