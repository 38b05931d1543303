"""Checkpoints that say when they are complete.

``transformers.Trainer`` writes ``checkpoint-N`` in place, file by file: a crash while saving leaves a folder that
``get_last_checkpoint`` would pick for ``resume_from_checkpoint=True``. Our trainers write a marker file last
(atomically: temp file + ``os.replace``), after every process has written its part (each writes its own
``rng_state_<i>.pth``), and only resume from checkpoints that carry it.

Why a marker rather than writing into a staging folder renamed to ``checkpoint-N`` at the end:
``Trainer._save_checkpoint`` builds the ``checkpoint-N`` path itself and, inside the same call, looks up the best
checkpoint under that name (and stores it in the ``trainer_state.json`` it writes), starts an asynchronous Hub
upload of the folder and rotates old checkpoints. A staging folder means redirecting ``_get_output_dir`` during
the call and redoing those three steps after the rename, or copying the whole private method; and the rename has
to be coordinated across processes and nodes (which process renames, shared or node-local disks), which is what
made transformers revert its own staging-folder checkpoints twice (PR 27820 in 4.36, PR 35580 reverted by
PR 36112).
"""

from __future__ import annotations

import json
import logging
import os
import re

logger = logging.getLogger("icreward")

CHECKPOINT_COMPLETE_NAME = "checkpoint_complete.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")

__all__ = [
    "CHECKPOINT_COMPLETE_NAME",
    "CompleteCheckpointMixin",
    "last_complete_checkpoint",
    "parse_resume_from_checkpoint",
    "verify_checkpoint",
]

_TRUE, _FALSE = {"true", "yes", "1"}, {"false", "no", "0", "none", ""}


def parse_resume_from_checkpoint(value):
    """``--resume_from_checkpoint=True`` arrives as the string ``"True"``: read booleans as booleans, keep paths."""
    if isinstance(value, str) and not os.path.exists(value):
        if value.strip().lower() in _TRUE:
            return True
        if value.strip().lower() in _FALSE:
            return None
    return value


def _manifest(path: str) -> dict[str, int]:
    """Every file of a checkpoint folder (relative path -> size in bytes), recorded in the completion marker."""
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            if name.startswith(CHECKPOINT_COMPLETE_NAME):
                continue
            full = os.path.join(root, name)
            files[os.path.relpath(full, path)] = os.path.getsize(full)
    return files


def verify_checkpoint(path: str) -> None:
    """Refuse to resume from a checkpoint whose files differ from what the completion marker recorded (a missing
    ``optimizer.pt`` / ``scheduler.pt``, a rewritten or truncated adapter file): ``Trainer`` would otherwise skip the
    missing state silently and resume to different weights. Raises ``ValueError`` naming the files."""
    marker = os.path.join(path, CHECKPOINT_COMPLETE_NAME)
    try:
        with open(marker, encoding="utf-8") as f:
            recorded = json.load(f).get("files")
    except (OSError, ValueError, AttributeError) as err:
        raise ValueError(f"checkpoint marker {marker!r} is unreadable: {err}") from err
    if recorded is None:  # written before manifests existed: check the state Trainer needs at least
        missing = [n for n in ("optimizer.pt", "scheduler.pt") if not os.path.isfile(os.path.join(path, n))]
        if missing:
            raise ValueError(f"checkpoint {path!r} is incomplete: missing {missing}")
        return
    if not isinstance(recorded, dict):
        raise ValueError(f"checkpoint marker {marker!r}: 'files' must be a mapping of file name to size")
    problems = []
    for name, size in sorted(recorded.items()):
        full = os.path.join(path, name)
        if not os.path.isfile(full):
            problems.append(f"{name!r} is missing")
        elif os.path.getsize(full) != size:
            problems.append(f"{name!r} has {os.path.getsize(full)} bytes, {size} when saved")
    if problems:
        raise ValueError(
            f"checkpoint {path!r} does not match what was saved ({'; '.join(problems)}); resuming would silently "
            "drop optimizer, scheduler or adapter state. Restore the files or resume from another checkpoint."
        )


def last_complete_checkpoint(folder: str) -> str | None:
    """The highest-step ``checkpoint-N`` in ``folder`` that carries the completion marker (None if there is none);
    incomplete ones are skipped with a warning."""
    if not os.path.isdir(folder):
        return None
    steps = sorted((int(m.group(1)), name) for name in os.listdir(folder) if (m := _CHECKPOINT_RE.match(name)))
    for _, name in reversed(steps):
        path = os.path.join(folder, name)
        if os.path.isfile(os.path.join(path, CHECKPOINT_COMPLETE_NAME)):
            return path
        logger.warning("skipping %s: it has no %s (interrupted while saving?)", path, CHECKPOINT_COMPLETE_NAME)
    return None


class CompleteCheckpointMixin:
    """Mixed into ``transformers.Trainer`` subclasses: mark finished checkpoints, resume only from finished ones."""

    def _save_checkpoint(self, model, trial) -> None:
        super()._save_checkpoint(model, trial)
        # Every process writes files into the checkpoint (its RNG state at least): mark it only once all are done.
        self.accelerator.wait_for_everyone()
        if not self.args.should_save:
            return
        path = os.path.join(self._get_output_dir(trial=trial), f"checkpoint-{self.state.global_step}")
        marker = os.path.join(path, CHECKPOINT_COMPLETE_NAME)
        tmp = f"{marker}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"global_step": self.state.global_step, "files": _manifest(path)}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, marker)

    def train(self, resume_from_checkpoint: str | bool | None = None, *args, **kwargs):
        resume_from_checkpoint = parse_resume_from_checkpoint(resume_from_checkpoint)
        if resume_from_checkpoint is True:
            resume_from_checkpoint = last_complete_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"no complete checkpoint in {self.args.output_dir} to resume from")
        elif isinstance(resume_from_checkpoint, (str, os.PathLike)) and not os.path.isfile(
            os.path.join(resume_from_checkpoint, CHECKPOINT_COMPLETE_NAME)
        ):
            raise ValueError(
                f"checkpoint {resume_from_checkpoint} is incomplete: it has no {CHECKPOINT_COMPLETE_NAME} (the run was "
                "probably interrupted while saving it); resume from an earlier checkpoint or pass True"
            )
        if resume_from_checkpoint:
            verify_checkpoint(resume_from_checkpoint)
        return super().train(resume_from_checkpoint, *args, **kwargs)
