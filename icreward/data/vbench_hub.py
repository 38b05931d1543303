"""Sharing a VBench++ I2V dataset (:mod:`icreward.data.vbench`) on the Hugging Face Hub: dataset card, a
self-contained export folder, upload, and loading it back with its videos."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datasets import DatasetDict, Image

from icreward.data.vbench_files import VBenchFormatError, short_repr
from icreward.markdown import inert_markdown

if TYPE_CHECKING:
    from icreward.data.vbench import VBenchLoadReport

__all__ = [
    "ICREWARD_CITATION",
    "VBENCH_PLUS_PLUS_CITATION",
    "build_vbench_dataset_card",
    "export_vbench_dataset",
    "load_vbench_i2v_from_hub",
    "push_vbench_dataset_to_hub",
]

PathLike = str | os.PathLike

VBENCH_PLUS_PLUS_CITATION = """@article{huang2024vbenchpp,
  title   = {VBench++: Comprehensive and Versatile Benchmark Suite for Video Generative Models},
  author  = {Huang, Ziqi and Zhang, Fan and Xu, Xiaojie and He, Yinan and Yu, Jiashuo and Dong, Ziyue and
             Ma, Qianli and Chanpaisit, Nattapol and Si, Chenyang and Jiang, Yuming and Wang, Yaohui and
             Chen, Xinyuan and Chen, Ying-Cong and Wang, Limin and Lin, Dahua and Qiao, Yu and Liu, Ziwei},
  journal = {arXiv preprint arXiv:2411.13503},
  year    = {2024}
}"""

ICREWARD_CITATION = """@misc{liang2025icreward,
  title  = {ICReward: Learning Image-to-Video Consistency Rewards},
  author = {Liang, Agnes and Zbizika, Renee},
  note   = {Stanford University},
  year   = {2025}
}"""


_VIDEOS_FOLDER = "videos"
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def build_vbench_dataset_card(
    dataset_dict: DatasetDict,
    *,
    pretty_name: str = "VBench++ I2V consistency labels",
    license: str = "other",
    source_models: Sequence[str] | None = None,
    report: VBenchLoadReport | None = None,
    description: str | None = None,
    extra_tags: Sequence[str] = (),
):
    """A :class:`huggingface_hub.DatasetCard` for a dataset built by :func:`load_vbench_i2v`.

    The card's YAML declares the license, tags and the ``data/<split>-*`` parquet layout written by
    :func:`export_vbench_dataset`; the body describes the source, the columns, the labelling protocol and cites
    VBench++ and ICReward. ``license`` defaults to ``"other"`` because the videos carry the terms of the model
    that generated them and the images those of VBench's image suite; set it to what applies. Nothing here
    touches the network: ``card.content`` is the README text, ``card.save(path)`` writes it.
    """
    from huggingface_hub import DatasetCard

    report = report if report is not None else getattr(dataset_dict, "report", None)
    if source_models is None:
        source_models = sorted({m for split in dataset_dict.values() for m in split.unique("source_model")})
    card_data = _card_data(dataset_dict, license, pretty_name, extra_tags)
    first = next(iter(dataset_dict.values()))
    columns_md = _columns_markdown(first.column_names)
    splits_md, report_md = _splits_markdown(dataset_dict, report)
    body = f"""
# {pretty_name}

{description or "Image-to-video consistency labels from VBench++ for training consistency reward models."}

Each row pairs a reference image from the VBench++ I2V image suite with a video generated from it and VBench++'s
image-to-video consistency scores: `i2v_subject` (DINO ViT-B/16 features) and `i2v_background` (DreamSim
features), each `0.4 * max_i cos(ref, f_i) + 0.3 * mean_i cos(f_(i-1), f_i) + 0.3 * min_i cos(f_(i-1), f_i)`
with negative cosines clamped to 0. Built with `icreward.data.vbench.load_vbench_i2v` from VBench's own
`vbench2_i2v_full_info.json`, cropped images and `*_eval_results.json` files.

Source models: {", ".join(f"`{m}`" if _PLAIN_NAME.fullmatch(m) else inert_markdown(m) for m in source_models) or "n/a"}.

