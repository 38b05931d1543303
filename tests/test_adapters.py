import copy

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig

from icreward.adapters import (
    CogVideoXI2VAdapter,
    VideoModelAdapter,
    Wan22Adapter,
    WanI2VAdapter,
    get_adapter,
    load_wan22_lora,
    register_adapter,
)
from icreward.adapters import registry as registry_module
from icreward.testing.tiny_pipelines import (
    TINY_DEFAULTS,
    tiny_cogvideox_i2v_pipeline,
    tiny_wan22_pipeline,
    tiny_wan_i2v_pipeline,
)

SIZE = {"num_frames": 9, "height": 32, "width": 32}


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models are fastest single-threaded; two threads on a shared 2-core machine spin-wait.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def image():
    return PIL.Image.fromarray((np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8))


def _adapter(family, **kwargs):
    builders = {"wan21": tiny_wan_i2v_pipeline, "wan22": tiny_wan22_pipeline, "cogvideox": tiny_cogvideox_i2v_pipeline}
    return get_adapter(builders[family](seed=0), **kwargs)


def test_registry_dispatch():
    assert type(_adapter("wan21")) is WanI2VAdapter
    assert type(_adapter("wan22")) is Wan22Adapter
    assert type(_adapter("cogvideox")) is CogVideoXI2VAdapter
    adapter = _adapter("wan21")
    assert get_adapter(adapter) is adapter
    with pytest.raises(ValueError, match="no adapter for a object"):
        get_adapter(object())


def test_registry_from_local_directory(tmp_path):
    tiny_wan22_pipeline(seed=0).save_pretrained(tmp_path)
    adapter = get_adapter(str(tmp_path), train_expert="high_noise")
    assert type(adapter) is Wan22Adapter and adapter.train_expert == "high_noise"
    assert set(adapter.trainable_modules) == {"transformer"}


def test_register_custom_adapter():
    class Dummy:
        pass

    @register_adapter
    class DummyAdapter(VideoModelAdapter):
        family = "dummy"

        @classmethod
        def can_handle(cls, pipeline):
            return isinstance(pipeline, Dummy)

        trainable_modules = property(lambda self: {"transformer": torch.nn.Linear(1, 1)})
        prediction_type = property(lambda self: "flow")
        prepare_conditions = prepare_latents = decode_latents = add_noise = target = predict = None
        denoise_step = None

    try:
        assert isinstance(get_adapter(Dummy()), DummyAdapter)
    finally:
        registry_module._ADAPTERS.remove(DummyAdapter)
    with pytest.raises(ValueError, match="no adapter"):
        get_adapter(Dummy())


@pytest.mark.parametrize("prediction_type,dtype", [("flow", torch.float32), ("epsilon", torch.long)])
def test_denoise_step_calls_predict_then_scheduler_step(prediction_type, dtype):
    """A family implements only scheduler_step; denoise_step gives it one timestep per sample, typed by family."""
    seen = []

    class StepAdapter(VideoModelAdapter):
        can_handle = classmethod(lambda cls, pipeline: False)
        trainable_modules = property(lambda self: {"transformer": torch.nn.Linear(1, 1)})
        prepare_conditions = prepare_latents = decode_latents = add_noise = target = None

        @property
        def prediction_type(self):
            return prediction_type

        def predict(self, noisy_latents, timesteps, conditions):
            seen.append(timesteps)
            return torch.ones_like(noisy_latents)

        def scheduler_step(self, latents, model_output, timesteps, next_timesteps):
            seen.append((timesteps, next_timesteps))
            return latents - model_output

    adapter = StepAdapter(pipeline=object())
    x = torch.zeros(3, 2)
    torch.testing.assert_close(adapter.denoise_step(x, 500.0, 250.0, {}), -torch.ones(3, 2))
    t, (t_step, t_next) = seen
    assert t is t_step and t.dtype == t_next.dtype == dtype
    assert t.tolist() == [500] * 3 and t_next.tolist() == [250] * 3
    adapter.denoise_step(x, 500.0, 250.0, {}, model_output=x)
    assert len(seen) == 3  # a given model_output skips predict
    with pytest.raises(NotImplementedError, match="neither scheduler_step nor denoise_step"):
        VideoModelAdapter.scheduler_step(adapter, x, x, t, t_next)


