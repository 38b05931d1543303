"""ICRewardModel, MLPRewardModel, ICRewardProcessor: reload, score range, conditioning, batching, errors, Hub card."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoConfig, AutoModel

from icreward import ICRewardModel, ICRewardProcessor, MLPRewardModel
from icreward.models import ICRewardConfig, create_reward_model_card
from icreward.testing import (
    save_tiny_vision_checkpoint,
    tiny_clip_vision_config,
    tiny_dinov2_config,
    tiny_icreward_config,
    tiny_mlp_reward_config,
    tiny_siglip_vision_config,
)
from icreward.video import write_video


def _models():
    torch.manual_seed(0)
    return [ICRewardModel(tiny_icreward_config()).eval(), MLPRewardModel(tiny_mlp_reward_config()).eval()]


def _batch(batch=2, frames=4, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, 3, size, size, generator=g), torch.rand(batch, 3, size, size, generator=g)


@pytest.mark.parametrize("index", [0, 1], ids=["icreward", "mlp"])
def test_save_and_auto_reload_gives_identical_outputs_with_safetensors_only(tmp_path, index):
    model = _models()[index]
    videos, refs = _batch()
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert "model.safetensors" in files and "config.json" in files and "README.md" in files
    assert not any(name.endswith((".bin", ".pt", ".pth", ".pkl")) for name in files)
    assert AutoConfig.from_pretrained(tmp_path).model_type == model.config.model_type
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is type(model)
    with torch.no_grad():
        expected = model(pixel_values=videos, reference_pixel_values=refs).scores
        got = reloaded(pixel_values=videos, reference_pixel_values=refs).scores
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("index", [0, 1], ids=["icreward", "mlp"])
def test_scores_stay_in_unit_interval_for_extreme_inputs(index):
    model = _models()[index]
    for scale in (0.0, 1.0, 1e3, -1e3):
        videos, refs = _batch()
        with torch.no_grad():
            scores = model(pixel_values=videos * scale, reference_pixel_values=refs * scale).scores
        assert scores.shape == (2,)
        assert torch.all((scores >= 0) & (scores <= 1)) and torch.isfinite(scores).all()


def test_icreward_score_depends_on_reference_image():
    model = _models()[0]
    videos, refs = _batch()
    with torch.no_grad():
        a = model(pixel_values=videos, reference_pixel_values=refs).scores
        b = model(pixel_values=videos, reference_pixel_values=torch.rand_like(refs)).scores
    assert not torch.allclose(a, b)
    # and gradients reach the reference pixels through the cross-attention head when the backbone is trainable
    model = ICRewardModel(tiny_icreward_config(freeze_backbone=False))
    refs = refs.clone().requires_grad_(True)
    model(pixel_values=videos, reference_pixel_values=refs).scores.sum().backward()
    assert refs.grad is not None and refs.grad.abs().sum() > 0


@pytest.mark.parametrize("index", [0, 1], ids=["icreward", "mlp"])
def test_batched_scoring_equals_one_by_one_with_padding(index):
    model = _models()[index]
    g = torch.Generator().manual_seed(1)
    lengths = [4, 2, 3]
    videos = [torch.rand(n, 3, 32, 32, generator=g) for n in lengths]
    refs = [torch.rand(3, 32, 32, generator=g) for _ in lengths]
    processor = model.get_processor()
    batched = model.score(refs, videos, processor=processor, batch_size=3)
    single = torch.stack([model.score(r, v, processor=processor) for r, v in zip(refs, videos)])
    torch.testing.assert_close(batched, single, rtol=1e-5, atol=1e-6)
    inputs = processor(videos=videos, reference_images=refs)
    assert inputs["frame_mask"].tolist() == [[True] * 4, [True, True, False, False], [True, True, True, False]]


@pytest.mark.parametrize("index", [0, 1], ids=["icreward", "mlp"])
def test_precomputed_features_match_pixel_path(index):
    model = _models()[index]
    videos, refs = _batch()
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    with torch.no_grad():
        direct = model(pixel_values=videos, reference_pixel_values=refs, frame_mask=mask).scores
        feats = model.extract_features(videos, refs, mask)
        cached = model(**feats).scores
    torch.testing.assert_close(cached, direct, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("index", [0, 1], ids=["icreward", "mlp"])
def test_bad_inputs_raise_clear_errors(index):
    model = _models()[index]
    videos, refs = _batch()
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        model(pixel_values=videos[:, :, :2], reference_pixel_values=refs)
    with pytest.raises(ValueError, match="zero frames"):
        model(pixel_values=videos[:, :0], reference_pixel_values=refs)
    with pytest.raises(ValueError, match="one reference per video"):
        model(pixel_values=videos, reference_pixel_values=refs[:1])
    with pytest.raises(ValueError, match="zero valid frames"):
        model(pixel_values=videos, reference_pixel_values=refs, frame_mask=torch.tensor([[True] * 4, [False] * 4]))
    with pytest.raises(ValueError, match="one reference per video"):
        model.score([refs[0]], [videos[0], videos[1]])
    processor = model.get_processor()
    with pytest.raises(ValueError, match="3 \\(RGB\\) channels"):
        processor(videos=[torch.rand(4, 1, 32, 32)], reference_images=[refs[0]])
    with pytest.raises(ValueError, match="zero frames"):
        processor(videos=[torch.rand(0, 3, 32, 32)], reference_images=[refs[0]])


def test_mlp_score_is_average_frame_reward():
    model = _models()[1]
    videos, refs = _batch()
    mask = torch.tensor([[True, True, True, True], [True, False, False, False]])
    out = model(pixel_values=videos, reference_pixel_values=refs, frame_mask=mask)
    expected = torch.stack([out.frame_scores[0].mean(), out.frame_scores[1, 0]])
    torch.testing.assert_close(out.scores, expected)
    assert torch.all(out.frame_scores[1, 1:] == 0)


def test_multi_head_overall_score_is_weighted_mean_and_head_labels_train():
    config = tiny_icreward_config(
        heads=["subject", "background", "motion"], head_weights={"subject": 2, "background": 1, "motion": 1}
    )
    model = ICRewardModel(config)
    videos, refs = _batch()
    out = model(
        pixel_values=videos,
        reference_pixel_values=refs,
        head_labels=torch.tensor([[1.0, float("nan"), 0.5], [0.0, 0.2, float("nan")]]),
    )
    w = torch.tensor([2.0, 1.0, 1.0])
    torch.testing.assert_close(out.scores, (out.head_scores * w).sum(1) / w.sum())
    torch.testing.assert_close(out.logits, torch.logit(out.scores))
    assert out.loss is not None and torch.isfinite(out.loss)
    with pytest.raises(ValueError, match="head_weights"):
        ICRewardConfig(heads=["subject"], head_weights={"background": 1.0})


@pytest.mark.parametrize("config_fn", [tiny_clip_vision_config, tiny_siglip_vision_config, tiny_dinov2_config])
def test_transformers_backbones_load_from_a_local_checkpoint(tmp_path, config_fn):
    """The hub-id / local-path loading code, exercised on a tiny checkpoint written locally."""
    ckpt = save_tiny_vision_checkpoint(tmp_path / "backbone", config_fn(), seed=3)
    model = ICRewardModel.from_pretrained_backbone(
        str(ckpt), head_hidden_size=16, head_num_heads=2, image_size=32, num_frames=4
    )
    reference = AutoModel.from_pretrained(ckpt)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.backbone.model.state_dict()[name], tensor, rtol=0, atol=0)
    assert model.config.backbone_name_or_path == str(ckpt)
    assert not model.backbone_is_trainable
    videos, refs = _batch()
    assert model(pixel_values=videos, reference_pixel_values=refs).scores.shape == (2,)


def test_efficientnet_lite_weights_are_real_imagenet_weights_and_reach_the_head():
    from skimage import data

    from icreward.models import load_efficientnet_lite

    net = load_efficientnet_lite("efficientnet-lite0")
    image = torch.from_numpy(data.coffee()).permute(2, 0, 1).float()[None] / 255
    x = torch.nn.functional.interpolate(image, size=(224, 224), mode="bilinear", antialias=True) * 2 - 1
    with torch.no_grad():
        probs = net(x).softmax(-1)
    assert probs.argmax().item() == 967  # ImageNet "espresso"
    assert probs.max().item() > 0.5

    model = ICRewardModel.from_pretrained_backbone(
        "efficientnet-lite0", image_size=64, num_frames=2, head_hidden_size=32
    )
    torch.testing.assert_close(model.backbone.model._conv_stem.weight, net._conv_stem.weight)
    assert model.config.backbone_type == "efficientnet_lite"
    frames = torch.rand(1, 2, 3, 64, 64) * 2 - 1
    ref = torch.rand(1, 3, 64, 64) * 2 - 1
    feats = model.extract_features(frames, ref)
    assert feats["frame_features"].shape[-1] == 1280  # the backbone's features are the head's tokens
    feats["frame_features"].requires_grad_(True)
    model(**feats).scores.sum().backward()
    assert feats["frame_features"].grad.abs().sum() > 0
    assert model.head.proj[0].weight.grad is not None
    assert all(p.grad is None for p in model.backbone.parameters())  # frozen


def test_frozen_backbone_stays_in_eval_mode():
    model = ICRewardModel.from_pretrained_backbone(
        "efficientnet-lite0", image_size=32, num_frames=2, head_hidden_size=16
    )
    model.train()
    assert model.head.training and not model.backbone.training
    running_mean = model.backbone.model._bn0.running_mean.clone()
    model(pixel_values=torch.rand(2, 2, 3, 32, 32), reference_pixel_values=torch.rand(2, 3, 32, 32))
    torch.testing.assert_close(model.backbone.model._bn0.running_mean, running_mean, rtol=0, atol=0)


def test_backbone_lora_trains_only_adapters_and_round_trips(tmp_path):
    from peft import LoraConfig

    model = ICRewardModel(tiny_icreward_config())
    model.enable_backbone_lora(
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    trainable = [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert model.backbone_is_trainable
    model.eval()
    videos, refs = _batch()
    model.save_pretrained(tmp_path)
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(
            reloaded(pixel_values=videos, reference_pixel_values=refs).scores,
            model(pixel_values=videos, reference_pixel_values=refs).scores,
            rtol=0,
            atol=0,
        )


def test_processor_round_trip_and_input_kinds(tmp_path):
    processor = ICRewardProcessor(image_size=32, num_frames=3, image_mean=[0.1, 0.2, 0.3], image_std=[0.5, 0.5, 0.5])
    processor.save_pretrained(tmp_path)
    again = ICRewardProcessor.from_pretrained(tmp_path)
    assert again.to_dict() == processor.to_dict()

    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(6, 3, 40, 48, generator=g) * 255).to(torch.uint8)
    write_video(tmp_path / "clip", frames)  # a folder of PNG frames (lossless)
    ref = Image.fromarray(frames[0].permute(1, 2, 0).numpy())
    ref.save(tmp_path / "ref.png")
    pil_frames = [Image.fromarray(f.permute(1, 2, 0).numpy()) for f in frames]
    outs = [
        processor(videos=v, reference_images=r)
        for v, r in [(frames, frames[0]), (str(tmp_path / "clip"), str(tmp_path / "ref.png")), (pil_frames, ref)]
    ]
    for out in outs:
        assert out["pixel_values"].shape == (1, 3, 3, 32, 32)
        assert out["reference_pixel_values"].shape == (1, 3, 32, 32)
        torch.testing.assert_close(out["pixel_values"], outs[0]["pixel_values"], rtol=0, atol=1e-6)
        torch.testing.assert_close(out["reference_pixel_values"], outs[0]["reference_pixel_values"], rtol=0, atol=1e-6)
    # normalisation: a mid-grey frame maps to (0.5 - mean) / std
    grey = torch.full((1, 3, 40, 48), 0.5)
    out = processor(videos=grey, reference_images=grey[0])
    expected = (0.5 - torch.tensor([0.1, 0.2, 0.3])) / 0.5
    torch.testing.assert_close(out["pixel_values"][0, 0, :, 0, 0], expected, rtol=0, atol=1e-2)


def test_score_from_files_matches_manual_forward(tmp_path):
    model = _models()[0]
    g = torch.Generator().manual_seed(2)
    frames = (torch.rand(5, 3, 32, 32, generator=g) * 255).to(torch.uint8)
    write_video(tmp_path / "v.mp4", frames, fps=4)
    Image.fromarray(frames[0].permute(1, 2, 0).numpy()).save(tmp_path / "ref.png")
    score = model.score(str(tmp_path / "ref.png"), str(tmp_path / "v.mp4"))
    inputs = model.get_processor()(videos=[str(tmp_path / "v.mp4")], reference_images=[str(tmp_path / "ref.png")])
    with torch.no_grad():
        expected = model(**inputs).scores[0]
    assert score.shape == () and math.isclose(score.item(), expected.item(), rel_tol=1e-6)


def test_model_card_is_generated_offline(tmp_path):
    model = _models()[0]
    card = create_reward_model_card(model, dataset_name="my/data", metrics={"mse": 0.0123, "pairwise_accuracy": 0.9})
    text = str(card)
    for needle in (
        "What it scores",
        "Training data",
        "Evaluation",
        "Limitations",
        "Intended use",
        "liang2025icreward",
        "0.0123",
        "my/data",
    ):
        assert needle in text
    assert "library_name: icreward" in text
    model.save_pretrained(tmp_path, model_card_kwargs={"metrics": {"mse": 0.5}})
    assert "| mse | 0.5000 |" in (Path(tmp_path) / "README.md").read_text()
    with pytest.raises(ValueError, match="safetensors"):
        model.save_pretrained(tmp_path / "x", safe_serialization=False)


def test_numpy_channels_last_video_is_accepted():
    processor = ICRewardProcessor(image_size=16, num_frames=2)
    video = (np.random.default_rng(0).random((3, 20, 20, 3)) * 255).astype(np.uint8)
    out = processor(videos=video, reference_images=video[0])
    assert out["pixel_values"].shape == (1, 2, 3, 16, 16)


def test_single_frame_videos_are_scored():
    model = _models()[0]
    videos, refs = _batch(frames=1)
    with torch.no_grad():
        scores = model(pixel_values=videos, reference_pixel_values=refs).scores
    assert scores.shape == (2,) and torch.isfinite(scores).all()


def test_frozen_reward_model_is_differentiable_with_respect_to_pixels():
    """Used as a reward (e.g. for reward feedback), gradients reach the video but the frozen backbone stays put."""
    model = _models()[0]
    videos, refs = _batch()
    videos.requires_grad_(True)
    model(pixel_values=videos, reference_pixel_values=refs).scores.sum().backward()
    assert videos.grad is not None and videos.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.backbone.parameters())


def test_activation_checkpointing_gives_the_same_gradients_without_deprecation_warnings():
    import warnings

    from peft import LoraConfig

    torch.manual_seed(0)
    model = ICRewardModel(tiny_icreward_config(head_num_layers=2))
    model.enable_backbone_lora(
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    model.train()
    videos, refs = _batch()
    labels = torch.tensor([0.2, 0.9])

    def grads():
        model.zero_grad()
        model(pixel_values=videos, reference_pixel_values=refs, labels=labels).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    plain = grads()
    with warnings.catch_warnings():
        # The Trainer's call (TrainingArguments(activation_checkpointing=True)) must not go through the
        # gradient_checkpointing_* names that transformers 5 deprecates.
        warnings.simplefilter("error", FutureWarning)
        model.activation_checkpointing_enable(every_n_layers=1, offload=False)
        assert model.is_activation_checkpointing and model.head.gradient_checkpointing
        assert model.backbone.model.is_activation_checkpointing
        checkpointed = grads()
        model.activation_checkpointing_disable()
    assert not model.is_activation_checkpointing and not model.backbone.model.is_activation_checkpointing
    assert plain.keys() == checkpointed.keys() and any("lora_" in n for n in plain)
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6)
