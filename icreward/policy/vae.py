"""A fixed, invertible pixel codec with the interface of diffusers' ``AutoencoderKLWan``.

Training Wan's 3D causal VAE from scratch is the bottleneck of a CPU-sized image-to-video policy, so the shipped
tiny policy (:mod:`icreward.policy`) replaces it with a parameter-free codec that the Wan pipeline and every
adapter path use exactly as they use ``AutoencoderKLWan``: ``config.z_dim``, ``config.scale_factor_temporal``,
``config.scale_factor_spatial``, ``config.latents_mean`` / ``config.latents_std``, ``encode(x).latent_dist.mode()``
and ``decode(z, return_dict=False)[0]``.

Layout (``t = scale_factor_temporal``, ``s = scale_factor_spatial``, input ``(B, 3, 1 + t k, H, W)`` in ``[-1, 1]``):

* latent frame 0 is pixel frame 0, repeated ``t`` times on the channel axis (Wan's VAE also keeps frame 0 alone);
* latent frame ``j >= 1`` packs pixel frames ``1 + t (j - 1) .. t j`` on the channel axis, each stored as its
  **difference from frame 0**, multiplied by ``residual_scale`` ("first-frame anchored", as a codec's predicted
  frames are coded against a key frame);
* ``s x s`` pixel blocks go to channels (pixel unshuffle), so ``z_dim = 3 t s^2``.

Decoding inverts this exactly (frame 0 is the mean of its ``t`` copies, later frames add their residual back to
it). Because frames are coded against frame 0, a denoiser that cannot yet predict the motion falls back to
near-zero residuals, i.e. to a still copy of its own frame 0, instead of to unstructured noise.
"""

from __future__ import annotations

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput
from diffusers.models.modeling_utils import ModelMixin
from torch.nn import functional as F

__all__ = ["FrameAnchoredPixelVAE"]


class _DecoderOutput(tuple):
    """``decode(z, return_dict=True).sample``; a 1-tuple otherwise (what the Wan pipeline indexes)."""

    @property
    def sample(self) -> torch.Tensor:
        return self[0]


