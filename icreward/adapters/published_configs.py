"""Published full-size configurations of the supported families, in one place, with the source of every value.

These entries let the library build a family's real architecture without weights (on the ``meta`` device), e.g.
for memory accounting, without touching the Hugging Face Hub. Each :class:`PublishedConfig` names the pipeline
class, the class and config of every component, the scheduler, the default sample size and, per component, where
the values come from. Other families register their own entry with :func:`register_published_config`.

Sources used here:

- Wan 2.1 / 2.2 transformers and schedulers: diffusers ``scripts/convert_wan_to_diffusers.py``
  (``get_transformer_config(model_type)`` for ``"Wan-I2V-14B-480p"`` and ``"Wan2.2-I2V-14B-720p"``; the
  ``UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
  flow_shift=3.0)`` and ``boundary_ratio=0.9`` that its ``__main__`` saves with the I2V pipelines). The Wan 2.1
  VAE is ``AutoencoderKLWan()`` with its defaults, which is how that script's ``convert_vae()`` builds it.
- Text / image encoders: the transformers configs of ``google/umt5-xxl`` (Wan), ``google/t5-v1_1-xxl``
  (CogVideoX) and ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (Wan 2.1 I2V image encoder), which the conversion
  scripts load by those names.
- CogVideoX-5b-I2V: the published ``THUDM/CogVideoX-5b-I2V`` ``transformer/config.json``, ``vae/config.json`` and
  ``scheduler/scheduler_config.json`` (values as published; diffusers ``scripts/convert_cogvideox_to_diffusers.py``
  builds the same transformer with ``get_transformer_init_kwargs("1.0")``: patch 2, sample 49x60x90). These
  CogVideoX values were written from the published files' contents as known to the author and were NOT re-read from
  the hub in this repository's offline environment.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import torch
from torch import nn


@dataclasses.dataclass(frozen=True)
class ComponentConfig:
    """One pipeline component: its class name, the library it comes from, its full config and the source."""

    class_name: str
    config: dict[str, Any]
    source: str
    library: str = "diffusers"  # "diffusers" or "transformers"


@dataclasses.dataclass(frozen=True)
class PublishedConfig:
    """A published checkpoint's architecture: what :func:`build_meta_components` needs, and where it came from."""

    hub_id: str
    pipeline_class: str
    components: dict[str, ComponentConfig]
    scheduler_class: str
    scheduler_config: dict[str, Any]
    scheduler_source: str
    height: int
    width: int
    num_frames: int
    pipeline_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    source: str = ""


_REGISTRY: dict[str, PublishedConfig] = {}


def register_published_config(entry: PublishedConfig, *, overwrite: bool = False) -> PublishedConfig:
    """Add a family's published configuration (keyed by ``entry.hub_id``)."""
    if not isinstance(entry, PublishedConfig):
        raise TypeError(f"expected a PublishedConfig, got {type(entry).__name__}")
    if entry.hub_id in _REGISTRY and not overwrite:
        raise ValueError(f"a published config for {entry.hub_id!r} is already registered (pass overwrite=True)")
    _REGISTRY[entry.hub_id] = entry
    return entry


def get_published_config(hub_id: str) -> PublishedConfig:
    """The registered entry for ``hub_id``; a clear error listing the known ids otherwise."""
    try:
        return _REGISTRY[hub_id]
    except KeyError:
        raise KeyError(f"no published config for {hub_id!r}; known: {sorted(_REGISTRY)}") from None


def available_published_configs() -> list[str]:
    return sorted(_REGISTRY)


def _build_one(component: ComponentConfig, dtype: torch.dtype | None) -> nn.Module:
    config = copy.deepcopy(component.config)
    if component.library == "diffusers":
        import diffusers

        if "." in component.class_name:  # a class diffusers does not export at top level (e.g. pipeline parts)
            import importlib

            module_path, _, class_name = component.class_name.rpartition(".")
            cls = getattr(importlib.import_module(module_path), class_name)
        else:
            cls = getattr(diffusers, component.class_name)
        module = cls.from_config(config)
    elif component.library == "transformers":
        import transformers

        cls = getattr(transformers, component.class_name)
        module = cls(cls.config_class(**config))
    else:
        raise ValueError(f"unknown library {component.library!r} for {component.class_name}")
    if dtype is not None:
        cast_like_from_pretrained(module, dtype, library=component.library)
    return module


