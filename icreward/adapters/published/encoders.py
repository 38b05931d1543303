"""Published text / image encoder configurations shared by several families (sources in each entry)."""

from __future__ import annotations

from ..published_configs import ComponentConfig

#: the T5 v1.1 XXL encoder's sizes, shared by google/t5-v1_1-xxl and google/umt5-xxl (only the vocabulary differs)
_T5_XXL_SIZES = {"d_model": 4096, "d_kv": 64, "d_ff": 10240, "num_layers": 24, "num_heads": 64}

UMT5_XXL = ComponentConfig(
    class_name="UMT5EncoderModel",
    library="transformers",
    config={
        "vocab_size": 256384,
        **_T5_XXL_SIZES,
        "relative_attention_num_buckets": 32,
        "feed_forward_proj": "gated-gelu",
    },
    source="google/umt5-xxl config.json (loaded by name in convert_wan_to_diffusers.py)",
)
CLIP_VIT_H = ComponentConfig(
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
T5_XXL = ComponentConfig(
    class_name="T5EncoderModel",
    library="transformers",
    config={"vocab_size": 32128, **_T5_XXL_SIZES, "feed_forward_proj": "gated-gelu"},
    source="google/t5-v1_1-xxl config.json (CogVideoX's text encoder)",
)
