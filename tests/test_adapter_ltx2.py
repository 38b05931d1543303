"""LTX-2 image-to-video: the adapter against the real diffusers pipeline (video and audio), and the trainers on it."""

import math

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig

from icreward.adapters import LTX2I2VAdapter, get_adapter
from icreward.testing.tiny_families_ltx import tiny_ltx2_i2v_pipeline
from icreward.trainers.reward_feedback_trainer import sample_with_truncated_backprop
from icreward.trainers.video_dpo_config import VideoDPOConfig
from icreward.trainers.video_dpo_trainer import VideoDPOTrainer
from icreward.video import write_video

SIZE = {"num_frames": 9, "height": 32, "width": 32}
TEXT_LEN = 16
LORA = LoraConfig(r=4, lora_alpha=4)
#: what makes LTX2ImageToVideoPipeline sample what the adapter samples: text CFG only (its defaults add STG,
#: modality-isolation guidance and guidance rescaling, which the adapter refuses)
PLAIN_CFG = {
    "stg_scale": 0.0,
    "audio_stg_scale": 0.0,
    "modality_scale": 1.0,
    "audio_modality_scale": 1.0,
    "guidance_rescale": 0.0,
    "audio_guidance_rescale": 0.0,
    "audio_guidance_scale": None,  # the video scale (the pipeline's default 7.0 would turn CFG on at scale 1)
    "max_sequence_length": TEXT_LEN,
}


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
    root = tmp_path_factory.mktemp("ltx2_pairs")
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
    return LTX2I2VAdapter(tiny_ltx2_i2v_pipeline(seed=0), **{**SIZE, "max_sequence_length": TEXT_LEN, **kwargs})


def _lora_params(adapter):
    return {n: p.detach().clone() for n, p in adapter.pipeline.transformer.named_parameters() if "lora_" in n}


def _dpo_config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path / "out"),
        **SIZE,
        "max_sequence_length": TEXT_LEN,
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


def _pipeline_sample(pipe, adapter, image, conditions, *, steps, guidance_scale, seed, **kwargs):
    """LTX2ImageToVideoPipeline from the same video noise (its generator) and the adapter's audio noise."""
    audio_vae = pipe.audio_vae
    audio = conditions["audio_latents"] * audio_vae.latents_std + audio_vae.latents_mean  # the pipeline normalises
    return pipe(
        image=image,
        prompt="a cat",
        negative_prompt="",
        **SIZE,
        num_inference_steps=steps,
        guidance_scale=guidance_scale,
        audio_latents=audio,
        generator=torch.Generator().manual_seed(seed),
        output_type="latent",
        **{**PLAIN_CFG, **kwargs},
    )


# ---------------------------------------------------------------------------------------------------------------
# The adapter against LTX2ImageToVideoPipeline
# ---------------------------------------------------------------------------------------------------------------


def test_registry_accepts_the_i2v_pipeline_and_refuses_what_it_cannot_reproduce():
    pipe = tiny_ltx2_i2v_pipeline(seed=0)
    adapter = get_adapter(pipe)
    assert type(adapter) is LTX2I2VAdapter and adapter.max_sequence_length == 64  # the tokenizer's length, < 1024
    from diffusers import LTX2ImageToVideoPipeline, LTX2Pipeline

    rewrapped = get_adapter(LTX2Pipeline(**{k: v for k, v in pipe.components.items() if v is not None}))
    assert type(rewrapped.pipeline) is LTX2ImageToVideoPipeline and rewrapped.pipeline.transformer is pipe.transformer
    with pytest.raises(ValueError, match="does not support LTX2ConditionPipeline"):
        get_adapter(type("LTX2ConditionPipeline", (), {})())
    for option, value, pattern in (
        ("stg_scale", 1.0, "spatio-temporal guidance"),
        ("modality_scale", 3.0, "modality-isolation guidance"),
        ("guidance_rescale", 0.7, "guidance rescaling"),
    ):
        with pytest.raises(NotImplementedError, match=pattern):
            LTX2I2VAdapter(pipe, **{option: value})
    with pytest.raises(ValueError, match="num_frames, height and width together"):
        LTX2I2VAdapter(pipe, num_frames=9)
    with pytest.raises(ValueError, match="2k \\+ 1"):
        LTX2I2VAdapter(pipe, num_frames=8, height=32, width=32)
    with pytest.raises(ValueError, match="video size"):
        LTX2I2VAdapter(pipe).sampler(3)
    assert adapter.resolved_image_crf() == 33  # Gemma 3: the pipeline's default H.264 re-compression
    assert LTX2I2VAdapter.can_handle_model_index({"_class_name": "LTX2Pipeline"})


