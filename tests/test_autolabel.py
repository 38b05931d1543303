import numpy as np
import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from icreward.data.autolabel import ConsistencyAutoLabeler, ImagePreprocessing
from icreward.metrics.consistency import (
    background_consistency,
    i2v_consistency_score,
    i2v_consistency_scores,
    subject_consistency,
    temporal_consistency,
)

# ----------------------------------------------------------------------------------------------------------------
# Independent NumPy references, written from the formulas (VBench's per-frame loops), not from the library code.
# ----------------------------------------------------------------------------------------------------------------


def _cos(a, b):
    return max(0.0, float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))))


def np_i2v(ref, frames, weights=(0.4, 0.3, 0.3)):
    to_ref = [_cos(ref, f) for f in frames]
    consec = [_cos(frames[i - 1], frames[i]) for i in range(1, len(frames))]
    mean_c, min_c = (np.mean(consec), np.min(consec)) if consec else (1.0, 1.0)
    return weights[0] * max(to_ref) + weights[1] * mean_c + weights[2] * min_c


def np_temporal(frames):
    if len(frames) == 1:
        return 1.0
    sims = [(_cos(frames[i - 1], frames[i]) + _cos(frames[0], frames[i])) / 2 for i in range(1, len(frames))]
    return float(np.mean(sims))


# ----------------------------------------------------------------------------------------------------------------
# icreward.metrics.consistency
# ----------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_frames", [1, 2, 7])
def test_i2v_score_matches_numpy(num_frames):
    gen = torch.Generator().manual_seed(num_frames)
    ref = torch.randn(16, generator=gen, dtype=torch.float64)
    frames = torch.randn(num_frames, 16, generator=gen, dtype=torch.float64)
    # Random 16-d vectors have plenty of negative cosines: the clamp is exercised.
    expected = np_i2v(ref.numpy(), frames.numpy())
    assert float(i2v_consistency_score(ref, frames)) == pytest.approx(expected, abs=1e-6)
    assert float(i2v_consistency_score(ref, frames, weights=(0.5, 0.5, 0.0))) == pytest.approx(
        np_i2v(ref.numpy(), frames.numpy(), (0.5, 0.5, 0.0)), abs=1e-6
    )


def test_i2v_score_known_values():
    ref = torch.tensor([1.0, 0.0])
    same = torch.tensor([[2.0, 0.0], [3.0, 0.0]])
    assert float(i2v_consistency_score(ref, same)) == pytest.approx(1.0)
    # Frames opposite to the reference: cos = -1 clamps to 0; frames agree with each other.
    assert float(i2v_consistency_score(ref, -same)) == pytest.approx(0.6)
    # A single frame has perfect temporal consistency by definition.
    assert float(i2v_consistency_score(ref, same[:1])) == pytest.approx(1.0)


def test_i2v_scores_batched_with_mask_drops_frames():
    gen = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 8, generator=gen)
    frames = torch.randn(3, 5, 8, generator=gen)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 0, 1, 1, 0], [0, 0, 0, 1, 0]], dtype=torch.bool)
    scores = i2v_consistency_scores(ref, frames, mask)
    for b in range(3):
        kept = frames[b][mask[b]].numpy()
        assert float(scores[b]) == pytest.approx(np_i2v(ref[b].numpy(), kept), abs=1e-5)
    assert torch.allclose(i2v_consistency_scores(ref, frames), i2v_consistency_scores(ref, frames, torch.ones(3, 5)))


def test_i2v_scores_are_differentiable():
    ref = torch.randn(2, 8, requires_grad=True)
    frames = torch.randn(2, 4, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    i2v_consistency_scores(ref, frames, mask).sum().backward()
    assert torch.isfinite(ref.grad).all() and ref.grad.abs().sum() > 0
    assert torch.isfinite(frames.grad).all() and frames.grad.abs().sum() > 0
    # Padding frames of row 1 get no gradient.
    assert frames.grad[1, 1:].abs().sum() == 0


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((torch.randn(2, 4), torch.randn(3, 4)), "ref_feature must have shape"),
        ((torch.randn(4), torch.randn(3)), "frame_features must have shape"),
        ((torch.randn(4), torch.randn(0, 4)), "no frames"),
    ],
)
def test_i2v_score_shape_errors(args, match):
    with pytest.raises(ValueError, match=match):
        i2v_consistency_score(*args)