def test_lora_on_a_plain_module(tmp_path):
    """The path an Open-Sora adapter takes: a plain nn.Module denoiser and no diffusers LoRA loader."""
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 4))

    class PlainAdapter(VideoModelAdapter):
        family = "plain"
        default_lora_target_modules = ("0", "2")
        can_handle = classmethod(lambda cls, pipeline: False)
        trainable_modules = property(lambda self: {"transformer": net})
        prediction_type = property(lambda self: "flow")
        prepare_conditions = prepare_latents = decode_latents = add_noise = target = denoise_step = None

        def predict(self, noisy_latents, timesteps, conditions):
            return net(noisy_latents)

    adapter = PlainAdapter(pipeline=object())
    assert not adapter.has_lora()
    adapter.add_lora(LoraConfig(r=2, lora_alpha=2))
    assert adapter.has_lora()
    for name, param in net.named_parameters():
        assert param.requires_grad == ("lora_" in name)
        if "lora_B" in name:
            param.data.normal_()
    x = torch.randn(3, 4)
    with torch.no_grad():
        tuned = adapter.predict(x, None, {})
        with adapter.disable_lora():
            base = adapter.predict(x, None, {})
        plain = torch.nn.functional.linear(
            torch.nn.functional.gelu(torch.nn.functional.linear(x, net[0].base_layer.weight, net[0].base_layer.bias)),
            net[2].base_layer.weight,
            net[2].base_layer.bias,
        )
    torch.testing.assert_close(base, plain)
    assert (tuned - base).abs().max() > 1e-3
    assert adapter.save_lora_weights(tmp_path) == ["pytorch_lora_weights.safetensors"]
    saved = {k: v.clone() for k, v in adapter.lora_state_dicts()["transformer"].items()}
    for name, param in net.named_parameters():
        if "lora_" in name:
            param.data.zero_()
    adapter.load_lora_weights(tmp_path)
    for key, value in adapter.lora_state_dicts()["transformer"].items():
        torch.testing.assert_close(value, saved[key])


@pytest.mark.parametrize("family", ["wan21", "wan22"])
def test_wan_sampling_loop_matches_pipeline(family, image):
    """conditions + predict + denoise_step reproduce WanImageToVideoPipeline exactly (both experts for 2.2)."""
    adapter = _adapter(family)
    pipe = adapter.pipeline
    x = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    steps = 3
    expected = pipe(
        image=image,
        prompt="a cat",
        **TINY_DEFAULTS,
        num_inference_steps=steps,
        latents=x.clone(),
        output_type="latent",
    ).frames
    conditions = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    timesteps = adapter.inference_timesteps(steps)
    if family == "wan22":  # the tiny schedule crosses the expert boundary
        high = adapter.expert_for(timesteps[:-1])
        assert high.any() and (~high).any()
    with torch.no_grad():
        for i in range(steps):
            x = adapter.denoise_step(x, timesteps[i], timesteps[i + 1], conditions)
    torch.testing.assert_close(x, expected, rtol=1e-4, atol=1e-4)


def test_wan_condition_layout(image):
    adapter = _adapter("wan21")
    cond = adapter.prepare_conditions([image, image], ["a cat", "a dog"], **SIZE)
    assert cond["prompt_embeds"].shape == (2, 512, 32)  # Wan I2V needs exactly 512 text tokens
    assert cond["image_embeds"].shape == (2, 65, 4)  # CLIP penultimate layer, 8x8 patches + class token
    mask, latents = cond["condition"][:, :4], cond["condition"][:, 4:]
    assert latents.shape == (2, 16, 3, 4, 4)
    assert torch.all(mask[:, :, 0] == 1) and torch.all(mask[:, :, 1:] == 0)
    torch.testing.assert_close(cond["condition"][0], cond["condition"][1])
    assert not torch.allclose(cond["prompt_embeds"][0], cond["prompt_embeds"][1])
    with pytest.raises(ValueError, match="max_sequence_length=512"):
        WanI2VAdapter(adapter.pipeline, max_sequence_length=226)
    with pytest.raises(ValueError, match="4k \\+ 1"):
        adapter.prepare_conditions([image], ["a"], num_frames=8, height=32, width=32)


def test_wan_flow_matching_definitions():
    adapter = _adapter("wan21")
    x0, noise = torch.randn(3, 16, 3, 4, 4), torch.randn(3, 16, 3, 4, 4)
    t = torch.tensor([0.0, 250.0, 1000.0])
    noisy = adapter.add_noise(x0, noise, t)
    torch.testing.assert_close(noisy[0], x0[0])
    torch.testing.assert_close(noisy[1], 0.75 * x0[1] + 0.25 * noise[1])
    torch.testing.assert_close(noisy[2], noise[2])
    torch.testing.assert_close(adapter.target(x0, noise, t), noise - x0)


