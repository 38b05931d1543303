"""Reward-feedback sampling is the pipeline's own sampler: with gradients off, the trainer's sample equals what the
diffusers pipeline generates from the same noise, for every scheduler the supported checkpoints ship.

The tiny pipelines get the schedulers of the published checkpoints:

- Wan 2.1 I2V 14B 480P and Wan 2.2 I2V A14B: ``UniPCMultistepScheduler(prediction_type="flow_prediction",
  use_flow_sigmas=True, num_train_timesteps=1000, flow_shift=3.0)`` with every other value at its default, which is
  what diffusers' ``scripts/convert_wan_to_diffusers.py`` (``__main__``) saves for the I2V pipelines (read from
  huggingface/diffusers at commit 7d5682739a1ee5b25bb9f5a81c573ea7e38d8e22); the values come from
  :mod:`icreward.adapters.published_configs`, which names that source.
- ``FlowMatchEulerDiscreteScheduler(shift=3.0)``: the scheduler diffusers documents as Wan's alternative (and the
  tiny pipelines' default).
- CogVideoX-5b-I2V: ``CogVideoXDDIMScheduler`` with the published ``scheduler_config.json`` values (from
  :mod:`icreward.adapters.published_configs`), and ``CogVideoXDPMScheduler.from_config(that config,
  timestep_spacing="trailing")``, which THUDM/CogVideo's ``inference/cli_demo.py`` sets for the 5B models ("We
  recommend using CogVideoXDDIMScheduler for CogVideoX-2B and CogVideoXDPMScheduler for CogVideoX-5B"). The DPM
  scheduler is a stochastic two-step solver: both sides draw its noise from generators seeded alike.

CogVideoX's pipeline encodes the reference image with ``latent_dist.sample(generator)`` where the adapter takes the
posterior mode (deterministic, so it can be cached); the CogVideoX tests make the pipeline take the mode too, so that
both sides condition on the same latents and the comparison is of the sampler alone.
"""

import diffusers
import numpy as np
import PIL.Image
import pytest
import torch

from icreward.adapters import get_adapter
from icreward.adapters.base import PipelineSchedulerSampler, StatelessSampler
from icreward.adapters.published_configs import get_published_config
from icreward.testing.tiny_pipelines import (
    TINY_DEFAULTS,
    tiny_cogvideox_i2v_pipeline,
    tiny_wan22_pipeline,
    tiny_wan_i2v_pipeline,
)
from icreward.trainers.reward_feedback_trainer import sample_with_truncated_backprop

SIZE = {"num_frames": 9, "height": 32, "width": 32}
PARITY_TOLERANCE = 1e-4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def image():
    return PIL.Image.fromarray((np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8))


def published_scheduler(hub_id: str, **overrides):
    """The scheduler a published checkpoint ships (class and config from published_configs), with ``overrides``."""
    entry = get_published_config(hub_id)
    return getattr(diffusers, entry.scheduler_class).from_config({**entry.scheduler_config, **overrides})


def _wan_unipc(_):
    return published_scheduler("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers")


def _wan22_unipc(_):
    return published_scheduler("Wan-AI/Wan2.2-I2V-A14B-Diffusers")


def _flow_match_euler(_):
    return diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0)


def _cogvideox_ddim(_):
    return published_scheduler("THUDM/CogVideoX-5b-I2V")


def _cogvideox_dpm(_):
    config = get_published_config("THUDM/CogVideoX-5b-I2V").scheduler_config
    return diffusers.CogVideoXDPMScheduler.from_config(config, timestep_spacing="trailing")


CASES = {
    "wan2.1-unipc-flow-shift-3": (tiny_wan_i2v_pipeline, _wan_unipc, "UniPCMultistepScheduler"),
    "wan2.1-flowmatch-euler": (tiny_wan_i2v_pipeline, _flow_match_euler, "FlowMatchEulerDiscreteScheduler"),
    "wan2.2-unipc-two-experts": (tiny_wan22_pipeline, _wan22_unipc, "UniPCMultistepScheduler"),
    "cogvideox-ddim": (tiny_cogvideox_i2v_pipeline, _cogvideox_ddim, "CogVideoXDDIMScheduler"),
    "cogvideox-dpm": (tiny_cogvideox_i2v_pipeline, _cogvideox_dpm, "CogVideoXDPMScheduler"),
}


def _pipeline_with(case: str):
    build, scheduler, class_name = CASES[case]
    pipe = build(seed=0)
    pipe.scheduler = scheduler(pipe)
    assert type(pipe.scheduler).__name__ == class_name
    return pipe


