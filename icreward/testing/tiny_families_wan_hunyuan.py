"""Tiny Wan 2.2 TI2V-5B-style pipeline built from the real diffusers classes, with random weights.

:func:`tiny_wan22_ti2v_pipeline` is ``WanImageToVideoPipeline(expand_timesteps=True)`` with a residual
``AutoencoderKLWan`` (``is_residual=True``, ``patch_size=2``, 48 latent channels, 16x spatial / 4x temporal
compression: the TI2V-5B VAE's layout at a tiny width), a 2-layer ``WanTransformer3DModel`` reading 48 channels
(no mask channels, no CLIP image tokens), a tiny ``UMT5EncoderModel`` and the offline tokenizer.
"""

from __future__ import annotations

import torch

from .tiny_pipelines import (
    build_tiny_tokenizer,
    tiny_umt5_encoder,
    tiny_vision_tower,
    tiny_wan_scheduler,
    tiny_wan_transformer,
)

#: Z channels of the TI2V-5B VAE (Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json: z_dim 48).
TI2V_Z_DIM = 48
#: A size the tiny TI2V pipeline supports: latents (48, 3, 2, 2); the transformer's 2x2 patches give 3 tokens/frame.
TINY_WAN_TI2V_SIZE = {"num_frames": 9, "height": 32, "width": 32}


def _tiny_ti2v_vae(seed: int):
    from diffusers import AutoencoderKLWan

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 100)
    return AutoencoderKLWan(
        base_dim=4,
        decoder_base_dim=4,
        z_dim=TI2V_Z_DIM,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
        is_residual=True,
        in_channels=12,
        out_channels=12,
        patch_size=2,
        scale_factor_spatial=16,
        scale_factor_temporal=4,
        latents_mean=(torch.randn(TI2V_Z_DIM, generator=g) * 0.1).tolist(),
        latents_std=(1.0 + torch.rand(TI2V_Z_DIM, generator=g)).tolist(),
    ).eval()


def _tiny_ti2v_transformer(seed: int):
    # the latents only: the image replaces frame 0, no mask or condition channels
    return tiny_wan_transformer(seed, image_dim=None, in_channels=TI2V_Z_DIM, out_channels=TI2V_Z_DIM)


def tiny_wan22_ti2v_pipeline(seed: int = 0):
    """A tiny Wan 2.2 TI2V-5B-style ``WanImageToVideoPipeline(expand_timesteps=True)`` with random weights.

    Args:
        seed: seeds every component's initialisation; equal seeds give identical pipelines.
    """
    from diffusers import WanImageToVideoPipeline

    tokenizer = build_tiny_tokenizer()
    return WanImageToVideoPipeline(
        tokenizer=tokenizer,
        text_encoder=tiny_umt5_encoder(seed, vocab_size=len(tokenizer)),
        vae=_tiny_ti2v_vae(seed + 1),
        scheduler=tiny_wan_scheduler(),
        transformer=_tiny_ti2v_transformer(seed + 2),
        expand_timesteps=True,
    )


# ------------------------------------------------------------------------------------------ HunyuanVideo 1.5 I2V
#: Latent channels of the tiny HunyuanVideo 1.5 VAE (the published VAE has 32; the layout is the same).
TINY_HUNYUAN15_LATENT_CHANNELS = 8
#: The tiny HunyuanVideo 1.5 pipeline's size: a square reference image maps to 32x32 (``target_size`` 32); latents
#: ``(8, 3, 2, 2)`` (16x spatial / 4x temporal compression, as published).
TINY_HUNYUAN15_SIZE = {"num_frames": 9, "height": 32, "width": 32}

