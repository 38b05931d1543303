"""Shared by the multi-process tests: start a script under a real two-process ``accelerate launch`` (DDP over gloo
on CPU) and check that a checkpoint was marked complete only after both processes wrote their part."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from icreward.trainers.checkpointing import CHECKPOINT_COMPLETE_NAME

ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_checked(cmd: list[str], name: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd``; on failure or timeout, fail the test with its output (a hang: a process alone at a barrier)."""
    try:
        result = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{name} timed out\nstdout:\n{error.stdout}\nstderr:\n{error.stderr}")
    assert result.returncode == 0, (
        f"{name} failed (exit {result.returncode})\nstdout:\n{result.stdout[-6000:]}\nstderr:\n{result.stderr[-10000:]}"
    )
    return result


def launch_two_processes(port: int, script: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``script`` under ``accelerate launch`` with two CPU processes on ``port``."""
    accelerate = shutil.which("accelerate", path=os.path.dirname(sys.executable))
    assert accelerate, "accelerate's CLI must be installed beside this Python"
    # `--cpu --num_processes 2` silently runs one process; this form really starts two (see DESIGN.md).
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1"]
    cmd += ["--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port), str(script), *args]
    return run_checked(cmd, f"{script.name} under 2 processes", timeout)


def assert_marked_after_both_processes(checkpoint: Path) -> None:
    """Both processes wrote their RNG state, no third did, and the completion marker is newer than both."""
    marker = checkpoint / CHECKPOINT_COMPLETE_NAME
    rng_states = [checkpoint / f"rng_state_{i}.pth" for i in range(2)]
    assert marker.is_file() and all(path.is_file() for path in rng_states), sorted(os.listdir(checkpoint))
    assert not (checkpoint / "rng_state_2.pth").exists()
    assert marker.stat().st_mtime_ns >= max(path.stat().st_mtime_ns for path in rng_states)
