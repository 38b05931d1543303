"""CLIPSim, dynamic degree (optical flow) and FaceSim."""

import math
import sys
import types

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from icreward.metrics.clipsim import CLIPSimilarity, CLIPSimResult, clip_similarity, clip_similarity_from_embeddings
from icreward.metrics.facesim import FaceSim, face_similarity
from icreward.metrics.motion import LucasKanadeFlow, RAFTFlow, dynamic_degree, flow_motion_score

# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def _smooth_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """A smooth colour image, float (3, H, W) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
    freq, phase = 2 + 4 * torch.rand(3, 2, generator=g), 6 * torch.rand(3, generator=g)
    return torch.stack([0.5 + 0.4 * torch.sin(freq[c, 0] * xx + freq[c, 1] * yy + phase[c]) for c in range(3)])


def _periodic_texture(size: int, seed: int = 0, sigma: float = 2.0) -> torch.Tensor:
    """Band-limited random texture that tiles seamlessly, so torch.roll is an exact translation. (3, S, S)."""
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(3, size, size, generator=g)
    f = torch.fft.fftfreq(size)
    fy, fx = torch.meshgrid(f, f, indexing="ij")
    lowpass = torch.exp(-2 * (torch.pi * sigma) ** 2 * (fx**2 + fy**2))
    texture = torch.fft.ifft2(torch.fft.fft2(noise) * lowpass).real
    return (0.5 + 0.15 * (texture - texture.mean()) / texture.std()).clamp(0, 1)


def _translating_video(shift: tuple[int, int], frames: int = 4, size: int = 64) -> torch.Tensor:
    """(F, 3, S, S): frame k is the texture moved by k * (dy, dx) pixels."""
    texture = _periodic_texture(size)
    return torch.stack([torch.roll(texture, shifts=(k * shift[0], k * shift[1]), dims=(1, 2)) for k in range(frames)])


# ---------------------------------------------------------------------------------------------------------------------
# CLIPSim
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_clip():
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    text = dict(vocab_size=99, hidden_size=32, intermediate_size=37, num_hidden_layers=1, num_attention_heads=2)
    text.update(max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1)
    vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=37, num_hidden_layers=2)
    vision.update(num_attention_heads=2)
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)).eval()


@pytest.fixture(scope="module")
def open_clip_model():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32)
    text = CLIPTextCfg(context_length=16, vocab_size=100, width=32, heads=2, layers=1)
    return CLIP(embed_dim=16, vision_cfg=vision, text_cfg=text).eval()


@pytest.mark.parametrize("backend", ["transformers", "open_clip"])
def test_clipsim_of_video_made_of_the_reference_is_one(backend, hf_clip, open_clip_model):
    scorer = CLIPSimilarity(hf_clip if backend == "transformers" else open_clip_model)
    assert scorer.backend == backend and scorer.image_size == 32
    reference = (_smooth_image(40, 56) * 255).round().to(torch.uint8)
    with torch.no_grad():
        result = scorer(reference, reference[None].repeat(5, 1, 1, 1))
    assert isinstance(result, CLIPSimResult)
    assert result.per_frame.shape == (5,) and result.mean.shape == ()
    torch.testing.assert_close(result.per_frame, torch.ones(5), atol=1e-5, rtol=0)
    # a different image scores lower (the random encoder still separates these two)
    with torch.no_grad():
        other = scorer(reference, _smooth_image(40, 56, seed=7)[None])
    assert other.mean < 1 - 1e-4


def test_clipsim_batched_equals_one_by_one(hf_clip):
    scorer = CLIPSimilarity(hf_clip, batch_size=3)  # batches that split videos across encoder calls
    references = torch.stack([_smooth_image(36, 48, seed=s) for s in range(2)])
    videos = torch.stack([torch.stack([_smooth_image(36, 48, seed=10 * b + f) for f in range(4)]) for b in range(2)])
    with torch.no_grad():
        batched = scorer(references, videos)
        single = [scorer(references[b], videos[b]) for b in range(2)]
    assert batched.per_frame.shape == (2, 4) and batched.mean.shape == (2,)
    for b in range(2):
        torch.testing.assert_close(batched.per_frame[b], single[b].per_frame, atol=1e-6, rtol=0)
        torch.testing.assert_close(batched.mean[b], single[b].per_frame.mean(), atol=1e-6, rtol=0)


