"""Wan 2.2 TI2V-5B adapter against WanImageToVideoPipeline(expand_timesteps=True), and through the trainers."""

import math

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig

from icreward.adapters import WanI2VAdapter, WanTI2VAdapter, get_adapter
from icreward.testing.tiny_families_wan_hunyuan import TINY_WAN_TI2V_SIZE as SIZE
from icreward.testing.tiny_families_wan_hunyuan import tiny_wan22_ti2v_pipeline
from icreward.trainers.video_dpo_config import VideoDPOConfig
from icreward.trainers.video_dpo_trainer import VideoDPOTrainer
from icreward.video import write_video

LORA = LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"])


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
    root = tmp_path_factory.mktemp("ti2v_pairs")
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


def test_registry_picks_ti2v_and_other_wan_adapters_refuse_it(tmp_path):
    from diffusers import WanImageToVideoPipeline, WanPipeline

    pipe = tiny_wan22_ti2v_pipeline(seed=0)
    assert type(get_adapter(pipe)) is WanTI2VAdapter
    with pytest.raises(ValueError, match="expand_timesteps"):
        WanI2VAdapter(pipe)
    # The Hub checkpoint's model_index names WanPipeline: it is re-wrapped, sharing weights.
    t2v = WanPipeline(
        tokenizer=pipe.tokenizer,
        text_encoder=pipe.text_encoder,
        vae=pipe.vae,
        scheduler=pipe.scheduler,
        transformer=pipe.transformer,
        expand_timesteps=True,
    )
    adapter = get_adapter(t2v)
    assert type(adapter.pipeline) is WanImageToVideoPipeline and adapter.pipeline.transformer is pipe.transformer
    pipe.save_pretrained(tmp_path)
    assert type(get_adapter(str(tmp_path))) is WanTI2VAdapter


def test_sampling_loop_matches_pipeline(image):
    """With gradients off, prepare_conditions + denoise_step + decode reproduce the diffusers pipeline."""
    adapter = WanTI2VAdapter(tiny_wan22_ti2v_pipeline(seed=0))
    pipe = adapter.pipeline
    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    noise = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    steps = 3
    common = {"image": image, "prompt": "a cat", **SIZE, "num_inference_steps": steps, "guidance_scale": 1.0}
    expected = pipe(**common, latents=noise.clone(), output_type="latent").frames
    expected_video = pipe(**common, latents=noise.clone(), output_type="pt").frames

    timesteps = adapter.inference_timesteps(steps)
    x = noise
    with torch.no_grad():
        for i in range(steps):
            x = adapter.denoise_step(x, timesteps[i], timesteps[i + 1], cond)
        video = adapter.decode_latents(x)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(video, expected_video, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(x[:, :, :1], cond["image_latents"], rtol=0, atol=0)
    assert float((x - noise)[:, :, 1:].abs().max()) > 0.1


def test_reward_feedback_sampler_matches_the_pipeline_with_the_published_unipc(image):
    """adapter.sampler (what reward feedback steps through) with TI2V-5B's shipped scheduler, UniPC multistep with
    flow_shift 5.0, gives the pipeline's latents and video for the same noise."""
    from diffusers import UniPCMultistepScheduler

    pipe = tiny_wan22_ti2v_pipeline(seed=0)
    pipe.scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=5.0
    )
    adapter = WanTI2VAdapter(pipe)
    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    noise = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    steps = 4
    common = {"image": image, "prompt": "a cat", **SIZE, "num_inference_steps": steps, "guidance_scale": 1.0}
    expected = pipe(**common, latents=noise.clone(), output_type="latent").frames
    expected_video = pipe(**common, latents=noise.clone(), output_type="pt").frames
    sampler = adapter.sampler(steps)
    x = noise
    with torch.no_grad():
        for i, t in enumerate(sampler.timesteps):
            out = adapter.predict(x, t.float().expand(1), cond)
            x = sampler.step(i, x, out, cond)
        video = adapter.decode_latents(x)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(video, expected_video, rtol=1e-4, atol=1e-4)
    euler = noise
    timesteps = adapter.inference_timesteps(steps)
    with torch.no_grad():
        for i in range(steps):
            euler = adapter.denoise_step(euler, timesteps[i], timesteps[i + 1], cond)
    assert float((euler - expected).abs().max()) > 1e-3  # the Euler loop is not what this scheduler samples


