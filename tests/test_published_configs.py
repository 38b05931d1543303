"""Published full-size configs build on ``meta``; adapters' latent_shape equals what prepare_latents produces."""

import pytest
import torch

from icreward.adapters import get_adapter
from icreward.adapters.published_configs import (
    PublishedConfig,
    available_published_configs,
    build_meta_components,
    build_meta_scheduler,
    get_published_config,
    register_published_config,
)
from icreward.testing.tiny_pipelines import tiny_pipeline

HUB_IDS = ["Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "Wan-AI/Wan2.2-I2V-A14B-Diffusers", "THUDM/CogVideoX-5b-I2V"]


def test_registry_has_the_shipped_families_and_names_sources():
    for hub_id in HUB_IDS:
        assert hub_id in available_published_configs()
        entry = get_published_config(hub_id)
        assert entry.source and entry.scheduler_source
        assert all(c.source for c in entry.components.values())
    with pytest.raises(KeyError, match="no published config"):
        get_published_config("nope/none")
    with pytest.raises(ValueError, match="already registered"):
        register_published_config(get_published_config(HUB_IDS[0]))
    with pytest.raises(TypeError):
        register_published_config({"hub_id": "x"})
    assert isinstance(get_published_config(HUB_IDS[0]), PublishedConfig)


@pytest.mark.parametrize(
    ("hub_id", "component", "billions"),
    [
        ("Wan-AI/Wan2.1-I2V-14B-480P-Diffusers", "transformer", 16.395),
        ("Wan-AI/Wan2.2-I2V-A14B-Diffusers", "transformer_2", 14.289),
        ("THUDM/CogVideoX-5b-I2V", "transformer", 5.570),
    ],
)
def test_denoiser_builds_on_meta_at_published_size(hub_id, component, billions):
    module = build_meta_components(hub_id, components=(component,))[component]
    params = list(module.parameters())
    assert all(p.device.type == "meta" for p in params)
    assert sum(p.numel() for p in params) / 1e9 == pytest.approx(billions, abs=1e-3)


def test_published_schedulers():
    assert type(build_meta_scheduler(HUB_IDS[0])).__name__ == "UniPCMultistepScheduler"
    assert build_meta_scheduler(HUB_IDS[0]).config.flow_shift == 3.0
    assert type(build_meta_scheduler(HUB_IDS[2])).__name__ == "CogVideoXDDIMScheduler"


@pytest.mark.parametrize("family", ["wan21", "wan22", "cogvideox"])
def test_latent_shape_matches_prepare_latents(family):
    adapter = get_adapter(tiny_pipeline(family))
    num_frames, height, width = 9, 32, 32
    with torch.no_grad():
        encoded = adapter.prepare_latents(torch.rand(1, num_frames, 3, height, width)).shape[1:]
    assert adapter.latent_shape(3, num_frames, height, width) == (3, *encoded)
    axis = adapter.latent_frame_axis
    assert encoded[axis - 1] == (num_frames - 1) // 4 + 1


def test_wan22_t2v_pipeline_is_refused_naming_the_supported_class():
    from diffusers import WanPipeline, WanTransformer3DModel

    from icreward.adapters import Wan22Adapter

    i2v = tiny_pipeline("wan22")

    def t2v_expert():
        return WanTransformer3DModel(
            patch_size=(1, 2, 2),
            num_attention_heads=2,
            attention_head_dim=12,
            in_channels=16,
            out_channels=16,
            text_dim=i2v.transformer.config.text_dim,
            freq_dim=256,
            ffn_dim=32,
            num_layers=1,
        )

    t2v = WanPipeline(
        tokenizer=i2v.tokenizer,
        text_encoder=i2v.text_encoder,
        vae=i2v.vae,
        scheduler=i2v.scheduler,
        transformer=t2v_expert(),
        transformer_2=t2v_expert(),
        boundary_ratio=0.875,
    )
    with pytest.raises(ValueError, match="supports WanImageToVideoPipeline.*not WanPipeline"):
        get_adapter(t2v)
    with pytest.raises(ValueError, match="supports WanImageToVideoPipeline"):
        Wan22Adapter(t2v)
    assert isinstance(get_adapter(i2v), Wan22Adapter)


def test_wan22_frozen_expert_is_a_frozen_denoiser_and_encoders_are_not():
    from icreward.adapters import Wan22Adapter

    pipe = tiny_pipeline("wan22")
    low = Wan22Adapter(pipe, train_expert="low_noise")
    assert set(low.frozen_denoisers) == {"transformer"} and low.frozen_denoisers["transformer"] is pipe.transformer
    high = Wan22Adapter(pipe, train_expert="high_noise")
    assert set(high.frozen_denoisers) == {"transformer_2"}
    assert Wan22Adapter(pipe, train_expert="both").frozen_denoisers == {}
    assert get_adapter(tiny_pipeline("wan21")).frozen_denoisers == {}


def test_meta_build_keeps_fp32_modules_as_from_pretrained_does(tmp_path):
    """Compare with a real ``from_pretrained(torch_dtype=bfloat16)`` of a tiny Wan transformer: the same parameters
    (diffusers' ``_keep_in_fp32_modules``) stay float32; a plain ``.to(bfloat16)`` would cast them."""
    from diffusers import WanTransformer3DModel

    from icreward.adapters.published_configs import cast_like_from_pretrained

    pipe = tiny_pipeline("wan21")
    pipe.transformer.save_pretrained(tmp_path)
    loaded = WanTransformer3DModel.from_pretrained(tmp_path, torch_dtype=torch.bfloat16)
    expected = {n: p.dtype for n, p in loaded.named_parameters()}
    assert torch.float32 in expected.values() and torch.bfloat16 in expected.values()
    cast = cast_like_from_pretrained(WanTransformer3DModel.from_config(pipe.transformer.config), torch.bfloat16)
    assert {n: p.dtype for n, p in cast.named_parameters()} == expected

    full = build_meta_components(HUB_IDS[0], components=("transformer",))["transformer"]
    kept = {n for n, p in full.named_parameters() if p.dtype == torch.float32}
    assert "scale_shift_table" in kept and any(".norm2." in n for n in kept)
    assert all(p.dtype == torch.bfloat16 for n, p in full.named_parameters() if n not in kept)
