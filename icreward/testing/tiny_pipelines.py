"""Tiny, randomly initialised diffusers video pipelines for tests, examples and benchmarks.

Every builder constructs a real diffusers pipeline (the same classes the Hub checkpoints load into) from small
configs, seeded, on CPU, in well under a second, without touching the network:

- :func:`tiny_wan_i2v_pipeline`: Wan 2.1 image-to-video (``WanImageToVideoPipeline`` with a CLIP image encoder).
- :func:`tiny_wan22_pipeline`: Wan 2.2 A14B-style image-to-video with two experts (``transformer`` for high noise,
  ``transformer_2`` for low noise, switched at ``boundary_ratio``) and no CLIP image encoder.
- :func:`tiny_cogvideox_i2v_pipeline`: CogVideoX image-to-video (``CogVideoXImageToVideoPipeline``).

The text tokenizer is built locally with the ``tokenizers`` library (a Unigram model over characters and a few
words, T5-style ids ``<pad>=0``, ``</s>=1``, ``<unk>=2``) and wrapped as a :class:`~transformers.PreTrainedTokenizerFast`,
so pipelines round-trip through ``save_pretrained`` / ``from_pretrained``.

The weights are random: outputs are noise-like videos, useful only to exercise shapes, gradients and plumbing.
Use :data:`TINY_DEFAULTS` for generation sizes that every tiny pipeline accepts.

Example:

```python
from icreward.testing import tiny_pipelines

pipe = tiny_pipelines.tiny_wan_i2v_pipeline(seed=0)
video = pipe(image=pil_image, prompt="a cat", **tiny_pipelines.TINY_DEFAULTS, num_inference_steps=2).frames[0]
```
"""

from __future__ import annotations

from typing import Any

import torch

from icreward.pipelines import TINY_POLICIES, load_policy_pipeline  # their home; re-exported here
from icreward.text_encoders import TEXT_DIM as _TEXT_DIM
from icreward.text_encoders import build_tiny_tokenizer, tiny_umt5_encoder  # their home; re-exported here
from icreward.text_encoders import tiny_t5_encoder as _tiny_t5

__all__ = [
    "TINY_DEFAULTS",
    "TINY_POLICIES",
    "build_tiny_tokenizer",
    "load_policy_pipeline",
    "lora_output_change",
    "tiny_cogvideox_i2v_pipeline",
    "tiny_pipeline",
    "tiny_umt5_encoder",
    "tiny_wan22_pipeline",
    "tiny_wan_i2v_pipeline",
]

#: Generation arguments that every tiny pipeline accepts: 9 frames (3 latent frames), 32x32 pixels (4x4 latents).
TINY_DEFAULTS: dict[str, Any] = {"num_frames": 9, "height": 32, "width": 32, "guidance_scale": 1.0}


# A handful of whole words keeps tokenised prompts short; everything else falls back to characters.
def _tiny_wan_vae(seed: int):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    return AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()


def tiny_wan_transformer(seed: int, *, image_dim: int | None, in_channels: int = 36, out_channels: int = 16):
    """A 2-layer ``WanTransformer3DModel``; the default channels are Wan I2V's: 16 noisy latent channels + 4 mask
    channels + 16 image-condition channels in, 16 out (TI2V reads and predicts its latents alone)."""
    from diffusers import WanTransformer3DModel

    torch.manual_seed(seed)
    return WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=in_channels,
        out_channels=out_channels,
        text_dim=_TEXT_DIM,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
        image_dim=image_dim,
        added_kv_proj_dim=24 if image_dim is not None else None,
    )


def tiny_vision_tower(seed: int, model_class, config_class, *, width: int, layers: int, image_size: int, **extra):
    """A tiny image encoder (``CLIPVisionModel``, ``SiglipVisionModel``, ...): ``layers`` blocks of width ``width``
    with 2 heads and an MLP of 16, initialised under ``seed``, in eval mode; ``extra``: the rest of its config."""
    torch.manual_seed(seed)
    sizes = dict(hidden_size=width, intermediate_size=16, num_hidden_layers=layers, num_attention_heads=2)
    return model_class(config_class(**sizes, image_size=image_size, **extra)).eval()