@pytest.mark.parametrize("guidance_scale", [1.0, 2.5])
def test_sampler_matches_the_pipeline_video_and_audio(image, guidance_scale):
    """With gradients off, adapter.sampler (what reward feedback steps) reproduces LTX2ImageToVideoPipeline's video
    and audio latents for the same video noise and audio noise, with and without text CFG (x0-space combination)."""
    adapter = _adapter()
    pipe = adapter.pipeline
    steps, seed = 3, 7
    conditions = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    negative = adapter.prepare_conditions([image], [""], **SIZE) if guidance_scale != 1 else None
    assert conditions["prompt_embeds"].shape == (1, TEXT_LEN, 16)
    assert conditions["audio_latents"].shape == (1, 9, 4)  # round(9 / 24 * 25) latent audio frames, 2 x 2 packed
    # the pipeline draws its video noise with `generator` after encoding the image: the same draw here
    noise = torch.randn(adapter.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(seed))
    sampler = adapter.sampler(steps)
    with torch.no_grad():
        sample = sample_with_truncated_backprop(
            adapter,
            noise,
            conditions,
            sampler,
            num_grad_steps=0,
            negative_conditions=negative,
            guidance_scale=guidance_scale,
        )
    out = _pipeline_sample(pipe, adapter, image, conditions, steps=steps, guidance_scale=guidance_scale, seed=seed)
    vae, audio_vae = pipe.vae, pipe.audio_vae
    video = pipe._normalize_latents(out.frames, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    torch.testing.assert_close(sample.latents, video, rtol=0, atol=1e-4)
    audio = pipe._normalize_audio_latents(
        pipe._pack_audio_latents(out.audio), audio_vae.latents_mean, audio_vae.latents_std
    )
    torch.testing.assert_close(sampler.audio_latents, audio, rtol=0, atol=1e-4)
    assert float((sample.latents - noise)[:, :, 1:].abs().max()) > 0.1
    assert float((sampler.audio_latents - conditions["audio_latents"]).abs().max()) > 0.1
    if guidance_scale == 1.0:  # decoded video too (the pipeline's output_type="pt")
        with torch.no_grad():
            decoded = adapter.decode_latents(sample.latents)
        expected = pipe(
            image=image,
            prompt="a cat",
            **SIZE,
            num_inference_steps=steps,
            guidance_scale=1.0,
            audio_latents=conditions["audio_latents"] * audio_vae.latents_std + audio_vae.latents_mean,
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
            **PLAIN_CFG,
        ).frames
        torch.testing.assert_close(decoded, expected, rtol=0, atol=1e-4)
    print(
        f"g={guidance_scale}: video max |diff| {float((sample.latents - video).abs().max()):.3g}, "
        f"audio max |diff| {float((sampler.audio_latents - audio).abs().max()):.3g}"
    )

    # Control: the same loop with the audio frozen at its initial noise (no sampler: adapter.denoise_step) is not
    # the pipeline's sample, so the test above sees the audio branch.
    frozen = LTX2I2VAdapter(pipe, **SIZE, max_sequence_length=TEXT_LEN)  # no sampling run: the audio stays noise
    timesteps = frozen.inference_timesteps(steps)
    x = noise
    with torch.no_grad():
        for i in range(steps):
            v = frozen.predict(x, timesteps[i].expand(1), conditions)
            x = frozen.denoise_step(x, timesteps[i], timesteps[i + 1], conditions, model_output=v)
    if guidance_scale == 1.0:
        assert float((x - video).abs().max()) > 1e-3


def test_checkpointed_steps_recompute_with_the_same_audio(image):
    """Reward feedback checkpoints each trained denoiser call and recomputes it in the backward pass, after the
    sampler is gone: the recomputation must see the audio state of the forward pass (same gradients)."""
    adapter = _adapter()
    conditions = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    weight = adapter.pipeline.transformer.proj_out.weight
    weight.requires_grad_(True)
    noise = torch.randn(adapter.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(1))

    def grad(checkpoint_steps):
        weight.grad = None
        latents = sample_with_truncated_backprop(
            adapter, noise, conditions, adapter.sampler(3), num_grad_steps=2, checkpoint_steps=checkpoint_steps
        ).latents  # the sampler is released here, before backward
        latents.pow(2).mean().backward()
        return weight.grad.clone()

    plain, checkpointed = grad(False), grad(True)
    assert plain.abs().max() > 0
    torch.testing.assert_close(checkpointed, plain, rtol=1e-5, atol=1e-7)


def test_kl_reference_calls_do_not_steer_the_audio(image):
    """The reference (LoRA-disabled) prediction reward feedback makes for its KL term at each trained step comes after
    the policy's: the audio is stepped with the policy's prediction, with guidance as without."""
    adapter = _adapter()
    adapter.add_lora(LORA)
    g = torch.Generator().manual_seed(0)
    for name, param in adapter.pipeline.transformer.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=g) * 0.5
    conditions = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    negative = adapter.prepare_conditions([image], [""], **SIZE)
    noise = torch.randn(adapter.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(2))
    audio = {}
    for reference in (False, True):
        sampler = adapter.sampler(3)
        with torch.no_grad():
            sample_with_truncated_backprop(
                adapter,
                noise,
                conditions,
                sampler,
                num_grad_steps=2,
                negative_conditions=negative,
                guidance_scale=2.0,
                compute_reference=reference,
            )
        audio[reference] = sampler.audio_latents
    torch.testing.assert_close(audio[True], audio[False], rtol=0, atol=0)


