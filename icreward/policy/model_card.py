"""The model card (``README.md``) of a saved policy: command, seed, data, licence, budget and held-out evaluation."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["write_policy_card"]

_FRONT_MATTER = [
    "---",
    "license: mit",
    "library_name: diffusers",
    "pipeline_tag: image-to-video",
    "tags: [icreward, wan, image-to-video, tiny]",
    "---",
    "",
    "# icreward tiny image-to-video policy",
    "",
]

_LIMITS = [
    "## Limits",
    "",
    "32x32 pixels, 9 frames, a few minutes to an hour of CPU training: samples are blurry videos of the "
    "reference with some motion, good enough to measure whether best-of-N, DPO and reward feedback change "
    "consistency and motion; not a generator of usable videos.",
    "",
    "Licence: MIT (the training clips' licence; the code is icreward's).",
    "",
]


def _architecture_paragraph(config: dict[str, Any]) -> str:
    layout = (
        "built as Wan 2.2 TI2V-5B is (`expand_timesteps=True`: the first latent frame is the reference image's "
        "latent, per-token timesteps, no CLIP branch; adapter `WanTI2VAdapter`): a `WanTransformer3DModel` (patch "
        "1x2x2 over 2x2-packed pixels, "
        if config.get("conditioning", "ti2v") == "ti2v"
        else "built as Wan 2.1/2.2 I2V is (mask + image-latent channels; adapter `WanI2VAdapter`): a "
        "`WanTransformer3DModel` (patch 1x4x4 in pixel space, "
    )
    return (
        "A `WanImageToVideoPipeline` sized for a CPU, "
        + layout
        + f"{config['num_layers']} layers, {config['num_attention_heads']} heads x {config['attention_head_dim']}, "
        f"FFN {config['ffn_dim']}), the parameter-free `FrameAnchoredPixelVAE` in place of `AutoencoderKLWan` "
        "(frame 0 as is, later frames as differences from frame 0, 4 frames per latent frame), a tiny random-weight "
        "UMT5 text encoder (the clips have no captions: prompts carry no information) and Wan's flow-matching "
        "scheduler (shift 3). Load it with `icreward.policy.load_pretrained_policy()`."
    )


def _training_lines(training_log: dict[str, Any]) -> list[str]:
    from .pretrain import PolicyPretrainingConfig

    config = training_log["config"]
    flags = " ".join(
        f"--{k} {v}"
        for k, v in config.items()
        if k not in ("architecture", "output_dir", "device") and v != getattr(PolicyPretrainingConfig, k, v)
    )
    return [
        "## Training",
        "",
        f"- Command: `icreward pretrain-policy --output_dir <dir> {flags}`",
        f"- Seed: {config['seed']} (initialisation and every batch).",
        f"- Steps: {training_log['steps']} (batch {config['batch_size']}, AdamW lr {config['learning_rate']}, "
        f"warm-up {config['warmup_steps']}), {training_log['seconds']:.0f} s of wall-clock training on "
        f"{training_log['device']} with {config['num_threads']} torch threads (torch {training_log['torch']}).",
        f"- Data: {training_log['num_train_clips']} real generated clips (animated WebP) from the ComfyUI "
        "workflow-template media wheels `comfyui-workflow-templates-media-{api,assets-01,assets-02,image,other}` "
        f"(MIT licence); {training_log['num_rejected_clips']} clips rejected by `unusable_reason` (scene cuts, "
        "near-static, screens, side-by-side panels). Held out by clip: every clip whose SHA-1 of "
        "`package/stem` is 0 modulo 6 (`icreward.policy.data.is_held_out`); never trained on. The reserved "
        "`comfyui-workflow-templates-media-video` wheel was never read.",
        f"- Windows: {config['num_frames']} frames at {config['size']}x{config['size']} (clips centre-cropped, "
        f"decoded at {config['decode_size']} px and randomly cropped; temporal stride 1 to {config['max_stride']}; "
        "random horizontal flips); rectified-flow loss through the library's adapter (`icreward.adapters`).",
        "",
        "`references.safetensors` holds windows of the held-out clips (evaluation) and first frames of training "
        "clips (references for fine-tuning), at the policy's resolution, from the same MIT-licensed wheels.",
        "",
    ]


def _evaluation_lines(evaluation: dict[str, Any]) -> list[str]:
    lines = [
        "## Held-out evaluation",
        "",
        f"{evaluation['num_references']} held-out clips, one window each (reference = its first frame), one "
        f"sample per reference ({evaluation['sampling']['num_inference_steps']} steps, no guidance). "
        "Consistency: mean cosine of EfficientNet-Lite0 (ImageNet) pooled features of frames 1.. to the "
        "reference.",
        "",
        "| source | consistency | first-frame MSE | motion (mean abs. frame change) |",
        "|---|---|---|---|",
    ]
    sources = (
        ("this policy", evaluation["policy"]),
        ("random-weight policy", evaluation["random"]),
        ("real held-out clips", evaluation["real"]),
    )
    for name, v in sources:
        lines.append(
            f"| {name} | {v['consistency']:.3f} ± {v['consistency_se']:.3f} | {v['first_frame_mse']:.4f} | "
            f"{v['motion']:.4f} |"
        )
    return lines + [
        "",
        f"The policy covers {evaluation['fraction_of_gap']:.0%} of the consistency gap from the random-weight "
        "policy to real clips.",
        "",
    ]


def write_policy_card(
    directory: str | os.PathLike, training_log: dict[str, Any], evaluation: dict[str, Any] | None = None
) -> Path:
    """Write ``README.md`` (model card) for a saved policy: command, seed, data, licence, training budget and, when
    given, the held-out evaluation of :func:`icreward.policy.evaluate.evaluate_policy`."""
    lines = [*_FRONT_MATTER, _architecture_paragraph(training_log["config"]), "", *_training_lines(training_log)]
    if evaluation is not None:
        lines += _evaluation_lines(evaluation)
    lines += _LIMITS
    path = Path(directory) / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
