"""VideoGRPOTrainer (Flow-GRPO family) and its loss functions, on tiny offline pipelines."""

import math
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig
from torch import nn
from transformers import TrainerCallback

from icreward.adapters import get_adapter
from icreward.losses import (
    flow_sde_transition,
    gaussian_log_prob,
    gaussian_transition_kl,
    group_advantages,
    grpo_clipped_loss,
)
from icreward.testing.tiny_pipelines import tiny_cogvideox_i2v_pipeline, tiny_wan22_pipeline, tiny_wan_i2v_pipeline
from icreward.trainers.video_grpo_config import VideoGRPOConfig
from icreward.trainers.video_grpo_trainer import VideoGRPOTrainer, flow_sde_schedule

LORA = LoraConfig(r=4, lora_alpha=4)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def rows():
    rng = np.random.RandomState(0)
    images = [PIL.Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)) for _ in range(2)]
    return [{"image": image, "prompt": f"a cat number {i}"} for i, image in enumerate(images)]


def brightness(video):
    return video.mean(dim=(1, 2, 3, 4))


def _config(tmp_path, **overrides):
    kwargs = {
        "output_dir": str(tmp_path / "out"),
        "num_frames": 9,
        "height": 32,
        "width": 32,
        "num_inference_steps": 3,
        "num_generations": 2,
        "per_device_train_batch_size": 2,
        "per_device_eval_batch_size": 2,
        "max_steps": 2,
        "learning_rate": 1e-2,
        "epsilon": 0.2,
        "beta": 0.1,
        "logging_steps": 1,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
    }
    kwargs.update(overrides)
    return VideoGRPOConfig(**kwargs)


def _trainer(tmp_path, rows, pipe=None, reward=None, **overrides):
    return VideoGRPOTrainer(
        model=pipe if pipe is not None else tiny_wan_i2v_pipeline(seed=0),
        reward_funcs=reward if reward is not None else {"brightness": brightness},
        args=_config(tmp_path, **overrides),
        train_dataset=rows,
        peft_config=LORA,
    )


def _lora(pipe):
    return {n: p.detach().clone() for n, p in pipe.transformer.named_parameters() if "lora_" in n}


def _params(pipe):
    return {
        f"{component}.{name}": p.detach().clone()
        for component in ("transformer", "vae", "text_encoder", "image_encoder")
        for name, p in getattr(pipe, component).named_parameters()
    }


# ---------------------------------------------------------------------------------------------------------------
# Loss functions against independent computations
# ---------------------------------------------------------------------------------------------------------------


def test_sde_transition_and_log_prob_match_an_independent_computation():
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(3, 4, 5, generator=g), torch.randn(3, 4, 5, generator=g)
    sigma, sigma_next, a = torch.tensor([0.9, 0.5, 0.2]), torch.tensor([0.6, 0.3, 0.0]), 0.7
    mean, std = flow_sde_transition(x, v, sigma, sigma_next, a)
    # Independent: the SDE drift written through the model's predictions of x0 and of the noise,
    # dx = [v - s^2/2 * score] dsigma with score = -n_hat / sigma, n_hat = x + (1 - sigma) v (the noise implied by v).
    s, d = sigma.view(-1, 1, 1), (sigma_next - sigma).view(-1, 1, 1)
    noise_level = a * torch.sqrt(s / (1 - s))
    noise_hat = x + (1 - s) * v
    expected_mean = x + (v + noise_level**2 / 2 * noise_hat / s) * d
    torch.testing.assert_close(mean, expected_mean)
    torch.testing.assert_close(std.expand_as(x), (noise_level * torch.sqrt(-d)).expand_as(x))
    value = mean + std * torch.randn(x.shape, generator=g)
    expected = torch.distributions.Normal(expected_mean, noise_level * torch.sqrt(-d)).log_prob(value).mean(dim=(1, 2))
    torch.testing.assert_close(gaussian_log_prob(value, mean, std), expected)
    # noise level 0: the Euler step of the ODE
    euler, zero = flow_sde_transition(x, v, sigma, sigma_next, 0.0)
    torch.testing.assert_close(euler, x + d * v)
    assert float(zero.abs().max()) == 0
    # sigma = 1: sigma_max stands in inside the noise scale only
    mean1, std1 = flow_sde_transition(x[:1], v[:1], 1.0, 0.8, a, sigma_max=0.8)
    scale = a * math.sqrt(0.8 / 0.2)
    torch.testing.assert_close(mean1, x[:1] + (v[:1] + scale**2 / 2 * x[:1]) * -0.2)
    torch.testing.assert_close(std1.flatten(), torch.tensor([scale * math.sqrt(0.2)]))
    with pytest.raises(ValueError, match="sigma_max"):
        flow_sde_transition(x[:1], v[:1], 1.0, 0.8, a)
    with pytest.raises(ValueError, match="sigma > sigma_next"):
        flow_sde_transition(x[:1], v[:1], 0.5, 0.6, a)