def test_audio_guidance_scale_and_image_crf_follow_the_pipeline(image):
    adapter = _adapter(audio_guidance_scale=5.0, image_crf=0)
    pipe = adapter.pipeline
    conditions = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    negative = adapter.prepare_conditions([image], [""], **SIZE)
    noise = torch.randn(adapter.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(3))
    sampler = adapter.sampler(2)
    with torch.no_grad():
        sample = sample_with_truncated_backprop(
            adapter, noise, conditions, sampler, num_grad_steps=0, negative_conditions=negative, guidance_scale=2.0
        )
    out = _pipeline_sample(
        pipe, adapter, image, conditions, steps=2, guidance_scale=2.0, seed=3, audio_guidance_scale=5.0, image_crf=0
    )
    vae = pipe.vae
    video = pipe._normalize_latents(out.frames, vae.latents_mean, vae.latents_std, vae.config.scaling_factor)
    torch.testing.assert_close(sample.latents, video, rtol=0, atol=1e-4)
    with_crf = _adapter().encode_image_latents([image], height=32, width=32)
    assert float((with_crf - conditions["image_latents"]).abs().max()) > 1e-3  # H.264 changes the reference


def test_predict_conditioning_frame_and_latent_normalisation(image):
    adapter = _adapter()
    cond = adapter.prepare_conditions([image, image], ["a cat", "a dog"], **SIZE)
    assert cond["image_latents"].shape == (2, 4, 1, 16, 16)
    videos = torch.rand(2, 9, 3, 32, 32)
    latents = adapter.prepare_latents(videos)
    assert latents.shape == adapter.latent_shape(2, **SIZE) == (2, 4, 5, 16, 16)
    vae = adapter.vae
    raw = vae.encode(videos.permute(0, 2, 1, 3, 4) * 2 - 1).latent_dist.mode()
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    torch.testing.assert_close(latents, (raw - mean) * vae.config.scaling_factor / std)
    seen = {}
    handle = adapter.pipeline.transformer.register_forward_pre_hook(lambda m, a, kw: seen.update(kw), with_kwargs=True)
    t = torch.tensor([700.0, 300.0])
    noisy = adapter.add_noise(latents, torch.randn_like(latents), t)
    with torch.no_grad():
        pred = adapter.predict(noisy, t, cond)
    handle.remove()
    assert seen["timestep"].shape == (2, 5 * 256) and seen["timestep"][:, :256].eq(0).all()
    torch.testing.assert_close(seen["timestep"][:, 256:], t.view(2, 1).expand(2, 4 * 256))
    assert seen["audio_timestep"].eq(1000).all()  # outside a sampling run: the initial audio noise, not denoised
    assert pred[:, :, 0].eq(0).all() and pred[:, :, 1:].abs().max() > 0
    decoded_in = latents.clone().requires_grad_(True)
    decoded = adapter.decode_latents(decoded_in)
    assert decoded.shape == (2, 9, 3, 32, 32)
    decoded.mean().backward()
    assert decoded_in.grad.abs().sum() > 0