class FrameAnchoredPixelVAE(ModelMixin, ConfigMixin):
    """Parameter-free stand-in for ``AutoencoderKLWan`` (see the module docstring).

    Args:
        scale_factor_temporal: pixel frames per latent frame after frame 0 (Wan: 4).
        scale_factor_spatial: pixel block side packed into channels (1: pixel space).
        residual_scale: gain applied to the frame-0 differences so that they span a range similar to frame 0.
        latents_mean, latents_std: per-channel normalisation the pipelines and adapters apply (length ``z_dim``).
        z_dim: optional; must equal ``3 * scale_factor_temporal * scale_factor_spatial ** 2`` (stored in the config,
            where the Wan pipeline reads it).
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        scale_factor_temporal: int = 4,
        scale_factor_spatial: int = 1,
        residual_scale: float = 4.0,
        latents_mean: list[float] | None = None,
        latents_std: list[float] | None = None,
        z_dim: int | None = None,
    ):
        super().__init__()
        if scale_factor_temporal < 1 or scale_factor_spatial < 1:
            raise ValueError(
                f"scale factors must be >= 1, got temporal={scale_factor_temporal}, spatial={scale_factor_spatial}"
            )
        if residual_scale <= 0:
            raise ValueError(f"residual_scale must be > 0, got {residual_scale}")
        expected = 3 * scale_factor_temporal * scale_factor_spatial**2
        if z_dim is not None and z_dim != expected:
            raise ValueError(f"z_dim is fixed by the scale factors: 3 * t * s^2 = {expected}, got {z_dim}")
        z_dim = expected
        self.register_to_config(z_dim=z_dim)
        for name, value in (("latents_mean", latents_mean), ("latents_std", latents_std)):
            if value is not None and len(value) != z_dim:
                raise ValueError(f"{name} must have z_dim={z_dim} entries, got {len(value)}")
        if latents_mean is None:
            self.register_to_config(latents_mean=[0.0] * z_dim)
        if latents_std is None:
            self.register_to_config(latents_std=[1.0] * z_dim)
        if any(v <= 0 for v in self.config.latents_std):
            raise ValueError("latents_std must be positive")
        # The residual gain as a frozen parameter: it gives the codec a device and dtype, which diffusers and the
        # library's latent cache read from a VAE's parameters (it is never trained).
        self.residual_gain = torch.nn.Parameter(torch.tensor(float(residual_scale)), requires_grad=False)

    # ------------------------------------------------------------------------------------------------ codec
    def _pack_spatial(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, C s^2, H/s, W/s)
        s = self.config.scale_factor_spatial
        return x if s == 1 else F.pixel_unshuffle(x, s)

    def _unpack_spatial(self, x: torch.Tensor) -> torch.Tensor:
        s = self.config.scale_factor_spatial
        return x if s == 1 else F.pixel_shuffle(x, s)

    def encode_latents(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, 3, 1 + t k, H, W)`` -> ``(B, z_dim, 1 + k, H / s, W / s)`` (the posterior mode; exact)."""
        t, s = self.config.scale_factor_temporal, self.config.scale_factor_spatial
        if x.ndim != 5 or x.shape[1] != 3:
            raise ValueError(f"expected videos (B, 3, F, H, W), got {tuple(x.shape)}")
        b, _, f, h, w = x.shape
        if (f - 1) % t:
            raise ValueError(f"num_frames must be {t}k + 1, got {f}")
        if h % s or w % s:
            raise ValueError(f"height/width must be divisible by {s}, got {h}x{w}")
        first = x[:, :, 0]
        latents = [self._pack_spatial(first).repeat(1, t, 1, 1)]
        rest = (x[:, :, 1:] - first[:, :, None]) * self.residual_gain  # (B, 3, t k, H, W)
        for j in range((f - 1) // t):
            group = rest[:, :, j * t : (j + 1) * t].transpose(1, 2).reshape(b, 3 * t, h, w)  # frame-major
            packed = group.reshape(b * t, 3, h, w)
            packed = self._pack_spatial(packed).reshape(b, -1, h // s, w // s)
            latents.append(packed)
        return torch.stack(latents, dim=2)

    def decode_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Exact inverse of :meth:`encode_latents` (frame 0 = mean of its ``t`` copies)."""
        t, s = self.config.scale_factor_temporal, self.config.scale_factor_spatial
        if z.ndim != 5 or z.shape[1] != self.config.z_dim:
            raise ValueError(f"expected latents (B, {self.config.z_dim}, F', h, w), got {tuple(z.shape)}")
        b, c, k, h, w = z.shape
        per_frame = c // t
        first = self._unpack_spatial(z[:, :, 0].reshape(b * t, per_frame, h, w)).view(b, t, 3, h * s, w * s)
        first = first.mean(dim=1)
        frames = [first]
        for j in range(1, k):
            group = self._unpack_spatial(z[:, :, j].reshape(b * t, per_frame, h, w)).view(b, t, 3, h * s, w * s)
            for i in range(t):
                frames.append(first + group[:, i] / self.residual_gain)
        return torch.stack(frames, dim=2)

    # ------------------------------------------------------------------------------------ AutoencoderKLWan API
    def encode(self, x: torch.Tensor, return_dict: bool = True):
        mean = self.encode_latents(x)
        # A point-mass posterior: mode() and sample() both return the exact code.
        posterior = DiagonalGaussianDistribution(torch.cat([mean, torch.zeros_like(mean)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True):
        video = self.decode_latents(z)
        return _DecoderOutput((video,)) if return_dict else (video,)

    def forward(self, sample: torch.Tensor, return_dict: bool = True):
        return self.decode(self.encode_latents(sample), return_dict=return_dict)

    # Methods the Wan pipelines may call on AutoencoderKLWan; the codec has no tiling or slicing to toggle.
    def enable_tiling(self, *args, **kwargs) -> None:
        return None

    def disable_tiling(self) -> None:
        return None

    def enable_slicing(self) -> None:
        return None

    def disable_slicing(self) -> None:
        return None