def test_kl_advantages_and_clipped_objective_match_independent_computations():
    g = torch.Generator().manual_seed(1)
    mean, ref = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    std = torch.tensor([[0.3], [0.7]])
    expected_kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(mean, std.expand_as(mean)), torch.distributions.Normal(ref, std.expand_as(ref))
    ).mean(dim=1)
    torch.testing.assert_close(gaussian_transition_kl(mean, ref, std), expected_kl)

    rewards = torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0])
    advantages, spread = group_advantages(rewards, 3)
    grouped = rewards.numpy().reshape(2, 3)
    np_std = grouped.std(axis=1)
    expected = (grouped - grouped.mean(axis=1, keepdims=True)) / (np_std[:, None] + 1e-4)
    np.testing.assert_allclose(advantages.numpy(), expected.reshape(-1), rtol=1e-6)
    np.testing.assert_allclose(spread.numpy(), np_std, rtol=1e-6)
    assert float(advantages[3:].abs().max()) == 0  # a group without spread gives no signal
    centred, _ = group_advantages(rewards, 3, scale=False)
    torch.testing.assert_close(centred, torch.tensor([-1.0, 0.0, 1.0, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="groups of 4"):
        group_advantages(rewards, 4)

    # one case per branch of max(-A rho, -A clip(rho)) with epsilon 0.2
    rho = torch.tensor([1.5, 1.5, 0.5, 0.5, 1.1])
    adv = torch.tensor([1.0, -1.0, 1.0, -1.0, 2.0])
    loss, low, high = grpo_clipped_loss(torch.log(rho), torch.zeros(5), adv, 0.2)
    torch.testing.assert_close(loss, torch.tensor([-1.2, 1.5, -0.5, 0.8, -2.2]))
    torch.testing.assert_close(low, torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0]))
    torch.testing.assert_close(high, torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))


# ---------------------------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------------------------


