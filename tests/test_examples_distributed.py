"""The three example scripts run under a real two-process `accelerate launch` (DDP over gloo on CPU).

Each test runs one example on its tiny configuration for a few steps and checks what the run produced: that two
processes really trained (both wrote their RNG state into each checkpoint, the model card counts two processes, the
step count or batch only fits two), that the saved model loads the documented way and differs from its
initialisation, that checkpoints carry the completion marker, and that one-off reports came from one process only.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict
from PIL import Image
from safetensors.torch import load_file
from two_processes import assert_marked_after_both_processes, launch_two_processes

from icreward.trainers.checkpointing import CHECKPOINT_COMPLETE_NAME
from icreward.video import write_video

EXAMPLES = Path(__file__).parent.parent / "examples"


def _assert_complete_checkpoints(output_dir: Path, steps: list[int]) -> None:
    """Exactly these checkpoints, each marked complete after both processes wrote their RNG state."""
    found = sorted(int(p.name.removeprefix("checkpoint-")) for p in output_dir.glob("checkpoint-*"))
    assert found == steps
    for step in steps:
        checkpoint = output_dir / f"checkpoint-{step}"
        assert_marked_after_both_processes(checkpoint)
        marker = json.loads((checkpoint / CHECKPOINT_COMPLETE_NAME).read_text())
        assert marker["global_step"] == step
        # The marker's manifest lists every file both processes wrote, with its size (resume verifies it).
        for rng_file in ("rng_state_0.pth", "rng_state_1.pth"):
            assert marker["files"][rng_file] == (checkpoint / rng_file).stat().st_size


def _generate(pipe, image) -> torch.Tensor:
    from icreward.testing.tiny_pipelines import TINY_DEFAULTS

    generator = torch.Generator().manual_seed(0)
    kwargs = {**TINY_DEFAULTS, "num_inference_steps": 2, "output_type": "pt"}
    return pipe(image=image, prompt="a cat", generator=generator, **kwargs).frames


def _assert_lora_trained_and_loads(output_dir: Path) -> dict[str, torch.Tensor]:
    """The saved LoRA has moved from its initialisation (LoRA B starts at zero) and ``load_lora_weights`` puts it
    into a fresh tiny Wan 2.1 pipeline, changing what it generates."""
    from icreward.testing.tiny_pipelines import tiny_wan_i2v_pipeline

    lora = load_file(output_dir / "pytorch_lora_weights.safetensors")
    lora_b = [k for k in lora if "lora_B" in k]
    assert lora_b and any("lora_A" in k for k in lora)
    assert all(lora[k].abs().max() > 0 for k in lora_b), "a LoRA B matrix is still at its zero initialisation"

    image = Image.new("RGB", (32, 32), (128, 96, 64))
    pipe = tiny_wan_i2v_pipeline(seed=0)
    base = _generate(pipe, image)
    pipe.load_lora_weights(str(output_dir))
    assert (_generate(pipe, image) - base).abs().max() > 1e-6
    return lora


def _model_card(output_dir: Path) -> str:
    card = (output_dir / "README.md").read_text()
    assert "load_lora_weights" in card
    return card


# ------------------------------------------------------------------------------------------------ train_reward.py
def _reward_dataset(root: Path) -> Path:
    """Train (8 rows), validation and test (4 rows each) splits: 3 sources x 4 videos with falling consistency."""
    g = torch.Generator().manual_seed(0)
    rows = []
    for src in range(3):
        ref = torch.rand(3, 32, 32, generator=g)
        ref_path = root / f"ref{src}.png"
        Image.fromarray((ref * 255).byte().permute(1, 2, 0).numpy()).save(ref_path)
        for k in range(4):
            frames = ref[None].repeat(3, 1, 1, 1) * (1 - k / 3) + (k / 3) * torch.rand(3, 3, 32, 32, generator=g)
            video = write_video(root / f"v{src}{k}", frames)  # PNG frame folder
            rows.append(
                {"reference": str(ref_path), "video": str(video), "score": 1 - 0.25 * k, "source_id": f"s{src}"}
            )
    data = Dataset.from_list(rows)
    splits = DatasetDict(
        train=data.select(range(8)), validation=data.select(range(8, 12)), test=data.select(range(8, 12))
    )
    splits.save_to_disk(root / "data")
    return root / "data"


@pytest.mark.slow
def test_train_reward_example_under_two_processes(tmp_path):
    from transformers import set_seed

    from icreward import ICRewardModel
    from icreward.testing import save_tiny_vision_checkpoint

    data = _reward_dataset(tmp_path)
    backbone = save_tiny_vision_checkpoint(tmp_path / "backbone")  # a local "hub" checkpoint, loaded by path
    out = tmp_path / "out"
    model_args = dict(image_size=32, num_frames=3, head_hidden_size=16, head_num_layers=1)
    learning_rate, epochs, per_device = 5e-4, 2, 2
    launch_two_processes(
        29519,
        EXAMPLES / "train_reward.py",
        "--config",
        str(EXAMPLES / "configs" / "reward_sample.yaml"),
        "--dataset",
        str(data),
        "--backbone",
        str(backbone),
        *[f"--{k}={v}" for k, v in model_args.items()],
        f"--output_dir={out}",
        f"--num_train_epochs={epochs}",
        f"--per_device_train_batch_size={per_device}",
        f"--learning_rate={learning_rate}",
        "--seed=0",
        "--logging_steps=1",
        "--disable_tqdm=true",
        timeout=240,
    )

    # 8 training rows at 2 per process and step: 2 steps per epoch with two processes (4 with one).
    steps = epochs * math.ceil(8 / (per_device * 2))
    state = json.loads((out / f"checkpoint-{steps}" / "trainer_state.json").read_text())
    assert state["global_step"] == steps and state["epoch"] == epochs
    _assert_complete_checkpoints(out, [steps // 2, steps])  # save_strategy: epoch
    card = (out / "README.md").read_text()
    assert '"num_processes": 2' in card and "pairwise_accuracy" in card

    reloaded = ICRewardModel.from_pretrained(out).eval()
    score = reloaded.score(str(data.parent / "ref0.png"), str(data.parent / "v00"))
    assert 0 <= float(score) <= 1
    # The example seeds (--seed) before building the model, so the initial head can be rebuilt here: training moved
    # every head parameter, by no more than a few Adam steps of size ~lr each (a head initialised differently would be
    # ~0.1-0.5 away, so the bound also checks that the rebuilt head is the run's initial one).
    set_seed(0)
    initial = ICRewardModel.from_pretrained_backbone(str(backbone), freeze_backbone=True, **model_args).state_dict()
    final = reloaded.state_dict()
    assert final.keys() == initial.keys()
    head = [k for k in final if k.startswith("head.")]
    assert head
    moved = {k: float((final[k] - initial[k]).abs().max()) for k in head}
    assert all(0 < d < 4 * steps * learning_rate for d in moved.values()), moved
    for key in final.keys() - head:  # the frozen backbone is the checkpoint's
        torch.testing.assert_close(final[key], initial[key], rtol=0, atol=0)
    # The final model is the last checkpoint's.
    last = load_file(out / f"checkpoint-{steps}" / "model.safetensors")
    for key in head:
        torch.testing.assert_close(last[key], final[key], rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ dpo.py
@pytest.mark.slow
def test_dpo_example_under_two_processes(tmp_path):
    out, pairs_dir = tmp_path / "out", tmp_path / "pairs"
    result = launch_two_processes(
        29520,
        EXAMPLES / "dpo.py",
        "--config",
        str(EXAMPLES / "configs" / "dpo_tiny.yaml"),
        f"--output_dir={out}",
        f"--pairs_dir={pairs_dir}",
        "--max_steps=4",
        "--save_steps=2",
        "--eval_steps=2",
        "--logging_steps=1",
        "--disable_tqdm=true",
        timeout=240,
    )
    # The main process built the pairs while the other waited, then read them: built once, each pair once.
    assert len(re.findall(r"^built \d+ pairs", result.stdout, flags=re.M)) == 1, result.stdout
    rows = [json.loads(line) for line in (pairs_dir / "pairs.jsonl").read_text().splitlines()]
    assert rows and len({(r["image"], r["chosen"], r["rejected"]) for r in rows}) == len(rows)
    assert result.stdout.count("loaded into a fresh pipeline") == 1, result.stdout  # the check runs on process 0

    _assert_complete_checkpoints(out, [2, 4])
    card = _model_card(out)
    assert "x 2 processes" in card, card
    # A step's batch counts more pairs than one process holds (per_device_train_batch_size 2): both contributed.
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    num_pairs = [log["num_pairs"] for log in state["log_history"] if "num_pairs" in log]
    assert len(num_pairs) == 4 and max(num_pairs) > 2, num_pairs
    curves = json.loads((out / "preference_curves.json").read_text())
    assert [p["step"] for p in curves["train"]] == [1, 2, 3, 4] and [p["step"] for p in curves["eval"]] == [2, 4]

    lora = _assert_lora_trained_and_loads(out)
    at_step_2 = load_file(out / "checkpoint-2" / "pytorch_lora_weights.safetensors")
    assert at_step_2.keys() == lora.keys()
    assert any(not torch.equal(at_step_2[k], lora[k]) for k in lora)  # steps 3 and 4 trained it further


# ------------------------------------------------------------------------------------------------ reward_feedback.py
@pytest.mark.slow
def test_reward_feedback_example_under_two_processes(tmp_path):
    out = tmp_path / "out"
    result = launch_two_processes(
        29521,
        EXAMPLES / "reward_feedback.py",
        "--config",
        str(EXAMPLES / "configs" / "reward_feedback_tiny.yaml"),
        f"--output_dir={out}",
        f"--data_dir={tmp_path / 'data'}",
        "--max_steps=2",
        "--save_steps=1",
        "--validation_steps=2",
        "--disable_tqdm=true",
        timeout=240,
    )
    # One-off reports come from one process: the LoRA check, the no-face warning (noise videos have no face).
    assert result.stdout.count("loaded into a fresh pipeline") == 1, result.stdout
    assert result.stderr.count("no face was detected") == 1, result.stderr

    _assert_complete_checkpoints(out, [2])  # save_total_limit: 1
    card = _model_card(out)
    # per device 1 x accumulation 2 x 2 processes
    assert "effective batch 4 (per device 1 x accumulation 2 x 2 processes)" in card, card
    for step in (0, 2):  # validation videos are written by the main process only
        folder = out / "validation" / f"step-{step}"
        assert sorted(p.name for p in folder.iterdir()) == ["00.mp4", "rewards.json"]
        assert json.loads((folder / "rewards.json").read_text())["step"] == step
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert [log["step"] for log in state["log_history"] if "loss" in log] == [1, 2]

    _assert_lora_trained_and_loads(out)