def fp32_kept_modules(module: nn.Module, dtype: torch.dtype, library: str = "diffusers") -> list[str]:
    """The module names ``from_pretrained(torch_dtype=dtype)`` keeps in float32.

    diffusers keeps a model's ``_keep_in_fp32_modules`` in float32 for any ``torch_dtype``; transformers keeps
    ``_keep_in_fp32_modules`` only for float16 and ``_keep_in_fp32_modules_strict`` for float16 and bfloat16.
    """
    names: list[str] = []
    if library == "diffusers" or dtype == torch.float16:
        names += list(getattr(module, "_keep_in_fp32_modules", None) or [])
    if library == "transformers" and dtype in (torch.float16, torch.bfloat16):
        names += list(getattr(module, "_keep_in_fp32_modules_strict", None) or [])
    return names


def cast_like_from_pretrained(module: nn.Module, dtype: torch.dtype, library: str = "diffusers") -> nn.Module:
    """Cast floating parameters and buffers to ``dtype`` in place, except those of fp32-kept modules (a parameter
    or buffer whose dotted name has one of :func:`fp32_kept_modules` as a component), as ``from_pretrained`` loads
    them; ``module.to(dtype)`` would cast those too."""
    keep = set(fp32_kept_modules(module, dtype, library))
    for module_name, sub in module.named_modules():
        parts = set(module_name.split(".")) if module_name else set()
        for registry in (sub._parameters, sub._buffers):
            for name, tensor in registry.items():
                if tensor is None or not tensor.is_floating_point():
                    continue
                target = torch.float32 if keep & (parts | {name}) else dtype
                if tensor.dtype != target:
                    if isinstance(tensor, nn.Parameter):
                        tensor.data = tensor.data.to(target)
                    else:
                        registry[name] = tensor.to(target)
    return module


def build_meta_components(
    hub_id: str, *, dtype: torch.dtype | None = torch.bfloat16, components: tuple[str, ...] | None = None
) -> dict[str, nn.Module]:
    """Instantiate a published pipeline's model components on the ``meta`` device (shapes only, no weights).

    Args:
        hub_id: a registered id (see :func:`available_published_configs`).
        dtype: parameter dtype (the checkpoints are trained/served in bf16); ``None`` keeps fp32. Modules that
            ``from_pretrained(torch_dtype=dtype)`` keeps in float32 stay float32 (:func:`cast_like_from_pretrained`).
        components: restrict to these component names (default: all).
    """
    entry = get_published_config(hub_id)
    names = components if components is not None else tuple(entry.components)
    unknown = [n for n in names if n not in entry.components]
    if unknown:
        raise KeyError(f"{hub_id} has no component(s) {unknown}; it has {list(entry.components)}")
    with torch.device("meta"):
        return {name: _build_one(entry.components[name], dtype) for name in names}


def build_meta_scheduler(hub_id: str):
    """The published scheduler (schedulers hold no weights, so this is the real object)."""
    import diffusers

    entry = get_published_config(hub_id)
    return getattr(diffusers, entry.scheduler_class).from_config(copy.deepcopy(entry.scheduler_config))


# ------------------------------------------------------------------------------------------------ entries
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

_UMT5_XXL = ComponentConfig(
    class_name="UMT5EncoderModel",
    library="transformers",
    config={
        "vocab_size": 256384,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "relative_attention_num_buckets": 32,
        "feed_forward_proj": "gated-gelu",
    },
    source="google/umt5-xxl config.json (loaded by name in convert_wan_to_diffusers.py)",
)
_CLIP_VIT_H = ComponentConfig(
    class_name="CLIPVisionModelWithProjection",
    library="transformers",
    config={
        "hidden_size": 1280,
        "intermediate_size": 5120,
        "num_hidden_layers": 32,
        "num_attention_heads": 16,
        "patch_size": 14,
        "image_size": 224,
        "projection_dim": 1024,
        "hidden_act": "gelu",
    },
    source="laion/CLIP-ViT-H-14-laion2B-s32B-b79K vision config (loaded by name in convert_wan_to_diffusers.py)",
)
_T5_XXL = ComponentConfig(
    class_name="T5EncoderModel",
    library="transformers",
    config={
        "vocab_size": 32128,
        "d_model": 4096,
        "d_kv": 64,
        "d_ff": 10240,
        "num_layers": 24,
        "num_heads": 64,
        "feed_forward_proj": "gated-gelu",
    },
    source="google/t5-v1_1-xxl config.json (CogVideoX's text encoder)",
)

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
            "text_encoder": _UMT5_XXL,
            "image_encoder": _CLIP_VIT_H,
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
            "text_encoder": _UMT5_XXL,
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
            "text_encoder": _T5_XXL,
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