def test_clipsim_matches_an_independent_computation(hf_clip):
    # Reference pipeline: transformers' own (PIL-based) CLIPImageProcessor + get_image_features + cosine.
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    reference = (_smooth_image(48, 64, seed=1) * 255).round().to(torch.uint8)
    frames = torch.stack([(_smooth_image(48, 64, seed=s) * 255).round().to(torch.uint8) for s in (1, 2, 3)])
    images = [reference.permute(1, 2, 0).numpy()] + [f.permute(1, 2, 0).numpy() for f in frames]
    pixel_values = processor(images=images, return_tensors="pt").pixel_values

    scorer = CLIPSimilarity(hf_clip)
    # same preprocessing up to resampling round-off (PIL vs. torchvision bicubic): about one grey level
    assert (scorer.preprocess(torch.cat([reference[None], frames])) - pixel_values).abs().max() < 0.05

    with torch.no_grad():
        embeds = hf_clip.get_image_features(pixel_values=pixel_values).pooler_output
        result = clip_similarity(reference, frames, hf_clip)
    embeds = embeds / embeds.norm(dim=-1, keepdim=True)
    expected = embeds[1:] @ embeds[0]
    torch.testing.assert_close(result.per_frame, expected, atol=2e-3, rtol=0)


def test_clip_similarity_from_embeddings():
    reference = torch.tensor([3.0, 0.0])
    frames = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 1.0]])
    result = clip_similarity_from_embeddings(reference, frames)
    torch.testing.assert_close(result.per_frame, torch.tensor([1.0, 0.0, -(2**-0.5)]))
    torch.testing.assert_close(result.mean, result.per_frame.mean())
    with pytest.raises(ValueError, match="embedding sizes differ"):
        clip_similarity_from_embeddings(reference, torch.zeros(2, 3))


def test_clipsim_loads_local_transformers_checkpoint(hf_clip, tmp_path):
    from transformers import CLIPImageProcessor

    hf_clip.save_pretrained(tmp_path)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.25] * 3
    ).save_pretrained(tmp_path)
    scorer = CLIPSimilarity.from_transformers(tmp_path)
    assert scorer.image_size == 32
    torch.testing.assert_close(scorer.mean.flatten(), torch.full((3,), 0.5))  # read from the saved processor
    reference, frames = _smooth_image(40, 40), torch.stack([_smooth_image(40, 40, seed=s) for s in range(3)])
    with torch.no_grad():
        loaded = scorer(reference, frames)
        direct = CLIPSimilarity(hf_clip, mean=[0.5] * 3, std=[0.25] * 3)(reference, frames)
    torch.testing.assert_close(loaded.per_frame, direct.per_frame)