## Splits

Splits are made by reference image, so no image appears in two splits.

| split | rows | images |
|---|---|---|
{splits_md}
{report_md}
## Columns

| column | description |
|---|---|
{columns_md}

## Usage

```python
from icreward.data.vbench import load_vbench_i2v_from_hub

dataset = load_vbench_i2v_from_hub("<repo_id>")  # resolves `video` to local files
```

## License

Videos follow the terms of the model that generated them, reference images those of the VBench++ image suite.

## Citation

```bibtex
{VBENCH_PLUS_PLUS_CITATION}

{ICREWARD_CITATION}
```
"""
    return DatasetCard(f"---\n{card_data.to_yaml()}\n---\n{body}")


def _card_data(dataset_dict: DatasetDict, license: str, pretty_name: str, extra_tags: Sequence[str]):
    """The card's YAML metadata: license, tags, size and the ``data/<split>-*`` parquet layout."""
    from huggingface_hub import DatasetCardData

    split_names = list(dataset_dict)
    return DatasetCardData(
        license=license,
        language=["en"],
        pretty_name=pretty_name,
        task_categories=["image-to-video"],
        tags=["vbench", "image-to-video", "reward-modeling", "icreward", *extra_tags],
        size_categories=[_size_category(sum(len(d) for d in dataset_dict.values()))],
        configs=[
            {
                "config_name": "default",
                "data_files": [{"split": name, "path": f"data/{name}-*"} for name in split_names],
            }
        ],
    )


def _splits_markdown(dataset_dict: DatasetDict, report: VBenchLoadReport | None) -> tuple[str, str]:
    """The card's split table rows and its note on skipped items."""
    splits_md = "\n".join(
        f"| {inert_markdown(name)} | {len(ds)} | {len(set(ds['image_name'])) if len(ds) else 0} |"
        for name, ds in dataset_dict.items()
    )
    report_md = ""
    if report is not None and report.skipped:
        skipped = ", ".join(f"{k}: {v}" for k, v in sorted(report.skipped.items()))
        report_md = f"\nItems skipped while reading the VBench files: {skipped}.\n"
    return splits_md, report_md


def _columns_markdown(column_names: Sequence[str]) -> str:
    """The card's column table rows."""
    dimension_columns = [c for c in column_names if c.startswith("i2v_")]
    column_rows = {
        "reference": "the reference (conditioning) image, VBench++'s cropped image suite",
        "video": f"path of the generated video inside this repository (`{_VIDEOS_FOLDER}/<source_model>/...`)",
        "score": "weighted mean of the available dimension scores, in [0, 1] (the regression label)",
        **{d: f"VBench++ `{d}` score, or null when VBench did not evaluate this dimension" for d in dimension_columns},
        "prompt": "VBench++ text prompt (`prompt_en`)",
        "image_type": "VBench++ image category",
        "source_model": "the image-to-video model that generated the video",
        "image_name": "VBench++ image file name; splits never share an image",
        "video_index": "sample index `i` of VBench's `{prompt_en}-{i}` file name",
        "rebalanced": "true for extra low-score training rows added to balance the labels",
    }
    return "\n".join(f"| `{c}` | {column_rows.get(c, '')} |" for c in column_names)


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "n>1M"