def _register_wan22_ti2v_5b() -> None:
    # Wan 2.2 TI2V-5B; the values and their sources live in icreward/adapters/wan_ti2v.py.
    from .wan_ti2v import WAN22_TI2V_5B_PUBLISHED_CONFIG as ti2v

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
                "text_encoder": _UMT5_XXL,
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


# ------------------------------------------------------------------------------------------------ HunyuanVideo 1.5
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


# ------------------------------------------------------------------------------------------------ LTX-Video 0.9.x
_LTX_SCRIPT = "diffusers scripts/convert_ltx_to_diffusers.py"
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
            "text_encoder": _T5_XXL,
        },
        scheduler_class="FlowMatchEulerDiscreteScheduler",
        scheduler_config={
            "num_train_timesteps": 1000,
            "shift": 1.0,
            "use_dynamic_shifting": True,
            "base_shift": 0.95,
            "max_shift": 2.05,
            "base_image_seq_len": 1024,
            "max_image_seq_len": 4096,
            "shift_terminal": 0.1,
        },
        scheduler_source=f"{_LTX_SCRIPT}: the FlowMatchEulerDiscreteScheduler(...) it saves with the pipeline",
        height=512,
        width=704,
        num_frames=121,
        source=f"{_LTX_SCRIPT}; text encoder google/t5-v1_1-xxl at 128 tokens (the pipeline's max_sequence_length); "
        "sample size: LTXImageToVideoPipeline's defaults (121 frames at 512x704)",
    )
)