def test_published_config_on_meta_passes_the_shape_path():
    """LTX-2 (19B) at its published size on `meta`: conditions, latents, target, sampler step and decode shapes."""
    from diffusers import AutoencoderKLLTX2Video, LTX2ImageToVideoPipeline, LTX2VideoTransformer3DModel

    from icreward.adapters.published_configs import build_meta_components, build_meta_scheduler, get_published_config

    entry = get_published_config("Lightricks/LTX-2")
    parts = build_meta_components(
        entry.hub_id, components=("transformer", "vae", "audio_vae", "connectors"), dtype=None
    )
    transformer, vae = parts["transformer"], parts["vae"]
    assert isinstance(transformer, LTX2VideoTransformer3DModel) and isinstance(vae, AutoencoderKLLTX2Video)
    vae.use_framewise_encoding = vae.use_framewise_decoding = vae.use_tiling = False
    pipe = LTX2ImageToVideoPipeline(
        scheduler=build_meta_scheduler(entry.hub_id),
        vae=vae,
        audio_vae=parts["audio_vae"],
        text_encoder=None,
        tokenizer=None,
        connectors=parts["connectors"],
        transformer=transformer,
        vocoder=None,
    )
    assert sum(p.numel() for p in transformer.parameters()) / 1e9 == pytest.approx(18.9, abs=0.6)  # "19B"
    size = {"num_frames": entry.num_frames, "height": entry.height, "width": entry.width}
    adapter = LTX2I2VAdapter(pipe, **size)
    shape = adapter.latent_shape(1, **size)
    assert shape == (1, 128, 16, 16, 24)
    assert adapter.audio_latent_shape(1, entry.num_frames) == (1, 8, 126, 16)
    videos = torch.empty(1, size["num_frames"], 3, size["height"], size["width"], dtype=torch.uint8, device="meta")
    latents = adapter.prepare_latents(videos)
    assert tuple(latents.shape) == shape
    text = torch.empty(1, 1024, 3840 * 49, device="meta")
    video_text, audio_text, mask = parts["connectors"](text, torch.ones(1, 1024, device="meta"))
    conditions = {
        "prompt_embeds": video_text,
        "audio_prompt_embeds": audio_text,
        "prompt_attention_mask": mask,
        "image_latents": adapter._encode(torch.empty(1, 3, 1, size["height"], size["width"], device="meta")),
        "audio_latents": torch.empty(1, 126, 128, device="meta"),
    }
    t = torch.full((1,), 500.0, device="meta")
    noise = torch.empty(shape, device="meta")
    pred = adapter.predict(adapter.add_noise(latents, noise, t), t, conditions)
    assert pred.shape == adapter.target(latents, noise, t).shape == shape
    assert adapter.denoise_step(latents, 500.0, 400.0, conditions, model_output=pred).shape == shape
    assert adapter.decode_latents(latents).shape == (1, size["num_frames"], 3, size["height"], size["width"])
    assert len(adapter.inference_timesteps(40)) == 41


# ---------------------------------------------------------------------------------------------------------------
# Trainers
# ---------------------------------------------------------------------------------------------------------------


def test_dpo_loss_matches_independent_formula(tmp_path, pairs):
    beta = 50.0
    trainer = VideoDPOTrainer(
        model=tiny_ltx2_i2v_pipeline(seed=0),
        args=_dpo_config(tmp_path, beta=beta),
        train_dataset=pairs,
        peft_config=LORA,
    )
    adapter = trainer.adapter
    assert type(adapter) is LTX2I2VAdapter
    g = torch.Generator().manual_seed(0)
    for name, param in adapter.pipeline.transformer.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=g) * 0.05
    lora_modules = {
        n.rsplit(".lora_", 1)[0] for n, _ in adapter.pipeline.transformer.named_parameters() if "lora_" in n
    }
    assert lora_modules and all(".attn1." in n or ".attn2." in n for n in lora_modules)
    assert not any("audio" in n for n in lora_modules)  # the video branch only
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    assert "latents_chosen" in batch
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
        diff = (pred - (eps - x))[:, :, 1:]  # generated frames only; the mean divides by every element
        return diff.pow(2).flatten(1).sum(1) / x[0].numel()

    inside = -0.5 * beta * ((mse(x_w, False) - mse(x_w, True)) - (mse(x_l, False) - mse(x_l, True)))
    expected = torch.log1p(torch.exp(-inside)).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-4, atol=1e-6)
    assert abs(float(expected) - math.log(2)) > 1e-5