def test_cogvideox_matches_scheduler():
    adapter = _adapter("cogvideox")
    scheduler = copy.deepcopy(adapter.scheduler)
    x0, noise = torch.randn(2, 3, 4, 4, 4), torch.randn(2, 3, 4, 4, 4)
    t = torch.tensor([10, 900])
    torch.testing.assert_close(adapter.add_noise(x0, noise, t), scheduler.add_noise(x0, noise, t))
    assert adapter.prediction_type == "v_prediction"
    torch.testing.assert_close(adapter.target(x0, noise, t), scheduler.get_velocity(x0, noise, t))
    scheduler.set_timesteps(4)
    timesteps = adapter.inference_timesteps(4)
    x = torch.randn(1, 3, 4, 4, 4)
    for i, step_t in enumerate(scheduler.timesteps):
        output = torch.randn_like(x)
        expected = scheduler.step(output, step_t, x, eta=0.0, return_dict=False)[0]
        mine = adapter.denoise_step(x, timesteps[i], timesteps[i + 1], {}, model_output=output)
        torch.testing.assert_close(mine, expected, rtol=1e-5, atol=1e-5)
        x = expected


def test_cogvideox_conditions_and_predict(image):
    adapter = _adapter("cogvideox")
    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    assert cond["prompt_embeds"].shape == (1, 226, 32)
    assert cond["image_latents"].shape == (1, 3, 4, 4, 4)
    assert cond["image_latents"][:, 1:].abs().max() == 0  # only the first latent frame carries the image
    latents = adapter.prepare_latents(torch.rand(1, 9, 3, 32, 32))
    t = adapter.sample_timesteps(1, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long
    pred = adapter.predict(adapter.add_noise(latents, torch.randn_like(latents), t), t, cond)
    assert pred.shape == latents.shape


@pytest.mark.parametrize("family", ["wan21", "cogvideox"])
def test_prepare_latents_inputs(family):
    adapter = _adapter(family)
    videos = torch.randint(0, 256, (2, 9, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(adapter.prepare_latents(videos), adapter.prepare_latents(videos.float() / 255))
    with pytest.raises(ValueError, match="\\[0, 1\\]"):
        adapter.prepare_latents(videos.float() / 127.5 - 1)
    with pytest.raises(ValueError, match="\\(B, F, 3, H, W\\)"):
        adapter.prepare_latents(torch.rand(9, 3, 32, 32))


@pytest.mark.parametrize("family", ["wan21", "wan22", "cogvideox"])
def test_decode_is_differentiable(family):
    adapter = _adapter(family)
    latents = adapter.prepare_latents(torch.rand(1, 9, 3, 32, 32)).requires_grad_(True)
    video = adapter.decode_latents(latents)
    assert video.shape == (1, 9, 3, 32, 32)
    video.mean().backward()
    assert latents.grad is not None and latents.grad.abs().sum() > 0


def test_wan22_expert_selection_and_routing(image):
    adapter = _adapter("wan22", train_expert="low_noise")
    pipe = adapter.pipeline
    assert set(adapter.trainable_modules) == {"transformer_2"}
    boundary = 0.875 * 1000
    assert adapter.timestep_bounds == (0.0, boundary)
    t = adapter.sample_timesteps(256, generator=torch.Generator().manual_seed(0), sampling="logit_normal")
    assert t.max() < boundary and t.min() >= 0
    high = Wan22Adapter(pipe, train_expert="high_noise")
    assert high.sample_timesteps(256).min() >= boundary
    assert set(Wan22Adapter(pipe, train_expert="both").trainable_modules) == {"transformer", "transformer_2"}

    cond = adapter.prepare_conditions([image, image], ["a cat", "a cat"], **SIZE)
    x = torch.randn(2, 16, 3, 4, 4)
    mixed = torch.tensor([950.0, 300.0])
    with torch.no_grad():
        routed = adapter.predict(x, mixed, cond)
        only_high = adapter._forward(pipe.transformer, x[:1], mixed[:1], {k: v[:1] for k, v in cond.items()})
        only_low = adapter._forward(pipe.transformer_2, x[1:], mixed[1:], {k: v[1:] for k, v in cond.items()})
    torch.testing.assert_close(routed, torch.cat([only_high, only_low]), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="train_expert"):
        Wan22Adapter(pipe, train_expert="middle")


@pytest.mark.parametrize("family,kwargs", [("wan21", {}), ("wan22", {"train_expert": "both"}), ("cogvideox", {})])
def test_lora_inject_disable_save_load(family, kwargs, image, tmp_path):
    adapter = _adapter(family, **kwargs)
    adapter.add_lora(LoraConfig(r=4, lora_alpha=8, init_lora_weights=True))
    trainable = [n for m in adapter.trainable_modules.values() for n, p in m.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert not any(p.requires_grad for m in adapter.frozen_modules.values() for p in m.parameters())
    for module in adapter.trainable_modules.values():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.5)

    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    x = adapter.prepare_latents(torch.rand(1, 9, 3, 32, 32))
    t = torch.tensor([900.0]) if adapter.prediction_type == "flow" else torch.tensor([500])
    fresh = _adapter(family, **kwargs)
    with torch.no_grad():
        tuned = adapter.predict(x, t, cond)
        with adapter.disable_lora():
            reference = adapter.predict(x, t, cond)
        base = fresh.predict(x, t, cond)
    torch.testing.assert_close(reference, base, rtol=0, atol=0)
    assert (tuned - base).abs().max() > 1e-3

    files = adapter.save_lora_weights(tmp_path)
    assert "pytorch_lora_weights.safetensors" in files
    if family == "wan22":
        assert load_wan22_lora(fresh.pipeline, tmp_path) == ["transformer", "transformer_2"]
    else:
        fresh.pipeline.load_lora_weights(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(fresh.predict(x, t, cond), tuned, rtol=1e-5, atol=1e-5)

    resumed = _adapter(family, **kwargs)
    resumed.add_lora(LoraConfig(r=4, lora_alpha=8))
    resumed.load_lora_weights(tmp_path)
    with torch.no_grad():
        torch.testing.assert_close(resumed.predict(x, t, cond), tuned, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("policy,kwargs", [("tiny-wan2.1", {}), ("tiny-wan2.2", {"train_expert": "both"})])
def test_lora_output_change_loads_the_saved_lora_into_a_fresh_pipeline(policy, kwargs, image, tmp_path):
    from icreward.testing.tiny_pipelines import TINY_POLICIES, load_policy_pipeline, lora_output_change

    adapter = get_adapter(load_policy_pipeline(policy), **kwargs)
    assert type(adapter) is (Wan22Adapter if TINY_POLICIES[policy] == "wan22" else WanI2VAdapter)
    adapter.add_lora(LoraConfig(r=4, lora_alpha=8, init_lora_weights=True))  # B = 0: the LoRA changes nothing yet
    adapter.save_lora_weights(tmp_path / "zero")
    for module in adapter.trainable_modules.values():
        for name, param in module.named_parameters():
            if "lora_B" in name:
                param.data.normal_(0, 0.5)
    adapter.save_lora_weights(tmp_path / "trained")
    change = {
        name: lora_output_change(
            policy, tmp_path / name, adapter.trainable_modules, image=image, prompt="a cat", **SIZE
        )
        for name in ("zero", "trained")
    }
    assert change["zero"] == 0.0
    assert change["trained"] > 1e-3


def test_samplers_by_family():
    """Wan and CogVideoX sample with a copy of the pipeline's scheduler; the base default steps denoise_step."""
    from icreward.adapters.base import PipelineSchedulerSampler, StatelessSampler

    for family in ("wan21", "wan22", "cogvideox"):
        adapter = _adapter(family)
        sampler = adapter.sampler(3)
        assert isinstance(sampler, PipelineSchedulerSampler) and sampler.scheduler is not adapter.scheduler
        expected = copy.deepcopy(adapter.scheduler)
        expected.set_timesteps(3)
        assert torch.equal(sampler.timesteps, expected.timesteps)
    adapter = _adapter("wan21")
    stateless = VideoModelAdapter.sampler(adapter, 3)  # the base default
    assert isinstance(stateless, StatelessSampler)
    torch.testing.assert_close(stateless.timesteps, adapter.inference_timesteps(3)[:-1])
    x, v = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 16, 3, 4, 4)
    t = adapter.inference_timesteps(3)
    torch.testing.assert_close(stateless.step(0, x, v, {}), adapter.denoise_step(x, t[0], t[1], {}, model_output=v))


@pytest.mark.parametrize("expert", ["low_noise", "high_noise", "both"])
def test_wan22_lora_load_snippet_names_the_expert(expert):
    snippet = Wan22Adapter(tiny_wan22_pipeline(seed=0), train_expert=expert).lora_load_snippet("out")
    low = 'weight_name="pytorch_lora_weights_transformer_2.safetensors"' in snippet
    assert low == (expert != "high_noise") and ("load_into_transformer_2=True" in snippet) == low
    assert ('pipe.load_lora_weights("out")' in snippet) == (expert != "low_noise")
    assert _adapter("wan21").lora_load_snippet("out") == 'pipe.load_lora_weights("out")'
