"""The checkpointed, chunked differentiable VAE decode equals the plain decode (values and input gradients) on the
real diffusers VAE classes of the tiny pipelines, and keeps fewer saved activations."""

import pytest
import torch

from icreward.adapters.differentiable_decode import (
    checkpointed_cogvideox_decode,
    checkpointed_wan_decode,
    differentiable_decode,
    supports_checkpointed_decode,
)
from icreward.testing import tiny_pipelines


def _saved_bytes(fn, module):
    """Unique bytes saved for backward by ``fn()`` (the module's parameters excluded) and ``fn``'s output."""
    excluded = {p.untyped_storage()._cdata for p in module.parameters()}
    saved = {}

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in excluded:
            saved[key] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(saved.values()), out


def _wan_vae():
    return tiny_pipelines._tiny_wan_vae(0).double()


def _ti2v_vae():
    from icreward.testing import tiny_families_wan_hunyuan as fam

    return fam._tiny_ti2v_vae(0).double()


def _cogvideox_vae():
    return tiny_pipelines.tiny_cogvideox_i2v_pipeline(0).vae.double()


def _compare(vae, z, decode, **kwargs):
    weight = torch.randn_like(vae.decode(z).sample)
    z_plain = z.clone().requires_grad_(True)
    plain = vae.decode(z_plain).sample
    (grad_plain,) = torch.autograd.grad((plain * weight).sum(), z_plain)
    z_ckpt = z.clone().requires_grad_(True)
    ckpt = decode(vae, z_ckpt, **kwargs)
    (grad_ckpt,) = torch.autograd.grad((ckpt * weight).sum(), z_ckpt)
    assert ckpt.shape == plain.shape
    assert (ckpt - plain).abs().max().item() <= 1e-5
    assert grad_plain.abs().max().item() > 0
    assert (grad_ckpt - grad_plain).abs().max().item() <= 1e-5
    return grad_plain


@pytest.mark.parametrize("frames_per_chunk", [1, 3])
def test_wan_decode_equals_plain_values_and_gradients(frames_per_chunk):
    vae = _wan_vae()
    torch.manual_seed(0)
    z = torch.randn(2, 16, 4, 4, 4, dtype=torch.float64)  # 4 latent frames -> 17 video frames
    grad = _compare(vae, z, checkpointed_wan_decode, frames_per_chunk=frames_per_chunk)
    # the causal cache carries gradient: a late output frame depends on earlier latent frames
    z_late = z.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(
        checkpointed_wan_decode(vae, z_late, frames_per_chunk=frames_per_chunk)[:, :, -1].sum(), z_late
    )
    assert g[:, :, 0].abs().max().item() > 0
    assert grad.shape == z.shape


def test_wan22_residual_vae_with_patches_equals_plain():
    vae = _ti2v_vae()
    torch.manual_seed(1)
    z = torch.randn(1, vae.config.z_dim, 3, 2, 2, dtype=torch.float64)
    _compare(vae, z, checkpointed_wan_decode, frames_per_chunk=1)


@pytest.mark.parametrize("num_latent_frames", [3, 4])
def test_cogvideox_decode_equals_plain_values_and_gradients(num_latent_frames):
    vae = _cogvideox_vae()
    torch.manual_seed(2)
    z = torch.randn(1, 4, num_latent_frames, 4, 4, dtype=torch.float64)
    _compare(vae, z, checkpointed_cogvideox_decode)


def test_trainable_vae_parameters_get_the_plain_gradients():
    vae = _wan_vae().requires_grad_(True)
    torch.manual_seed(3)
    z = torch.randn(1, 16, 3, 4, 4, dtype=torch.float64)
    params = [p for p in vae.decoder.parameters()]
    plain = torch.autograd.grad(vae.decode(z).sample.square().sum(), params)
    ckpt = torch.autograd.grad(checkpointed_wan_decode(vae, z).square().sum(), params)
    assert max((a - b).abs().max().item() for a, b in zip(plain, ckpt, strict=True)) <= 1e-8


@pytest.mark.parametrize("build", [_wan_vae, _cogvideox_vae])
def test_checkpointed_decode_saves_fewer_activations(build):
    vae = build()
    torch.manual_seed(4)
    z = torch.randn(1, vae.config.get("z_dim", vae.config.get("latent_channels")), 8, 4, 4, dtype=torch.float64)
    z.requires_grad_(True)
    plain_bytes, _ = _saved_bytes(lambda: vae.decode(z).sample, vae)
    ckpt_bytes, _ = _saved_bytes(lambda: differentiable_decode(vae, z), vae)
    assert supports_checkpointed_decode(vae)
    # what stays saved is each chunk's input slice and incoming cache; the plain decode keeps every activation
    assert ckpt_bytes < plain_bytes / 3, (ckpt_bytes, plain_bytes)


def test_no_grad_and_tiled_use_the_plain_decode():
    vae = _wan_vae()
    z = torch.randn(1, 16, 2, 4, 4, dtype=torch.float64)
    with torch.no_grad():
        assert torch.equal(differentiable_decode(vae, z), vae.decode(z).sample)
    vae.enable_tiling()
    assert not supports_checkpointed_decode(vae)