def test_sampled_log_probs_match_an_independent_computation_and_the_first_ratio_is_one(tmp_path, rows):
    trainer = _trainer(tmp_path, rows, num_inference_steps=3, noise_level=0.8)
    adapter = trainer.adapter
    g = torch.Generator().manual_seed(0)
    for name, param in adapter.pipeline.transformer.named_parameters():
        if "lora_B" in name:  # a non-zero LoRA: the policy differs from the reference
            param.data = torch.randn(param.shape, generator=g) * 0.05
    timesteps, sigmas = flow_sde_schedule(adapter, 3)
    scheduler_sigmas = adapter.scheduler.sigmas  # the pipeline's scheduler is left as it was
    trainer._noise_step = -1
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]]))
    samples = trainer._sample_group(batch)
    assert adapter.scheduler.sigmas is scheduler_sigmas
    latents, old = samples.latents, samples.old_log_probs
    assert latents.shape[:2] == (4, 4) and old.shape == (3, 4)
    conditions = samples.conditions
    with torch.no_grad():
        for k in range(3):
            x = latents[k]
            v = adapter.pipeline.transformer(
                hidden_states=torch.cat([x, conditions["condition"]], dim=1),
                timestep=timesteps[k].expand(4),
                encoder_hidden_states=conditions["prompt_embeds"],
                encoder_hidden_states_image=conditions["image_embeds"],
                return_dict=False,
            )[0].float()
            s, s_next = float(sigmas[k]), float(sigmas[k + 1])
            s_noise = min(s, float(sigmas[1]))  # Flow-GRPO: the second sigma caps the first step's noise scale
            scale = 0.8 * math.sqrt(s_noise / (1 - s_noise))
            dt = s_next - s
            mean = x * (1 + scale**2 / (2 * s) * dt) + v * (1 + scale**2 * (1 - s) / (2 * s)) * dt
            normal = torch.distributions.Normal(mean, scale * math.sqrt(-dt))
            expected = normal.log_prob(latents[k + 1]).reshape(4, -1).mean(dim=1)
            torch.testing.assert_close(old[k], expected, rtol=1e-5, atol=1e-5)
    # groups: rows 0 and 1, two videos each, from different noise
    assert not torch.equal(latents[0, 0], latents[0, 1])
    # Recomputed with gradients by the policy before any update: ratio 1, nothing clipped, KL > 0 (non-zero LoRA)
    trainer._buffer.clear()
    trainer._noise_step = -1
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    stored = trainer._metrics["train"]
    assert stored["clip_ratio/region_mean"] == [0.0] * 4
    assert all(value > 0 for value in stored["kl"])
    grads = [p.grad for n, p in adapter.pipeline.transformer.named_parameters() if "lora_B" in n]
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads)


def test_training_changes_only_lora_kl_starts_at_zero_and_saved_lora_loads_in_diffusers(tmp_path, rows):
    pipe = tiny_wan_i2v_pipeline(seed=0)
    trainer = _trainer(tmp_path, rows, pipe=pipe, max_steps=3)
    before = _params(pipe)
    trainer.train()
    logs = [log for log in trainer.state.log_history if "loss" in log and "kl" in log]
    assert len(logs) == 3 and logs[0]["kl"] == 0.0 and logs[-1]["kl"] > 0  # LoRA B starts at zero
    for key in (
        "reward",
        "reward_std",
        "reward_std/min",
        "reward_std/max",
        "frac_reward_zero_std",
        "clip_ratio/region_mean",
    ):
        assert key in logs[0], key
    assert logs[0]["reward_std/min"] <= logs[0]["reward_std"] <= logs[0]["reward_std/max"]
    after = _params(pipe)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {name for name in before if "lora_" in name}

    trainer.save_model(str(tmp_path / "lora"))
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").is_file()
    assert "VideoGRPOTrainer" in (tmp_path / "lora" / "README.md").read_text()
    fresh = tiny_wan_i2v_pipeline(seed=0)
    fresh.load_lora_weights(str(tmp_path / "lora"))
    adapter, trained = get_adapter(fresh), trainer.adapter
    batch = trainer.data_collator([trainer.train_dataset[0]])
    conditions = trained.prepare_conditions(batch["images"], batch["prompts"], num_frames=9, height=32, width=32)
    x = torch.randn(1, *trainer._latent_shape(), generator=torch.Generator().manual_seed(3))
    t = torch.tensor([700.0])
    with torch.no_grad():
        expected = trained.predict(x, t, conditions)
        with trained.disable_lora():
            base = trained.predict(x, t, conditions)
        loaded = adapter.predict(x, t, conditions)
    assert float((expected - base).abs().max()) > 1e-4  # the LoRA does something
    torch.testing.assert_close(loaded, expected, rtol=1e-5, atol=1e-6)


