"""Pretrain a tiny image-to-video policy on real clips: a real ``WanImageToVideoPipeline`` sized for a CPU.

By default the policy is built as Wan 2.2 TI2V-5B is (``expand_timesteps=True``: the first latent frame is the
reference image's latent, every other frame is generated, per-token timesteps, no CLIP branch), with a small
``WanTransformer3DModel`` and the parameter-free :class:`~icreward.policy.vae.FrameAnchoredPixelVAE` in place of
``AutoencoderKLWan`` (48 latent channels, as TI2V-5B's VAE). ``--conditioning i2v`` builds the Wan 2.1/2.2 I2V layout
instead (mask + image-latent channels). It is trained with rectified flow through the library's own adapter
(:class:`~icreward.adapters.WanTI2VAdapter` or :class:`~icreward.adapters.WanI2VAdapter`: ``prepare_latents``,
``encode_image_condition``, ``add_noise``, ``predict``, ``target``), so every adapter and trainer path of the
library runs on it unchanged.

    icreward pretrain-policy --output_dir outputs/policy --max_seconds 3600

Checkpoints (``checkpoint-<step>/``: transformer and AdamW state as safetensors, ``trainer_state.json``) are
written every ``checkpoint_every`` steps; running the same command again resumes from the last one. The batch of
step ``k`` is drawn from a generator seeded with ``(seed, k)``, so a resumed run sees the batches an uninterrupted
one would.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import re
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

logger = logging.getLogger(__name__)

__all__ = [
    "PolicyPretrainingConfig",
    "build_policy_pipeline",
    "load_checkpoint_policy",
    "load_policy_from_folder",
    "main",
    "pretrain_policy",
    "random_policy_like",
    "save_policy",
    "write_policy_card",
]

#: Prompts the policy is trained with (one per sample, at random): the real clips have no captions, so the text
#: branch learns to carry no information and any prompt gives the same kind of video.
TRAINING_PROMPTS: tuple[str, ...] = (
    "a video",
    "a video of the scene, the camera moves slowly",
    "a video of a person",
    "a video of an animal",
    "a video of the object, the camera moves slowly",
    "the camera moves",
    "a person walks",
    "a cat moves",
    "",
)


@dataclass
class PolicyPretrainingConfig:
    """Every knob of :func:`pretrain_policy`; each field is a flag of ``icreward pretrain-policy``."""

    output_dir: str = field(default="outputs/policy", metadata={"help": "Checkpoints and the final policy go here."})
    size: int = field(default=48, metadata={"help": "Frame side in pixels (divisible by the patch size, 4)."})
    num_frames: int = field(default=9, metadata={"help": "Frames per training window (4k + 1)."})
    decode_size: int = field(default=54, metadata={"help": "Clips are decoded at this side, then randomly cropped."})
    max_clip_frames: int = field(default=96, metadata={"help": "Frames decoded per clip (from its start)."})
    max_stride: int = field(default=3, metadata={"help": "Largest temporal stride of a training window."})
    # architecture
    num_layers: int = field(default=4, metadata={"help": "Transformer blocks."})
    num_attention_heads: int = field(default=4, metadata={"help": "Attention heads."})
    attention_head_dim: int = field(default=32, metadata={"help": "Width of each head."})
    ffn_dim: int = field(default=512, metadata={"help": "Feed-forward width."})
    residual_scale: float = field(default=4.0, metadata={"help": "Codec gain of the frame-0 differences."})
    conditioning: str = field(
        default="ti2v",
        metadata={
            "help": "'ti2v': Wan 2.2 TI2V-5B-style (expand_timesteps: frame 0's latent is the reference's, per-token "
            "timesteps; WanTI2VAdapter) or 'i2v': Wan 2.1/2.2 I2V-style (mask + image-latent channels; WanI2VAdapter)."
        },
    )
    # optimisation
    max_steps: int = field(
        default=100_000, metadata={"help": "Optimisation steps (the time budget usually ends first)."}
    )
    max_seconds: float = field(default=3600.0, metadata={"help": "Wall-clock training budget, summed over resumes."})
    batch_size: int = field(default=16, metadata={"help": "Windows per step."})
    learning_rate: float = field(default=1e-3, metadata={"help": "Peak AdamW learning rate."})
    warmup_steps: int = field(default=100, metadata={"help": "Linear warm-up steps."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm."})
    timestep_sampling: str = field(default="logit_normal", metadata={"help": "'uniform' or 'logit_normal'."})
    bf16: bool = field(default=False, metadata={"help": "bfloat16 autocast for the transformer forward."})
    checkpoint_every: int = field(default=200, metadata={"help": "Save a resumable checkpoint every N steps."})
    keep_checkpoints: int = field(default=2, metadata={"help": "Most recent checkpoints kept."})
    num_threads: int = field(default=2, metadata={"help": "torch CPU threads."})
    device: str = field(default="cuda" if torch.cuda.is_available() else "cpu", metadata={"help": "Device."})
    seed: int = field(default=0, metadata={"help": "Seed of the initialisation and of every batch."})
    max_train_clips: int | None = field(default=None, metadata={"help": "Use only the first N training clips."})

    def __post_init__(self):
        if (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 4k + 1, got {self.num_frames}")
        if self.size % 4:
            raise ValueError(f"size must be divisible by 4 (the patch size), got {self.size}")
        if self.decode_size < self.size:
            raise ValueError(f"decode_size ({self.decode_size}) must be >= size ({self.size})")
        if self.conditioning not in ("ti2v", "i2v"):
            raise ValueError(f"conditioning must be 'ti2v' or 'i2v', got {self.conditioning!r}")
        if self.timestep_sampling not in ("uniform", "logit_normal"):
            raise ValueError(f"timestep_sampling must be 'uniform' or 'logit_normal', got {self.timestep_sampling!r}")

    def architecture(self) -> dict[str, Any]:
        return {
            "num_layers": self.num_layers,
            "num_attention_heads": self.num_attention_heads,
            "attention_head_dim": self.attention_head_dim,
            "ffn_dim": self.ffn_dim,
            "residual_scale": self.residual_scale,
            "conditioning": self.conditioning,
        }


def build_policy_pipeline(
    *,
    num_layers: int = 4,
    num_attention_heads: int = 4,
    attention_head_dim: int = 32,
    ffn_dim: int = 512,
    residual_scale: float = 4.0,
    conditioning: str = "ti2v",
    latents_mean: Sequence[float] | None = None,
    latents_std: Sequence[float] | None = None,
    seed: int = 0,
):
    """A randomly initialised policy: ``WanImageToVideoPipeline`` with a pixel-space transformer, the
    frame-anchored pixel codec, the offline tiny UMT5 text encoder and Wan's flow-matching scheduler (shift 3).

    ``conditioning="ti2v"`` (default) builds it as Wan 2.2 TI2V-5B is built: ``expand_timesteps=True``, the codec packs
    2x2 pixels (48 latent channels, as TI2V-5B's VAE), the transformer reads only the latents (patch 1x2x2: the
    pipeline's per-token timesteps assume a 2x2 patch). ``"i2v"`` builds the Wan 2.1/2.2 I2V layout: pixel-space
    codec (12 channels) and a transformer reading latents + 4 mask channels + image latents (patch 1x4x4)."""
    if conditioning not in ("ti2v", "i2v"):
        raise ValueError(f"conditioning must be 'ti2v' or 'i2v', got {conditioning!r}")
    ti2v = conditioning == "ti2v"
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel

    from ..testing.tiny_pipelines import build_tiny_tokenizer
    from .vae import FrameAnchoredPixelVAE

    vae = FrameAnchoredPixelVAE(
        scale_factor_temporal=4,
        scale_factor_spatial=2 if ti2v else 1,
        residual_scale=residual_scale,
        latents_mean=None if latents_mean is None else list(map(float, latents_mean)),
        latents_std=None if latents_std is None else list(map(float, latents_std)),
    )
    z_dim = vae.config.z_dim
    tokenizer = build_tiny_tokenizer()
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer),
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=32,
            dropout_rate=0.0,
            feed_forward_proj="gated-gelu",
        )
    ).eval()
    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2) if ti2v else (1, 4, 4),
        num_attention_heads=num_attention_heads,
        attention_head_dim=attention_head_dim,
        # TI2V: the latents alone (frame 0 is the reference's latent); I2V: noisy latents + mask + image latents
        in_channels=z_dim if ti2v else 2 * z_dim + vae.config.scale_factor_temporal,
        out_channels=z_dim,
        text_dim=32,
        freq_dim=256,
        ffn_dim=ffn_dim,
        num_layers=num_layers,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=256,
        image_dim=None,
    )
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        expand_timesteps=ti2v,
    )


def save_policy(pipeline, directory: str | os.PathLike) -> Path:
    """Save the policy's components (configs as JSON, weights as safetensors) under ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pipeline.transformer.save_pretrained(directory / "transformer", safe_serialization=True)
    pipeline.text_encoder.save_pretrained(directory / "text_encoder", safe_serialization=True)
    pipeline.scheduler.save_pretrained(directory / "scheduler")
    (directory / "vae").mkdir(exist_ok=True)
    pipeline.vae.save_config(directory / "vae")
    return directory


def load_policy_from_folder(directory: str | os.PathLike, torch_dtype: torch.dtype | None = None):
    """Load a policy saved by :func:`save_policy` as a ``WanImageToVideoPipeline`` (safetensors only)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, WanImageToVideoPipeline, WanTransformer3DModel
    from transformers import UMT5EncoderModel

    from ..testing.tiny_pipelines import build_tiny_tokenizer
    from .vae import FrameAnchoredPixelVAE

    directory = Path(directory)
    for part in ("transformer", "text_encoder", "scheduler", "vae"):
        if not (directory / part).is_dir():
            raise FileNotFoundError(f"{directory} is not a saved policy: no {part}/ folder")
    kwargs = {} if torch_dtype is None else {"torch_dtype": torch_dtype}
    transformer = WanTransformer3DModel.from_pretrained(directory / "transformer", use_safetensors=True, **kwargs)
    text_encoder = UMT5EncoderModel.from_pretrained(directory / "text_encoder", use_safetensors=True, **kwargs)
    vae = FrameAnchoredPixelVAE.from_config(FrameAnchoredPixelVAE.load_config(directory / "vae"))
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(directory / "scheduler")
    # TI2V-style policies read the latents alone; I2V-style ones also the mask and image-latent channels.
    ti2v = transformer.config.in_channels == vae.config.z_dim
    return WanImageToVideoPipeline(
        tokenizer=build_tiny_tokenizer(),
        text_encoder=text_encoder.eval(),
        vae=vae,
        scheduler=scheduler,
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        expand_timesteps=ti2v,
    )


def load_checkpoint_policy(checkpoint: str | os.PathLike):
    """A policy from a training checkpoint folder (``checkpoint-<step>/`` of :func:`pretrain_policy`)."""
    from safetensors.torch import load_file

    checkpoint = Path(checkpoint)
    state_file = checkpoint / "trainer_state.json"
    if not state_file.is_file():
        raise FileNotFoundError(f"{checkpoint} is not a policy checkpoint: no trainer_state.json")
    state = json.loads(state_file.read_text())
    pipe = build_policy_pipeline(
        **state["config"]["architecture"],
        latents_mean=state["latents_mean"],
        latents_std=state["latents_std"],
        seed=state["config"]["seed"],
    )
    pipe.transformer.load_state_dict(load_file(checkpoint / "transformer.safetensors"))
    pipe.transformer.eval()
    return pipe


def random_policy_like(pipeline, seed: int = 0):
    """The same pipeline with a freshly initialised (random-weight) transformer: the codec, text encoder and
    scheduler are shared. The baseline "what pretraining starts from" (seeded as :func:`build_policy_pipeline`)."""
    from diffusers import WanImageToVideoPipeline, WanTransformer3DModel

    torch.manual_seed(seed + 1)
    transformer = WanTransformer3DModel.from_config(pipeline.transformer.config).eval()
    pipe = WanImageToVideoPipeline(
        tokenizer=pipeline.tokenizer,
        text_encoder=pipeline.text_encoder,
        vae=pipeline.vae,
        scheduler=pipeline.scheduler,
        image_processor=None,
        image_encoder=None,
        transformer=transformer,
        expand_timesteps=bool(pipeline.config.expand_timesteps),
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# ------------------------------------------------------------------------------------------------------ training
def _latent_statistics(videos: Sequence[np.ndarray], config: PolicyPretrainingConfig) -> tuple[list, list]:
    """Per-channel mean/std of the codec's latents on 256 training windows (stored in the VAE config, as
    ``AutoencoderKLWan`` stores ``latents_mean`` / ``latents_std``)."""
    from .data import sample_windows
    from .vae import FrameAnchoredPixelVAE

    vae = FrameAnchoredPixelVAE(
        residual_scale=config.residual_scale, scale_factor_spatial=2 if config.conditioning == "ti2v" else 1
    )
    rng = np.random.default_rng([config.seed, 10**9])
    windows = sample_windows(videos, 256, config.num_frames, config.size, rng, max_stride=config.max_stride)
    x = torch.from_numpy(windows).float().div(255).mul(2).sub(1).permute(0, 4, 1, 2, 3)
    z = vae.encode_latents(x)
    mean = z.mean(dim=(0, 2, 3, 4))
    std = z.std(dim=(0, 2, 3, 4)).clamp(min=1e-3)
    return mean.tolist(), std.tolist()


def _checkpoints(output_dir: Path) -> list[Path]:
    found = [p for p in output_dir.glob("checkpoint-*") if re.fullmatch(r"checkpoint-\d+", p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def _optimizer_tensors(optimizer: torch.optim.Optimizer, names: dict[int, str]) -> dict[str, torch.Tensor]:
    tensors = {}
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for key, value in state.items():
                tensors[f"{names[id(param)]}::{key}"] = torch.as_tensor(value).detach().clone().contiguous()
    return tensors


def _load_optimizer_tensors(optimizer, names: dict[int, str], tensors: dict[str, torch.Tensor]) -> None:
    for group in optimizer.param_groups:
        for param in group["params"]:
            name = names[id(param)]
            state = {k.split("::", 1)[1]: v for k, v in tensors.items() if k.split("::", 1)[0] == name}
            if not state:
                raise ValueError(f"optimizer checkpoint has no state for parameter {name}")
            optimizer.state[param] = {k: v.to(param.device) for k, v in state.items()}


def pretrain_policy(
    config: PolicyPretrainingConfig, *, packages: Sequence[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Pretrain (or resume) the policy; writes ``<output_dir>/policy/`` and ``<output_dir>/training_log.json``.

    ``packages``: the media wheels to read (default: the five training wheels of
    :data:`~icreward.data.generated_clips.DEFAULT_MEDIA_PACKAGES`). Returns the training summary (steps, seconds,
    clips, final loss).
    """
    from safetensors.torch import load_file, save_file
    from tqdm.auto import tqdm

    from ..adapters import get_adapter
    from .data import load_clip_corpus, sample_windows

    torch.set_num_threads(config.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus = load_clip_corpus(
        "train",
        config.decode_size,
        max_frames=config.max_clip_frames,
        limit=config.max_train_clips,
        packages=packages,
        progress=progress,
    )
    windows_ok = [v for v in corpus.videos if v.shape[0] >= config.num_frames]
    if not windows_ok:
        raise ValueError("no training clip has enough frames")
    checkpoints = _checkpoints(output_dir)
    state: dict[str, Any] = {"step": 0, "seconds": 0.0, "losses": []}
    if checkpoints:
        last = checkpoints[-1]
        state = json.loads((last / "trainer_state.json").read_text())
        if state.get("config", {}).get("architecture") != config.architecture():
            raise ValueError(f"{last} was trained with another architecture: {state.get('config')}")
        latents_mean, latents_std = state["latents_mean"], state["latents_std"]
    else:
        latents_mean, latents_std = _latent_statistics(windows_ok, config)
    pipe = build_policy_pipeline(
        **config.architecture(), latents_mean=latents_mean, latents_std=latents_std, seed=config.seed
    )
    pipe.set_progress_bar_config(disable=True)
    device = torch.device(config.device)
    pipe.to(device)
    adapter = get_adapter(pipe)  # WanTI2VAdapter or WanI2VAdapter; 512 text tokens, as the pipeline pads
    condition_key = "image_latents" if config.conditioning == "ti2v" else "condition"
    transformer = pipe.transformer
    transformer.train()
    params = {id(p): n for n, p in transformer.named_parameters()}
    optimizer = torch.optim.AdamW(
        transformer.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.99)
    )
    if checkpoints:
        last = checkpoints[-1]
        transformer.load_state_dict(load_file(last / "transformer.safetensors", device=str(device)))
        _load_optimizer_tensors(optimizer, params, load_file(last / "optimizer.safetensors", device=str(device)))
        logger.info("resumed from %s (step %d, %.0f s)", last, state["step"], state["seconds"])
    with torch.no_grad():
        prompt_embeds = adapter.encode_prompts(list(TRAINING_PROMPTS)).float()

    def lr_at(step: int) -> float:
        return config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps))

    def save_checkpoint(step: int) -> None:
        folder = output_dir / f"checkpoint-{step}"
        tmp = output_dir / f".tmp-checkpoint-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        save_file(
            {k: v.detach().contiguous() for k, v in transformer.state_dict().items()}, tmp / "transformer.safetensors"
        )
        save_file(_optimizer_tensors(optimizer, params), tmp / "optimizer.safetensors")
        payload = dict(state, config=_config_dict(config), latents_mean=latents_mean, latents_std=latents_std)
        (tmp / "trainer_state.json").write_text(json.dumps(payload, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        for old in _checkpoints(output_dir)[: -config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)

    bar = tqdm(
        total=config.max_steps, initial=state["step"], desc="pretraining policy", disable=not progress, unit="step"
    )
    start = time.perf_counter() - state["seconds"]
    step = state["step"]
    running = None
    while step < config.max_steps and time.perf_counter() - start < config.max_seconds:
        rng = np.random.default_rng([config.seed, step])
        windows = sample_windows(
            windows_ok, config.batch_size, config.num_frames, config.size, rng, max_stride=config.max_stride
        )
        videos = torch.from_numpy(windows).permute(0, 1, 4, 2, 3).contiguous()  # (B, F, 3, H, W) uint8
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        with torch.no_grad():
            latents = adapter.prepare_latents(videos.to(device))
            condition = adapter.encode_image_condition(
                list(videos[:, 0]), num_frames=config.num_frames, height=config.size, width=config.size
            )
            prompt_index = torch.from_numpy(rng.integers(len(TRAINING_PROMPTS), size=config.batch_size))
            conditions = {"prompt_embeds": prompt_embeds[prompt_index], condition_key: condition}
            noise = torch.randn(latents.shape, generator=generator).to(device)
            timesteps = adapter.sample_timesteps(
                config.batch_size, sampling=config.timestep_sampling, generator=generator, device=device
            )
            noisy = adapter.add_noise(latents, noise, timesteps)
            target = adapter.target(latents, noise, timesteps)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
            prediction = adapter.predict(noisy, timesteps, conditions)
        loss = torch.nn.functional.mse_loss(prediction.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), config.max_grad_norm)
        optimizer.step()
        step += 1
        value = float(loss.detach())
        running = value if running is None else 0.98 * running + 0.02 * value
        state["step"], state["seconds"] = step, time.perf_counter() - start
        if step % 10 == 0:
            state["losses"].append([step, round(state["seconds"], 1), running])
            bar.set_postfix(loss=f"{running:.4f}", s=f"{state['seconds']:.0f}")
        bar.update(1)
        if step % config.checkpoint_every == 0:
            save_checkpoint(step)
    bar.close()
    save_checkpoint(step)
    transformer.eval()
    pipe.to("cpu")
    save_policy(pipe, output_dir / "policy")
    summary = {
        "steps": step,
        "seconds": state["seconds"],
        "final_loss_ema": running,
        "num_train_clips": len(corpus),
        "num_rejected_clips": len(corpus.rejected),
        "train_clips": [f"{c.package}/{c.name}" for c in corpus.clips],
        "config": _config_dict(config),
        "torch": torch.__version__,
        "device": str(device),
    }
    (output_dir / "training_log.json").write_text(json.dumps(dict(summary, losses=state["losses"]), indent=1) + "\n")
    return summary


def _config_dict(config: PolicyPretrainingConfig) -> dict[str, Any]:
    values = dataclasses.asdict(config)
    values["architecture"] = config.architecture()
    return values


# ------------------------------------------------------------------------------------------------ command line
def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    parser = parser or argparse.ArgumentParser(
        prog="icreward pretrain-policy",
        description="Pretrain the tiny image-to-video policy (WanImageToVideoPipeline) on the real-clip corpus; "
        "rerun the same command to resume from the last checkpoint.",
    )
    for f in dataclasses.fields(PolicyPretrainingConfig):
        kwargs: dict[str, Any] = {"default": argparse.SUPPRESS, "help": f.metadata.get("help", "")}
        if f.type == "bool":
            kwargs["type"] = lambda s: s.strip().lower() in ("1", "true", "yes", "on")
        elif f.type == "int | None":
            kwargs["type"] = int
        else:
            kwargs["type"] = {"int": int, "float": float, "str": str}[f.type]
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """``icreward pretrain-policy [--output_dir DIR] [--max_seconds S] [...]``."""
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    config = PolicyPretrainingConfig(**vars(args))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    summary = pretrain_policy(config)
    print(
        f"trained {summary['steps']} steps in {summary['seconds']:.0f} s on {summary['num_train_clips']} clips; "
        f"policy: {Path(config.output_dir) / 'policy'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def write_policy_card(
    directory: str | os.PathLike, training_log: dict[str, Any], evaluation: dict[str, Any] | None = None
) -> Path:
    """Write ``README.md`` (model card) for a saved policy: command, seed, data, licence, training budget and, when
    given, the held-out evaluation of :func:`icreward.policy.evaluate.evaluate_policy`."""
    directory = Path(directory)
    config = training_log["config"]
    flags = " ".join(
        f"--{k} {v}"
        for k, v in config.items()
        if k not in ("architecture", "output_dir", "device") and v != getattr(PolicyPretrainingConfig, k, v)
    )
    lines = [
        "---",
        "license: mit",
        "library_name: diffusers",
        "pipeline_tag: image-to-video",
        "tags: [icreward, wan, image-to-video, tiny]",
        "---",
        "",
        "# icreward tiny image-to-video policy",
        "",
        "A `WanImageToVideoPipeline` sized for a CPU, "
        + (
            "built as Wan 2.2 TI2V-5B is (`expand_timesteps=True`: the first latent frame is the reference image's "
            "latent, per-token timesteps, no CLIP branch; adapter `WanTI2VAdapter`): a `WanTransformer3DModel` (patch "
            "1x2x2 over 2x2-packed pixels, "
            if config.get("conditioning", "ti2v") == "ti2v"
            else "built as Wan 2.1/2.2 I2V is (mask + image-latent channels; adapter `WanI2VAdapter`): a "
            "`WanTransformer3DModel` (patch 1x4x4 in pixel space, "
        )
        + f"{config['num_layers']} layers, {config['num_attention_heads']} heads x {config['attention_head_dim']}, "
        f"FFN {config['ffn_dim']}), the parameter-free `FrameAnchoredPixelVAE` in place of `AutoencoderKLWan` "
        "(frame 0 as is, later frames as differences from frame 0, 4 frames per latent frame), a tiny random-weight "
        "UMT5 text encoder (the clips have no captions: prompts carry no information) and Wan's flow-matching "
        "scheduler (shift 3). Load it with `icreward.policy.load_pretrained_policy()`.",
        "",
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
    if evaluation is not None:
        p, r, q = evaluation["policy"], evaluation["random"], evaluation["real"]
        lines += [
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
        for name, v in (("this policy", p), ("random-weight policy", r), ("real held-out clips", q)):
            lines.append(
                f"| {name} | {v['consistency']:.3f} ± {v['consistency_se']:.3f} | {v['first_frame_mse']:.4f} | "
                f"{v['motion']:.4f} |"
            )
        lines += [
            "",
            f"The policy covers {evaluation['fraction_of_gap']:.0%} of the consistency gap from the random-weight "
            "policy to real clips.",
            "",
        ]
    lines += [
        "## Limits",
        "",
        "32x32 pixels, 9 frames, a few minutes to an hour of CPU training: samples are blurry videos of the "
        "reference with some motion, good enough to measure whether best-of-N, DPO and reward feedback change "
        "consistency and motion; not a generator of usable videos.",
        "",
        "Licence: MIT (the training clips' licence; the code is icreward's).",
        "",
    ]
    path = directory / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