def tiny_wan_scheduler():
    from diffusers import FlowMatchEulerDiscreteScheduler

    # Wan 2.1 I2V 480P ships UniPC with flow_shift 3.0; the Euler flow-matching scheduler has the same
    # training-time parametrisation (sigma = t / 1000) and is simpler to step through in tests.
    return FlowMatchEulerDiscreteScheduler(shift=3.0)


def tiny_wan_i2v_pipeline(seed: int = 0):
    """A tiny Wan 2.1 image-to-video pipeline (``diffusers.WanImageToVideoPipeline``) with random weights.

    Components: ``WanTransformer3DModel`` (2 layers, 36 input channels, ``image_dim=4`` so CLIP image tokens are
    cross-attended), ``AutoencoderKLWan`` (z_dim 16, 8x spatial / 4x temporal compression), a tiny
    ``UMT5EncoderModel`` (d_model 32), a tiny ``CLIPVisionModel`` (hidden size 4, 32 px, patch 4) with its
    ``CLIPImageProcessor``, a ``FlowMatchEulerDiscreteScheduler`` and the offline tokenizer of
    :func:`build_tiny_tokenizer`. Like the real checkpoints, the transformer expects exactly 512 text tokens.

    Args:
        seed: seeds every component's initialisation; equal seeds give identical pipelines.
    """
    from diffusers import WanImageToVideoPipeline
    from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel

    tokenizer = build_tiny_tokenizer()
    text_encoder = tiny_umt5_encoder(seed, vocab_size=len(tokenizer))
    vae = _tiny_wan_vae(seed + 1)
    transformer = tiny_wan_transformer(seed + 2, image_dim=4)
    image_encoder = tiny_vision_tower(
        seed + 3, CLIPVisionModel, CLIPVisionConfig, width=4, layers=2, image_size=32, patch_size=4, projection_dim=4
    )
    image_processor = CLIPImageProcessor(crop_size=32, size=32)
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        scheduler=tiny_wan_scheduler(),
        image_processor=image_processor,
        image_encoder=image_encoder,
        transformer=transformer,
    )


def tiny_wan22_pipeline(seed: int = 0, boundary_ratio: float = 0.875):
    """A tiny Wan 2.2 A14B-style image-to-video pipeline with two experts and random weights.

    In diffusers 0.42 the two-expert I2V model loads into ``WanImageToVideoPipeline`` (the Hub checkpoint
    ``Wan-AI/Wan2.2-I2V-A14B-Diffusers`` does exactly this): ``transformer`` denoises timesteps
    ``t >= boundary_ratio * num_train_timesteps`` (high noise), ``transformer_2`` the rest (low noise). Wan 2.2
    I2V has no CLIP image encoder (``image_dim=None``); the reference image enters only through the 20
    mask + image-latent channels.

    Args:
        seed: seeds every component's initialisation.
        boundary_ratio: expert switch point as a fraction of the training timesteps (0.9 in the real I2V model;
            0.875 here so that a 4-step tiny schedule exercises both experts).
    """
    from diffusers import WanImageToVideoPipeline

    tokenizer = build_tiny_tokenizer()
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_umt5_encoder(seed, vocab_size=len(tokenizer)),
        vae=_tiny_wan_vae(seed + 1),
        scheduler=tiny_wan_scheduler(),
        image_processor=None,
        image_encoder=None,
        transformer=tiny_wan_transformer(seed + 2, image_dim=None),
        transformer_2=tiny_wan_transformer(seed + 4, image_dim=None),
        boundary_ratio=boundary_ratio,
    )


def _tiny_cogvideox_vae(seed: int):
    from diffusers import AutoencoderKLCogVideoX

    torch.manual_seed(seed)
    return AutoencoderKLCogVideoX(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=2,
        temporal_compression_ratio=4,
        sample_height=32,
        sample_width=32,
    ).eval()