def _pipeline_latents(pipe, image, noise, steps, seed, monkeypatch):
    """What the diffusers pipeline samples from ``noise`` (``output_type="latent"``)."""
    if "CogVideoX" in type(pipe).__name__:
        from diffusers.pipelines.cogvideo import pipeline_cogvideox_image2video as module

        original = module.retrieve_latents
        monkeypatch.setattr(
            module, "retrieve_latents", lambda out, generator=None, sample_mode="sample": original(out, None, "argmax")
        )
    with torch.no_grad():
        return pipe(
            image=image,
            prompt="a cat",
            **TINY_DEFAULTS,
            num_inference_steps=steps,
            latents=noise.clone(),
            generator=torch.Generator().manual_seed(seed),
            output_type="latent",
        ).frames


@pytest.mark.parametrize("case", list(CASES))
def test_trainer_sample_equals_pipeline_output(case, image, monkeypatch):
    """With gradients off, sample_with_truncated_backprop (the trainer's sampler, K trained steps included) returns
    the pipeline's latents for the same noise, generator and settings."""
    pipe = _pipeline_with(case)
    adapter = get_adapter(pipe)
    steps, seed = 4, 3
    sampler = adapter.sampler(steps)
    assert isinstance(sampler, PipelineSchedulerSampler) and sampler.scheduler is not pipe.scheduler
    assert getattr(pipe.scheduler, "num_inference_steps", None) is None  # the pipeline's scheduler is untouched
    if case.startswith("wan2.2"):  # the schedule crosses the expert boundary: both experts sample
        high = adapter.expert_for(sampler.timesteps)
        assert high.any() and (~high).any()
    shape = adapter.latent_shape(1, **SIZE)
    noise = torch.randn(shape, generator=torch.Generator().manual_seed(0))
    expected = _pipeline_latents(pipe, image, noise, steps, seed, monkeypatch)

    conditions = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    with torch.no_grad():
        sample = sample_with_truncated_backprop(
            adapter, noise, conditions, sampler, num_grad_steps=2, generator=torch.Generator().manual_seed(seed)
        )
    diff = float((sample.latents - expected).abs().max())
    print(f"sampler parity {case} ({type(pipe.scheduler).__name__}): max abs diff {diff:.3e}")
    assert diff <= PARITY_TOLERANCE
    assert float(expected.abs().mean()) > 0.1  # a real sample, not a degenerate one
    if case == "cogvideox-dpm":  # the SDE noise matters: another generator gives another sample
        with torch.no_grad():
            other = sample_with_truncated_backprop(
                adapter, noise, conditions, adapter.sampler(steps), num_grad_steps=0, generator=torch.Generator()
            )
        assert float((other.latents - expected).abs().max()) > 1e-2


def test_unipc_differs_from_first_order_euler(image, monkeypatch):
    """The check above is not vacuous: Wan's shipped UniPC sampler and a first-order Euler loop on the same
    timesteps (the trainer's former sampler) give different samples."""
    pipe = _pipeline_with("wan2.1-unipc-flow-shift-3")
    adapter = get_adapter(pipe)
    noise = torch.randn(adapter.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(0))
    conditions = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    with torch.no_grad():
        unipc = sample_with_truncated_backprop(adapter, noise, conditions, adapter.sampler(4), num_grad_steps=0)
        euler = sample_with_truncated_backprop(
            adapter, noise, conditions, StatelessSampler(adapter, adapter.inference_timesteps(4)), num_grad_steps=0
        )
    assert float((unipc.latents - euler.latents).abs().max()) > 1e-2


class _SchedulerOnly:
    """The part of an adapter PipelineSchedulerSampler reads."""

    def __init__(self, scheduler):
        self.scheduler = scheduler


@pytest.mark.parametrize("case", ["wan2.1-unipc-flow-shift-3", "cogvideox-ddim", "cogvideox-dpm"])
def test_scheduler_steps_are_differentiable_through_the_multistep_history(case):
    """Autograd through every step of the shipped schedulers (multistep history and the DPM solver's previous x0
    included) equals finite differences (gradcheck, float64), with a toy differentiable denoiser."""
    _, make, _ = CASES[case]
    scheduler = make(None)
    generator_seed = 5
    weight = torch.randn(3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
    noise = torch.randn(1, 3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2), requires_grad=True)

    def sample(x, w):
        sampler = PipelineSchedulerSampler(_SchedulerOnly(scheduler), 3)
        generator = torch.Generator().manual_seed(generator_seed)  # the same SDE noise on every evaluation
        for i, t in enumerate(sampler.timesteps):
            output = torch.tanh(torch.einsum("ij,bjk->bik", w, x) + float(t) / 1000)
            x = sampler.step(i, x, output, {}, generator=generator)
        return x

    assert torch.autograd.gradcheck(sample, (noise, weight), eps=1e-6, atol=1e-6)
    again = PipelineSchedulerSampler(_SchedulerOnly(scheduler), 3)
    with pytest.raises(RuntimeError, match="stepped in order"):
        again.step(1, noise, noise, {})


