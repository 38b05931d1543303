"""Open-Sora 1.2 adapter: the import guard, and the adapter's logic against a FAKE ``opensora`` module.

The real package (hpcaitech/Open-Sora, not on PyPI, needs colossalai) and its checkpoints are not available here.
``_fake_opensora`` below is a small stand-in written for these tests: it implements the interface the adapter uses
(``opensora.registry.MODELS`` / ``build_module``; an STDiT3-like ``model(x, timestep, y, mask, x_mask, fps, height,
width)`` returning ``(B, 2C, T, h, w)`` whose first half is ``x0 - noise``; a VAE with ``encode``,
``decode(z, num_frames)``, ``get_latent_size``, ``out_channels``; a T5 wrapper with ``encode`` / ``null``). Passing
these tests shows the adapter is consistent with that interface as read from the source, not that it runs the real
model.
"""

import sys
import types

import numpy as np
import PIL.Image
import pytest
import torch
from peft import LoraConfig
from torch import nn

from icreward.adapters import get_adapter
from icreward.adapters.opensora import (
    OPENSORA_V12_MODULES,
    OpenSoraAdapter,
    OpenSoraComponents,
    opensora_timestep_transform,
)

SIZE = {"num_frames": 17, "height": 32, "width": 32}  # 5 latent frames with the fake VAE
LORA = LoraConfig(r=4, lora_alpha=4)


# ------------------------------------------------------------------------------------------------- the fake package
class _Attention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
        return self.proj(weights @ v)


class _CrossAttention(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.q_linear = nn.Linear(dim, dim)
        self.kv_linear = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y, y_mask):
        k, v = self.kv_linear(y).chunk(2, dim=-1)
        scores = self.q_linear(x) @ k.transpose(-1, -2) / x.shape[-1] ** 0.5
        scores = scores.masked_fill(~y_mask[:, None, :].bool(), -1e4)
        return self.proj(torch.softmax(scores, dim=-1) @ v)


class _FakeSTDiT3(nn.Module):
    """Tokens = latent voxels; per-frame timestep modulation (t for x_mask True, 0 for False), as STDiT3 does."""

    def __init__(self, in_channels=4, caption_channels=8, model_max_length=6, hidden=16, **kwargs):
        super().__init__()
        self.kwargs = dict(kwargs, caption_channels=caption_channels, model_max_length=model_max_length)
        self.in_channels = in_channels
        self.x_embedder = nn.Linear(in_channels, hidden)
        self.y_embedder = nn.Linear(caption_channels, hidden)
        self.y_embedder.y_embedding = nn.Parameter(torch.randn(model_max_length, caption_channels))
        self.t_embedder = nn.Linear(1, hidden)
        self.fps_embedder = nn.Linear(1, hidden)
        self.attn = _Attention(hidden)
        self.cross_attn = _CrossAttention(hidden)
        self.final_layer = nn.Linear(hidden, 2 * in_channels)
        self.grad_checkpointing = False

    def forward(self, x, timestep, y, mask=None, x_mask=None, fps=None, height=None, width=None, **kwargs):
        b, c, t, h, w = x.shape
        tokens = self.x_embedder(x.permute(0, 2, 3, 4, 1))  # (B, T, h, w, D)
        temb = self.t_embedder(timestep.float().view(b, 1, 1) / 1000).expand(b, t, -1)
        if x_mask is not None:
            t0 = self.t_embedder(torch.zeros(b, 1, 1))
            temb = torch.where(x_mask[:, :, None], temb, t0.expand(b, t, -1))
        temb = temb + self.fps_embedder(fps.float().view(b, 1, 1) / 100) + height.float().view(b, 1, 1) / 1e3
        tokens = (tokens + temb[:, :, None, None]).reshape(b, t * h * w, -1)
        tokens = tokens + self.attn(tokens)
        tokens = tokens + self.cross_attn(tokens, self.y_embedder(y.squeeze(1)), mask)
        out = self.final_layer(tokens).view(b, t, h, w, 2 * c)
        return out.permute(0, 4, 1, 2, 3).float()


