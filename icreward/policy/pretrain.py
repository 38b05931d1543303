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

import dataclasses
import json
import logging
import re
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .model_card import write_policy_card
from .pipeline import (
    build_policy_pipeline,
    load_checkpoint_policy,
    load_policy_from_folder,
    random_policy_like,
    save_policy,
)

logger = logging.getLogger(__name__)

__all__ = [
    "PolicyPretrainingConfig",
    "build_policy_pipeline",
    "load_checkpoint_policy",
    "load_policy_from_folder",
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
    attention_head_dim: int = field(
        default=64,
        metadata={
            "help": "Width of each head. Heads x width must be at least the 192 values a token predicts (4 frames x 3 "
            "colours x 2x2 packed pixels x 2x2 patch): a narrower transformer cannot remove the noise (a warning says so)."
        },
    )
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


def _load_training_windows(config: PolicyPretrainingConfig, packages: Sequence[str] | None, progress: bool):
    """The training clips (corpus) and those long enough for a window."""
    from .data import load_clip_corpus

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
    return corpus, windows_ok


@dataclass
class _Run:
    """What a pretraining run carries from step to step, and what its checkpoints save."""

    config: PolicyPretrainingConfig
    output_dir: Path
    pipe: Any
    adapter: Any
    optimizer: torch.optim.Optimizer
    param_names: dict[int, str]
    latents_mean: list
    latents_std: list
    prompt_embeds: torch.Tensor
    state: dict[str, Any]

    @property
    def transformer(self):
        return self.pipe.transformer

    def save_checkpoint(self, step: int) -> None:
        """Write ``checkpoint-<step>/`` atomically (a temporary folder renamed) and prune old checkpoints."""
        from safetensors.torch import save_file

        folder = self.output_dir / f"checkpoint-{step}"
        tmp = self.output_dir / f".tmp-checkpoint-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        weights = {k: v.detach().contiguous() for k, v in self.transformer.state_dict().items()}
        save_file(weights, tmp / "transformer.safetensors")
        save_file(_optimizer_tensors(self.optimizer, self.param_names), tmp / "optimizer.safetensors")
        payload = dict(
            self.state,
            config=_config_dict(self.config),
            latents_mean=self.latents_mean,
            latents_std=self.latents_std,
        )
        (tmp / "trainer_state.json").write_text(json.dumps(payload, indent=1) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        for old in _checkpoints(self.output_dir)[: -self.config.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)


def _start_run(config: PolicyPretrainingConfig, output_dir: Path, windows_ok: Sequence[np.ndarray]) -> _Run:
    """A fresh run, or the last checkpoint's (refused when it was trained with another architecture)."""
    from safetensors.torch import load_file

    from ..adapters import get_adapter

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
    transformer = pipe.transformer
    transformer.train()
    param_names = {id(p): n for n, p in transformer.named_parameters()}
    optimizer = torch.optim.AdamW(
        transformer.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay, betas=(0.9, 0.99)
    )
    if checkpoints:
        transformer.load_state_dict(load_file(last / "transformer.safetensors", device=str(device)))
        _load_optimizer_tensors(optimizer, param_names, load_file(last / "optimizer.safetensors", device=str(device)))
        logger.info("resumed from %s (step %d, %.0f s)", last, state["step"], state["seconds"])
    with torch.no_grad():
        prompt_embeds = adapter.encode_prompts(list(TRAINING_PROMPTS)).float()
    return _Run(
        config, output_dir, pipe, adapter, optimizer, param_names, latents_mean, latents_std, prompt_embeds, state
    )


def _training_step(run: _Run, windows_ok: Sequence[np.ndarray], step: int) -> float:
    """One rectified-flow step on the batch of ``step`` (drawn from a generator seeded ``(seed, step)``)."""
    from .data import sample_windows

    config, adapter = run.config, run.adapter
    device = torch.device(config.device)
    condition_key = "image_latents" if config.conditioning == "ti2v" else "condition"
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
        conditions = {"prompt_embeds": run.prompt_embeds[prompt_index], condition_key: condition}
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = adapter.sample_timesteps(
            config.batch_size, sampling=config.timestep_sampling, generator=generator, device=device
        )
        noisy = adapter.add_noise(latents, noise, timesteps)
        target = adapter.target(latents, noise, timesteps)
    for group in run.optimizer.param_groups:  # linear warm-up, then constant
        group["lr"] = config.learning_rate * min(1.0, (step + 1) / max(1, config.warmup_steps))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
        prediction = adapter.predict(noisy, timesteps, conditions)
    loss = torch.nn.functional.mse_loss(prediction.float(), target)
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(run.transformer.parameters(), config.max_grad_norm)
    run.optimizer.step()
    return float(loss.detach())


def pretrain_policy(
    config: PolicyPretrainingConfig, *, packages: Sequence[str] | None = None, progress: bool = True
) -> dict[str, Any]:
    """Pretrain (or resume) the policy; writes ``<output_dir>/policy/`` and ``<output_dir>/training_log.json``.

    ``packages``: the media wheels to read (default: the five training wheels of
    :data:`~icreward.data.generated_clips.DEFAULT_MEDIA_PACKAGES`). Returns the training summary (steps, seconds,
    clips, final loss).
    """
    from tqdm.auto import tqdm

    torch.set_num_threads(config.num_threads)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    corpus, windows_ok = _load_training_windows(config, packages, progress)
    run = _start_run(config, output_dir, windows_ok)
    state = run.state
    bar = tqdm(
        total=config.max_steps, initial=state["step"], desc="pretraining policy", disable=not progress, unit="step"
    )
    start = time.perf_counter() - state["seconds"]
    step = state["step"]
    running = None
    while step < config.max_steps and time.perf_counter() - start < config.max_seconds:
        value = _training_step(run, windows_ok, step)
        step += 1
        running = value if running is None else 0.98 * running + 0.02 * value
        state["step"], state["seconds"] = step, time.perf_counter() - start
        if step % 10 == 0:
            state["losses"].append([step, round(state["seconds"], 1), running])
            bar.set_postfix(loss=f"{running:.4f}", s=f"{state['seconds']:.0f}")
        bar.update(1)
        if step % config.checkpoint_every == 0:
            run.save_checkpoint(step)
    bar.close()
    run.save_checkpoint(step)
    run.transformer.eval()
    run.pipe.to("cpu")
    save_policy(run.pipe, output_dir / "policy")
    summary = {
        "steps": step,
        "seconds": state["seconds"],
        "final_loss_ema": running,
        "num_train_clips": len(corpus),
        "num_rejected_clips": len(corpus.rejected),
        "train_clips": [f"{c.package}/{c.name}" for c in corpus.clips],
        "config": _config_dict(config),
        "torch": torch.__version__,
        "device": str(torch.device(config.device)),
    }
    (output_dir / "training_log.json").write_text(json.dumps(dict(summary, losses=state["losses"]), indent=1) + "\n")
    return summary


def _config_dict(config: PolicyPretrainingConfig) -> dict[str, Any]:
    values = dataclasses.asdict(config)
    values["architecture"] = config.architecture()
    return values