# ------------------------------------------------------------------------------------------------ LTX-2 (19B)
_LTX2_SCRIPT = "diffusers scripts/convert_ltx2_to_diffusers.py"
_GEMMA3_12B_SRC = (
    "google/gemma-3-12b-it config.json (the text encoder convert_ltx2_to_diffusers.py loads, as "
    "google/gemma-3-12b-it-qat-q4_0-unquantized): values as in a public LTX-2 trainer's Gemma3Config literal read with "
    "the code search tool; not re-read from the hub here. The pipeline uses its 49 hidden states (embeddings + 48 "
    "layers) stacked, which is the connectors' text_proj_in_factor=49 and caption_channels=3840"
)
register_published_config(
    PublishedConfig(
        hub_id="Lightricks/LTX-2",
        pipeline_class="LTX2ImageToVideoPipeline",
        components={
            "transformer": ComponentConfig(
                "LTX2VideoTransformer3DModel",
                {
                    "in_channels": 128,
                    "out_channels": 128,
                    "patch_size": 1,
                    "patch_size_t": 1,
                    "num_attention_heads": 32,
                    "attention_head_dim": 128,
                    "cross_attention_dim": 4096,
                    "vae_scale_factors": (8, 32, 32),
                    "pos_embed_max_pos": 20,
                    "base_height": 2048,
                    "base_width": 2048,
                    "audio_in_channels": 128,
                    "audio_out_channels": 128,
                    "audio_patch_size": 1,
                    "audio_patch_size_t": 1,
                    "audio_num_attention_heads": 32,
                    "audio_attention_head_dim": 64,
                    "audio_cross_attention_dim": 2048,
                    "audio_scale_factor": 4,
                    "audio_pos_embed_max_pos": 20,
                    "audio_sampling_rate": 16000,
                    "audio_hop_length": 160,
                    "num_layers": 48,
                    "activation_fn": "gelu-approximate",
                    "qk_norm": "rms_norm_across_heads",
                    "norm_elementwise_affine": False,
                    "norm_eps": 1e-6,
                    "caption_channels": 3840,
                    "attention_bias": True,
                    "attention_out_bias": True,
                    "rope_theta": 10000.0,
                    "rope_double_precision": True,
                    "causal_offset": 1,
                    "timestep_scale_multiplier": 1000,
                    "cross_attn_timestep_scale_multiplier": 1000,
                    "rope_type": "split",
                },
                f'{_LTX2_SCRIPT}: get_ltx2_transformer_config("2.0")',
            ),
            "connectors": ComponentConfig(
                "diffusers.pipelines.ltx2.LTX2TextConnectors",
                {
                    "caption_channels": 3840,
                    "text_proj_in_factor": 49,
                    "video_connector_num_attention_heads": 30,
                    "video_connector_attention_head_dim": 128,
                    "video_connector_num_layers": 2,
                    "video_connector_num_learnable_registers": 128,
                    "audio_connector_num_attention_heads": 30,
                    "audio_connector_attention_head_dim": 128,
                    "audio_connector_num_layers": 2,
                    "audio_connector_num_learnable_registers": 128,
                    "connector_rope_base_seq_len": 4096,
                    "rope_theta": 10000.0,
                    "rope_double_precision": True,
                    "causal_temporal_positioning": False,
                    "rope_type": "split",
                },
                f'{_LTX2_SCRIPT}: get_ltx2_connectors_config("2.0")',
            ),
            "vae": ComponentConfig(
                "AutoencoderKLLTX2Video",
                {
                    "in_channels": 3,
                    "out_channels": 3,
                    "latent_channels": 128,
                    "block_out_channels": (256, 512, 1024, 2048),
                    "down_block_types": ("LTX2VideoDownBlock3D",) * 4,
                    "decoder_block_out_channels": (256, 512, 1024),
                    "layers_per_block": (4, 6, 6, 2, 2),
                    "decoder_layers_per_block": (5, 5, 5, 5),
                    "spatio_temporal_scaling": (True, True, True, True),
                    "decoder_spatio_temporal_scaling": (True, True, True),
                    "decoder_inject_noise": (False, False, False, False),
                    "downsample_type": ("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
                    "upsample_residual": (True, True, True),
                    "upsample_factor": (2, 2, 2),
                    "timestep_conditioning": False,
                    "patch_size": 4,
                    "patch_size_t": 1,
                    "resnet_norm_eps": 1e-6,
                    "encoder_causal": True,
                    "decoder_causal": False,
                    "encoder_spatial_padding_mode": "zeros",
                    "decoder_spatial_padding_mode": "reflect",
                    "spatial_compression_ratio": 32,
                    "temporal_compression_ratio": 8,
                },
                f'{_LTX2_SCRIPT}: get_ltx2_video_vae_config("2.0") (timestep_conditioning: the script\'s default, off)',
            ),
            "audio_vae": ComponentConfig(
                "AutoencoderKLLTX2Audio",
                {
                    "base_channels": 128,
                    "output_channels": 2,
                    "ch_mult": (1, 2, 4),
                    "num_res_blocks": 2,
                    "attn_resolutions": None,
                    "in_channels": 2,
                    "resolution": 256,
                    "latent_channels": 8,
                    "norm_type": "pixel",
                    "causality_axis": "height",
                    "dropout": 0.0,
                    "mid_block_add_attention": False,
                    "sample_rate": 16000,
                    "mel_hop_length": 160,
                    "is_causal": True,
                    "mel_bins": 64,
                    "double_z": True,
                },
                f'{_LTX2_SCRIPT}: get_ltx2_audio_vae_config("2.0")',
            ),
            "text_encoder": ComponentConfig(
                "Gemma3ForConditionalGeneration",
                {
                    "boi_token_index": 255999,
                    "eoi_token_index": 256000,
                    "image_token_index": 262144,
                    "mm_tokens_per_image": 256,
                    "text_config": {
                        "head_dim": 256,
                        "hidden_activation": "gelu_pytorch_tanh",
                        "hidden_size": 3840,
                        "intermediate_size": 15360,
                        "max_position_embeddings": 131072,
                        "num_attention_heads": 16,
                        "num_hidden_layers": 48,
                        "num_key_value_heads": 8,
                        "query_pre_attn_scalar": 256,
                        "rms_norm_eps": 1e-6,
                        "rope_scaling": {"factor": 8.0, "rope_type": "linear"},
                        "sliding_window": 1024,
                        "vocab_size": 262208,
                    },
                    "vision_config": {
                        "hidden_size": 1152,
                        "image_size": 896,
                        "intermediate_size": 4304,
                        "num_attention_heads": 16,
                        "num_hidden_layers": 27,
                        "patch_size": 14,
                        "vision_use_head": False,
                    },
                },
                _GEMMA3_12B_SRC,
                library="transformers",
            ),
        },
        scheduler_class="FlowMatchEulerDiscreteScheduler",
        scheduler_config={
            "num_train_timesteps": 1000,
            "shift": 1.0,
            "use_dynamic_shifting": True,
            "base_shift": 0.95,
            "max_shift": 2.05,
            "base_image_seq_len": 1024,
            "max_image_seq_len": 4096,
            "shift_terminal": 0.1,
        },
        scheduler_source=f"{_LTX2_SCRIPT}: the FlowMatchEulerDiscreteScheduler(...) its --full_pipeline saves",
        height=512,
        width=768,
        num_frames=121,
        source=f"{_LTX2_SCRIPT} (version 2.0); sample size: LTX2ImageToVideoPipeline's defaults (121 frames at "
        "512x768, 24 fps); the vocoder is not listed (never on the training path)",
    )
)
