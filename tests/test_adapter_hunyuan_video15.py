"""HunyuanVideo 1.5 image-to-video: the adapter against the real diffusers pipeline, and the trainers on it."""

import math

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig

from icreward.adapters import (
    HunyuanVideo15Generator,
    HunyuanVideo15I2VAdapter,
    get_adapter,
    load_hunyuan_video15_lora,
)
from icreward.adapters.hunyuan_video15 import forward_all_tokens_valid
from icreward.testing.tiny_families_wan_hunyuan import TINY_HUNYUAN15_SIZE, tiny_hunyuan_video15_i2v_pipeline
from icreward.trainers.video_dpo_config import VideoDPOConfig
from icreward.trainers.video_dpo_trainer import VideoDPOTrainer
from icreward.video import write_video

SIZE = dict(TINY_HUNYUAN15_SIZE)
LORA = LoraConfig(r=4, lora_alpha=8)  # alpha != r: the scale must round-trip through the saved metadata
GLYPH_PROMPT = 'a sign that reads "OPEN"'


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def image():
    # Square: the tiny pipeline (target_size 32) generates 32x32 for it, the size trained here.
    return PIL.Image.fromarray((np.random.RandomState(0).rand(40, 40, 3) * 255).astype(np.uint8))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """Two pairs: chosen = the reference image held still, rejected = noise."""
    root = tmp_path_factory.mktemp("hunyuan15_pairs")
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
    return HunyuanVideo15I2VAdapter(tiny_hunyuan_video15_i2v_pipeline(seed=0, **kwargs))


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
# The adapter against the pipeline
# ---------------------------------------------------------------------------------------------------------------


def test_registry_and_refusals(tmp_path):
    from diffusers import HunyuanVideo15Pipeline

    pipe = tiny_hunyuan_video15_i2v_pipeline(seed=0)
    assert type(get_adapter(pipe)) is HunyuanVideo15I2VAdapter
    t2v = HunyuanVideo15Pipeline(
        **{k: v for k, v in pipe.components.items() if k not in ("image_encoder", "feature_extractor")}
    )
    with pytest.raises(ValueError, match="HunyuanVideo15ImageToVideoPipeline"):
        get_adapter(t2v)
    pipe.transformer.register_to_config(task_type="t2v")
    with pytest.raises(ValueError, match="task_type='t2v'"):
        HunyuanVideo15I2VAdapter(pipe)
    pipe.transformer.register_to_config(task_type="i2v", use_meanflow=True)
    with pytest.raises(ValueError, match="use_meanflow"):
        HunyuanVideo15I2VAdapter(pipe)
    with pytest.raises(ValueError, match="num_frames = 4k"):
        _adapter().latent_shape(1, 8, 32, 32)


@pytest.mark.parametrize("guidance_scale", [1.0, 6.0])
def test_sampling_loop_matches_pipeline(image, guidance_scale):
    """Same noise, same settings: the adapter's steps (with the trainers' CFG formula) equal the pipeline's output."""
    adapter = _adapter(guidance_scale=guidance_scale)
    pipe = adapter.pipeline
    steps = 3
    cond = adapter.prepare_conditions([image], [GLYPH_PROMPT], **SIZE)
    negative = adapter.prepare_conditions([image], [""], **SIZE)  # the pipeline's default negative prompt
    noise = torch.randn(adapter.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(1))
    common = {"image": image, "prompt": GLYPH_PROMPT, "num_frames": SIZE["num_frames"], "num_inference_steps": steps}
    expected = pipe(**common, latents=noise.clone(), output_type="latent").frames
    expected_video = pipe(**common, latents=noise.clone(), output_type="pt").frames

    timesteps = adapter.inference_timesteps(steps)
    sigmas = np.linspace(1.0, 0.0, steps + 1)[:-1]
    shifted = 5.0 * sigmas / (1 + 4.0 * sigmas)  # the scheduler's shift=5.0
    np.testing.assert_allclose(timesteps[:-1].numpy(), shifted * 1000, rtol=1e-6)
    sampler = adapter.sampler(steps)  # what reward-feedback training steps through
    torch.testing.assert_close(sampler.timesteps.float(), timesteps[:-1])
    x = noise
    with torch.no_grad():
        for i, t in enumerate(sampler.timesteps):
            if guidance_scale == 1.0:
                x = sampler.step(i, x, adapter.predict(x, t.expand(1), cond), cond)
                continue
            both = {k: torch.cat([negative[k], cond[k]]) for k in cond}
            uncond, conditional = adapter.predict(torch.cat([x, x]), t.repeat(2), both).chunk(2)
            x = sampler.step(i, x, uncond + guidance_scale * (conditional - uncond), cond)
        video = adapter.decode_latents(x)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(video, expected_video, rtol=1e-4, atol=1e-4)
    assert float((x - noise).abs().max()) > 0.1