def test_i2v_scores_errors():
    with pytest.raises(ValueError, match="agree on batch size"):
        i2v_consistency_scores(torch.randn(2, 4), torch.randn(3, 5, 4))
    with pytest.raises(ValueError, match=r"no real frame in batch row\(s\) \[1\]"):
        i2v_consistency_scores(torch.randn(2, 4), torch.randn(2, 3, 4), torch.tensor([[1, 0, 0], [0, 0, 0]]))
    with pytest.raises(ValueError, match="weights"):
        i2v_consistency_score(torch.randn(4), torch.randn(3, 4), weights=(0.5, 0.5))


def test_temporal_consistency_matches_vbench_loop():
    gen = torch.Generator().manual_seed(1)
    frames = torch.randn(2, 6, 8, generator=gen)
    for fn in (temporal_consistency, subject_consistency, background_consistency):
        assert float(fn(frames[0])) == pytest.approx(np_temporal(frames[0].numpy()), abs=1e-6)
        batched = fn(frames)
        assert batched.shape == (2,)
        assert float(batched[1]) == pytest.approx(np_temporal(frames[1].numpy()), abs=1e-6)
    mask = torch.tensor([[1, 1, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    masked = temporal_consistency(frames, mask)
    assert float(masked[0]) == pytest.approx(np_temporal(frames[0][mask[0]].numpy()), abs=1e-6)
    assert float(masked[1]) == 1.0


# ----------------------------------------------------------------------------------------------------------------
# icreward.data.autolabel
# ----------------------------------------------------------------------------------------------------------------


def _pooled(images):
    """A fixed feature extractor: 2x2 average pooling of each channel -> 12-d features."""
    return F.adaptive_avg_pool2d(images, 2).flatten(1)


def _channel_means(images):
    return images.mean(dim=(2, 3))


def _np_pooled(images_uint8):
    x = images_uint8.astype(np.float64) / 255.0
    n, c, h, w = x.shape
    return x.reshape(n, c, 2, h // 2, 2, w // 2).mean(axis=(3, 5)).reshape(n, -1)


@pytest.fixture
def pair():
    gen = torch.Generator().manual_seed(3)
    reference = torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8, generator=gen)
    # Frames drift away from the reference so the score is far from both 0 and 1.
    noise = torch.randint(0, 256, (5, 3, 16, 16), dtype=torch.uint8, generator=gen)
    alpha = torch.linspace(0.1, 0.9, 5)[:, None, None, None]
    frames = ((1 - alpha) * reference.float() + alpha * noise.float()).round().to(torch.uint8)
    return reference, frames


def test_labeler_with_fixed_features_matches_numpy(pair):
    reference, frames = pair
    labeler = ConsistencyAutoLabeler(
        _pooled,
        background_extractor=_channel_means,
        image_size=16,
        resize_size=None,
        image_mean=None,
        image_std=None,
        background_image_size=16,
        dimension_weights={"i2v_subject": 3.0, "i2v_background": 1.0},
    )
    result = labeler.label(reference, frames)
    subject = np_i2v(_np_pooled(reference[None].numpy())[0], _np_pooled(frames.numpy()))
    background = np_i2v(reference.numpy().mean(axis=(1, 2)), frames.numpy().mean(axis=(2, 3)))
    assert set(result) == {"i2v_subject", "i2v_background", "score"}
    assert result["i2v_subject"] == pytest.approx(subject, abs=1e-5)
    assert result["i2v_background"] == pytest.approx(background, abs=1e-5)
    assert result["score"] == pytest.approx((3 * subject + background) / 4, abs=1e-5)
    assert 0.0 < result["i2v_subject"] < 1.0
    # Float input in [0, 1] gives the same scores as uint8 input.
    assert labeler(reference.float() / 255, frames.numpy()) == pytest.approx(result, abs=1e-5)


def test_labeler_without_background_extractor(pair):
    labeler = ConsistencyAutoLabeler(_pooled, image_size=16, resize_size=None, image_mean=None, image_std=None)
    result = labeler.label(*pair)
    assert labeler.dimensions == ("i2v_subject",)
    assert set(result) == {"i2v_subject", "score"} and result["score"] == result["i2v_subject"]
    with pytest.raises(ValueError, match="i2v_background needs background_extractor"):
        ConsistencyAutoLabeler(_pooled, dimension_weights={"i2v_background": 1.0})


def _tiny_vit():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    config = ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    return ViTModel(config, add_pooling_layer=False).eval()


def _tiny_dinov2():
    from transformers import Dinov2Config, Dinov2Model

    torch.manual_seed(0)
    config = Dinov2Config(
        image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2
    )
    return Dinov2Model(config).eval()


@pytest.mark.parametrize("make_model", [_tiny_vit, _tiny_dinov2])
def test_labeler_with_tiny_transformers_model_matches_numpy(pair, make_model):
    reference, frames = pair
    model = make_model()
    labeler = ConsistencyAutoLabeler(model, image_size=16, resize_size=None)

    mean = torch.tensor([0.485, 0.456, 0.406])[None, :, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[None, :, None, None]
    with torch.no_grad():
        pixels = (torch.cat([reference[None], frames]).float() / 255 - mean) / std
        cls = model(pixel_values=pixels).last_hidden_state[:, 0].numpy()
    expected = np_i2v(cls[0], cls[1:])
    result = labeler.label(reference, frames)
    assert result["i2v_subject"] == pytest.approx(expected, abs=1e-5)

    mean_tokens = ConsistencyAutoLabeler(model, image_size=16, resize_size=None, pooling="mean").label(
        reference, frames
    )
    with torch.no_grad():
        tokens = model(pixel_values=pixels).last_hidden_state[:, 1:].mean(1).numpy()
    assert mean_tokens["i2v_subject"] == pytest.approx(np_i2v(tokens[0], tokens[1:]), abs=1e-5)


def test_labeler_loads_model_from_local_path(tmp_path, pair):
    model = _tiny_vit()
    model.save_pretrained(tmp_path / "tiny-vit")
    from_instance = ConsistencyAutoLabeler(model, image_size=16, resize_size=None).label(*pair)
    from_path = ConsistencyAutoLabeler(str(tmp_path / "tiny-vit"), image_size=16, resize_size=None).label(*pair)
    assert from_path == pytest.approx(from_instance, abs=1e-6)


def test_pooling_errors(pair):
    def conv_like(images):
        from transformers.modeling_outputs import BaseModelOutputWithPooling

        return BaseModelOutputWithPooling(last_hidden_state=images, pooler_output=None)

    with pytest.raises(ValueError, match="needs a \\(N, tokens, D\\) last_hidden_state"):
        ConsistencyAutoLabeler(conv_like, image_size=16, resize_size=None).label(*pair)
    with pytest.raises(ValueError, match="no pooler_output"):
        ConsistencyAutoLabeler(conv_like, image_size=16, resize_size=None, pooling="pooler").label(*pair)
    # A (N, C, H, W) map with pooling="mean" is averaged spatially: the channel-mean extractor.
    result = ConsistencyAutoLabeler(
        conv_like, image_size=16, resize_size=None, image_mean=None, image_std=None, pooling="mean"
    ).label(*pair)
    reference, frames = pair
    expected = np_i2v(reference.numpy().mean(axis=(1, 2)), frames.numpy().mean(axis=(2, 3)))
    assert result["i2v_subject"] == pytest.approx(expected, abs=1e-5)


def test_preprocessing_resizes_shorter_side_and_center_crops():
    image = torch.arange(3 * 8 * 12, dtype=torch.float32).reshape(1, 3, 8, 12) / (3 * 8 * 12)
    # Shorter side already 8: no resampling, just the center 8x8 crop (columns 2..9).
    out = ImagePreprocessing(size=8, resize_size=8, mean=None, std=None)(image)
    assert torch.equal(out, image[..., :, 2:10])
    out = ImagePreprocessing(size=4, resize_size=6, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))(image)
    assert out.shape == (1, 3, 4, 4) and out.min() >= -1 and out.max() <= 1
    assert ImagePreprocessing(size=5, resize_size=None)(image).shape == (1, 3, 5, 5)
    with pytest.raises(ValueError, match="resize_size"):
        ImagePreprocessing(size=8, resize_size=4)


def test_labeler_input_errors(pair):
    labeler = ConsistencyAutoLabeler(_pooled, image_size=16, resize_size=None)
    reference, frames = pair
    with pytest.raises(ValueError, match=r"reference tensor must have shape \(3, H, W\)"):
        labeler.label(reference[:1], frames)
    with pytest.raises(ValueError, match=r"video tensor must have shape \(F, 3, H, W\)"):
        labeler.label(reference, frames[0])
    with pytest.raises(TypeError, match="feature_extractor must be"):
        ConsistencyAutoLabeler(42)
    with pytest.raises(ValueError, match="pooling"):
        ConsistencyAutoLabeler(_pooled, pooling="max")


def test_dreamsim_needs_its_package():
    try:
        import dreamsim  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="pip install dreamsim"):
            ConsistencyAutoLabeler(_pooled, background_extractor="dreamsim")
    else:
        pytest.skip("dreamsim is installed; loading it would download weights")


# ----------------------------------------------------------------------------------------------------------------
# Video files and datasets (icreward.video decodes with PyAV)
# ----------------------------------------------------------------------------------------------------------------


def test_label_video_file_and_dataset(tmp_path, pair):
    from icreward.video import read_video, write_video

    reference, frames = pair
    video_path = str(tmp_path / "clip.mp4")
    write_video(video_path, frames, fps=8.0)
    image_path = str(tmp_path / "ref.png")
    PILImage.fromarray(reference.permute(1, 2, 0).numpy()).save(image_path)

    labeler = ConsistencyAutoLabeler(
        _pooled,
        background_extractor=_channel_means,
        image_size=16,
        resize_size=None,
        image_mean=None,
        image_std=None,
        background_image_size=16,
    )
    decoded = read_video(video_path)
    from_file = labeler.label(image_path, video_path)
    # The file path goes through the same decoder; PNG is lossless, so the reference is bit-exact.
    assert from_file == pytest.approx(labeler.label(reference, decoded), abs=1e-6)

    data = Dataset.from_dict(
        {"reference": [image_path, image_path], "video": [video_path, video_path], "score": [0.1, 0.2]},
        features=Features(reference=Image(), video=Value("string"), score=Value("float32")),
    )
    with pytest.raises(ValueError, match=r"already has column\(s\) \['score'\]"):
        labeler.label_dataset(data)
    labelled = labeler.label_dataset(data, column_prefix="auto_")
    assert labelled.column_names == [
        "reference",
        "video",
        "score",
        "auto_i2v_subject",
        "auto_i2v_background",
        "auto_score",
    ]
    assert labelled.features["auto_i2v_subject"] == Value("float32")
    assert labelled[0]["auto_i2v_subject"] == pytest.approx(from_file["i2v_subject"], abs=1e-6)
    assert labelled[1]["auto_score"] == pytest.approx(from_file["score"], abs=1e-6)
    relabelled = labeler.label_dataset(data, overwrite=True)
    assert relabelled["score"] == pytest.approx([from_file["score"]] * 2, abs=1e-6)
    with pytest.raises(ValueError, match=r"missing column\(s\) \['clip'\]"):
        labeler.label_dataset(data, video_column="clip")