def export_vbench_dataset(
    dataset_dict: DatasetDict, output_dir: PathLike, *, image_root: PathLike | None = None, **card_kwargs: Any
) -> Path:
    """Write a dataset built by :func:`load_vbench_i2v` as a self-contained Hub dataset repository folder.

    Layout: ``data/<split>-00000-of-00001.parquet`` with the reference images embedded as bytes,
    ``videos/<source_model>/<file name>`` with copies of the videos (the ``video`` column is rewritten to these
    relative paths) and ``README.md`` (:func:`build_vbench_dataset_card`, ``card_kwargs`` passed through). The
    folder loads with :func:`load_vbench_i2v_from_hub` or can be uploaded as is.

    Only files that belong to the dataset are embedded or copied: every ``reference`` must be the row's
    ``image_name`` (a relative path, no ``..``) inside one reference image folder (``image_root``, by default
    the folder the references share), resolve inside it (no symlink leading out) and be an image; every
    ``video`` must be a regular video file. Anything else raises :class:`VBenchFormatError` naming the row,
    before anything is written.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and any(output_dir.iterdir()):
        raise FileExistsError(f"output_dir {str(output_dir)!r} exists and is not empty")
    _check_export_sources(dataset_dict, image_root)
    (output_dir / "data").mkdir(parents=True, exist_ok=True)

    copies: dict[str, str] = {}  # repository-relative path -> local source
    for split, ds in dataset_dict.items():
        missing = {"video", "source_model", "reference"} - set(ds.column_names)
        if missing:
            raise ValueError(f"split {split!r} lacks column(s) {sorted(missing)}; expected a load_vbench_i2v dataset")
        for local, model in zip(ds["video"], ds["source_model"]):
            relative = f"{_VIDEOS_FOLDER}/{_UNSAFE.sub('_', model) or '_'}/{os.path.basename(local)}"
            if copies.setdefault(relative, local) != local:
                raise ValueError(f"videos {copies[relative]!r} and {local!r} would both be stored as {relative!r}")
    for relative, local in copies.items():
        if not os.path.isfile(local):
            raise FileNotFoundError(f"video {local!r} listed in the dataset does not exist")
        target = output_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, target)

    relative_of = {local: rel for rel, local in copies.items()}

    def _portable(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        batch["video"] = [relative_of[v] for v in batch["video"]]
        batch["reference"] = [_embed_image(r) for r in batch["reference"]]
        return batch

    for split, ds in dataset_dict.items():
        portable = ds.cast_column("reference", Image(decode=False)).map(
            _portable, batched=True, load_from_cache_file=False, desc=f"Preparing {split}"
        )
        portable = portable.cast(ds.features)
        portable.to_parquet(str(output_dir / "data" / f"{split}-00000-of-00001.parquet"))

    build_vbench_dataset_card(dataset_dict, **card_kwargs).save(str(output_dir / "README.md"))
    return output_dir


_PLAIN_NAME = re.compile(r"[\w. +-]{1,200}")  # shown as code in the dataset card; other names as escaped text
_EXPORTED_VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".mov", ".avi", ".gif"}


def _looks_like_video(path: str) -> bool:
    """The container signature of an MP4/MOV (``ftyp``/``moov``/...), Matroska/WebM, AVI or GIF file."""
    with open(path, "rb") as f:
        head = f.read(12)
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
        or head.startswith(b"\x1a\x45\xdf\xa3")
        or (head.startswith(b"RIFF") and head[8:12] == b"AVI ")
        or head.startswith((b"GIF87a", b"GIF89a"))
    )


def _check_export_sources(dataset_dict: DatasetDict, image_root: PathLike | None) -> None:
    """Refuse, before writing anything, a reference or video that is not a file of the dataset (see
    :func:`export_vbench_dataset`): an edited or hand-built dataset must not smuggle other files into an upload."""
    from PIL import Image as PILImage

    on_disk = []  # (where, path, image_name, folder the path names as its image folder)
    for split, ds in dataset_dict.items():
        if "image_name" not in ds.column_names:
            raise ValueError(f"split {split!r} lacks column 'image_name'; expected a load_vbench_i2v dataset")
        references = ds.cast_column("reference", Image(decode=False))["reference"]
        for row, (value, image_name, video) in enumerate(zip(references, ds["image_name"], ds["video"])):
            where = f"split {split!r}, row {row}"
            if not (isinstance(video, str) and Path(video).suffix.lower() in _EXPORTED_VIDEO_SUFFIXES):
                raise VBenchFormatError(f"{where}: video {short_repr(video)} is not a video file")
            if not os.path.isfile(video) or not _looks_like_video(video):
                raise VBenchFormatError(f"{where}: video {short_repr(video)} is not a video file")
            if value is None or value.get("bytes") is not None:
                continue  # nothing read from disk
            path = value.get("path")
            name = Path(str(image_name))
            if not path or name.is_absolute() or not name.parts or {"..", "."} & set(name.parts):
                raise VBenchFormatError(f"{where}: image_name {short_repr(image_name)} is not a relative file name")
            parts = Path(path).parts
            if parts[-len(name.parts) :] != name.parts:
                raise VBenchFormatError(
                    f"{where}: reference {short_repr(path)} is not image_name {short_repr(image_name)}"
                )
            on_disk.append((where, path, os.path.realpath(os.path.join(*parts[: -len(name.parts)]))))
    if not on_disk:
        return
    if image_root is not None:
        root = os.path.realpath(image_root)
    else:  # the folder the references share (a row elsewhere is the odd one out)
        root = Counter(folder for _, _, folder in on_disk).most_common(1)[0][0]
    for where, path, folder in on_disk:
        real = os.path.realpath(path)
        if folder != root or os.path.commonpath([root, real]) != root:
            raise VBenchFormatError(
                f"{where}: reference {short_repr(path)} resolves to {short_repr(real)}, outside the reference image folder "
                f"{short_repr(root)}" + ("" if image_root is not None else " of the other rows (image_root= names it)")
            )
        try:
            with PILImage.open(real) as image:
                image.verify()
        except (OSError, ValueError, SyntaxError) as err:  # what PIL raises for files that are not images
            raise VBenchFormatError(f"{where}: reference {short_repr(path)} is not an image ({err})") from None


def _embed_image(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """``{"path", "bytes"}`` with the bytes read from disk, so the parquet file does not depend on local paths."""
    if value is None or value.get("bytes") is not None:
        return value
    path = value.get("path")
    if not path or not os.path.isfile(path):
        raise FileNotFoundError(f"reference image {path!r} listed in the dataset does not exist")
    with open(path, "rb") as f:
        return {"path": os.path.basename(path), "bytes": f.read()}


def push_vbench_dataset_to_hub(
    dataset_dict: DatasetDict,
    repo_id: str,
    *,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    commit_message: str = "Upload VBench++ I2V consistency dataset",
    **card_kwargs: Any,
):
    """Upload a :func:`load_vbench_i2v` dataset, its videos and a dataset card to the Hub.

    Writes the folder of :func:`export_vbench_dataset` to a temporary directory and uploads it in one commit, so
    the repository holds the videos as well (a plain ``push_to_hub`` would only keep local paths). ``card_kwargs``
    go to :func:`build_vbench_dataset_card` (``license=``, ``pretty_name=``, ``description=``, ...). Returns the
    ``CommitInfo`` of the upload.
    """
    from huggingface_hub import HfApi

    api = HfApi(token=token)
    with tempfile.TemporaryDirectory() as tmp:
        folder = export_vbench_dataset(dataset_dict, Path(tmp) / "repo", **card_kwargs)
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        return api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message,
        )


def load_vbench_i2v_from_hub(
    repo_id: str,
    *,
    revision: str | None = None,
    download_videos: bool = True,
    token: str | bool | None = None,
    **load_dataset_kwargs: Any,
):
    """Load a dataset written by :func:`push_vbench_dataset_to_hub` (or :func:`export_vbench_dataset`).

    A thin wrapper over :func:`datasets.load_dataset` (``load_dataset_kwargs`` pass through: ``split=``,
    ``cache_dir=``, ...) that also makes the ``video`` column usable: its repository-relative paths are resolved
    against a local folder (``repo_id`` itself when it is a directory, else a ``snapshot_download`` of the
    repository's ``videos/`` folder). With ``download_videos=False`` the paths stay relative.
    """
    from datasets import load_dataset

    dataset = load_dataset(repo_id, revision=revision, token=token, **load_dataset_kwargs)
    if not download_videos:
        return dataset
    if os.path.isdir(repo_id):
        root = os.path.abspath(repo_id)
    else:
        from huggingface_hub import snapshot_download

        root = snapshot_download(
            repo_id, repo_type="dataset", revision=revision, token=token, allow_patterns=[f"{_VIDEOS_FOLDER}/**"]
        )

    def _resolve(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        return {"video": [v if os.path.isabs(v) else os.path.join(root, v) for v in batch["video"]]}

    return dataset.map(_resolve, batched=True)