class _FakeVAE(nn.Module):
    """8x spatial, 4x temporal (first frame kept) compression into 4 channels."""

    out_channels = 4

    def __init__(self, **kwargs):
        super().__init__()
        self.kwargs = kwargs
        self.enc = nn.Conv3d(3, 4, kernel_size=(1, 8, 8), stride=(1, 8, 8))
        self.dec = nn.Linear(4, 3 * 64)

    def get_latent_size(self, input_size):
        frames = input_size[0]
        latent = [None if frames is None else 1 + (frames - 1) // 4]
        return latent + [None if s is None else s // 8 for s in input_size[1:]]

    def encode(self, x):
        frames = torch.cat([x[:, :, :1], x[:, :, 1:].unflatten(2, (-1, 4)).mean(3)], dim=2) if x.shape[2] > 1 else x
        return self.enc(frames)

    def decode(self, z, num_frames=None):
        b, c, t, h, w = z.shape
        pixels = self.dec(z.permute(0, 2, 3, 4, 1)).view(b, t, h, w, 3, 8, 8)
        video = pixels.permute(0, 4, 1, 2, 5, 3, 6).reshape(b, 3, t, h * 8, w * 8).tanh()
        first, rest = video[:, :, :1], video[:, :, 1:].repeat_interleave(4, dim=2)
        return torch.cat([first, rest], dim=2)[:, :, :num_frames]


class _FakeT5:
    output_dim = 8
    model_max_length = 6

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        torch.manual_seed(7)
        self.t5 = types.SimpleNamespace(model=nn.Embedding(128, self.output_dim))
        self.y_embedder = None

    def encode(self, prompts):
        ids = torch.zeros(len(prompts), self.model_max_length, dtype=torch.long)
        mask = torch.zeros(len(prompts), self.model_max_length, dtype=torch.long)
        for i, prompt in enumerate(prompts):
            codes = [ord(ch) % 128 for ch in prompt][: self.model_max_length]
            ids[i, : len(codes)] = torch.tensor(codes)
            mask[i, : max(len(codes), 1)] = 1
        with torch.no_grad():
            return {"y": self.t5.model(ids)[:, None], "mask": mask}

    def null(self, n):
        return self.y_embedder.y_embedding[None, None].repeat(n, 1, 1, 1)


def _fake_opensora(calls):
    registry = types.ModuleType("opensora.registry")
    builders = {"STDiT3-XL/2": _FakeSTDiT3, "OpenSoraVAE_V1_2": _FakeVAE, "t5": _FakeT5}
    registry.MODELS = builders

    def build_module(spec, builder, **kwargs):
        spec = dict(spec)
        calls.append((dict(spec), kwargs))
        torch.manual_seed(0)
        return builder[spec.pop("type")](**{**spec, **kwargs})

    registry.build_module = build_module
    package = types.ModuleType("opensora")
    package.registry = registry
    package.models = types.ModuleType("opensora.models")
    return {"opensora": package, "opensora.registry": registry, "opensora.models": package.models}


@pytest.fixture
def fake_opensora(monkeypatch):
    calls = []
    for name, module in _fake_opensora(calls).items():
        monkeypatch.setitem(sys.modules, name, module)
    return calls


@pytest.fixture(scope="module")
def image():
    return PIL.Image.fromarray((np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8))


def _adapter(fake_opensora, **size):
    return OpenSoraAdapter.from_pretrained(**(size or SIZE))


# ------------------------------------------------------------------------------------------------- tests
def test_import_guard_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "opensora", None)  # as if it were not installed
    with pytest.raises(
        ImportError, match="not on PyPI.*git clone https://github.com/hpcaitech/Open-Sora.*pip install"
    ):
        OpenSoraAdapter.from_pretrained()


def test_load_builds_the_published_modules_with_the_official_builders(fake_opensora):
    adapter = _adapter(fake_opensora)
    (text_spec, _), (vae_spec, _), (model_spec, model_kwargs) = fake_opensora
    assert text_spec == OPENSORA_V12_MODULES["text_encoder"]
    assert vae_spec == OPENSORA_V12_MODULES["vae"]
    assert model_spec["from_pretrained"] == "hpcai-tech/OpenSora-STDiT-v3" and model_spec["qk_norm"] is True
    assert model_kwargs == {
        "in_channels": 4,
        "caption_channels": 8,
        "model_max_length": 6,
        "enable_sequence_parallelism": False,
    }
    pipe = adapter.pipeline
    assert pipe.text_encoder.y_embedder is pipe.model.y_embedder  # Open-Sora's null-caption hook
    assert type(get_adapter(pipe)) is OpenSoraAdapter
    assert set(adapter.frozen_modules) == {"vae", "text_encoder"}


def test_timestep_transform_formula():
    t = torch.tensor([1000.0, 500.0, 0.0])
    out = opensora_timestep_transform(t, num_frames=51, height=360, width=640)
    ratio = (360 * 640 / 512**2) ** 0.5 * 15**0.5  # 51 frames -> 3 chunks of 17 -> 15 latent frames
    torch.testing.assert_close(out, torch.tensor([1000.0, 1000 * ratio * 0.5 / (1 + (ratio - 1) * 0.5), 0.0]))
    image = opensora_timestep_transform(t, num_frames=1, height=512, width=512)
    torch.testing.assert_close(image, t)  # ratio 1 at the base resolution
    with pytest.raises(ValueError, match="num_frames = 1 or >= 17"):
        opensora_timestep_transform(t, num_frames=9, height=512, width=512)


def test_conditioning_frame_and_sign_convention(fake_opensora, image):
    adapter = _adapter(fake_opensora)
    cond = adapter.prepare_conditions([image, image], ["a cat", "a dog"], **SIZE)
    assert cond["y"].shape == (2, 1, 6, 8) and cond["image_latents"].shape == (2, 4, 1, 4, 4)
    assert cond["fps"].tolist() == [24.0, 24.0] and cond["num_frames"].tolist() == [17.0, 17.0]
    latents = adapter.prepare_latents(torch.rand(2, 17, 3, 32, 32))
    assert latents.shape == adapter.latent_shape(2, **SIZE) == (2, 4, 5, 4, 4)
    seen = {}
    model = adapter.pipeline.model
    handle = model.register_forward_pre_hook(lambda m, a, kw: seen.update(args=a, **kw), with_kwargs=True)
    t = torch.tensor([800.0, 200.0])
    noisy = adapter.add_noise(latents, torch.randn_like(latents), t)
    with torch.no_grad():
        pred = adapter.predict(noisy, t, cond)
        x_in = torch.cat([cond["image_latents"], noisy[:, :, 1:]], dim=2)
        raw = model(
            x_in,
            t,
            cond["y"],
            mask=cond["y_mask"].long(),
            x_mask=adapter.frame_mask(x_in),
            **{k: cond[k] for k in ("height", "width", "num_frames", "fps")},
        )
    handle.remove()
    assert seen["x_mask"].tolist() == [[False] + [True] * 4] * 2
    torch.testing.assert_close(seen["args"][0][:, :, :1], cond["image_latents"])
    torch.testing.assert_close(pred[:, :, 1:], -raw[:, :4, 1:])  # Open-Sora predicts x0 - noise
    assert pred[:, :, 0].eq(0).all()


def test_sampling_matches_an_open_sora_style_masked_euler_loop(fake_opensora, image):
    """Independent loop in Open-Sora's terms: z = z + v dt, the conditioning frame restored after each step."""
    adapter = _adapter(fake_opensora)
    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    steps = 4
    timesteps = adapter.inference_timesteps(steps)
    raw_t = torch.tensor([(1 - i / steps) * 1000 for i in range(steps)])
    expected_t = opensora_timestep_transform(raw_t, **SIZE)
    torch.testing.assert_close(timesteps[:-1], expected_t)
    noise = torch.randn(1, 4, 5, 4, 4, generator=torch.Generator().manual_seed(0))
    model, ref = adapter.pipeline.model, cond["image_latents"]
    z = torch.cat([ref, noise[:, :, 1:]], dim=2)
    x_mask = torch.tensor([[False, True, True, True, True]])
    extra = {k: cond[k] for k in ("height", "width", "num_frames", "fps")}
    x = noise
    with torch.no_grad():
        for i in range(steps):
            v = model(z, expected_t[i : i + 1], cond["y"], mask=cond["y_mask"].long(), x_mask=x_mask, **extra)[:, :4]
            dt = (expected_t[i] - (expected_t[i + 1] if i + 1 < steps else 0)) / 1000
            z = torch.where(x_mask[:, None, :, None, None], z + v * dt, z)
            x = adapter.denoise_step(x, timesteps[i], timesteps[i + 1], cond)
    torch.testing.assert_close(x, z, rtol=1e-5, atol=1e-5)
    assert adapter.decode_latents(x).shape == (1, 17, 3, 32, 32)


def test_dpo_and_reward_feedback_train_only_lora_and_the_lora_reloads(fake_opensora, image, tmp_path):
    from icreward.rewards import CallableReward
    from icreward.trainers.reward_feedback_config import RewardFeedbackConfig
    from icreward.trainers.reward_feedback_trainer import RewardFeedbackTrainer
    from icreward.trainers.video_dpo_config import VideoDPOConfig
    from icreward.trainers.video_dpo_trainer import VideoDPOTrainer
    from icreward.video import write_video

    rng = np.random.RandomState(0)
    image.save(tmp_path / "image.png")
    rows = []
    for i in range(2):
        for kind in ("chosen", "rejected"):
            write_video(
                tmp_path / f"{kind}_{i}.mp4", torch.from_numpy((rng.rand(17, 3, 32, 32) * 255).astype(np.uint8))
            )
        rows.append(
            {
                "image": str(tmp_path / "image.png"),
                "prompt": "a cat",
                "chosen": str(tmp_path / f"chosen_{i}.mp4"),
                "rejected": str(tmp_path / f"rejected_{i}.mp4"),
            }
        )
    common = dict(report_to="none", use_cpu=True, disable_tqdm=True, save_strategy="no", seed=0, **SIZE)
    adapter = _adapter(fake_opensora)
    frozen = {k: v.clone() for k, v in adapter.pipeline.model.state_dict().items()}
    dpo = VideoDPOTrainer(
        model=adapter,
        args=VideoDPOConfig(
            output_dir=str(tmp_path / "dpo"),
            per_device_train_batch_size=2,
            max_steps=2,
            learning_rate=1e-2,
            precompute_latents=False,
            plot_preference_curves=False,
            **common,
        ),
        train_dataset=rows,
        peft_config=LORA,
    )
    lora = {n: p.detach().clone() for n, p in adapter.pipeline.model.named_parameters() if "lora_" in n}
    dpo.train()
    after = {n: p.detach().clone() for n, p in adapter.pipeline.model.named_parameters() if "lora_" in n}
    assert lora and all(not torch.equal(lora[k], after[k]) for k in lora)
    for key, value in adapter.pipeline.model.state_dict().items():
        if "lora_" not in key:
            torch.testing.assert_close(value, frozen[key.replace(".base_layer", "")], rtol=0, atol=0)
    assert adapter.save_lora_weights(tmp_path / "lora") == ["pytorch_lora_weights.safetensors"]
    dpo.save_model()  # LoRA file and model card through the trainer
    assert (tmp_path / "dpo" / "pytorch_lora_weights.safetensors").is_file()
    assert "open-sora-1.2" in (tmp_path / "dpo" / "README.md").read_text()

    fresh = _adapter(fake_opensora)
    fresh.add_lora(LORA)
    fresh.load_lora_weights(tmp_path / "lora")
    cond = adapter.prepare_conditions([image], ["a cat"], **SIZE)
    x, t = torch.randn(1, 4, 5, 4, 4), torch.tensor([600.0])
    with torch.no_grad():
        torch.testing.assert_close(fresh.predict(x, t, cond), adapter.predict(x, t, cond), rtol=1e-5, atol=1e-5)

    rf = RewardFeedbackTrainer(
        model=fresh,
        reward_funcs=CallableReward(lambda video: video.mean(dim=(1, 2, 3, 4)), name="brightness"),
        args=RewardFeedbackConfig(
            output_dir=str(tmp_path / "rf"),
            num_inference_steps=3,
            truncated_backprop_steps=1,
            per_device_train_batch_size=1,
            max_steps=1,
            learning_rate=1e-2,
            **common,
        ),
        train_dataset=[{"image": image, "prompt": "a cat"}],
        peft_config=None,  # keeps training the LoRA it carries
    )
    before = {n: p.detach().clone() for n, p in fresh.pipeline.model.named_parameters() if "lora_" in n}
    rf.train()
    changed = [n for n, p in fresh.pipeline.model.named_parameters() if "lora_" in n and not torch.equal(p, before[n])]
    assert changed


def test_components_need_a_module_model():
    with pytest.raises(ValueError, match="no 'vae'"):
        OpenSoraAdapter(OpenSoraComponents(model=nn.Linear(1, 1), vae=None, text_encoder=object()))
    with pytest.raises(TypeError, match="nn.Module"):
        OpenSoraAdapter(OpenSoraComponents(model=object(), vae=object(), text_encoder=object()))