def test_clipsim_open_clip_by_name_and_checkpoint(open_clip_model, tmp_path):
    import json

    import open_clip

    config = {
        "embed_dim": 16,
        "vision_cfg": {"layers": 1, "width": 32, "head_width": 16, "patch_size": 8, "image_size": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 100, "width": 32, "heads": 2, "layers": 1},
    }
    (tmp_path / "icreward-test-tiny-clip.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path)
    torch.save(open_clip_model.state_dict(), tmp_path / "tiny.pt")
    scorer = CLIPSimilarity.from_open_clip("icreward-test-tiny-clip", pretrained=tmp_path / "tiny.pt")
    reference, frames = _smooth_image(32, 48), torch.stack([_smooth_image(32, 48, seed=s) for s in range(2)])
    with torch.no_grad():
        torch.testing.assert_close(
            scorer(reference, frames).per_frame, CLIPSimilarity(open_clip_model)(reference, frames).per_frame
        )


def test_clipsim_rejects_unsupported_inputs(hf_clip):
    with pytest.raises(TypeError, match="not a supported CLIP model"):
        CLIPSimilarity(nn.Linear(2, 2))
    scorer = CLIPSimilarity(hf_clip)
    with pytest.raises(ValueError, match=r"\(F, 3, H, W\)"):
        scorer(torch.rand(3, 32, 32), torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="uint8 or floating"):
        scorer(torch.zeros(3, 32, 32, dtype=torch.int64), torch.zeros(2, 3, 32, 32, dtype=torch.int64))


# ---------------------------------------------------------------------------------------------------------------------
# Dynamic degree
# ---------------------------------------------------------------------------------------------------------------------


def test_frozen_video_has_no_motion():
    frame = (_periodic_texture(48) * 255).round().to(torch.uint8)
    result = dynamic_degree(frame[None].repeat(5, 1, 1, 1))
    assert result.pair_scores.shape == (4,)
    assert result.magnitude < 1e-3
    assert not result.is_dynamic and result.num_moving == 0


@pytest.mark.parametrize("shift", [(0, 2), (3, 0), (3, 4)])
def test_lucas_kanade_recovers_translation(shift):
    video = _translating_video(shift)
    flow = LucasKanadeFlow()(video[:-1], video[1:])
    true = torch.tensor([shift[1], shift[0]], dtype=torch.float32)  # (dx, dy)
    # median over the frame is essentially exact
    torch.testing.assert_close(flow.flatten(2).median(dim=2).values, true.expand(3, 2), atol=0.05, rtol=0)
    # VBench's top-5 % score is close to the true displacement
    result = dynamic_degree(video)
    assert result.magnitude == pytest.approx(float(true.norm()), rel=0.1)


def test_dynamic_degree_on_a_panning_photograph():
    from skimage import data

    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float()
    photo = torch.nn.functional.interpolate(photo, size=(256, 256), mode="area")[0].round().to(torch.uint8)
    # a 96 x 96 window panning right by 5 px per frame: the content moves 5 px left, new content enters the frame
    video = torch.stack([photo[:, 40:136, 40 + 5 * k : 136 + 5 * k] for k in range(6)])
    result = dynamic_degree(video)
    assert result.magnitude == pytest.approx(5.0, rel=0.15)
    assert result.threshold == pytest.approx(6.0 * 96 / 256) and result.is_dynamic
    assert not dynamic_degree(video[:1].repeat(6, 1, 1, 1)).is_dynamic


def test_larger_shift_gives_larger_magnitude():
    magnitudes = [dynamic_degree(_translating_video((0, s))).magnitude for s in (1, 3, 6)]
    assert magnitudes[0] < magnitudes[1] < magnitudes[2]


class _ConstantFlow:
    """Flow estimator returning a fixed magnitude per pair, to test VBench's decision rule by itself."""

    def __init__(self, magnitudes):
        self.magnitudes = list(magnitudes)
        self.calls = 0

    def __call__(self, image1, image2):
        n, _, h, w = image1.shape
        out = torch.zeros(n, 2, h, w)
        for i in range(n):
            out[i, 0] = self.magnitudes[self.calls + i]
        self.calls += n
        return out


def test_dynamic_degree_applies_vbench_rule():
    video = torch.zeros(16, 3, 128, 160, dtype=torch.uint8)
    # threshold 6 * min(H, W) / 256 = 3 px; count_num = round(4 * 16 / 16) = 4 pairs
    four_moving = [5.0] * 4 + [1.0] * 11
    result = dynamic_degree(video, flow_estimator=_ConstantFlow(four_moving), batch_size=4)
    assert result.threshold == pytest.approx(3.0) and result.count_required == 4
    assert result.num_moving == 4 and result.is_dynamic
    torch.testing.assert_close(result.pair_scores, torch.tensor(four_moving))
    assert result.magnitude == pytest.approx(np.mean(four_moving))
    three_moving = [5.0] * 3 + [3.0] * 12  # exactly at the threshold does not count (VBench uses >)
    assert not dynamic_degree(video, flow_estimator=_ConstantFlow(three_moving)).is_dynamic


def test_dynamic_degree_samples_at_8_fps_and_batches():
    video = torch.zeros(2, 24, 3, 32, 32, dtype=torch.uint8)
    results = dynamic_degree(video, fps=24, flow_estimator=_ConstantFlow([0.0] * 100))
    assert isinstance(results, list) and len(results) == 2
    assert results[0].frame_indices == list(range(0, 24, 3))  # round(24 / 8) = 3
    assert results[0].count_required == 2  # round(4 * 8 / 16)
    assert dynamic_degree(video[0, :2]).count_required == 1  # VBench's 0 is raised to 1


def test_flow_motion_score_is_mean_of_top_five_percent():
    flow = torch.zeros(1, 2, 10, 10)
    flow[0, 0] = 1.0
    flow[0, 0, 0, :5] = 6.0  # 5 of 100 pixels: exactly the top 5 %
    flow[0, 1, 0, :5] = 8.0  # magnitude 10
    torch.testing.assert_close(flow_motion_score(flow), torch.tensor([10.0]))


def test_raft_flow_wrapper_shapes_and_checkpoint(tmp_path):
    from torchvision.models.optical_flow import raft_small

    torch.manual_seed(0)
    model = raft_small(weights=None)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "raft_small.safetensors"))
    raft = RAFTFlow.from_checkpoint(tmp_path / "raft_small.safetensors", variant="small", num_flow_updates=1)
    images = torch.rand(2, 1, 3, 122, 130)
    flow = raft(images[0], images[1])  # padded to 128 x 136 inside, cropped back
    assert flow.shape == (1, 2, 122, 130) and torch.isfinite(flow).all()
    with pytest.raises(ValueError, match="at least 128"):
        raft(torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64))
    save_file({"conv.weight": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a torchvision raft_small state dict"):
        RAFTFlow.from_checkpoint(tmp_path / "other.safetensors", variant="small")


# ---------------------------------------------------------------------------------------------------------------------
# FaceSim
# ---------------------------------------------------------------------------------------------------------------------


def test_face_similarity_matches_independent_computation():
    rng = np.random.default_rng(0)
    reference, frames = rng.normal(size=8), rng.normal(size=(5, 8))
    valid = np.array([True, False, True, True, False])
    cosines = frames @ reference / (np.linalg.norm(frames, axis=1) * np.linalg.norm(reference))

    result = face_similarity(torch.tensor(reference), torch.tensor(frames), torch.tensor(valid))
    assert result.num_valid == 3 and result.has_face
    np.testing.assert_allclose(result.per_frame.numpy(), np.where(valid, cosines, 0.0), atol=1e-6)
    assert float(result.mean) == pytest.approx(cosines[valid].mean(), abs=1e-6)
    # valid=None: every frame has a face
    assert float(face_similarity(torch.tensor(reference), torch.tensor(frames)).mean) == pytest.approx(
        cosines.mean(), abs=1e-6
    )


def test_face_similarity_without_faces_is_defined_and_nan_free():
    reference = torch.randn(4, requires_grad=True)
    frames = torch.randn(3, 4)
    frames[1] = float("nan")  # garbage embedding of a frame without a face
    valid = torch.tensor([True, False, True])
    result = face_similarity(reference, frames, valid)
    assert torch.isfinite(result.per_frame).all() and result.per_frame[1] == 0
    result.mean.backward()
    assert torch.isfinite(reference.grad).all()

    empty = face_similarity(torch.randn(4), torch.randn(3, 4), torch.zeros(3, dtype=torch.bool))
    assert empty.num_valid == 0 and not empty.has_face and float(empty.mean) == 0.0
    with pytest.raises(ValueError, match="bool"):
        face_similarity(torch.randn(4), torch.randn(3, 4), torch.ones(3))


class _PooledEmbedder(nn.Module):
    """Stand-in face embedder: a fixed random projection of a 4x4 average-pooled crop."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(48, 16)

    def forward(self, crops):
        return self.proj(nn.functional.adaptive_avg_pool2d(crops, 4).flatten(1))


def _bright_face_cropper(frames):
    """Stand-in cropper: a 'face' is present when the centre is bright; the crop is the central 16 x 16."""
    h, w = frames.shape[-2:]
    crops = frames[..., h // 2 - 8 : h // 2 + 8, w // 2 - 8 : w // 2 + 8]
    return crops, crops.mean(dim=(1, 2, 3)) > 0.2


def test_facesim_with_embedder_and_cropper():
    torch.manual_seed(0)
    facesim = FaceSim(_PooledEmbedder(), _bright_face_cropper, batch_size=2)
    reference = _smooth_image(32, 32) * 0.5 + 0.5
    video = reference[None].repeat(5, 1, 1, 1)
    video[3] = 0.0  # no face in frame 3
    video[4] = _smooth_image(32, 32, seed=5) * 0.5 + 0.5
    with torch.no_grad():
        result = facesim((reference * 255).round().to(torch.uint8), video)
    assert result.num_valid == 4 and result.valid.tolist() == [True, True, True, False, True]
    torch.testing.assert_close(result.per_frame[:3], torch.ones(3), atol=1e-3, rtol=0)
    assert result.per_frame[3] == 0 and result.per_frame[4] < 0.999
    assert float(result.mean) == pytest.approx(float(result.per_frame[[0, 1, 2, 4]].mean()), abs=1e-6)

    with torch.no_grad():
        batched = facesim(torch.stack([reference, reference]), torch.stack([video, video]))
    assert len(batched) == 2
    torch.testing.assert_close(batched[1].per_frame, result.per_frame, atol=1e-4, rtol=0)

    with pytest.raises(ValueError, match="no face was found in the reference"):
        facesim(torch.zeros(3, 32, 32), video)
    broken = FaceSim(_PooledEmbedder(), lambda frames: (frames[:1], torch.ones(1, dtype=torch.bool)))
    with pytest.raises(ValueError, match="one crop and one flag per frame"):
        broken(reference, video)


def test_facesim_builds_named_embedder_lazily(monkeypatch):
    calls = []

    def build_face_embedder(name, **kwargs):
        calls.append((name, kwargs))
        return _PooledEmbedder()

    fake = types.ModuleType("icreward.rewards.face")
    fake.build_face_embedder = build_face_embedder
    monkeypatch.setitem(sys.modules, "icreward.rewards.face", fake)
    facesim = FaceSim("arcface", embedder_kwargs={"device": "cpu"})
    assert calls == [("arcface", {"device": "cpu"})]
    crops = torch.rand(3, 3, 16, 16)
    assert facesim(crops[0], crops).num_valid == 3  # no cropper: inputs are face crops already
    with pytest.raises(ValueError, match="embedder_kwargs"):
        FaceSim(_PooledEmbedder(), embedder_kwargs={"device": "cpu"})


def test_ranking_helpers_group_pairs_correctness_and_spearman():
    from scipy.stats import spearmanr

    from icreward.metrics import group_index_pairs, pair_correctness, spearman_correlation

    first, second = group_index_pairs(["a", "b", "a", "a", "b", "c"])
    assert list(zip(first.tolist(), second.tolist())) == [(0, 2), (0, 3), (2, 3), (1, 4)]
    assert first.dtype == np.int64 and group_index_pairs([])[0].shape == (0,)
    assert pair_correctness(np.array([2.0, 1.0, 1.0]), np.array([1.0, 2.0, 1.0])).tolist() == [1.0, 0.0, 0.5]
    a, b = [0.1, 0.4, 0.4, 0.9], [1.0, 3.0, 2.0, 5.0]
    assert spearman_correlation(a, b) == spearmanr(a, b).statistic
    assert math.isnan(spearman_correlation([1.0], [2.0])) and math.isnan(spearman_correlation([1.0, 1.0], [1.0, 2.0]))
