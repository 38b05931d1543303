import json
import math
import os

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig

from icreward.adapters import get_adapter
from icreward.data.dpo_pairs import generate_reward_pairs, load_dpo_pairs, validate_dpo_pairs
from icreward.testing.tiny_pipelines import (
    TINY_DEFAULTS,
    tiny_cogvideox_i2v_pipeline,
    tiny_wan22_pipeline,
    tiny_wan_i2v_pipeline,
)
from icreward.trainers.video_dpo_config import VideoDPOConfig
from icreward.trainers.video_dpo_trainer import VideoDPOTrainer
from icreward.video import write_video

LORA = LoraConfig(r=4, lora_alpha=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models are fastest single-threaded; two threads on a shared 2-core machine spin-wait.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Four pairs with a learnable preference: chosen = the reference image held still, rejected = noise."""
    root = tmp_path_factory.mktemp("pairs")
    rng = np.random.RandomState(0)
    rows = []
    for i in range(4):
        image = (rng.rand(32, 32, 3) * 255).astype(np.uint8)
        image_path = root / f"image_{i}.png"
        PIL.Image.fromarray(image).save(image_path)
        still = torch.from_numpy(image).permute(2, 0, 1)[None].repeat(9, 1, 1, 1)
        noise = torch.from_numpy((rng.rand(9, 3, 32, 32) * 255).astype(np.uint8))
        write_video(root / f"chosen_{i}.mp4", still)
        write_video(root / f"rejected_{i}.mp4", noise)
        rows.append(
            {
                "image": str(image_path),
                "prompt": f"a still photo number {i}",
                "chosen": str(root / f"chosen_{i}.mp4"),
                "rejected": str(root / f"rejected_{i}.mp4"),
            }
        )
    return rows


def _config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path / "out"),
        "num_frames": 9,
        "height": 32,
        "width": 32,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 4,
        "max_steps": 4,
        "learning_rate": 1e-3,
        "logging_steps": 2,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "latent_cache_dir": str(tmp_path / "cache"),
        "plot_preference_curves": False,
        "seed": 0,
    }
    kwargs.update(overrides)
    return VideoDPOConfig(**kwargs)


def _lora_params(adapter):
    return {
        f"{name}.{p}": t.detach().clone()
        for name, module in adapter.trainable_modules.items()
        for p, t in module.named_parameters()
        if "lora_" in p
    }


def _randomize_lora(adapter, std=0.05):
    g = torch.Generator().manual_seed(0)
    for module in adapter.trainable_modules.values():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.data = torch.randn(param.shape, generator=g) * std


def test_loss_matches_independent_formula(tmp_path, pairs):
    beta = 50.0
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0), args=_config(tmp_path, beta=beta), train_dataset=pairs, peft_config=LORA
    )
    adapter = trainer.adapter
    _randomize_lora(adapter)  # the policy must differ from the reference for a meaningful check
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    trainer._pair_generators = lambda training, ids: [torch.Generator().manual_seed(1234 + i) for i in range(len(ids))]
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)

    # Independent computation: per pair, a timestep then one noise tensor, shared by winner and loser.
    generators = [torch.Generator().manual_seed(1234 + i) for i in range(2)]
    x_w, x_l, cond = batch["latents_chosen"], batch["latents_rejected"], batch["conditions"]
    t = torch.cat([adapter.sample_timesteps(1, generator=g, device="cpu") for g in generators])
    eps = torch.stack([torch.randn(x_w.shape[1:], generator=g) for g in generators])
    sigma = (t / 1000).view(-1, 1, 1, 1, 1)

    def mse(x, ref):
        noisy = (1 - sigma) * x + sigma * eps
        with torch.no_grad():
            if ref:
                with adapter.disable_lora():
                    pred = adapter.predict(noisy, t, cond)
            else:
                pred = adapter.predict(noisy, t, cond)
        return ((pred - (eps - x)) ** 2).flatten(1).mean(1)

    inside = -0.5 * beta * ((mse(x_w, False) - mse(x_w, True)) - (mse(x_l, False) - mse(x_l, True)))
    expected = torch.log1p(torch.exp(-inside)).mean()  # -log(sigmoid(z)) = log(1 + exp(-z))
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    assert abs(float(expected) - math.log(2)) > 1e-4  # the policy really differs from the reference


def test_only_lora_changes_and_all_lora_change(tmp_path, pairs):
    pipe = tiny_wan_i2v_pipeline(seed=0)
    base = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    frozen = {
        name: {k: v.clone() for k, v in getattr(pipe, name).state_dict().items()}
        for name in ("vae", "text_encoder", "image_encoder")
    }
    trainer = VideoDPOTrainer(model=pipe, args=_config(tmp_path, max_steps=6), train_dataset=pairs, peft_config=LORA)
    before = _lora_params(trainer.adapter)
    assert before and all(
        float(v.abs().sum()) == 0 for k, v in before.items() if "lora_B" in k
    )  # B starts at zero: A only moves once B has
    trainer.train()
    after = _lora_params(trainer.adapter)
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert not unchanged, f"LoRA parameters that did not train: {unchanged}"
    assert any("lora_A" in k for k in after) and any("lora_B" in k for k in after)
    for key, value in pipe.transformer.state_dict().items():
        if "lora_" not in key:
            original = key.replace(".base_layer", "")
            torch.testing.assert_close(value, base[original], rtol=0, atol=0)
    for name, state in frozen.items():
        for key, value in getattr(pipe, name).state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)


def test_reference_is_the_base_model(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0), args=_config(tmp_path), train_dataset=pairs, peft_config=LORA
    )
    _randomize_lora(trainer.adapter)
    batch = trainer.data_collator([trainer.train_dataset[0]])
    x, cond, t = batch["latents_chosen"], batch["conditions"], torch.tensor([600.0])
    fresh = get_adapter(tiny_wan_i2v_pipeline(seed=0))
    with torch.no_grad():
        reference = trainer._reference_prediction(x, t, cond)
        policy = trainer.adapter.predict(x, t, cond)
        base = fresh.predict(x, t, cond)
    torch.testing.assert_close(reference, base, rtol=0, atol=0)
    assert (policy - base).abs().max() > 1e-4

    # An explicit reference model gives the same reference predictions, hence the same loss.
    explicit = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        ref_model=tiny_wan_i2v_pipeline(seed=0),
        args=_config(tmp_path),
        train_dataset=pairs,
        peft_config=LORA,
    )
    explicit.adapter.load_lora_weights(_save_lora(trainer, tmp_path / "lora"))
    with torch.no_grad():
        torch.testing.assert_close(explicit._reference_prediction(x, t, cond), base, rtol=0, atol=0)
    losses = []
    for tr in (trainer, explicit):  # same seed, step and pairs: the same noise
        tr.model.train()
        losses.append(tr.compute_loss(tr.model, tr.data_collator([tr.train_dataset[0], tr.train_dataset[1]])))
    torch.testing.assert_close(losses[0].detach(), losses[1].detach(), rtol=1e-6, atol=1e-7)


def _save_lora(trainer, directory):
    trainer.adapter.save_lora_weights(directory)
    return directory


def test_evaluation_noise_is_fixed_per_pair(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        args=_config(tmp_path, per_device_eval_batch_size=4),
        train_dataset=pairs,
        eval_dataset=pairs,
        peft_config=LORA,
    )
    _randomize_lora(trainer.adapter)
    batched = trainer.evaluate()
    trainer.args.per_device_eval_batch_size = 1
    one_by_one = trainer.evaluate()
    # Same noise per pair; only float rounding of batched vs single matmuls differs (amplified by beta / 2 = 50).
    assert batched["eval_rewards/accuracies"] == one_by_one["eval_rewards/accuracies"]
    assert batched["eval_rewards/margins"] == pytest.approx(one_by_one["eval_rewards/margins"], abs=1e-4)
    for key in ("eval_mse/chosen", "eval_mse/rejected", "eval_mse/ref_chosen", "eval_dpo_loss"):
        assert batched[key] == pytest.approx(one_by_one[key], rel=1e-5), key
    assert batched["eval_num_pairs"] == one_by_one["eval_num_pairs"] == len(pairs)


def test_training_noise_is_fixed_per_pair_and_step(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0), args=_config(tmp_path), train_dataset=pairs, peft_config=LORA
    )
    rows = [trainer.train_dataset[i] for i in range(3)]
    latents = trainer.data_collator(rows)["latents_chosen"]
    ids = [trainer.data_collator([row])["pair_ids"][0] for row in rows]

    def draw(indices, training=True):
        return trainer._draw_noise(latents[indices], training, [ids[i] for i in indices])

    t_all, noise_all = draw([0, 1, 2])
    t_one, noise_one = draw([2])
    t_rev, noise_rev = draw([2, 0])
    # A pair's draw ignores its batch and position: the same whatever the batch size or process layout.
    torch.testing.assert_close(t_one[0], t_all[2], rtol=0, atol=0)
    torch.testing.assert_close(noise_one[0], noise_all[2], rtol=0, atol=0)
    torch.testing.assert_close(noise_rev, noise_all[[2, 0]], rtol=0, atol=0)
    assert not torch.equal(noise_all[0], noise_all[1])  # ... but differs between pairs
    trainer.state.global_step = 1
    t_next, noise_next = draw([0, 1, 2])
    assert not torch.equal(noise_next, noise_all) and not torch.equal(t_next, t_all)  # and between steps
    _, noise_eval = draw([0, 1, 2], training=False)
    trainer.state.global_step = 5
    _, noise_eval_later = draw([0, 1, 2], training=False)
    torch.testing.assert_close(noise_eval, noise_eval_later, rtol=0, atol=0)  # evaluation ignores the step
    assert not torch.equal(noise_eval, noise_all)


def test_preference_accuracy_rises(tmp_path, pairs):
    args = _config(tmp_path, max_steps=12, beta=100.0, learning_rate=2e-3, plot_preference_curves=True)
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0), args=args, train_dataset=pairs, eval_dataset=pairs, peft_config=LORA
    )
    initial = trainer.evaluate()
    assert initial["eval_rewards/accuracies"] == 0.0  # LoRA B = 0: policy == reference, no pair is preferred
    assert initial["eval_loss"] == pytest.approx(math.log(2), abs=1e-6)
    trainer.train()
    final = trainer.evaluate()
    assert final["eval_rewards/accuracies"] > 0.5
    assert final["eval_rewards/margins"] > 0
    assert final["eval_loss"] < math.log(2)
    train_logs = [log for log in trainer.state.log_history if "rewards/accuracies" in log]
    assert train_logs and {"rewards/chosen", "rewards/rejected", "rewards/margins", "loss"} <= set(train_logs[-1])
    out = tmp_path / "out"
    curves = json.loads((out / "preference_curves.json").read_text())
    assert [p["accuracy"] for p in curves["eval"]] == [
        initial["eval_rewards/accuracies"],
        final["eval_rewards/accuracies"],
    ]
    assert len(curves["eval_running_win_rate"]) == 2 and curves["train_running_win_rate"]
    assert (out / "preference_accuracy.png").stat().st_size > 0 and (out / "running_win_rate.png").is_file()


def test_sft_baseline_trains_only_on_chosen(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        args=_config(tmp_path, loss_type="sft", max_steps=2),
        train_dataset=pairs,
        eval_dataset=pairs,
        peft_config=LORA,
    )
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log]
    assert "mse/chosen" in logs[-1] and "rewards/accuracies" not in logs[-1]
    metrics = trainer.evaluate()  # evaluation still measures preference accuracy against the reference
    assert "eval_rewards/accuracies" in metrics


def test_resume_matches_uninterrupted_run(tmp_path, pairs):
    def run(subdir, resume=None, max_steps=6):
        args = _config(
            tmp_path / subdir, max_steps=max_steps, save_strategy="steps", save_steps=3, gradient_accumulation_steps=1
        )
        trainer = VideoDPOTrainer(
            model=tiny_wan_i2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LORA
        )
        trainer.train(resume_from_checkpoint=resume)
        return _lora_params(trainer.adapter)

    full = run("full")
    checkpoint = tmp_path / "full" / "out" / "checkpoint-3"
    assert (checkpoint / "pytorch_lora_weights.safetensors").is_file()
    assert (checkpoint / "optimizer.pt").is_file()
    resumed = run("resumed", resume=str(checkpoint))
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


def _bad_pairs(pairs, root):
    short = root / "short.mp4"
    write_video(short, torch.zeros(5, 3, 32, 32, dtype=torch.uint8))
    small = root / "small.mp4"
    write_video(small, torch.zeros(9, 3, 16, 16, dtype=torch.uint8))
    return {
        "different length": ([{**pairs[0]}, {**pairs[1], "rejected": str(short)}], r"pair 1: .*9 frames.*short\.mp4"),
        "different size": ([{**pairs[0], "rejected": str(small)}], r"pair 0: .*32x32.*small\.mp4 is 16x16"),
        "missing video": ([{**pairs[0], "chosen": str(root / "gone.mp4")}], r"pair 0: chosen video not found: .*gone"),
        "missing image": ([{**pairs[0], "image": str(root / "gone.png")}], r"pair 0: image file not found"),
    }


@pytest.mark.parametrize("case", ["different length", "different size", "missing video", "missing image"])
def test_bad_pairs_raise_before_training(tmp_path, pairs, case):
    rows, message = _bad_pairs(pairs, tmp_path)[case]
    with pytest.raises(ValueError, match=message):
        validate_dpo_pairs(load_dpo_pairs(rows))
    pipe = tiny_wan_i2v_pipeline(seed=0)
    with pytest.raises(ValueError, match=message):
        VideoDPOTrainer(model=pipe, args=_config(tmp_path), train_dataset=rows, peft_config=LORA)
    with pytest.raises(ValueError, match="lacks column"):
        load_dpo_pairs([{"prompt": "x", "chosen": "a", "rejected": "b"}])


def test_saved_lora_loads_into_pipeline_and_changes_output(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0), args=_config(tmp_path, max_steps=4), train_dataset=pairs, peft_config=LORA
    )
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    assert (out / "pytorch_lora_weights.safetensors").is_file()
    card = (out / "README.md").read_text()
    assert "Diffusion Model Alignment Using Direct Preference Optimization" in card and "ICReward" in card
    assert "load_lora_weights" in card

    image = PIL.Image.open(pairs[0]["image"])

    def generate(pipe):
        generator = torch.Generator().manual_seed(0)
        kwargs = {**TINY_DEFAULTS, "num_inference_steps": 2, "output_type": "pt"}
        return pipe(image=image, prompt="a cat", generator=generator, **kwargs).frames

    base_pipe = tiny_wan_i2v_pipeline(seed=0)
    base = generate(base_pipe)
    base_pipe.load_lora_weights(str(out))
    tuned = generate(base_pipe)
    trained = generate(trainer.adapter.pipeline)  # the trained pipeline itself, with its live LoRA
    assert (tuned - base).abs().max() > 1e-4
    torch.testing.assert_close(tuned, trained, rtol=1e-4, atol=1e-4)


def test_cached_latents_do_not_call_encoders(tmp_path, pairs, monkeypatch):
    args = _config(tmp_path, max_steps=2)
    first = VideoDPOTrainer(model=tiny_wan_i2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LORA)
    entries = list((tmp_path / "cache").rglob("*.safetensors"))
    assert len(entries) == len(pairs)

    def forbidden(*args, **kwargs):
        raise AssertionError("an encoder ran although the latents are cached")

    pipe = first.adapter.pipeline
    for module in (pipe.vae, pipe.text_encoder, pipe.image_encoder):
        monkeypatch.setattr(module, "forward", forbidden)
    monkeypatch.setattr(pipe.vae, "encode", forbidden)
    first.train()

    # A new run on the same cache: nothing is encoded again, not even at start-up.
    pipe2 = tiny_wan_i2v_pipeline(seed=0)
    monkeypatch.setattr(pipe2.vae, "encode", forbidden)
    monkeypatch.setattr(pipe2.text_encoder, "forward", forbidden)
    second = VideoDPOTrainer(model=pipe2, args=args, train_dataset=pairs, peft_config=LORA)
    second.train()

    # Cached and uncached paths give the same loss for the same step.
    uncached = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        args=_config(tmp_path / "u", precompute_latents=False),
        train_dataset=pairs,
        peft_config=LORA,
    )
    cached = VideoDPOTrainer(model=tiny_wan_i2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LORA)
    losses = []
    for trainer in (uncached, cached):
        _randomize_lora(trainer.adapter)
        trainer.model.train()
        batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
        assert ("latents_chosen" in batch) == (trainer is cached)
        losses.append(trainer.compute_loss(trainer.model, batch).detach())
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-4, atol=1e-5)


def test_cache_key_follows_the_files(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0), args=_config(tmp_path), train_dataset=pairs, peft_config=LORA
    )
    cache = trainer.latent_cache
    key = cache.key(pairs[0])
    assert key == cache.key(dict(pairs[0])) and key in cache
    stat = os.stat(pairs[0]["chosen"])
    os.utime(pairs[0]["chosen"], ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    try:
        assert cache.key(pairs[0]) != key  # an edited video gets a new entry
    finally:
        os.utime(pairs[0]["chosen"], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    other_model = VideoDPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=1),
        args=_config(tmp_path / "other", latent_cache_dir=str(tmp_path / "cache")),
        train_dataset=pairs[:1],
        peft_config=LORA,
    )
    assert other_model.latent_cache.key(pairs[0]) != key  # different encoder weights never share entries


def test_wan22_low_noise_expert_only(tmp_path, pairs):
    pipe = tiny_wan22_pipeline(seed=0)
    high_before = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    trainer = VideoDPOTrainer(model=pipe, args=_config(tmp_path, max_steps=3), train_dataset=pairs, peft_config=LORA)
    assert set(trainer.adapter.trainable_modules) == {"transformer_2"}
    before = _lora_params(trainer.adapter)
    trainer.train()
    after = _lora_params(trainer.adapter)
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert not any("lora" in k for k in pipe.transformer.state_dict())
    for key, value in pipe.transformer.state_dict().items():
        torch.testing.assert_close(value, high_before[key], rtol=0, atol=0)
    trainer.save_model()
    assert (tmp_path / "out" / "pytorch_lora_weights_transformer_2.safetensors").is_file()


def test_wan22_both_experts(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_wan22_pipeline(seed=0),
        args=_config(tmp_path, max_steps=2, wan22_train_expert="both"),
        train_dataset=pairs,
        peft_config=LORA,
    )
    assert set(trainer.adapter.trainable_modules) == {"transformer", "transformer_2"}
    assert trainer.args.ddp_find_unused_parameters  # a step may route every sample to one expert
    assert math.isfinite(trainer.train().training_loss)
    trainer.save_model()
    assert (tmp_path / "out" / "pytorch_lora_weights.safetensors").is_file()
    assert (tmp_path / "out" / "pytorch_lora_weights_transformer_2.safetensors").is_file()


def test_cogvideox_trains(tmp_path, pairs):
    trainer = VideoDPOTrainer(
        model=tiny_cogvideox_i2v_pipeline(seed=0),
        args=_config(tmp_path, max_steps=2, beta=2500.0),
        train_dataset=pairs,
        peft_config=LORA,
    )
    result = trainer.train()
    assert math.isfinite(result.training_loss)
    assert trainer.adapter.prediction_type == "v_prediction"


def test_requires_lora(tmp_path, pairs):
    with pytest.raises(ValueError, match="peft_config=LoraConfig"):
        VideoDPOTrainer(model=tiny_wan_i2v_pipeline(seed=0), args=_config(tmp_path), train_dataset=pairs)


def test_generate_reward_pairs(tmp_path):
    pipe = tiny_wan_i2v_pipeline(seed=0)
    rng = np.random.RandomState(1)
    images = [PIL.Image.fromarray((rng.rand(40, 40, 3) * 255).astype(np.uint8)) for _ in range(2)]

    def brightness(reference, video):
        assert reference.dtype == torch.uint8 and reference.shape == (3, 32, 32)
        assert video.dtype == torch.uint8 and video.shape == (9, 3, 32, 32)
        return float(video.float().mean())

    def darkness(reference, video):
        return -brightness(reference, video)

    common = {"num_videos": 3, "num_frames": 9, "height": 32, "width": 32, "num_inference_steps": 2}
    dataset, stats = generate_reward_pairs(
        pipe, images, ["a cat", "a dog"], brightness, darkness, output_dir=tmp_path / "gen", **common
    )
    assert stats.num_videos == 6 and stats.num_pairs == 2 and stats.num_same_pick == 0
    validate_dpo_pairs(dataset)
    reloaded = load_dpo_pairs(tmp_path / "gen" / "pairs.jsonl")
    assert reloaded["chosen"] == dataset["chosen"] and reloaded["image"] == dataset["image"]
    for row in reloaded:
        assert row["chosen_score"] > row["rejected_score"]

    _, agree = generate_reward_pairs(
        pipe, images, ["a cat", "a dog"], brightness, brightness, output_dir=tmp_path / "agree", **common
    )
    assert agree.num_pairs == 0 and agree.num_same_pick == 2 and agree.skipped == [0, 1]


def test_a_row_id_column_seeds_a_pair_whatever_its_paths():
    from icreward.trainers.video_dpo_trainer import pair_id

    row = {"prompt": "p", "image": "/a/ref.png", "chosen": "/a/c.mp4", "rejected": "/a/r.mp4"}
    moved = {key: value.replace("/a/", "/b/") for key, value in row.items()}
    assert pair_id(row) != pair_id(moved)  # without its own id, a pair is known by its paths
    assert pair_id({**row, "row_id": "train:7"}) == pair_id({**moved, "row_id": "train:7"})
    assert pair_id({**row, "row_id": "train:7"}) != pair_id({**row, "row_id": "train:8"})
    assert pair_id({**row, "row_id": None}) == pair_id(row)  # a missing id falls back to the paths
