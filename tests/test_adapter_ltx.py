"""LTX-Video 0.9.x image-to-video: the adapter against the real diffusers pipeline, and all three trainers on it."""

import math

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig

from icreward.adapters import LTXVideoI2VAdapter, get_adapter
from icreward.testing.tiny_families_ltx import TINY_LTX_DEFAULTS, tiny_ltx_i2v_pipeline
from icreward.trainers.video_dpo_config import VideoDPOConfig
from icreward.trainers.video_dpo_trainer import VideoDPOTrainer
from icreward.video import write_video

SIZE = {"num_frames": 9, "height": 32, "width": 32}
LORA = LoraConfig(r=4, lora_alpha=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def image():
    return PIL.Image.fromarray((np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Two pairs: chosen = the reference image held still, rejected = noise."""
    root = tmp_path_factory.mktemp("ltx_pairs")
    rng = np.random.RandomState(0)
    rows = []
    for i in range(2):
        array = (rng.rand(32, 32, 3) * 255).astype(np.uint8)
        PIL.Image.fromarray(array).save(root / f"image_{i}.png")
        write_video(root / f"chosen_{i}.mp4", torch.from_numpy(array).permute(2, 0, 1)[None].repeat(9, 1, 1, 1))
        write_video(root / f"rejected_{i}.mp4", torch.from_numpy((rng.rand(9, 3, 32, 32) * 255).astype(np.uint8)))
        rows.append(
            {
                "image": str(root / f"image_{i}.png"),
                "prompt": f"a still photo number {i}",
                "chosen": str(root / f"chosen_{i}.mp4"),
                "rejected": str(root / f"rejected_{i}.mp4"),
            }
        )
    return rows


def _adapter(**kwargs):
    return LTXVideoI2VAdapter(tiny_ltx_i2v_pipeline(seed=0), **{**SIZE, **kwargs})


def _lora_params(adapter):
    return {n: p.detach().clone() for n, p in adapter.pipeline.transformer.named_parameters() if "lora_" in n}


def _dpo_config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path / "out"),
        **SIZE,
        "per_device_train_batch_size": 2,
        "max_steps": 2,
        "learning_rate": 1e-3,
        "logging_steps": 1,
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


# ---------------------------------------------------------------------------------------------------------------
# The adapter against LTXImageToVideoPipeline
# ---------------------------------------------------------------------------------------------------------------


def test_registry_accepts_both_ltx_pipeline_classes(tmp_path):
    from diffusers import LTXConditionPipeline, LTXImageToVideoPipeline

    pipe = tiny_ltx_i2v_pipeline(seed=0)
    assert type(get_adapter(pipe)) is LTXVideoI2VAdapter
    condition = LTXConditionPipeline(**pipe.components)
    adapter = get_adapter(condition)
    assert type(adapter) is LTXVideoI2VAdapter and type(adapter.pipeline) is LTXImageToVideoPipeline
    assert adapter.pipeline.transformer is pipe.transformer  # same weights, re-wrapped
    pipe.save_pretrained(tmp_path)
    assert type(get_adapter(str(tmp_path))) is LTXVideoI2VAdapter
    with pytest.raises(ValueError, match="num_frames, height and width together"):
        LTXVideoI2VAdapter(pipe, num_frames=9)
    with pytest.raises(ValueError, match="4k \\+ 1"):
        LTXVideoI2VAdapter(pipe, num_frames=8, height=32, width=32)


def test_sampling_loop_matches_pipeline(image):
    """With gradients off, prepare_conditions + denoise_step + decode reproduce LTXImageToVideoPipeline."""
    adapter = _adapter()
    pipe = adapter.pipeline
    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    noise = torch.randn(1, 8, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    # The pipeline takes packed latents as given: its first frame must already be the image latent (it never steps
    # it). The adapter starts from pure noise and puts the image latent in itself.
    start = pipe._pack_latents(torch.cat([cond["image_latents"], noise[:, :, 1:]], dim=2))
    steps = 3
    common = {"image": image, "prompt": "a cat", **TINY_LTX_DEFAULTS, "num_inference_steps": steps}
    expected = pipe(**common, latents=start.clone(), output_type="latent").frames
    expected = pipe._unpack_latents(expected, 3, 8, 8)
    expected_video = pipe(**common, latents=start.clone(), output_type="pt").frames

    timesteps = adapter.inference_timesteps(steps)
    sigmas = np.linspace(1.0, 1 / steps, steps)
    assert not np.allclose(timesteps[:-1].numpy() / 1000, sigmas, atol=1e-3)  # the resolution shift is applied
    assert timesteps[-2] == pytest.approx(1000 * adapter.scheduler.config.shift_terminal)
    x = noise
    with torch.no_grad():
        for i in range(steps):
            x = adapter.denoise_step(x, timesteps[i], timesteps[i + 1], cond)
        video = adapter.decode_latents(x)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(video, expected_video, rtol=1e-4, atol=1e-4)
    assert float((x - noise).abs().max()) > 0.1


def test_conditioning_frame_mask_and_per_token_timesteps(image):
    adapter = _adapter()
    cond = adapter.prepare_conditions([image, image], ["a cat", "a dog"], **SIZE)
    assert cond["prompt_embeds"].shape == (2, 128, 32)
    assert cond["prompt_attention_mask"].shape == (2, 128) and cond["prompt_attention_mask"].sum(1).min() > 0
    assert cond["image_latents"].shape == (2, 8, 1, 8, 8)
    latents = adapter.prepare_latents(torch.rand(2, 9, 3, 32, 32))
    assert latents.shape == adapter.latent_shape(2, **SIZE) == (2, 8, 3, 8, 8)
    mask = adapter.conditioning_mask(latents)
    assert mask.shape == (2, 3 * 8 * 8) and mask[:, :64].eq(1).all() and mask[:, 64:].eq(0).all()

    seen = {}
    transformer = adapter.pipeline.transformer
    handle = transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    t = torch.tensor([700.0, 300.0])
    noisy = adapter.add_noise(latents, torch.randn_like(latents), t)
    with torch.no_grad():
        pred = adapter.predict(noisy, t, cond)
        other_first = noisy.clone()
        other_first[:, :, 0] = torch.randn_like(other_first[:, :, 0])  # the first frame is replaced by the image
        pred_other = adapter.predict(other_first, t, cond)
    handle.remove()
    assert seen["timestep"].shape == (2, 192)
    assert seen["timestep"][:, :64].eq(0).all()  # the conditioned frame's tokens are clean
    torch.testing.assert_close(seen["timestep"][:, 64:], t.view(2, 1).expand(2, 128))
    assert seen["hidden_states"].shape == (2, 192, 8)  # packed tokens
    assert pred[:, :, 0].eq(0).all() and pred[:, :, 1:].abs().max() > 0
    torch.testing.assert_close(pred, pred_other, rtol=0, atol=0)
    target = adapter.target(latents, torch.ones_like(latents), t)
    assert target[:, :, 0].eq(0).all()
    torch.testing.assert_close(target[:, :, 1:], 1 - latents[:, :, 1:])


def test_latent_normalisation_and_decode(image):
    adapter = _adapter()
    vae = adapter.vae
    videos = torch.rand(1, 9, 3, 32, 32)
    raw = vae.encode(videos.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mode()
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(adapter.prepare_latents(videos), (raw - mean) / std)
    latents = adapter.prepare_latents(videos).requires_grad_(True)
    decoded = adapter.decode_latents(latents)
    assert decoded.shape == (1, 9, 3, 32, 32)
    decoded.mean().backward()
    assert latents.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="video size"):
        LTXVideoI2VAdapter(adapter.pipeline).inference_timesteps(4)


def test_published_config_on_meta_passes_the_shape_path(image):
    """LTX-Video 0.9.x at its published size (no weights): conditions, latents, target, decode shapes."""
    from diffusers import (
        AutoencoderKLLTXVideo,
        FlowMatchEulerDiscreteScheduler,
        LTXImageToVideoPipeline,
        LTXVideoTransformer3DModel,
    )

    from icreward.adapters.published_configs import build_meta_components, build_meta_scheduler, get_published_config

    entry = get_published_config("Lightricks/LTX-Video")
    parts = build_meta_components(entry.hub_id, components=("transformer", "vae"), dtype=None)
    transformer, vae = parts["transformer"], parts["vae"]
    assert isinstance(transformer, LTXVideoTransformer3DModel) and isinstance(vae, AutoencoderKLLTXVideo)
    vae.use_framewise_encoding = vae.use_framewise_decoding = vae.use_tiling = False
    scheduler = build_meta_scheduler(entry.hub_id)
    assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler) and scheduler.config.shift_terminal == 0.1
    pipe = LTXImageToVideoPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
    )
    assert sum(p.numel() for p in transformer.parameters()) / 1e9 == pytest.approx(1.92, abs=0.01)  # "2B"
    size = {"num_frames": entry.num_frames, "height": entry.height, "width": entry.width}  # the pipeline's default
    adapter = LTXVideoI2VAdapter(pipe, **size)
    assert adapter.vae_scale_factor_spatial == 32 and adapter.vae_scale_factor_temporal == 8
    shape = adapter.latent_shape(1, **size)
    assert shape == (1, 128, 16, 16, 22)
    videos = torch.empty(1, size["num_frames"], 3, size["height"], size["width"], dtype=torch.uint8, device="meta")
    latents = adapter.prepare_latents(videos)
    assert tuple(latents.shape) == shape
    image_latents = adapter._encode(torch.empty(1, 3, 1, size["height"], size["width"], device="meta"))
    conditions = {
        "prompt_embeds": torch.empty(1, 128, entry.components["text_encoder"].config["d_model"], device="meta"),
        "prompt_attention_mask": torch.ones(1, 128, device="meta"),
        "image_latents": image_latents,
    }
    t = torch.full((1,), 500.0, device="meta")
    noise = torch.empty(shape, device="meta")
    pred = adapter.predict(adapter.add_noise(latents, noise, t), t, conditions)
    assert pred.shape == adapter.target(latents, noise, t).shape == shape
    stepped = adapter.denoise_step(latents, 500.0, 400.0, conditions, model_output=pred)
    assert stepped.shape == shape
    assert adapter.decode_latents(latents).shape == (1, size["num_frames"], 3, size["height"], size["width"])
    assert len(adapter.inference_timesteps(40)) == 41


# ---------------------------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------------------------


def test_dpo_loss_matches_independent_formula_with_cached_latents(tmp_path, pairs):
    beta = 50.0
    trainer = VideoDPOTrainer(
        model=tiny_ltx_i2v_pipeline(seed=0),
        args=_dpo_config(tmp_path, beta=beta),
        train_dataset=pairs,
        peft_config=LORA,
    )
    adapter = trainer.adapter
    assert type(adapter) is LTXVideoI2VAdapter
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == len(pairs)
    g = torch.Generator().manual_seed(0)
    for name, param in adapter.pipeline.transformer.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=g) * 0.05
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert "latents_chosen" in batch  # from the cache
    trainer._pair_generators = lambda training, ids: [torch.Generator().manual_seed(99 + i) for i in range(len(ids))]
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)

    generators = [torch.Generator().manual_seed(99 + i) for i in range(2)]
    x_w, x_l, cond = batch["latents_chosen"], batch["latents_rejected"], batch["conditions"]
    t = torch.cat([adapter.sample_timesteps(1, generator=gen, device="cpu") for gen in generators])
    eps = torch.stack([torch.randn(x_w.shape[1:], generator=gen) for gen in generators])
    sigma = (t / 1000).view(-1, 1, 1, 1, 1)

    def mse(x, ref):
        noisy = (1 - sigma) * x + sigma * eps
        with torch.no_grad():
            if ref:
                with adapter.disable_lora():
                    pred = adapter.predict(noisy, t, cond)
            else:
                pred = adapter.predict(noisy, t, cond)
        # Only generated frames count; the mean runs over every element (the first frame contributes zero).
        diff = (pred - (eps - x))[:, :, 1:]
        return diff.pow(2).flatten(1).sum(1) / x[0].numel()

    inside = -0.5 * beta * ((mse(x_w, False) - mse(x_w, True)) - (mse(x_l, False) - mse(x_l, True)))
    expected = torch.log1p(torch.exp(-inside)).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    assert abs(float(expected) - math.log(2)) > 1e-5


def test_dpo_trains_only_lora_and_saved_lora_loads_into_the_pipeline(tmp_path, pairs, image):
    from diffusers import LTXImageToVideoPipeline

    pipe = tiny_ltx_i2v_pipeline(seed=0)
    frozen = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    others = {n: {k: v.clone() for k, v in getattr(pipe, n).state_dict().items()} for n in ("vae", "text_encoder")}
    trainer = VideoDPOTrainer(
        model=pipe, args=_dpo_config(tmp_path, max_steps=3), train_dataset=pairs, peft_config=LORA
    )
    before = _lora_params(trainer.adapter)
    trainer.train()
    after = _lora_params(trainer.adapter)
    assert before and not [k for k in before if torch.equal(before[k], after[k])]
    for key, value in pipe.transformer.state_dict().items():
        if "lora_" not in key:
            torch.testing.assert_close(value, frozen[key.replace(".base_layer", "")], rtol=0, atol=0)
    for name, state in others.items():
        for key, value in getattr(pipe, name).state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    trainer.save_model()
    out = tmp_path / "out"

    def generate(p):
        kwargs = {**TINY_LTX_DEFAULTS, "num_inference_steps": 2, "output_type": "pt"}
        return p(image=image, prompt="a cat", generator=torch.Generator().manual_seed(0), **kwargs).frames

    fresh = tiny_ltx_i2v_pipeline(seed=0)
    assert isinstance(fresh, LTXImageToVideoPipeline)
    base = generate(fresh)
    fresh.load_lora_weights(str(out))
    tuned = generate(fresh)
    assert (tuned - base).abs().max() > 1e-4
    torch.testing.assert_close(tuned, generate(trainer.adapter.pipeline), rtol=1e-4, atol=1e-4)

    # The same file loads into LTXConditionPipeline (0.9.5+ inference): same transformer class and LoRA loader.
    from diffusers import LTXConditionPipeline

    condition = LTXConditionPipeline(**tiny_ltx_i2v_pipeline(seed=0).components)
    condition.load_lora_weights(str(out))
    loaded = {n: p for n, p in condition.transformer.named_parameters() if "lora_" in n}
    trained = {
        n.replace(".default.", ".default_0."): p
        for n, p in trainer.adapter.pipeline.transformer.named_parameters()
        if "lora_" in n
    }
    assert loaded.keys() == trained.keys()
    for name in loaded:
        torch.testing.assert_close(loaded[name], trained[name], rtol=0, atol=0)


def test_dpo_resume_matches_uninterrupted_run(tmp_path, pairs):
    def run(subdir, resume=None):
        args = _dpo_config(tmp_path / subdir, max_steps=4, save_strategy="steps", save_steps=2)
        trainer = VideoDPOTrainer(
            model=tiny_ltx_i2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LORA
        )
        trainer.train(resume_from_checkpoint=resume)
        return _lora_params(trainer.adapter)

    full = run("full")
    resumed = run("resumed", resume=str(tmp_path / "full" / "out" / "checkpoint-2"))
    assert full.keys() == resumed.keys() and full
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


def test_reward_feedback_trains_lora_through_the_last_step(tmp_path, image):
    from icreward.rewards import CallableReward
    from icreward.trainers.reward_feedback_config import RewardFeedbackConfig
    from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer

    adapter = _adapter()
    args = RewardFeedbackConfig(
        output_dir=str(tmp_path / "rf"),
        **SIZE,
        num_inference_steps=3,
        truncated_backprop_steps=1,
        per_device_train_batch_size=1,
        max_steps=2,
        learning_rate=1e-2,
        kl_weight=1.0,
        decode_frame_subset=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = RewardFeedbackTrainer(
        model=adapter,
        reward_funcs=CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness"),
        args=args,
        train_dataset=[{"image": image, "prompt": "a cat"}],
        peft_config=LORA,
    )
    before = _lora_params(adapter)
    trainer.train()
    after = _lora_params(adapter)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)
    trainer.save_model()
    assert (tmp_path / "rf" / "pytorch_lora_weights.safetensors").is_file()


def test_best_of_n_generates_with_the_pipeline(image):
    from icreward.evaluation.best_of_n import pipeline_generator

    generate = pipeline_generator(tiny_ltx_i2v_pipeline(seed=0), **SIZE, num_inference_steps=2, guidance_scale=1.0)
    first = generate(image, "a cat", 2, seed=5)
    again = generate(image, "a cat", 1, seed=5)
    assert len(first) == 2 and first[0].shape == (9, 3, 32, 32) and first[0].dtype == torch.uint8
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])


def test_reward_feedback_builds_the_size_aware_adapter_from_a_plain_pipeline(tmp_path, image):
    # LTX's sigma shift depends on the video size; the trainer must hand its num_frames/height/width to the adapter
    # it builds from a pipeline (examples/reward_feedback.py passes a pipeline, not an adapter).
    from icreward.rewards import CallableReward
    from icreward.trainers.reward_feedback_config import RewardFeedbackConfig
    from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer

    args = RewardFeedbackConfig(
        output_dir=str(tmp_path / "rf"),
        **SIZE,
        num_inference_steps=3,
        truncated_backprop_steps=1,
        per_device_train_batch_size=1,
        max_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = RewardFeedbackTrainer(
        model=tiny_ltx_i2v_pipeline(seed=0),
        reward_funcs=CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness"),
        args=args,
        train_dataset=[{"image": image, "prompt": "a cat"}],
        peft_config=LORA,
    )
    assert isinstance(trainer.adapter, LTXVideoI2VAdapter)
    expected = _adapter().inference_timesteps(3)
    assert torch.equal(trainer.adapter.inference_timesteps(3), expected)


def test_memory_accountant_runs_on_the_dpo_recipe(capsys):
    """`icreward estimate-memory` on the shipped LTX-Video DPO recipe at the published size."""
    import re
    from pathlib import Path

    import yaml

    from icreward.cli.estimate_memory import main

    path = Path(__file__).resolve().parent.parent / "examples" / "configs" / "dpo_ltx_video_real.yaml"
    status = main(["--config", str(path)])
    printed = capsys.readouterr().out
    print(printed)  # shown with -s: the numbers docs/families/ltx_video.md quotes
    config = yaml.safe_load(path.read_text())
    shape = f"(1, 128, {(config['num_frames'] - 1) // 8 + 1}, {config['height'] // 32}, {config['width'] // 32})"
    assert f"on Lightricks/LTX-Video, latents {shape}" in printed
    (row,) = re.findall(r"^peak\s+([0-9.]+)$", printed, flags=re.M)
    (verdict,) = re.findall(r"^peak ([0-9.]+) GiB (fits|does NOT fit) the 72 GiB budget", printed, flags=re.M)
    assert float(row) == float(verdict[0]) > 3.5  # more than the bf16 weights of the 1.9B transformer
    assert status == (0 if float(row) <= 72 else 1)
