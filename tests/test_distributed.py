"""Two CPU processes (DDP over gloo) train to the same weights as one process with the same global batch."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Dataset
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from two_processes import assert_marked_after_both_processes, launch_two_processes, run_checked

from icreward.video import write_video

SCRIPT = Path(__file__).parent / "scripts" / "distributed_reward_training.py"
DPO_SCRIPT = Path(__file__).parent / "scripts" / "distributed_dpo_training.py"
REWARD_FEEDBACK_SCRIPT = Path(__file__).parent / "scripts" / "distributed_reward_feedback_training.py"
# Gradient all-reduce sums in a different order than one process does: float32 rounding only.
TOLERANCE = dict(rtol=1e-4, atol=1e-5)
# Each pair draws its own noise and timestep, so the runs differ only by float rounding (batch-4 and batch-2 matmuls
# round differently): measured at most 1.8e-6 after 3 SGD steps, whereas noise drawn per process and micro-batch
# (the scheme before per-pair noise) gave differences of 1.1e-3. rtol=0: LoRA A entries are ~0.2 but move by only
# 1e-6 to 3e-4, so a relative tolerance would hide a wrong update.
DPO_TOLERANCE = dict(rtol=0, atol=1e-5)
# Each row draws its own noise and frame window (keyed by the row and the step), so the runs differ only by float
# rounding of batch-4 against batch-2 sampling, decoding and all-reduce: measured at most 6e-8 after 3 SGD steps
# that moved the LoRA by 1e-2, whereas noise drawn per process and micro-batch (the scheme before per-row noise) gave
# differences of 2e-2, as large as the updates. rtol=0 for the reason given for DPO_TOLERANCE.
REWARD_FEEDBACK_TOLERANCE = dict(rtol=0, atol=1e-5)


def _run_single_and_double(
    tmp_path: Path, script: Path, port: int, data: Path, args: tuple[tuple[str, ...], tuple[str, ...]]
):
    """The script once as one process (``args[0]``: per-device batch = the global batch) and once under two
    processes (``args[1]``); returns both saved weight files, after checking the second really ran on two."""
    single, double = tmp_path / "single" / "w.safetensors", tmp_path / "double" / "w.safetensors"
    single.parent.mkdir()
    double.parent.mkdir()
    run_checked([sys.executable, str(script), str(data), str(single), *args[0]], f"{script.name} on 1 process")
    launch_two_processes(port, script, str(data), str(double), *args[1])
    with safe_open(str(double), "pt") as f:
        assert f.metadata()["world_size"] == "2"
    return single, double


def _assert_same_lora(single: Path, double: Path, tolerance: dict) -> None:
    """Both runs start from identical LoRA weights (saved under ``initial/``), training moves them far beyond the
    tolerance (so agreement within it is not trivial), and they end within it."""
    a, b = load_file(single), load_file(double)
    assert a.keys() == b.keys()
    final = [k for k in a if not k.startswith("initial/")]
    assert final and any("lora_A" in k for k in final) and any("lora_B" in k for k in final)
    for key in final:
        torch.testing.assert_close(a[f"initial/{key}"], b[f"initial/{key}"], rtol=0, atol=0)
    assert max(float((a[k] - a[f"initial/{k}"]).abs().max()) for k in final) > 100 * tolerance["atol"]
    for key in final:
        torch.testing.assert_close(b[key], a[key], **tolerance, msg=f"{key} differs between 1 and 2 processes")


def _dataset(root: Path) -> Path:
    g = torch.Generator().manual_seed(0)
    rows = []
    for src in range(2):
        ref = torch.rand(3, 32, 32, generator=g)
        ref_path = root / f"ref{src}.png"
        Image.fromarray((ref * 255).byte().permute(1, 2, 0).numpy()).save(ref_path)
        for k in range(4):
            frames = ref[None].repeat(3, 1, 1, 1) * (1 - k / 3) + (k / 3) * torch.rand(3, 3, 32, 32, generator=g)
            rows.append(
                {
                    "reference": str(ref_path),
                    "video": str(write_video(root / f"v{src}{k}", frames)),
                    "score": 1 - 0.25 * k,
                }
            )
    Dataset.from_list(rows).save_to_disk(root / "data")
    return root / "data"


@pytest.mark.slow
def test_two_process_ddp_matches_single_process(tmp_path):
    single, double = _run_single_and_double(tmp_path, SCRIPT, 29517, _dataset(tmp_path), (("4",), ("2",)))
    with safe_open(str(double), "pt") as f:
        per_process = json.loads(f.metadata()["encoded"])
    with safe_open(str(single), "pt") as f:
        (alone,) = json.loads(f.metadata()["encoded"])
    # The frozen backbone's features are cached once, sharded: each process encoded a disjoint half of the videos.
    assert len(alone) == len(set(alone)) == 8
    assert [len(videos) for videos in per_process] == [4, 4]
    assert not set(per_process[0]) & set(per_process[1])
    assert set(per_process[0]) | set(per_process[1]) == set(alone)
    a, b = load_file(single), load_file(double)
    assert a.keys() == b.keys()
    trained = [k for k in a if k.startswith("head.")]
    assert trained
    for key in a:
        torch.testing.assert_close(a[key], b[key], **TOLERANCE, msg=f"{key} differs between 1 and 2 processes")


def _dpo_pairs(root: Path) -> Path:
    """Four preference pairs: chosen = the reference image held still, rejected = noise."""
    rng = np.random.RandomState(0)
    rows = []
    for i in range(4):
        image = (rng.rand(32, 32, 3) * 255).astype(np.uint8)
        Image.fromarray(image).save(root / f"image_{i}.png")
        still = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(9, 1, 1, 1)
        noise = torch.from_numpy((rng.rand(9, 3, 32, 32) * 255).astype(np.uint8))
        rows.append(
            {
                "image": str(root / f"image_{i}.png"),
                "prompt": f"a still photo number {i}",
                "chosen": str(write_video(root / f"chosen_{i}.mp4", still)),
                "rejected": str(write_video(root / f"rejected_{i}.mp4", noise)),
            }
        )
    path = root / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_two_process_dpo_matches_single_process(tmp_path):
    single, double = _run_single_and_double(
        tmp_path, DPO_SCRIPT, 29518, _dpo_pairs(tmp_path), (("4", "1"), ("2", "1"))
    )
    _assert_same_lora(single, double, DPO_TOLERANCE)
    # The checkpoint is marked complete only after both processes wrote their parts (process 1 writes late).
    assert_marked_after_both_processes(double.parent / "checkpoint-3")


def _reward_feedback_rows(root: Path) -> Path:
    """Eight (image, prompt) rows: four images, each with two prompts."""
    rng = np.random.RandomState(0)
    rows = []
    for i in range(4):
        image = root / f"face_{i}.png"
        Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)).save(image)
        rows += [{"image": str(image), "prompt": f"{motion} number {i}"} for motion in ("a nod", "a smile")]
    path = root / "rows.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.mark.slow
def test_two_process_reward_feedback_matches_single_process(tmp_path):
    rows = _reward_feedback_rows(tmp_path)
    single, double = _run_single_and_double(tmp_path, REWARD_FEEDBACK_SCRIPT, 29522, rows, (("4", "1"), ("2", "1")))
    _assert_same_lora(single, double, REWARD_FEEDBACK_TOLERANCE)
    with safe_open(str(double), "pt") as f:
        double_eval = float(f.metadata()["eval_reward"])
    with safe_open(str(single), "pt") as f:
        single_eval = float(f.metadata()["eval_reward"])
    # Evaluation draws each row's noise and frame window from the row too: the same mean reward on either layout.
    assert abs(double_eval - single_eval) <= 1e-4 * max(1.0, abs(single_eval)), (single_eval, double_eval)