def _tiny_cogvideox_transformer(seed: int):
    from diffusers import CogVideoXTransformer3DModel

    torch.manual_seed(seed)
    return CogVideoXTransformer3DModel(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=8,
        out_channels=4,
        time_embed_dim=4,
        text_embed_dim=_TEXT_DIM,
        num_layers=2,
        sample_width=4,  # latent-space size: 32 px / 8
        sample_height=4,
        sample_frames=9,
        patch_size=2,
        temporal_compression_ratio=4,
        max_text_seq_length=226,  # the pipeline pads prompts to 226 tokens, as CogVideoX-5b does
        use_rotary_positional_embeddings=True,
        # CogVideoX-5b-I2V also has learned positional embeddings, which pin it to one resolution; the tiny model
        # leaves them out so tests can pick any size.
        use_learned_positional_embeddings=False,
    )


def tiny_cogvideox_i2v_pipeline(seed: int = 0):
    """A tiny CogVideoX image-to-video pipeline (``diffusers.CogVideoXImageToVideoPipeline``) with random weights.

    Mirrors CogVideoX-5b-I2V's structure: the transformer takes ``2 * latent_channels`` inputs (noisy latents
    concatenated with the image latents on the channel axis), uses rotary positional embeddings,
    and the scheduler is ``CogVideoXDDIMScheduler`` with ``v_prediction`` and zero-terminal-SNR betas.
    ``AutoencoderKLCogVideoX`` compresses 8x spatially and 4x temporally into 4 latent channels.
    """
    from diffusers import CogVideoXDDIMScheduler, CogVideoXImageToVideoPipeline

    tokenizer = build_tiny_tokenizer(model_max_length=226)
    text_encoder = _tiny_t5(seed, vocab_size=len(tokenizer))
    vae = _tiny_cogvideox_vae(seed + 1)
    transformer = _tiny_cogvideox_transformer(seed + 2)
    scheduler = CogVideoXDDIMScheduler(
        beta_schedule="scaled_linear",
        clip_sample=False,
        prediction_type="v_prediction",
        rescale_betas_zero_snr=True,
        set_alpha_to_one=True,
        snr_shift_scale=1.0,
        timestep_spacing="trailing",
    )
    return CogVideoXImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=text_encoder, vae=vae, transformer=transformer, scheduler=scheduler
    )


_BUILDERS = {
    "wan21": tiny_wan_i2v_pipeline,
    "wan22": tiny_wan22_pipeline,
    "cogvideox": tiny_cogvideox_i2v_pipeline,
}


def tiny_pipeline(family: str, seed: int = 0):
    """Build the tiny pipeline of a model family by name: ``"wan21"``, ``"wan22"`` or ``"cogvideox"``."""
    try:
        builder = _BUILDERS[family]
    except KeyError:
        raise ValueError(f"unknown tiny pipeline family {family!r}; choose from {sorted(_BUILDERS)}") from None
    return builder(seed=seed)


def lora_output_change(policy: str, lora_dir, trainable_modules, *, image, prompt: str, **generate_kwargs) -> float:
    """Load a trained LoRA into a fresh tiny pipeline and return the max absolute change of a generated video.

    ``trainable_modules`` are the adapter's trained denoisers: a single ``transformer`` loads with diffusers'
    ``pipe.load_lora_weights``, two Wan 2.2 experts with :func:`icreward.adapters.load_wan22_lora`. Generation is
    seeded (0) and uses 4 steps without guidance; ``generate_kwargs`` give the size (``num_frames``, ``height``,
    ``width``).
    """
    from ..adapters import load_wan22_lora

    def generate(pipe):
        generator = torch.Generator().manual_seed(0)
        out = pipe(
            image=image,
            prompt=prompt,
            generator=generator,
            num_inference_steps=4,
            guidance_scale=1.0,
            **generate_kwargs,
        )
        return torch.as_tensor(out.frames)

    pipe = tiny_pipeline(TINY_POLICIES[policy], seed=0)
    base = generate(pipe)
    if list(trainable_modules) == ["transformer"]:
        pipe.load_lora_weights(lora_dir)
    else:
        load_wan22_lora(pipe, lora_dir)
    return float((generate(pipe) - base).abs().max())