def test_image_conditioning_channels_tokens_and_text_streams(image):
    adapter = _adapter()
    cond = adapter.prepare_conditions([image, image], ["a cat", GLYPH_PROMPT], **SIZE)
    # The tiny pipeline's text lengths (48 / 16 tokens; published: 1000 after cropping 108, and 256).
    assert cond["prompt_embeds"].shape == (2, 48, 16)
    assert cond["prompt_embeds_mask"].sum(1).min() > 0
    assert cond["prompt_embeds_2"].shape == (2, 16, 24)
    # ByT5 reads only quoted text: zeros and an empty mask without it.
    assert cond["prompt_embeds_mask_2"][0].sum() == 0 and cond["prompt_embeds_2"][0].abs().max() == 0
    assert cond["prompt_embeds_mask_2"][1].sum() > 0
    assert cond["image_embeds"].shape == (2, 4, 12)  # SigLIP last_hidden_state: 2x2 patches of a 28x28 input
    assert cond["image_latents"].shape == (2, 8, 1, 2, 2)

    latents = adapter.prepare_latents(torch.rand(2, 9, 3, 32, 32))
    assert latents.shape == adapter.latent_shape(2, **SIZE) == (2, 8, 3, 2, 2)
    seen = {}
    transformer = adapter.pipeline.transformer
    handle = transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    t = torch.tensor([700.0, 300.0])
    with torch.no_grad():
        pred = adapter.predict(adapter.add_noise(latents, torch.randn_like(latents), t), t, cond)
    handle.remove()
    hidden = seen["hidden_states"]
    assert hidden.shape == (2, 17, 3, 2, 2)  # noisy (8) + image-conditioned latents (8) + mask (1)
    torch.testing.assert_close(hidden[:, 8:16, :1], cond["image_latents"], rtol=0, atol=0)
    assert hidden[:, 8:16, 1:].eq(0).all()
    assert hidden[:, 16, 0].eq(1).all() and hidden[:, 16, 1:].eq(0).all()
    torch.testing.assert_close(seen["timestep"], t)  # one timestep per sample: every frame is denoised
    assert seen["image_embeds"].shape == (2, 4, 12)
    assert pred.shape == latents.shape and pred[:, :, 0].abs().max() > 0
    target = adapter.target(latents, torch.ones_like(latents), t)
    torch.testing.assert_close(target, 1 - latents)  # the loss counts every frame, frame 0 included


def test_meta_safe_forward_equals_the_transformer_forward():
    """forward_all_tokens_valid (used on meta: shape checks, memory accounting) is the model's forward when every
    condition token is valid."""
    transformer = tiny_hunyuan_video15_i2v_pipeline(seed=0).transformer
    g = torch.Generator().manual_seed(0)
    kwargs = {
        "hidden_states": torch.randn(2, 17, 3, 2, 2, generator=g),
        "timestep": torch.tensor([300.0, 700.0]),
        "encoder_hidden_states": torch.randn(2, 48, 16, generator=g),
        "encoder_attention_mask": torch.ones(2, 48),
        "encoder_hidden_states_2": torch.randn(2, 16, 24, generator=g),
        "encoder_attention_mask_2": torch.ones(2, 16),
        "image_embeds": torch.randn(2, 4, 12, generator=g),
    }
    with torch.no_grad():
        expected = transformer(**kwargs, return_dict=False)[0]
        torch.testing.assert_close(forward_all_tokens_valid(transformer, **kwargs), expected, rtol=0, atol=0)


