"""The inconsistent variants of the generated-clip corpus (:mod:`icreward.data.generated_corpus`): their kinds and
labels (:func:`corpus_score`), the nearly static "frozen" camera, motion measurement and the rendering of each
variant on a clip's frames (:func:`perturb_frames`)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .stress_labels import drop_score
from .stress_render import gaussian_blur, hue_rotation, subject_mask
from .stress_suite import MAX_SCORE_DROP as _PHOTO_DROPS

__all__ = ["GENERATED_PERTURBATIONS", "MAX_SCORE_DROP", "corpus_score", "perturb_frames"]

#: Inconsistent variant kinds, in the order they are generated.
GENERATED_PERTURBATIONS: tuple[str, ...] = (
    "identity_change",
    "object_removal",
    "background_drift",
    "color_drift",
    "temporal_flicker",
    "blur_noise",
    "unrelated_video",
)

#: Score lost at severity 1: the photograph suite's drops, plus ``unrelated_video``.
MAX_SCORE_DROP: dict[str, float] = {
    **{kind: _PHOTO_DROPS[kind] for kind in GENERATED_PERTURBATIONS if kind in _PHOTO_DROPS},
    "unrelated_video": 0.95,
}

DONOR_KINDS = ("identity_change", "background_drift", "unrelated_video")
MOTION_SIZE = 64


def corpus_score(perturbation: str, severity: float) -> float:
    """``1 - severity * MAX_SCORE_DROP[perturbation]``, and 1 for consistent videos (severity 0)."""
    return drop_score(perturbation, severity, MAX_SCORE_DROP, GENERATED_PERTURBATIONS)


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).contiguous()


def measure_motion(frames: torch.Tensor, flow) -> float:
    """Path length, in frame widths, of the mean per-pixel optical flow between consecutive frames."""
    small = F.interpolate(frames, size=(MOTION_SIZE, MOTION_SIZE), mode="bilinear", antialias=True)
    with torch.no_grad():
        field = flow(small[:-1], small[1:])  # (T - 1, 2, h, w) in pixels
    return float(field.norm(dim=1).mean(dim=(1, 2)).sum() / MOTION_SIZE)


def still_reference(reference: torch.Tensor, num_frames: int, rng: np.random.Generator) -> torch.Tensor:
    """The reference held still with sub-pixel hand-held jitter (none on the first frame)."""
    shift = torch.zeros(num_frames, 2)
    shift[1:] = torch.from_numpy(rng.uniform(-0.004, 0.004, size=(num_frames - 1, 2))).float()
    theta = torch.zeros(num_frames, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = 2.0 * shift
    grid = F.affine_grid(theta, [num_frames, 3, *reference.shape[-2:]], align_corners=False)
    frames = reference[None].expand(num_frames, -1, -1, -1).contiguous()
    return F.grid_sample(frames, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def severity_ramp(num_frames: int, onset: int, severity: float) -> torch.Tensor:
    """Per-frame strength: 0 before ``onset``, growing linearly to ``severity`` on the last frame."""
    t = torch.arange(num_frames, dtype=torch.float32)
    return (((t - onset + 1) / max(num_frames - onset, 1)).clamp(0.0, 1.0) * severity).float()


def perturb_frames(
    frames: torch.Tensor,
    perturbation: str,
    severity: float,
    onset: int,
    *,
    donor: torch.Tensor | None = None,
    rng: np.random.Generator,
) -> torch.Tensor:
    """Apply one inconsistent variant to float ``(T, 3, S, S)`` frames in [0, 1]; frames before ``onset`` are kept.

    ``donor`` (``(T, 3, S, S)``, another clip's frames) is needed by ``identity_change``, ``background_drift`` and
    ``unrelated_video``.
    """
    num_frames, size = frames.shape[0], frames.shape[-1]
    if not 1 <= onset < num_frames:
        raise ValueError(f"onset must be in [1, {num_frames - 1}], got {onset}.")
    corpus_score(perturbation, severity)  # validates the kind and severity
    alpha = severity_ramp(num_frames, onset, severity)
    a = alpha[:, None, None, None]
    mask = subject_mask(size, size)[None, None]
    if perturbation in DONOR_KINDS:
        if donor is None or donor.shape != frames.shape:
            raise ValueError(f"{perturbation} needs donor frames of shape {tuple(frames.shape)}.")
        region = {"identity_change": mask, "background_drift": 1 - mask, "unrelated_video": torch.ones_like(mask)}
        weight = a * region[perturbation]
        return frames * (1 - weight) + donor * weight
    if perturbation == "object_removal":
        known = (mask < 0.01).float()
        sigma = 0.15 * size
        fill = gaussian_blur(frames * known, sigma) / gaussian_blur(known, sigma).clamp_min(1e-4)
        return frames * (1 - a * mask) + fill * (a * mask)
    if perturbation == "color_drift":
        hue = math.radians(150.0) * rng.choice([-1.0, 1.0])
        saturation = 0.6 * rng.choice([-1.0, 1.0])
        contrast = 0.3 * rng.choice([-1.0, 1.0])
        out = []
        for t in range(num_frames):
            x = torch.einsum("ij,jhw->ihw", hue_rotation(float(alpha[t]) * hue), frames[t])
            gray = x.mean(dim=0, keepdim=True)
            x = gray + (1.0 + float(alpha[t]) * saturation) * (x - gray)
            out.append((x - 0.5) * (1.0 + float(alpha[t]) * contrast) + 0.5)
        return torch.stack(out)
    if perturbation == "temporal_flicker":
        brightness = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(num_frames, 1))).float()
        tint = torch.from_numpy(rng.uniform(-1.0, 1.0, size=(num_frames, 3))).float()
        on = (alpha > 0).float()[:, None] * severity
        gain = (1.0 + 0.35 * on * brightness) * (1.0 + 0.12 * on * tint)
        return frames * gain[:, :, None, None]
    # blur_noise: blur, noise and block artefacts growing over time.
    out = []
    for t in range(num_frames):
        strength = float(alpha[t])
        frame = gaussian_blur(frames[t : t + 1], strength * 0.025 * size)
        if strength > 0.3:
            block = max(2, int(round(strength * 6)))
            coarse = F.avg_pool2d(frame, block, ceil_mode=True)
            frame = 0.5 * frame + 0.5 * F.interpolate(coarse, size=(size, size), mode="nearest")
        noise = torch.from_numpy(rng.standard_normal(frame.shape)).float()
        out.append(frame + strength * 0.1 * noise)
    return torch.cat(out)
