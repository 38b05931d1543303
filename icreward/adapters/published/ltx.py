"""Published LTX-Video 0.9.x configuration, with the source of every value."""

from __future__ import annotations

from typing import Any

from ..published_configs import ComponentConfig, PublishedConfig, register_published_config
from .encoders import T5_XXL

#: The FlowMatchEulerDiscreteScheduler config the LTX-Video and LTX-2 conversion scripts save with their pipelines.
LTX_FLOW_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "shift": 1.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.95,
    "max_shift": 2.05,
    "base_image_seq_len": 1024,
    "max_image_seq_len": 4096,
    "shift_terminal": 0.1,
}
_LTX_SCRIPT = "diffusers scripts/convert_ltx_to_diffusers.py"


def ltx_flow_scheduler(source: str) -> dict[str, Any]:
    """The ``scheduler_*`` fields of an LTX-family :class:`PublishedConfig` (the shared flow-matching scheduler)."""
    return {
        "scheduler_class": "FlowMatchEulerDiscreteScheduler",
        "scheduler_config": dict(LTX_FLOW_SCHEDULER_CONFIG),
        "scheduler_source": source,
    }


register_published_config(
    PublishedConfig(
        hub_id="Lightricks/LTX-Video",
        pipeline_class="LTXImageToVideoPipeline",
        components={
            "transformer": ComponentConfig(
                "LTXVideoTransformer3DModel",
                {
                    "in_channels": 128,
                    "out_channels": 128,
                    "patch_size": 1,
                    "patch_size_t": 1,
                    "num_attention_heads": 32,
                    "attention_head_dim": 64,
                    "cross_attention_dim": 2048,
                    "num_layers": 28,
                    "activation_fn": "gelu-approximate",
                    "qk_norm": "rms_norm_across_heads",
                    "norm_elementwise_affine": False,
                    "norm_eps": 1e-6,
                    "caption_channels": 4096,
                    "attention_bias": True,
                    "attention_out_bias": True,
                },
                f"{_LTX_SCRIPT}: LTXVideoTransformer3DModel() with its defaults, as the script builds it",
            ),
            "vae": ComponentConfig(
                "AutoencoderKLLTXVideo",
                {
                    "in_channels": 3,
                    "out_channels": 3,
                    "latent_channels": 128,
                    "block_out_channels": (128, 256, 512, 512),
                    "decoder_block_out_channels": (128, 256, 512, 512),
                    "layers_per_block": (4, 3, 3, 3, 4),
                    "decoder_layers_per_block": (4, 3, 3, 3, 4),
                    "spatio_temporal_scaling": (True, True, True, False),
                    "decoder_spatio_temporal_scaling": (True, True, True, False),
                    "decoder_inject_noise": (False, False, False, False, False),
                    "upsample_residual": (False, False, False, False),
                    "upsample_factor": (1, 1, 1, 1),
                    "patch_size": 4,
                    "patch_size_t": 1,
                    "resnet_norm_eps": 1e-6,
                    "scaling_factor": 1.0,
                    "encoder_causal": True,
                    "decoder_causal": False,
                    "timestep_conditioning": False,
                },
                f'{_LTX_SCRIPT}: get_vae_config("0.9.0")',
            ),
            "text_encoder": T5_XXL,
        },
        **ltx_flow_scheduler(f"{_LTX_SCRIPT}: the FlowMatchEulerDiscreteScheduler(...) it saves with the pipeline"),
        height=512,
        width=704,
        num_frames=121,
        source=f"{_LTX_SCRIPT}; text encoder google/t5-v1_1-xxl at 128 tokens (the pipeline's max_sequence_length); "
        "sample size: LTXImageToVideoPipeline's defaults (121 frames at 512x704)",
    )
)
