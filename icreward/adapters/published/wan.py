"""Published Wan 2.1 / 2.2 (I2V-14B, I2V-A14B, TI2V-5B) configurations; sources in
:mod:`icreward.adapters.published_configs`."""

from __future__ import annotations

from ..published_configs import ComponentConfig, PublishedConfig, register_published_config
from .encoders import CLIP_VIT_H, UMT5_XXL

_WAN_SCRIPT = "diffusers scripts/convert_wan_to_diffusers.py"

_WAN_I2V_14B_TRANSFORMER = {
    "image_dim": 1280,
    "added_kv_proj_dim": 5120,
    "attention_head_dim": 128,
    "cross_attn_norm": True,
    "eps": 1e-06,
    "ffn_dim": 13824,
    "freq_dim": 256,
    "in_channels": 36,
    "num_attention_heads": 40,
    "num_layers": 40,
    "out_channels": 16,
    "patch_size": [1, 2, 2],
    "qk_norm": "rms_norm_across_heads",
    "text_dim": 4096,
}
_WAN22_I2V_A14B_TRANSFORMER = {**_WAN_I2V_14B_TRANSFORMER, "added_kv_proj_dim": None}
del _WAN22_I2V_A14B_TRANSFORMER["image_dim"]

_WAN_UNIPC = {
    "prediction_type": "flow_prediction",
    "use_flow_sigmas": True,
    "num_train_timesteps": 1000,
    "flow_shift": 3.0,
}

register_published_config(
    PublishedConfig(
        hub_id="Wan-AI/Wan2.1-I2V-14B-480P-Diffusers",
        pipeline_class="WanImageToVideoPipeline",
        components={
            "transformer": ComponentConfig(
                "WanTransformer3DModel",
                _WAN_I2V_14B_TRANSFORMER,
                f'{_WAN_SCRIPT}: get_transformer_config("Wan-I2V-14B-480p")',
            ),
            "vae": ComponentConfig("AutoencoderKLWan", {}, f"{_WAN_SCRIPT}: convert_vae() builds AutoencoderKLWan()"),
            "text_encoder": UMT5_XXL,
            "image_encoder": CLIP_VIT_H,
        },
        scheduler_class="UniPCMultistepScheduler",
        scheduler_config=dict(_WAN_UNIPC),
        scheduler_source=f"{_WAN_SCRIPT}: __main__ (flow_shift 3.0 for I2V)",
        height=480,
        width=832,
        num_frames=81,
        source=_WAN_SCRIPT,
    )
)

register_published_config(
    PublishedConfig(
        hub_id="Wan-AI/Wan2.2-I2V-A14B-Diffusers",
        pipeline_class="WanImageToVideoPipeline",
        components={
            "transformer": ComponentConfig(
                "WanTransformer3DModel",
                _WAN22_I2V_A14B_TRANSFORMER,
                f'{_WAN_SCRIPT}: get_transformer_config("Wan2.2-I2V-14B-720p"), stage high_noise_model',
            ),
            "transformer_2": ComponentConfig(
                "WanTransformer3DModel",
                _WAN22_I2V_A14B_TRANSFORMER,
                f'{_WAN_SCRIPT}: get_transformer_config("Wan2.2-I2V-14B-720p"), stage low_noise_model',
            ),
            "vae": ComponentConfig("AutoencoderKLWan", {}, f"{_WAN_SCRIPT}: convert_vae() (Wan 2.1 VAE)"),
            "text_encoder": UMT5_XXL,
        },
        scheduler_class="UniPCMultistepScheduler",
        scheduler_config=dict(_WAN_UNIPC),
        scheduler_source=f"{_WAN_SCRIPT}: __main__ (flow_shift 3.0)",
        height=720,
        width=1280,
        num_frames=81,
        pipeline_kwargs={"boundary_ratio": 0.9},
        source=f"{_WAN_SCRIPT} (boundary_ratio=0.9 for Wan2.2 I2V)",
    )
)


def _register_wan22_ti2v_5b() -> None:
    # Wan 2.2 TI2V-5B; the values and their sources live in icreward/adapters/wan_ti2v.py.
    from ..wan_ti2v import WAN22_TI2V_5B_PUBLISHED_CONFIG as ti2v

    register_published_config(
        PublishedConfig(
            hub_id="Wan-AI/Wan2.2-TI2V-5B-Diffusers",
            pipeline_class="WanImageToVideoPipeline",
            components={
                "transformer": ComponentConfig(
                    "WanTransformer3DModel",
                    dict(ti2v["transformer"]),
                    "Wan-AI/Wan2.2-TI2V-5B-Diffusers transformer/config.json as written by "
                    f"{_WAN_SCRIPT} (TI2V-5B entry); not re-read in this environment",
                ),
                "vae": ComponentConfig(
                    "AutoencoderKLWan", dict(ti2v["vae"]), f"{_WAN_SCRIPT}: vae22_diffusers_config"
                ),
                "text_encoder": UMT5_XXL,
            },
            scheduler_class="UniPCMultistepScheduler",
            scheduler_config={**_WAN_UNIPC, "flow_shift": 5.0},
            scheduler_source="flow_shift 5.0 as shipped for TI2V-5B; not re-read in this environment",
            height=ti2v["sample_size"]["height"],
            width=ti2v["sample_size"]["width"],
            num_frames=ti2v["sample_size"]["num_frames"],
            pipeline_kwargs={"expand_timesteps": True},
            source=_WAN_SCRIPT,
        )
    )


_register_wan22_ti2v_5b()