@pytest.mark.parametrize("case", ["wan2.1-unipc-flow-shift-3", "cogvideox-dpm"])
def test_trainer_policy_video_equals_pipeline_video(case, image, tmp_path, monkeypatch):
    """The RewardFeedbackTrainer's own forward (sample + decode, gradients off) gives the pipeline's decoded video."""
    from peft import LoraConfig

    from icreward.rewards.combined import CallableReward
    from icreward.trainers.reward_feedback_config import RewardFeedbackConfig
    from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer

    pipe = _pipeline_with(case)
    steps, seed = 3, 7
    args = RewardFeedbackConfig(
        output_dir=str(tmp_path),
        **SIZE,
        num_inference_steps=steps,
        truncated_backprop_steps=2,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    reward = CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness")
    trainer = RewardFeedbackTrainer(
        pipe, reward, args=args, train_dataset=[{"image": image, "prompt": "a cat"}], peft_config=LoraConfig(r=2)
    )
    noise = torch.randn(trainer.adapter.latent_shape(1, **SIZE), generator=torch.Generator().manual_seed(0))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    conditions, _ = trainer._encode_conditions(batch)
    with torch.no_grad():
        video = trainer.model(noise, conditions, generator=torch.Generator().manual_seed(seed))["video"]
    latents = _pipeline_latents(pipe, batch["images"][0], noise, steps, seed, monkeypatch)
    with torch.no_grad():
        expected = trainer.adapter.decode_latents(latents)
        frames = pipe(
            image=batch["images"][0],
            prompt="a cat",
            **TINY_DEFAULTS,
            num_inference_steps=steps,
            latents=noise.clone(),
            generator=torch.Generator().manual_seed(seed),
            output_type="pt",
        ).frames
    diff = float((video - frames).abs().max())
    print(f"trainer video parity {case}: max abs diff {diff:.3e} (pixels in [0, 1])")
    assert video.shape == frames.shape and diff <= PARITY_TOLERANCE
    torch.testing.assert_close(video, expected, rtol=0, atol=PARITY_TOLERANCE)


def test_stochastic_steps_draw_each_rows_noise_from_its_own_generator(image):
    """CogVideoXDPMScheduler's SDE noise comes per row from the row's generator: a row samples the same alone or in
    a batch (what keeps 2 processes x batch b equal to 1 process x batch 2b)."""
    adapter = get_adapter(_pipeline_with("cogvideox-dpm"))
    conditions = adapter.prepare_conditions([image, image], ["a cat", "a dog"], **SIZE)
    noise = torch.randn(adapter.latent_shape(2, **SIZE), generator=torch.Generator().manual_seed(0))

    def sample(rows):
        generators = [torch.Generator().manual_seed(10 + row) for row in rows]
        cond = {k: v[rows] for k, v in conditions.items()}
        with torch.no_grad():
            return sample_with_truncated_backprop(
                adapter, noise[rows], cond, adapter.sampler(3), num_grad_steps=1, generator=generators
            ).latents

    both = sample([0, 1])
    torch.testing.assert_close(both[1:], sample([1]), rtol=0, atol=1e-6)
    torch.testing.assert_close(both[:1], sample([0]), rtol=0, atol=1e-6)


def test_training_through_the_stochastic_dpm_sampler_is_reproducible(image, tmp_path):
    """A reward-feedback loss through CogVideoXDPMScheduler's last K steps: the step's SDE noise comes from the rows'
    generators (the same loss when the step is replayed), and the LoRA gets gradients through the two-step history."""
    from peft import LoraConfig

    from icreward.rewards.combined import CallableReward
    from icreward.trainers.reward_feedback_config import RewardFeedbackConfig
    from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer

    pipe = _pipeline_with("cogvideox-dpm")
    args = RewardFeedbackConfig(
        output_dir=str(tmp_path),
        **SIZE,
        num_inference_steps=3,
        truncated_backprop_steps=2,
        kl_weight=0.0,
        use_cpu=True,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
    )
    reward = CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness")
    trainer = RewardFeedbackTrainer(
        pipe, reward, args=args, train_dataset=[{"image": image, "prompt": "a cat"}], peft_config=LoraConfig(r=2)
    )
    for name, param in pipe.transformer.named_parameters():
        if "lora_B" in name:
            param.data.normal_(0, 0.1, generator=torch.Generator().manual_seed(0))
    batch = trainer._prepare_inputs(trainer.data_collator([trainer.train_dataset[0]]))
    trainer.model.train()
    losses = []
    for _ in range(2):
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, batch)
        loss.backward()
        losses.append(float(loss.detach()))
    assert losses[0] == losses[1]
    grads = [p.grad for n, p in pipe.transformer.named_parameters() if "lora_A" in n]
    assert all(g is not None for g in grads) and any(float(g.abs().max()) > 0 for g in grads)
