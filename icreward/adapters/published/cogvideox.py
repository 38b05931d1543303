"""Published CogVideoX-5b-I2V configuration; sources in :mod:`icreward.adapters.published_configs`."""

from __future__ import annotations

from ..published_configs import ComponentConfig, PublishedConfig, register_published_config
from .encoders import T5_XXL

_COG_SRC = "THUDM/CogVideoX-5b-I2V published {} (see module docstring)"
register_published_config(
    PublishedConfig(
        hub_id="THUDM/CogVideoX-5b-I2V",
        pipeline_class="CogVideoXImageToVideoPipeline",
        components={
            "transformer": ComponentConfig(
                "CogVideoXTransformer3DModel",
                {
                    "activation_fn": "gelu-approximate",
                    "attention_bias": True,
                    "attention_head_dim": 64,
                    "flip_sin_to_cos": True,
                    "freq_shift": 0,
                    "in_channels": 32,
                    "max_text_seq_length": 226,
                    "norm_elementwise_affine": True,
                    "norm_eps": 1e-05,
                    "num_attention_heads": 48,
                    "num_layers": 42,
                    "out_channels": 16,
                    "patch_size": 2,
                    "sample_frames": 49,
                    "sample_height": 60,
                    "sample_width": 90,
                    "spatial_interpolation_scale": 1.875,
                    "temporal_compression_ratio": 4,
                    "temporal_interpolation_scale": 1.0,
                    "text_embed_dim": 4096,
                    "time_embed_dim": 512,
                    "timestep_activation_fn": "silu",
                    "use_learned_positional_embeddings": True,
                    "use_rotary_positional_embeddings": True,
                },
                _COG_SRC.format("transformer/config.json"),
            ),
            "vae": ComponentConfig(
                "AutoencoderKLCogVideoX", {"scaling_factor": 0.7}, _COG_SRC.format("vae/config.json")
            ),
            "text_encoder": T5_XXL,
        },
        scheduler_class="CogVideoXDDIMScheduler",
        scheduler_config={
            "beta_start": 0.00085,
            "beta_end": 0.012,
            "beta_schedule": "scaled_linear",
            "clip_sample": False,
            "num_train_timesteps": 1000,
            "prediction_type": "v_prediction",
            "rescale_betas_zero_snr": True,
            "set_alpha_to_one": True,
            "snr_shift_scale": 1.0,
            "steps_offset": 0,
            "timestep_spacing": "trailing",
        },
        scheduler_source=_COG_SRC.format("scheduler/scheduler_config.json"),
        height=480,
        width=720,
        num_frames=49,
        source=_COG_SRC.format("model files"),
    )
)