def test_first_frame_replacement_per_token_timesteps_and_target(image):
    adapter = WanTI2VAdapter(tiny_wan22_ti2v_pipeline(seed=0))
    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    latents = torch.randn(1, 48, 3, 2, 2, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([700.0])
    tokens = adapter.token_timesteps(t, latents)
    assert tokens.shape == (1, 3)  # one token per frame at 2x2 latents with 2x2 patches
    assert tokens.tolist() == [[0.0, 700.0, 700.0]]
    with torch.no_grad():
        pred = adapter.predict(latents, t, cond)
        # Frame 0 of the input is ignored (replaced by the image latent).
        other = latents.clone()
        other[:, :, 0] = 5.0
        torch.testing.assert_close(adapter.predict(other, t, cond), pred, rtol=0, atol=0)
    assert pred[:, :, 0].abs().max() == 0 and pred[:, :, 1:].abs().max() > 0
    target = adapter.target(latents, torch.ones_like(latents), t)
    assert target[:, :, 0].abs().max() == 0
    torch.testing.assert_close(target[:, :, 1:], 1 - latents[:, :, 1:])


def test_published_config_on_meta_passes_the_shape_path():
    """Wan 2.2 TI2V-5B at its published size (no weights): conditions, latents, target, decode shapes."""
    from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanTransformer3DModel

    from icreward.adapters.wan_ti2v import WAN22_TI2V_5B_PUBLISHED_CONFIG as published
    from icreward.testing.tiny_pipelines import tiny_wan_scheduler

    with torch.device("meta"):
        transformer = WanTransformer3DModel(**published["transformer"])
        vae = AutoencoderKLWan(**published["vae"])
    pipe = WanImageToVideoPipeline(
        tokenizer=None,
        text_encoder=None,
        vae=vae,
        scheduler=tiny_wan_scheduler(),
        transformer=transformer,
        expand_timesteps=True,
    )
    assert sum(p.numel() for p in transformer.parameters()) / 1e9 == pytest.approx(5.0, abs=0.1)  # "5B"
    size = published["sample_size"]
    adapter = WanTI2VAdapter(pipe)
    shape = adapter.latent_shape(1, **size)
    assert shape == (1, 48, 31, 44, 80)  # 121 frames at 704x1280: 4x in time, 16x in space
    videos = torch.empty(1, size["num_frames"], 3, size["height"], size["width"], dtype=torch.uint8, device="meta")
    latents = adapter.prepare_latents(videos)
    assert tuple(latents.shape) == shape
    image_latents = adapter._encode(torch.empty(1, 3, 1, size["height"], size["width"], device="meta"))
    assert tuple(image_latents.shape) == (1, 48, 1, 44, 80)
    conditions = {"prompt_embeds": torch.empty(1, 512, 4096, device="meta"), "image_latents": image_latents}
    t = torch.full((1,), 500.0, device="meta")
    noise = torch.empty(latents.shape, device="meta")
    pred = adapter.predict(adapter.add_noise(latents, noise, t), t, conditions)
    assert pred.shape == adapter.target(latents, noise, t).shape == latents.shape
    assert adapter.denoise_step(latents, 500.0, 400.0, conditions, model_output=pred).shape == latents.shape
    assert adapter.decode_latents(latents).shape == (1, size["num_frames"], 3, size["height"], size["width"])


def test_dpo_loss_matches_independent_formula_with_cached_latents(tmp_path, pairs):
    beta = 50.0
    trainer = VideoDPOTrainer(
        model=tiny_wan22_ti2v_pipeline(seed=0),
        args=_dpo_config(tmp_path, beta=beta),
        train_dataset=pairs,
        peft_config=LORA,
    )
    adapter = trainer.adapter
    assert type(adapter) is WanTI2VAdapter
    assert len(list((tmp_path / "cache").rglob("*.safetensors"))) == len(pairs)
    g = torch.Generator().manual_seed(0)
    for name, param in adapter.pipeline.transformer.named_parameters():
        if "lora_B" in name:
            param.data = torch.randn(param.shape, generator=g) * 0.05
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
    pipe = tiny_wan22_ti2v_pipeline(seed=0)
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

    def generate(p):
        kwargs = {**SIZE, "num_inference_steps": 2, "guidance_scale": 1.0, "output_type": "pt"}
        return p(image=image, prompt="a cat", generator=torch.Generator().manual_seed(0), **kwargs).frames

    fresh = tiny_wan22_ti2v_pipeline(seed=0)
    base = generate(fresh)
    fresh.load_lora_weights(str(tmp_path / "out"))
    tuned = generate(fresh)
    assert (tuned - base).abs().max() > 1e-4
    torch.testing.assert_close(tuned, generate(trainer.adapter.pipeline), rtol=1e-4, atol=1e-4)


def test_dpo_resume_matches_uninterrupted_run(tmp_path, pairs):
    def run(subdir, resume=None):
        args = _dpo_config(tmp_path / subdir, max_steps=4, save_strategy="steps", save_steps=2)
        trainer = VideoDPOTrainer(
            model=tiny_wan22_ti2v_pipeline(seed=0), args=args, train_dataset=pairs, peft_config=LORA
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

    adapter = WanTI2VAdapter(tiny_wan22_ti2v_pipeline(seed=0))
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

    generate = pipeline_generator(tiny_wan22_ti2v_pipeline(seed=0), **SIZE, num_inference_steps=2, guidance_scale=1.0)
    first = generate(image, "a cat", 2, seed=5)
    again = generate(image, "a cat", 1, seed=5)
    assert len(first) == 2 and first[0].shape == (9, 3, 32, 32) and first[0].dtype == torch.uint8
    torch.testing.assert_close(again[0], first[0], rtol=0, atol=0)
    assert not torch.equal(first[0], first[1])


@pytest.mark.parametrize("recipe", ["dpo_wan22_ti2v_5b_real", "reward_feedback_wan22_ti2v_5b_real"])
def test_memory_accountant_runs_on_the_real_recipes(recipe, capsys):
    """`icreward estimate-memory` on the shipped TI2V-5B recipes at the published size: it prints the table and the
    peak, and its exit status says whether the peak fits 72 GiB."""
    import re
    from pathlib import Path

    import yaml

    from icreward.cli.estimate_memory import main

    path = Path(__file__).resolve().parent.parent / "examples" / "configs" / f"{recipe}.yaml"
    status = main(["--config", str(path)])
    printed = capsys.readouterr().out
    print(printed)  # shown with -s: the numbers docs/families/wan22_ti2v_5b.md quotes
    config = yaml.safe_load(path.read_text())
    frames = (config["num_frames"] - 1) // 4 + 1
    assert f"on Wan-AI/Wan2.2-TI2V-5B-Diffusers, latents (1, 48, {frames}, {config['height'] // 16}, " in printed
    (row,) = re.findall(r"^peak\s+([0-9.]+)$", printed, flags=re.M)
    (verdict,) = re.findall(r"^peak ([0-9.]+) GiB (fits|does NOT fit) the 72 GiB budget", printed, flags=re.M)
    assert float(row) == float(verdict[0]) > 0
    assert status == (0 if float(row) <= 72 else 1) and verdict[1] == ("fits" if status == 0 else "does NOT fit")
