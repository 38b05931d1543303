"""Published HunyuanVideo 1.5 480p I2V configuration, with the source of every value."""

from __future__ import annotations

from ..published_configs import ComponentConfig, PublishedConfig, register_published_config

_HY15_SCRIPT = "diffusers scripts/convert_hunyuan_video1_5_to_diffusers.py"
register_published_config(
    PublishedConfig(
        hub_id="hunyuanvideo-community/HunyuanVideo-1.5-480p_i2v",
        pipeline_class="HunyuanVideo15ImageToVideoPipeline",
        components={
            "transformer": ComponentConfig(
                "HunyuanVideo15Transformer3DModel",
                {
                    "in_channels": 65,
                    "out_channels": 32,
                    "num_attention_heads": 16,
                    "attention_head_dim": 128,
                    "num_layers": 54,
                    "num_refiner_layers": 2,
                    "mlp_ratio": 4.0,
                    "patch_size": 1,
                    "patch_size_t": 1,
                    "qk_norm": "rms_norm",
                    "text_embed_dim": 3584,
                    "text_embed_2_dim": 1472,
                    "image_embed_dim": 1152,
                    "rope_theta": 256.0,
                    "rope_axes_dim": (16, 56, 56),
                    "use_meanflow": False,
                    "target_size": 640,
                    "task_type": "i2v",
                },
                f'{_HY15_SCRIPT}: TRANSFORMER_CONFIGS["480p_i2v"]',
            ),
            "vae": ComponentConfig(
                "AutoencoderKLHunyuanVideo15",
                {},
                f"{_HY15_SCRIPT}: convert_vae() builds AutoencoderKLHunyuanVideo15() with its defaults (32 latent "
                "channels, 16x spatial / 4x temporal, scaling_factor 1.03682)",
            ),
            "text_encoder": ComponentConfig(
                "Qwen2_5_VLTextModel",
                {
                    "vocab_size": 152064,
                    "hidden_size": 3584,
                    "intermediate_size": 18944,
                    "num_hidden_layers": 28,
                    "num_attention_heads": 28,
                    "num_key_value_heads": 4,
                    "rms_norm_eps": 1e-06,
                    "rope_theta": 1000000.0,
                    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
                },
                f"Qwen/Qwen2.5-VL-7B-Instruct config.json, text part (loaded by name in {_HY15_SCRIPT}: "
                "load_mllm()); hidden_size 3584 = the transformer's text_embed_dim; not re-read in this environment",
                library="transformers",
            ),
            "text_encoder_2": ComponentConfig(
                "T5EncoderModel",
                {
                    "vocab_size": 384,
                    "d_model": 1472,
                    "d_kv": 64,
                    "d_ff": 3584,
                    "num_layers": 12,
                    "num_heads": 6,
                    "feed_forward_proj": "gated-gelu",
                },
                f"google/byt5-small config.json (loaded by name in {_HY15_SCRIPT}: load_byt5(), Glyph-SDXL-v2 weights; "
                "the script adds color/font tokens, so the shipped vocabulary is larger than 384); d_model 1472 = "
                "the transformer's text_embed_2_dim; not re-read in this environment",
                library="transformers",
            ),
            "image_encoder": ComponentConfig(
                "SiglipVisionModel",
                {
                    "hidden_size": 1152,
                    "intermediate_size": 4304,
                    "num_hidden_layers": 27,
                    "num_attention_heads": 16,
                    "image_size": 384,
                    "patch_size": 14,
                },
                "SigLIP so400m-patch14-384 vision config (google/siglip-so400m-patch14-384): 1152 = the "
                "transformer's image_embed_dim and (384/14)^2 = 729 = the pipeline's vision_num_semantic_tokens; "
                "not re-read in this environment",
                library="transformers",
            ),
        },
        scheduler_class="FlowMatchEulerDiscreteScheduler",
        scheduler_config={"shift": 5.0},
        scheduler_source=f'{_HY15_SCRIPT}: SCHEDULER_CONFIGS["480p_i2v"] (shift 5.0); guider '
        'ClassifierFreeGuidance(guidance_scale=6.0) from GUIDANCE_CONFIGS["480p_i2v"]',
        height=480,
        width=848,
        num_frames=121,
        source=f"{_HY15_SCRIPT}; sample size: HunyuanVideo15ImageToVideoPipeline's default num_frames (121) and the "
        "size its calculate_default_height_width picks for a 16:9 image at target_size 640 (480x848)",
    )
)