def test_dpo_trains_only_lora_and_saved_lora_loads_into_the_pipeline(tmp_path, pairs, image):
    from diffusers import LTX2ImageToVideoPipeline

    pipe = tiny_ltx2_i2v_pipeline(seed=0)
    frozen = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    others = {
        n: {k: v.clone() for k, v in getattr(pipe, n).state_dict().items()}
        for n in ("vae", "audio_vae", "connectors", "text_encoder")
    }
    trainer = VideoDPOTrainer(
        model=pipe, args=_dpo_config(tmp_path, max_steps=2), train_dataset=pairs, peft_config=LORA
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
    assert trainer.adapter.lora_load_snippet(str(out)) == f'pipe.load_lora_weights("{out}")'

    def generate(p):
        kwargs = {**SIZE, **PLAIN_CFG, "num_inference_steps": 2, "guidance_scale": 1.0, "output_type": "latent"}
        return p(image=image, prompt="a cat", generator=torch.Generator().manual_seed(0), **kwargs).frames

    fresh = tiny_ltx2_i2v_pipeline(seed=0)
    assert isinstance(fresh, LTX2ImageToVideoPipeline)
    base = generate(fresh)
    fresh.load_lora_weights(str(out))
    tuned = generate(fresh)
    assert (tuned - base).abs().max() > 1e-4
    torch.testing.assert_close(tuned, generate(trainer.adapter.pipeline), rtol=1e-4, atol=1e-4)


def test_dpo_resume_matches_uninterrupted_run(tmp_path, pairs):
    def run(subdir, resume=None):
        args = _dpo_config(tmp_path / subdir, max_steps=2, save_strategy="steps", save_steps=1)
        trainer = VideoDPOTrainer(
            model=tiny_ltx2_i2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LORA
        )
        trainer.train(resume_from_checkpoint=resume)
        return _lora_params(trainer.adapter)

    full = run("full")
    resumed = run("resumed", resume=str(tmp_path / "full" / "out" / "checkpoint-1"))
    assert full.keys() == resumed.keys() and full
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], rtol=0, atol=0, msg=key)


def test_reward_feedback_trains_lora_and_best_of_n_runs(tmp_path, image):
    from icreward.evaluation.best_of_n import pipeline_generator
    from icreward.rewards import CallableReward
    from icreward.trainers.reward_feedback_config import RewardFeedbackConfig
    from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer

    args = RewardFeedbackConfig(
        output_dir=str(tmp_path / "rf"),
        **SIZE,
        max_sequence_length=TEXT_LEN,
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
        model=tiny_ltx2_i2v_pipeline(seed=0),
        reward_funcs=CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness"),
        args=args,
        train_dataset=[{"image": image, "prompt": "a cat"}],
        peft_config=LORA,
    )
    adapter = trainer.adapter
    assert isinstance(adapter, LTX2I2VAdapter) and adapter.sample_size == (9, 32, 32)
    before = _lora_params(adapter)
    trainer.train()
    after = _lora_params(adapter)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all("lora_" in k for k in changed)
    assert any("lora_A" in k for k in changed) and any("lora_B" in k for k in changed)

    generate = pipeline_generator(adapter.pipeline, **SIZE, num_inference_steps=2, guidance_scale=1.0, **PLAIN_CFG)
    first = generate(image, "a cat", 2, seed=5)
    again = generate(image, "a cat", 1, seed=5)
    assert len(first) == 2 and first[0].shape == (9, 3, 32, 32) and first[0].dtype == torch.uint8
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])


def test_latent_cache_key_changes_with_the_audio_seed_and_crf(tmp_path, pairs):
    """The cached conditions carry the audio noise and the re-compressed reference: another audio_seed or image_crf
    must not reuse them."""
    from icreward.trainers.latent_cache import LatentCache

    def key(**kwargs):
        return LatentCache(tmp_path, _adapter(**kwargs), num_frames=9, height=32, width=32).key(pairs[0])

    assert key(audio_seed=0) == key(audio_seed=0)
    assert key(audio_seed=0) != key(audio_seed=1)
    assert key(image_crf=0) != key(image_crf=18)