def test_resume_equals_uninterrupted_with_inner_iterations(tmp_path, rows):
    # Adam, accumulation, reused samples (num_iterations=2), a random subset of trained transitions, KL.
    settings = dict(
        max_steps=4,
        num_iterations=2,
        timestep_fraction=0.5,
        per_device_train_batch_size=1,
        gradient_accumulation_steps=2,
        save_strategy="steps",
        save_steps=2,
        lr_scheduler_type="linear",
    )
    torch.manual_seed(0)  # peft initialises LoRA A from the global RNG
    full_pipe = tiny_wan_i2v_pipeline(seed=0)
    full = _trainer(tmp_path / "full", rows, pipe=full_pipe, **settings)
    initial = _lora(full_pipe)
    full.train()
    uninterrupted = _lora(full_pipe)
    logs = [log for log in full.state.log_history if "loss" in log]
    assert ["reward" in log for log in logs] == [True, False, True, False]  # sampled every second step

    class StopAfterTwo(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 2:
                control.should_training_stop = True

    torch.manual_seed(0)
    first = _trainer(tmp_path / "split", rows, **settings)
    first.add_callback(StopAfterTwo())
    first.train()
    assert first.state.global_step == 2
    torch.manual_seed(123)  # LoRA A is overwritten by the checkpoint; nothing else may depend on the global RNG
    resumed_pipe = tiny_wan_i2v_pipeline(seed=0)
    resumed = _trainer(tmp_path / "split", rows, pipe=resumed_pipe, **settings)
    resumed.train(resume_from_checkpoint=str(tmp_path / "split" / "out" / "checkpoint-2"))
    assert [log["step"] for log in resumed.state.log_history if "loss" in log] == [1, 2, 3, 4]
    final = _lora(resumed_pipe)
    assert all(not torch.equal(final[n], initial[n]) for n in final if "lora_B" in n)
    for name in uninterrupted:
        torch.testing.assert_close(final[name], uninterrupted[name], rtol=0, atol=0, msg=name)


def test_refusals_and_schedule(tmp_path, rows):
    with pytest.raises(ValueError, match="DDIM with eta > 0"):
        _trainer(tmp_path, rows, pipe=tiny_cogvideox_i2v_pipeline(seed=0), num_frames=9)
    with pytest.raises(ValueError, match="num_generations must be >= 2"):
        _config(tmp_path, num_generations=1)
    with pytest.raises(ValueError, match="noise_level must be > 0"):
        _config(tmp_path, noise_level=0.0)
    with pytest.raises(ValueError, match="multiple of num_iterations"):
        _config(tmp_path, num_iterations=2, save_strategy="steps", save_steps=3)
    # the schedule is the pipeline scheduler's: UniPC with flow sigmas (what Wan checkpoints ship) included
    from diffusers import UniPCMultistepScheduler

    pipe = tiny_wan_i2v_pipeline(seed=0)
    pipe.scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    timesteps, sigmas = flow_sde_schedule(get_adapter(pipe), 4)
    reference = UniPCMultistepScheduler.from_config(pipe.scheduler.config)
    reference.set_timesteps(4)
    torch.testing.assert_close(sigmas, reference.sigmas.float())
    torch.testing.assert_close(timesteps, reference.timesteps.float())
    # UniPC's first sigma is 0.999999, not 1: its noise scale is capped by the second sigma like a first sigma of 1
    assert 0.99 < float(sigmas[0]) < 1
    x = torch.zeros(1, 2)
    _, std = flow_sde_transition(x, x, sigmas[0], sigmas[1], 0.7, float(sigmas[1]))
    expected = 0.7 * math.sqrt(float(sigmas[1]) / (1 - float(sigmas[1]))) * math.sqrt(float(sigmas[0] - sigmas[1]))
    assert float(std) == pytest.approx(expected, rel=1e-5)
    pipe.scheduler = UniPCMultistepScheduler()  # epsilon UniPC: no flow sigmas
    with pytest.raises(ValueError, match="no flow-matching sigmas"):
        flow_sde_schedule(get_adapter(pipe), 4)

    # families whose step is not the plain flow Euler step of every latent are refused
    from icreward.adapters.wan import WanI2VAdapter

    class OwnStep(WanI2VAdapter):
        def denoise_step(self, latents, timestep, next_timestep, conditions, *, model_output=None):
            return latents

    class NotEuler(WanI2VAdapter):
        def scheduler_step(self, latents, model_output, timesteps, next_timesteps):
            return latents + 0.5 * model_output

    with pytest.raises(ValueError, match="sampler step of its own"):
        flow_sde_schedule(OwnStep(tiny_wan_i2v_pipeline(seed=0)), 4)
    with pytest.raises(ValueError, match="not the flow-matching Euler step"):
        flow_sde_schedule(NotEuler(tiny_wan_i2v_pipeline(seed=0)), 4)
    from icreward.testing import tiny_ltx_i2v_pipeline

    with pytest.raises(ValueError, match="sampler step of its own"):  # LTX-Video keeps its conditioning tokens
        flow_sde_schedule(get_adapter(tiny_ltx_i2v_pipeline(seed=0)), 4)


# ---------------------------------------------------------------------------------------------------------------
# Learning (slow): the held-out reward rises beyond seed noise
# ---------------------------------------------------------------------------------------------------------------


def _pattern_reward():
    """The pixel pattern this random decoder produces when every latent increases (a direction its video can move
    in); the reward is the video's correlation with it (as in test_reward_feedback)."""
    with torch.no_grad():
        base = get_adapter(tiny_wan_i2v_pipeline(seed=0))
        latents = torch.randn(8, 16, 3, 4, 4, generator=torch.Generator().manual_seed(9))
        pattern = (base.decode_latents(latents + 0.5) - base.decode_latents(latents - 0.5)).mean(0, keepdim=True)
        pattern = pattern / pattern.pow(2).mean().sqrt()

    def pattern_similarity(video):
        return 100 * (video * pattern).mean(dim=(1, 2, 3, 4))

    return pattern_similarity


def held_out_gain(tmp_path, rows, seed: int, reward) -> tuple[float, float]:
    """(before, after) mean reward of 32 held-out rows (the two images under 16 unseen prompts), each sampled with
    the deterministic ODE from its own fixed noise, around 16 GRPO steps (G = 8, 2 rows per step, Adam 1e-2)."""
    eval_rows = [{**row, "prompt": f"{row['prompt']} in scene {k}"} for row in rows for k in range(16)]
    args = _config(
        tmp_path / f"seed{seed}",
        num_inference_steps=4,
        num_generations=8,
        per_device_eval_batch_size=16,
        max_steps=16,
        beta=0.0,
        seed=seed,
        logging_steps=16,
    )
    torch.manual_seed(seed)  # LoRA A initialisation
    trainer = VideoGRPOTrainer(
        model=tiny_wan_i2v_pipeline(seed=0),
        reward_funcs={"pattern": (reward, 1.0)},
        args=args,
        train_dataset=rows,
        eval_dataset=eval_rows,
        peft_config=LoraConfig(r=8, lora_alpha=8, target_modules=["to_q", "to_k", "to_v", "to_out.0", "proj_out"]),
    )
    before = trainer.evaluate()["eval_reward"]
    trainer.train()
    return before, trainer.evaluate()["eval_reward"]


@pytest.mark.slow
def test_training_raises_the_held_out_reward_beyond_seed_noise(tmp_path, rows):
    reward = _pattern_reward()
    gains = np.array(
        [after - before for before, after in (held_out_gain(tmp_path, rows, s, reward) for s in (0, 1, 2))]
    )
    standard_error = gains.std(ddof=1) / math.sqrt(len(gains))
    assert gains.mean() > 2 * standard_error, gains


def test_lora_parameters_only_are_trainable(tmp_path, rows):
    trainer = _trainer(tmp_path, rows)
    trainable = [n for n, p in trainer.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert isinstance(trainer.model.denoisers, nn.ModuleDict)


# ---------------------------------------------------------------------------------------------------------------
# Two processes (slow): the same LoRA as one process with the same global batch
# ---------------------------------------------------------------------------------------------------------------

GRPO_SCRIPT = Path(__file__).parent / "scripts" / "distributed_grpo_training.py"


@pytest.mark.slow
def test_two_process_grpo_matches_single_process(tmp_path):
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file
    from two_processes import launch_two_processes, run_checked

    rng = np.random.RandomState(0)
    rows = []
    for i in range(4):
        image = tmp_path / f"image_{i}.png"
        PIL.Image.fromarray((rng.rand(32, 32, 3) * 255).astype(np.uint8)).save(image)
        rows.append({"image": str(image), "prompt": f"a nod number {i}"})
    data = tmp_path / "rows.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    single, double = tmp_path / "single" / "w.safetensors", tmp_path / "double" / "w.safetensors"
    single.parent.mkdir()
    double.parent.mkdir()
    run_checked([sys.executable, str(GRPO_SCRIPT), str(data), str(single), "4", "1"], "GRPO on 1 process")
    launch_two_processes(29531, GRPO_SCRIPT, str(data), str(double), "2", "1")
    with safe_open(str(double), "pt") as f:
        meta_double = f.metadata()
    with safe_open(str(single), "pt") as f:
        meta_single = f.metadata()
    assert meta_double["world_size"] == "2" and meta_single["world_size"] == "1"
    a, b = load_file(single), load_file(double)
    final = [k for k in a if not k.startswith("initial/")]
    assert a.keys() == b.keys() and final
    for key in final:
        torch.testing.assert_close(a[f"initial/{key}"], b[f"initial/{key}"], rtol=0, atol=0)
    moved = max(float((a[k] - a[f"initial/{k}"]).abs().max()) for k in final)
    assert moved > 1e-3, moved  # training moved the LoRA far beyond the tolerance below
    for key in final:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=1e-5, msg=f"{key} differs between 1 and 2 processes")
    np.testing.assert_allclose(
        json.loads(meta_double["train_rewards"]), json.loads(meta_single["train_rewards"]), rtol=1e-5
    )
    assert abs(float(meta_double["eval_reward"]) - float(meta_single["eval_reward"])) <= 1e-4


def test_piecewise_backward_gives_the_gradient_of_the_whole_loss(tmp_path, rows):
    """training_step (one backward per trained transition and per chunk of one video) accumulates the gradient of
    compute_loss's single-graph loss."""
    trainer = _trainer(tmp_path, rows, timestep_fraction=0.67, backward_chunk_size=1, noise_level=0.9)
    adapter = trainer.adapter
    g = torch.Generator().manual_seed(0)
    for name, param in adapter.pipeline.transformer.named_parameters():
        if "lora_B" in name:  # a non-zero LoRA, so that the KL term has a gradient too
            param.data = torch.randn(param.shape, generator=g) * 0.05
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])

    trainer._noise_step = -1
    trainer.model.train()
    whole = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
    whole.backward()
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    trainer._noise_step = -1
    trainer.current_gradient_accumulation_steps = 1
    pieces = trainer.training_step(trainer.model, batch)
    assert trainer.args.num_train_transitions == 2
    torch.testing.assert_close(pieces, whole.detach(), rtol=1e-5, atol=1e-8)
    assert any(float(e.abs().max()) > 0 for e in expected)
    for p, e in zip(params, expected, strict=True):
        torch.testing.assert_close(p.grad, e, rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize("name", ["grpo_tiny", "grpo_wan21_i2v_480p", "grpo_wan22_i2v", "grpo_cogvideox_i2v"])
def test_example_configs_parse(name, monkeypatch):
    """Every key of the shipped GRPO configs is a field of examples/grpo.py's argument dataclasses."""
    from trl import ModelConfig, TrlParser

    examples = Path(__file__).parent.parent / "examples"
    monkeypatch.syspath_prepend(str(examples))
    from reward_feedback import ScriptArguments

    config = examples / "configs" / f"{name}.yaml"
    monkeypatch.setattr(sys, "argv", ["grpo.py", "--config", str(config), "--bf16", "false", "--use_cpu", "true"])
    _, args, model_args = TrlParser((ScriptArguments, VideoGRPOConfig, ModelConfig)).parse_args_and_config()
    assert args.num_generations >= 2 and model_args.model_name_or_path


def test_wan22_trains_only_the_low_noise_expert(tmp_path, rows):
    pipe = tiny_wan22_pipeline(seed=0)
    trainer = _trainer(tmp_path, rows, pipe=pipe, max_steps=2, num_inference_steps=3, backward_chunk_size=1)
    timesteps, _ = flow_sde_schedule(trainer.adapter, 3)
    assert bool((timesteps >= trainer.adapter.boundary_timestep).any())  # some transitions run the frozen expert
    before = {
        f"{c}.{n}": p.detach().clone()
        for c in ("transformer", "transformer_2")
        for n, p in getattr(pipe, c).named_parameters()
    }
    trainer.train()
    changed = {
        name
        for name, value in before.items()
        if not torch.equal(value, dict(getattr(pipe, name.split(".")[0]).named_parameters())[name.split(".", 1)[1]])
    }
    assert changed and all(name.startswith("transformer_2.") and "lora_" in name for name in changed)


def test_guided_sampling_is_the_trained_policy(tmp_path, rows):
    """With classifier-free guidance the sampled transitions and the trained ones use the same guided velocity:
    before any update every ratio is 1 (up to float rounding), unlike under the unguided velocity; training runs."""
    trainer = _trainer(tmp_path, rows, guidance_scale=3.0, negative_prompt="blurry", max_steps=1)
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]]))
    trainer._noise_step = -1
    samples = trainer._sample_group(batch)
    assert samples.negative is not None and samples.negative["prompt_embeds"].shape[0] == 4
    columns = torch.arange(4)
    steps = samples.trained.T
    old = samples.old_log_probs[steps, columns[None].expand_as(steps)]
    guided = float((_log_probs(trainer, samples, columns, 3.0) - old).abs().max())
    plain = float((_log_probs(trainer, samples, columns, 1.0) - old).abs().max())
    # the log-ratio under the guided policy is float rounding; under the unguided one it is not
    assert guided < 1e-6 and plain > max(100 * guided, 1e-5), (guided, plain)  # measured: 0.0 and 2.2e-4
    trainer.train()
    assert np.isfinite(trainer.state.log_history[0]["loss"])


