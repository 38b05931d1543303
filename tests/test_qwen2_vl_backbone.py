"""ICRewardModel with a Qwen2-VL-family backbone (backbone_type="qwen2_vl"): tiny random configs, offline."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

from icreward import ICRewardModel
from icreward.models.backbones import resolve_backbone
from icreward.models.qwen2_vl_backbone import patchify_images, patchify_video
from icreward.testing import save_tiny_qwen2_vl_checkpoint, tiny_qwen2_vl_config, tiny_qwen2_vl_icreward_config

_MEAN, _STD = [0.48145466, 0.4578275, 0.40821073], [0.26862954, 0.26130258, 0.27577711]


def _normalise(uint8_channels_last: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(uint8_channels_last).movedim(-1, -3).float() / 255
    return (x - torch.tensor(_MEAN)[:, None, None]) / torch.tensor(_STD)[:, None, None]


def _model(model_type="qwen2_vl", seed=0, **kwargs):
    torch.manual_seed(seed)
    return ICRewardModel(tiny_qwen2_vl_icreward_config(tiny_qwen2_vl_config(model_type), **kwargs)).eval()


def _batch(batch=2, frames=4, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g), torch.randn(batch, 3, size, size, generator=g)


@pytest.fixture(scope="module")
def model():
    return _model()


def test_patchify_matches_qwen2_vl_image_and_video_processors():
    rng = np.random.RandomState(0)
    kwargs = dict(do_resize=False, patch_size=4, merge_size=2, temporal_patch_size=2, image_mean=_MEAN, image_std=_STD)
    image = (rng.rand(16, 24, 3) * 255).astype(np.uint8)  # non-square, to catch a height/width mix-up
    expected = Qwen2VLImageProcessor(**kwargs)(images=[image], return_tensors="pt")
    patches, grid = patchify_images(_normalise(image)[None], 4, 2, 2)
    assert grid.tolist() == expected["image_grid_thw"].tolist() == [[1, 4, 6]]
    torch.testing.assert_close(patches, expected["pixel_values"], rtol=0, atol=1e-5)

    video = (rng.rand(3, 16, 24, 3) * 255).astype(np.uint8)  # odd frame count: the last frame is repeated
    processor = Qwen2VLVideoProcessor(**kwargs, do_sample_frames=False, cap_pixels_per_frame=False)
    expected = processor(videos=[video], return_tensors="pt")
    patches, grid = patchify_video(_normalise(video), 4, 2, 2)
    assert list(grid) == expected["video_grid_thw"][0].tolist() == [2, 4, 6]
    torch.testing.assert_close(patches, expected["pixel_values_videos"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("model_type", ["qwen2_vl", "qwen2_5_vl"])
def test_forward_scores_in_unit_interval_and_depend_on_reference(model_type):
    model = _model(model_type)
    videos, refs = _batch(frames=3)
    with torch.no_grad():
        out = model(pixel_values=videos, reference_pixel_values=refs)
        other = model(pixel_values=videos, reference_pixel_values=torch.randn_like(refs))
        feats = model.extract_features(videos, refs)
        other_feats = model.extract_features(videos, refs.flip(0))
    assert out.scores.shape == (2,) and torch.all((out.scores >= 0) & (out.scores <= 1))
    assert not torch.allclose(out.scores, other.scores)
    # joint encoding: the LM sees the reference before the video, so the frame tokens themselves depend on it
    assert feats["frame_features"].shape == (2, 2, 4, 32) and feats["reference_features"].shape == (2, 4, 32)
    assert not torch.allclose(feats["frame_features"], other_feats["frame_features"])
    assert model.get_processor().image_mean == _MEAN


def test_cached_features_equal_pixel_path_and_padding_equals_one_by_one(model):
    videos, refs = _batch(frames=4)
    frame_mask = torch.tensor([[True, True, True, False], [True, True, True, True]])
    with torch.no_grad():
        pixel_scores = model(pixel_values=videos, reference_pixel_values=refs, frame_mask=frame_mask).scores
        feats = model.extract_features(videos, refs, frame_mask)
        cached_scores = model(**feats).scores
        alone = [model.extract_features(videos[:1, :3], refs[:1]), model.extract_features(videos[1:], refs[1:])]
        alone_scores = torch.cat([model(**f).scores for f in alone])
    torch.testing.assert_close(cached_scores, pixel_scores, rtol=0, atol=0)
    assert feats["frame_mask"].tolist() == [[True, True], [True, True]]  # 3 valid frames -> 2 temporal groups
    torch.testing.assert_close(feats["reference_features"][:1], alone[0]["reference_features"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats["frame_features"][1:], alone[1]["frame_features"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(feats["frame_features"][:1], alone[0]["frame_features"], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(pixel_scores, alone_scores, rtol=1e-5, atol=1e-5)
    # a clip of 2 valid frames among 4 has one temporal group; the other is padding (zeros, masked)
    feats = model.extract_features(videos, refs, torch.tensor([[True, True, False, False], [True] * 4]))
    assert feats["frame_mask"].tolist() == [[True, False], [True, True]]
    assert feats["frame_features"][0, 1].abs().sum() == 0


def test_save_and_auto_reload_gives_identical_outputs(model, tmp_path):
    videos, refs = _batch()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is ICRewardModel and reloaded.config.backbone_type == "qwen2_vl"
    with torch.no_grad():
        expected = model(pixel_values=videos, reference_pixel_values=refs).scores
        got = reloaded(pixel_values=videos, reference_pixel_values=refs).scores
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_from_pretrained_backbone_loads_a_local_checkpoint(tmp_path):
    path = save_tiny_qwen2_vl_checkpoint(tmp_path / "tiny-qwen2-vl", seed=3)
    assert resolve_backbone(str(path))[0] == "qwen2_vl"
    torch.manual_seed(0)  # the model is built with random weights first: make them those of `_model(seed=0)`
    model = ICRewardModel.from_pretrained_backbone(str(path), head_hidden_size=16, head_num_heads=2, image_size=16)
    assert model.config.backbone_type == "qwen2_vl" and model.config.backbone_name_or_path == str(path)
    # saved as the hub checkpoints are laid out: "visual.*", the LM under "model.*", plus "lm_head.weight"
    saved = load_file(path / "model.safetensors")
    assert "lm_head.weight" in saved and any(k.startswith("model.layers.") for k in saved)
    expected = {
        ("language_model." + k.removeprefix("model.") if k.startswith("model.") else k): v
        for k, v in saved.items()
        if not k.startswith("lm_head.")
    }
    state = model.backbone.model.state_dict()
    assert set(state) == set(expected)
    for key, value in state.items():
        torch.testing.assert_close(value, expected[key].to(value.dtype), rtol=0, atol=0)
    # and loading replaced the random initialisation
    key = "language_model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(_model(seed=0).backbone.model.state_dict()[key], state[key])


def test_lora_and_activation_checkpointing_train_the_backbone():
    pytest.importorskip("peft")
    model = _model()
    model.enable_backbone_lora({"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]})
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    model.train()
    videos, refs = _batch()
    labels = torch.tensor([0.2, 0.9])
    with torch.no_grad():  # LoRA B starts at zero: move it so the adapters change the output
        for name, param in model.backbone.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.1)
    plain = model(pixel_values=videos, reference_pixel_values=refs, labels=labels)
    plain.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.backbone.named_parameters() if p.requires_grad}
    assert any(g.abs().sum() > 0 for n, g in grads.items() if "language_model" in n)
    model.zero_grad()
    model.activation_checkpointing_enable()
    assert model.is_activation_checkpointing and model.backbone.model.is_activation_checkpointing
    ckpt = model(pixel_values=videos, reference_pixel_values=refs, labels=labels)
    ckpt.loss.backward()
    torch.testing.assert_close(ckpt.loss, plain.loss)
    for name, param in model.backbone.named_parameters():
        if param.requires_grad:
            torch.testing.assert_close(param.grad, grads[name], rtol=1e-4, atol=1e-6)
    model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing and not model.backbone.model.is_activation_checkpointing