def test_memory_accountant_runs_on_the_dpo_recipe(capsys):
    """`icreward estimate-memory` on the shipped HunyuanVideo 1.5 DPO recipe at the published size."""
    import re
    from pathlib import Path

    import yaml

    from icreward.cli.estimate_memory import main

    path = Path(__file__).resolve().parent.parent / "examples" / "configs" / "dpo_hunyuan_video15_real.yaml"
    status = main(["--config", str(path)])
    printed = capsys.readouterr().out
    print(printed)  # shown with -s: the numbers docs/families/hunyuan_video15.md quotes
    config = yaml.safe_load(path.read_text())
    shape = f"(1, 32, {(config['num_frames'] - 1) // 4 + 1}, {config['height'] // 16}, {config['width'] // 16})"
    assert f"on hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v, latents {shape}" in printed
    (row,) = re.findall(r"^peak\s+([0-9.]+)$", printed, flags=re.M)
    (verdict,) = re.findall(r"^peak ([0-9.]+) GiB (fits|does NOT fit) the 72 GiB budget", printed, flags=re.M)
    assert float(row) == float(verdict[0]) > 15  # more than the bf16 weights of the 8.3B transformer
    assert status == (0 if float(row) <= 72 else 1)


def test_latent_normalisation_and_decode():
    adapter = _adapter()
    vae = adapter.vae
    videos = torch.rand(1, 9, 3, 32, 32)
    raw = vae.encode(videos.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mode()
    torch.testing.assert_close(adapter.prepare_latents(videos), raw * 1.03682)
    latents = adapter.prepare_latents(videos).requires_grad_(True)
    decoded = adapter.decode_latents(latents)
    expected = vae.decode(latents.detach() / 1.03682).sample
    torch.testing.assert_close(decoded.detach(), (expected / 2 + 0.5).clamp(0, 1).permute(0, 2, 1, 3, 4))
    decoded.mean().backward()
    assert latents.grad.abs().sum() > 0


def test_published_config_on_meta_passes_the_shape_path():
    """HunyuanVideo 1.5 480p I2V at its published size (no weights): conditions, latents, target, decode shapes."""
    from diffusers import FlowMatchEulerDiscreteScheduler, HunyuanVideo15ImageToVideoPipeline

    from icreward.adapters.published_configs import build_meta_components, build_meta_scheduler, get_published_config

    entry = get_published_config("hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v")
    parts = build_meta_components(entry.hub_id, components=("transformer", "vae"))
    transformer, vae = parts["transformer"], parts["vae"]
    assert sum(p.numel() for p in transformer.parameters()) / 1e9 == pytest.approx(8.3, abs=0.05)  # "8.3B"
    scheduler = build_meta_scheduler(entry.hub_id)
    assert isinstance(scheduler, FlowMatchEulerDiscreteScheduler) and scheduler.config.shift == 5.0
    pipe = HunyuanVideo15ImageToVideoPipeline(
        text_encoder=None,
        tokenizer=None,
        transformer=transformer,
        vae=vae,
        scheduler=scheduler,
        text_encoder_2=None,
        tokenizer_2=None,
        guider=None,
        image_encoder=None,
        feature_extractor=None,
    )
    adapter = HunyuanVideo15I2VAdapter(pipe)
    # The published sample size is what the pipeline generates for a 16:9 image.
    from icreward.adapters.hunyuan_video15 import pipeline_size_for_image

    assert pipeline_size_for_image(pipe, PIL.Image.new("RGB", (1280, 720))) == (entry.height, entry.width)
    # Shapes at the published height/width; 33 frames keep the VAE's causal attention mask (built in a Python loop
    # over frames x height x width) fast on meta.
    size = {"num_frames": 33, "height": entry.height, "width": entry.width}
    shape = adapter.latent_shape(1, **size)
    assert shape == (1, 32, 9, 30, 53)
    full = adapter.latent_shape(1, entry.num_frames, entry.height, entry.width)
    assert full == (1, 32, 31, 30, 53)
    videos = torch.empty(1, size["num_frames"], 3, size["height"], size["width"], dtype=torch.uint8, device="meta")
    latents = adapter.prepare_latents(videos)
    assert tuple(latents.shape) == shape
    conditions = {
        "prompt_embeds": torch.empty(1, 1000, 3584, device="meta"),
        "prompt_embeds_mask": torch.ones(1, 1000, device="meta"),
        "prompt_embeds_2": torch.empty(1, 256, 1472, device="meta"),
        "prompt_embeds_mask_2": torch.ones(1, 256, device="meta"),
        "image_embeds": torch.empty(1, 729, 1152, device="meta"),
        "image_latents": torch.empty(1, 32, 1, *shape[-2:], device="meta"),
    }
    t = torch.full((1,), 500.0, device="meta")
    noise = torch.empty(shape, device="meta")
    noisy = adapter.add_noise(latents, noise, t)
    # The transformer's own forward cannot run on meta (data-dependent token reordering); forward_all_tokens_valid
    # runs the same operations (equal to the real forward on CPU, tested below) on the adapter's tensors.
    inputs = adapter.transformer_inputs(noisy, t, conditions)
    assert inputs["hidden_states"].shape[1] == transformer.config.in_channels == 65
    blocks = transformer.transformer_blocks
    transformer.transformer_blocks = blocks[:2]  # every block maps shapes alike; 2 of 54 keep this fast on meta
    try:
        pred = forward_all_tokens_valid(transformer, **inputs).float()
    finally:
        transformer.transformer_blocks = blocks
    assert pred.shape == adapter.target(latents, noise, t).shape == shape
    assert adapter.denoise_step(latents, 500.0, 400.0, conditions, model_output=pred).shape == shape
    assert adapter.decode_latents(latents).shape == (1, size["num_frames"], 3, size["height"], size["width"])
    assert len(adapter.inference_timesteps(50)) == 51


# ---------------------------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------------------------


def test_dpo_loss_matches_independent_formula_with_cached_latents(tmp_path, pairs):
    beta = 50.0
    trainer = VideoDPOTrainer(
        model=tiny_hunyuan_video15_i2v_pipeline(seed=0),
        args=_dpo_config(tmp_path, beta=beta),
        train_dataset=pairs,
        peft_config=LORA,
    )
    adapter = trainer.adapter
    assert type(adapter) is HunyuanVideo15I2VAdapter
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
        return (pred - (eps - x)).pow(2).flatten(1).mean(1)  # every frame counts

    inside = -0.5 * beta * ((mse(x_w, False) - mse(x_w, True)) - (mse(x_l, False) - mse(x_l, True)))
    expected = torch.log1p(torch.exp(-inside)).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    assert abs(float(expected) - math.log(2)) > 1e-5


def test_dpo_trains_only_lora_and_saved_lora_loads_into_the_pipeline(tmp_path, pairs, image):
    from diffusers import HunyuanVideo15ImageToVideoPipeline

    pipe = tiny_hunyuan_video15_i2v_pipeline(seed=0)
    frozen = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    names = ("vae", "text_encoder", "text_encoder_2", "image_encoder")
    others = {n: {k: v.clone() for k, v in getattr(pipe, n).state_dict().items()} for n in names}
    trainer = VideoDPOTrainer(
        model=pipe, args=_dpo_config(tmp_path, max_steps=3), train_dataset=pairs, peft_config=LORA
    )
    before = _lora_params(trainer.adapter)
    trainer.train()
    after = _lora_params(trainer.adapter)
    unchanged = sorted(k for k in before if torch.equal(before[k], after[k]))
    # The last block's text-stream query and output projections feed only its discarded text output: no gradient.
    last = f"transformer_blocks.{len(pipe.transformer.transformer_blocks) - 1}.attn"
    assert unchanged == [f"{last}.{m}.lora_{ab}.default.weight" for m in ("add_q_proj", "to_add_out") for ab in "AB"]
    assert len(before) > 4 * len(unchanged)
    for key, value in pipe.transformer.state_dict().items():
        if "lora_" not in key:
            torch.testing.assert_close(value, frozen[key.replace(".base_layer", "")], rtol=0, atol=0)
    for name, state in others.items():
        for key, value in getattr(pipe, name).state_dict().items():
            torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    trainer.save_model()
    out = tmp_path / "out"

    def generate(p):
        return p(
            image=image, prompt="a cat", num_frames=9, num_inference_steps=2, output_type="pt",
            generator=torch.Generator().manual_seed(0),
        ).frames  # fmt: skip

    fresh = tiny_hunyuan_video15_i2v_pipeline(seed=0)
    assert isinstance(fresh, HunyuanVideo15ImageToVideoPipeline)
    assert not hasattr(fresh, "load_lora_weights")  # diffusers 0.42: no LoRA loader mixin for this pipeline
    base = generate(fresh)
    load_hunyuan_video15_lora(fresh, out)  # pipe.transformer.load_lora_adapter(out, prefix="transformer", ...)
    tuned = generate(fresh)
    assert (tuned - base).abs().max() > 1e-4
    torch.testing.assert_close(tuned, generate(trainer.adapter.pipeline), rtol=1e-4, atol=1e-4)
    config = next(iter(fresh.transformer.peft_config.values()))
    assert (config.r, config.lora_alpha) == (4, 8)
    snippet = trainer.adapter.lora_load_snippet(str(out))  # what the model card shows: run it on another pipeline
    other = tiny_hunyuan_video15_i2v_pipeline(seed=0)
    exec(snippet, {"pipe": other})
    torch.testing.assert_close(generate(other), tuned, rtol=0, atol=0)


def test_dpo_resume_matches_uninterrupted_run(tmp_path, pairs):
    def run(subdir, resume=None):
        args = _dpo_config(tmp_path / subdir, max_steps=4, save_strategy="steps", save_steps=2)
        trainer = VideoDPOTrainer(
            model=tiny_hunyuan_video15_i2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LORA
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

    args = RewardFeedbackConfig(
        output_dir=str(tmp_path / "rf"),
        **SIZE,
        num_inference_steps=3,
        truncated_backprop_steps=1,
        per_device_train_batch_size=1,
        max_steps=2,
        learning_rate=1e-2,
        kl_weight=1.0,
        guidance_scale=2.0,
        decode_frame_subset=2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = RewardFeedbackTrainer(
        model=tiny_hunyuan_video15_i2v_pipeline(seed=0),
        reward_funcs=CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness"),
        args=args,
        train_dataset=[{"image": image, "prompt": "a cat"}],
        peft_config=LORA,
    )
    adapter = trainer.adapter
    assert type(adapter) is HunyuanVideo15I2VAdapter
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

    pipe = tiny_hunyuan_video15_i2v_pipeline(seed=0)
    generate = pipeline_generator(HunyuanVideo15Generator(pipe), **SIZE, num_inference_steps=2)
    first = generate(image, "a cat", 2, seed=5)
    again = generate(image, "a cat", 1, seed=5)
    assert len(first) == 2 and first[0].shape == (9, 3, 32, 32) and first[0].dtype == torch.uint8
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])
    wide = PIL.Image.new("RGB", (64, 16))  # the pipeline would generate 16x64 for it, not the 32x32 asked for
    with pytest.raises(ValueError, match="generates 16x64"):
        generate(wide, "a cat", 1, seed=0)


def test_grpo_trains_only_lora(tmp_path, image):
    from icreward.trainers.video_grpo_config import VideoGRPOConfig
    from icreward.trainers.video_grpo_trainer import VideoGRPOTrainer

    args = VideoGRPOConfig(
        output_dir=str(tmp_path / "grpo"),
        **SIZE,
        num_inference_steps=3,
        num_generations=2,
        per_device_train_batch_size=2,
        max_steps=1,
        learning_rate=1e-2,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        disable_tqdm=True,
        seed=0,
    )
    trainer = VideoGRPOTrainer(
        model=tiny_hunyuan_video15_i2v_pipeline(seed=0),
        reward_funcs={"brightness": lambda video: video.mean(dim=(1, 2, 3, 4))},
        args=args,
        train_dataset=[{"image": image, "prompt": "a cat"}],
        peft_config=LORA,
    )
    before = _lora_params(trainer.adapter)
    trainer.train()
    after = _lora_params(trainer.adapter)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("lora_" in k for k in changed)