def _log_probs(trainer, samples, columns, guidance_scale):
    """Log-probabilities of the trained transitions under the policy with ``guidance_scale``."""
    policy = trainer.model
    previous, policy.guidance_scale = policy.guidance_scale, guidance_scale
    try:
        steps = samples.trained.T
        cols = columns[None].expand_as(steps)
        sigmas = trainer._sigmas
        with torch.no_grad():
            out = policy(
                samples.latents[steps, cols],
                samples.latents[steps + 1, cols],
                trainer._timesteps[steps],
                sigmas[steps],
                sigmas[steps + 1],
                samples.conditions,
                samples.negative,
                compute_kl=False,
            )
        return out["log_prob"]
    finally:
        policy.guidance_scale = previous


@pytest.mark.slow
def test_example_script_trains_and_saves_a_loadable_lora(tmp_path):
    from two_processes import run_checked

    script = Path(__file__).parent.parent / "examples" / "grpo.py"
    out = tmp_path / "out"
    cmd = [sys.executable, str(script), "--output_dir", str(out), "--data_dir", str(tmp_path / "data")]
    result = run_checked([*cmd, "--max_steps", "2", "--save_strategy", "no"], "examples/grpo.py")
    assert (out / "pytorch_lora_weights.safetensors").is_file() and (out / "README.md").is_file()
    assert "loaded into a fresh pipeline" in result.stdout