# A chat template in the shape of Qwen2.5-VL's (system, user, then the assistant turn), for the tiny tokenizer.
_HUNYUAN15_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}</s>{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


_TINY_HUNYUAN15_SYSTEM = "Describe the video."


def _tiny_hunyuan15_vae(seed: int):
    from diffusers import AutoencoderKLHunyuanVideo15

    torch.manual_seed(seed)
    return AutoencoderKLHunyuanVideo15(
        in_channels=3,
        out_channels=3,
        latent_channels=TINY_HUNYUAN15_LATENT_CHANNELS,
        block_out_channels=(8, 16, 16, 16, 16),  # 4 downsamplings: 16x spatial, as published
        layers_per_block=1,
        spatial_compression_ratio=16,
        temporal_compression_ratio=4,
        scaling_factor=1.03682,  # the published VAE's value (AutoencoderKLHunyuanVideo15 default)
    ).eval()


def _tiny_hunyuan15_transformer(seed: int, *, text_dim: int, text_2_dim: int, image_dim: int):
    from diffusers import HunyuanVideo15Transformer3DModel

    torch.manual_seed(seed)
    c = TINY_HUNYUAN15_LATENT_CHANNELS
    return HunyuanVideo15Transformer3DModel(
        in_channels=2 * c + 1,  # noisy latents + image-conditioned latents + the conditioning mask
        out_channels=c,
        num_attention_heads=2,
        attention_head_dim=8,
        num_layers=2,
        num_refiner_layers=1,
        mlp_ratio=2.0,
        patch_size=1,
        patch_size_t=1,
        text_embed_dim=text_dim,
        text_embed_2_dim=text_2_dim,
        image_embed_dim=image_dim,
        rope_axes_dim=(2, 2, 4),
        target_size=32,
        task_type="i2v",
    ).eval()


def _tiny_hunyuan15_text_encoder(tokenizer):
    """A 2-layer ``Qwen2_5_VLTextModel`` (hidden size 16) over ``tokenizer``'s vocabulary."""
    from transformers import Qwen2_5_VLTextConfig, Qwen2_5_VLTextModel

    text_encoder = Qwen2_5_VLTextModel(
        Qwen2_5_VLTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=16,
            intermediate_size=16,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            rope_scaling={"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
            rope_theta=1000000.0,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    return text_encoder


def tiny_hunyuan_video15_i2v_pipeline(seed: int = 0, *, guidance_scale: float = 1.0):
    """A tiny ``HunyuanVideo15ImageToVideoPipeline`` with random weights, built from the real classes.

    Components: ``AutoencoderKLHunyuanVideo15`` (16x spatial / 4x temporal, 8 latent channels),
    ``HunyuanVideo15Transformer3DModel`` (``2 * 8 + 1`` input channels: latents, image latents, mask; SigLIP image
    tokens; Qwen and ByT5 text streams), a tiny ``Qwen2_5_VLTextModel`` with the offline tokenizer and a chat
    template, ``T5EncoderModel`` with the real ``ByT5Tokenizer`` (no files needed), a tiny ``SiglipVisionModel``
    (28x28 input, 4 tokens) with ``SiglipImageProcessor``, ``FlowMatchEulerDiscreteScheduler(shift=5.0)`` (the 480p
    I2V checkpoint's shift) and ``ClassifierFreeGuidance(guidance_scale)``.

    Args:
        seed: seeds every component's initialisation; equal seeds give identical pipelines.
        guidance_scale: the guider's scale (the published 480p I2V checkpoint ships 6.0; 1.0 runs one pass per step).
    """
    from diffusers import ClassifierFreeGuidance, FlowMatchEulerDiscreteScheduler, HunyuanVideo15ImageToVideoPipeline
    from transformers import (
        ByT5Tokenizer,
        SiglipImageProcessor,
        SiglipVisionConfig,
        SiglipVisionModel,
        T5Config,
        T5EncoderModel,
    )

    tokenizer = build_tiny_tokenizer(model_max_length=2048)
    tokenizer.chat_template = _HUNYUAN15_CHAT_TEMPLATE
    torch.manual_seed(seed)
    text_encoder = _tiny_hunyuan15_text_encoder(tokenizer)
    tokenizer_2 = ByT5Tokenizer()
    torch.manual_seed(seed + 1)
    text_encoder_2 = T5EncoderModel(
        T5Config(vocab_size=len(tokenizer_2), d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).eval()
    image_encoder = tiny_vision_tower(
        seed + 2, SiglipVisionModel, SiglipVisionConfig, width=12, layers=1, image_size=28, patch_size=14
    )
    feature_extractor = SiglipImageProcessor(size={"height": 28, "width": 28})
    pipe = HunyuanVideo15ImageToVideoPipeline(
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=_tiny_hunyuan15_transformer(seed + 3, text_dim=16, text_2_dim=24, image_dim=12),
        vae=_tiny_hunyuan15_vae(seed + 4),
        scheduler=FlowMatchEulerDiscreteScheduler(shift=5.0),
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer_2,
        guider=ClassifierFreeGuidance(guidance_scale=guidance_scale),
        image_encoder=image_encoder,
        feature_extractor=feature_extractor,
    )
    # Shorter text streams than the published 1000 (Qwen, after cropping the 108-token system prompt) and 256 (ByT5)
    # tokens keep the tiny model fast. These are the instance attributes the pipeline's own encode_prompt reads, so
    # the code path is unchanged; the crop removes exactly this tokenizer's system-prompt prefix, as 108 does for
    # Qwen2.5-VL's tokenizer.
    pipe.system_message = _TINY_HUNYUAN15_SYSTEM
    prefix = tokenizer.apply_chat_template(
        [[{"role": "system", "content": _TINY_HUNYUAN15_SYSTEM}]], tokenize=True, add_generation_prompt=False
    )[0]
    pipe.prompt_template_encode_start_idx = len(prefix) + len(
        tokenizer("<|user|>", add_special_tokens=False).input_ids
    )
    pipe.tokenizer_max_length = 48
    pipe.tokenizer_2_max_length = 16
    return pipe


def save_tiny_hunyuan_video15_i2v_pipeline(directory: str, seed: int = 0) -> str:
    """Save :func:`tiny_hunyuan_video15_i2v_pipeline` in diffusers layout (for configs that name a local folder).

    Loaded back with ``from_pretrained``, the pipeline uses its class defaults for the text lengths (1000 / 256
    tokens, the published ones), not the shorter ones the in-memory builder sets.
    """
    tiny_hunyuan_video15_i2v_pipeline(seed=seed).save_pretrained(directory)
    return directory


def save_tiny_wan22_ti2v_pipeline(directory: str, seed: int = 0) -> str:
    """Save :func:`tiny_wan22_ti2v_pipeline` in diffusers layout (for configs that name a local folder)."""
    tiny_wan22_ti2v_pipeline(seed=seed).save_pretrained(directory)
    return directory
