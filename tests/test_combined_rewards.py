"""The video-reward interface: wrappers, weighted combination, the non-finite guard, pixel gradients."""

import logging

import pytest
import torch
from torch import nn

from icreward.rewards.combined import (
    CallableReward,
    CombinedReward,
    FaceReward,
    RewardModelReward,
    VideoReward,
    as_video_reward,
    reward_key,
)


def brightness(video):
    return video.mean(dim=(1, 2, 3, 4))


def redness(video, reference_images):
    return video[:, :, 0].mean(dim=(1, 2, 3)) - reference_images[:, 0].mean(dim=(1, 2))


# ---------------------------------------------------------------------------------------------------------------
# CombinedReward
# ---------------------------------------------------------------------------------------------------------------


def test_weighted_total_and_per_reward_values():
    video = torch.rand(3, 4, 3, 8, 8)
    references = torch.rand(3, 3, 8, 8)
    reward = CombinedReward({"bright": (brightness, 0.5), "red": (redness, -2.0), "plain": brightness})
    out = reward.compute(video, references, {})
    assert out.weights == {"bright": 0.5, "red": -2.0, "plain": 1.0}
    torch.testing.assert_close(out.rewards["bright"], brightness(video))
    torch.testing.assert_close(out.rewards["red"], redness(video, references))
    expected = 0.5 * brightness(video) - 2.0 * redness(video, references) + brightness(video)
    torch.testing.assert_close(out.total, expected)
    torch.testing.assert_close(reward(video, references, {}), expected)  # itself a VideoReward
    assert isinstance(reward, VideoReward) and out.num_nonfinite == {"bright": 0, "red": 0, "plain": 0}


def test_combined_reward_rejects_bad_definitions_and_outputs():
    with pytest.raises(ValueError, match="non-empty mapping"):
        CombinedReward({})
    with pytest.raises(ValueError, match="without '.'"):
        CombinedReward({"a.b": brightness})
    with pytest.raises(ValueError, match="must be finite"):
        CombinedReward({"a": (brightness, float("nan"))})
    video = torch.rand(2, 2, 3, 4, 4)
    with pytest.raises(ValueError, match=r"reward 'scalar' returned scores of shape \(\); expected \(2,\)"):
        CombinedReward({"scalar": lambda v: v.mean()}).compute(video, torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, F, 3, H, W\)"):
        CombinedReward({"b": brightness}).compute(torch.rand(2, 3, 4, 4), torch.rand(2, 3, 4, 4))


def test_nonfinite_scores_are_replaced_counted_warned_and_cut_from_the_gradient(caplog):
    def broken(video):
        score = brightness(video)
        return torch.stack([score[0] * float("nan"), score[1], score[2] / 0.0])  # NaN, finite, inf

    reward = CombinedReward({"broken": (broken, 1.0), "bright": (brightness, 1.0)}, nonfinite_value=-1.0)
    video = torch.rand(3, 2, 3, 4, 4, requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="icreward.rewards.combined"):
        out = reward.compute(video, torch.rand(3, 3, 4, 4))
    assert torch.isfinite(out.total).all()
    torch.testing.assert_close(out.rewards["broken"][[0, 2]], torch.tensor([-1.0, -1.0]))
    assert out.num_nonfinite == {"broken": 2, "bright": 0} and reward.total_nonfinite["broken"] == 2
    assert "reward 'broken' returned 2 non-finite score(s) out of 3" in caplog.text
    out.total.sum().backward()
    grad = video.grad
    assert torch.isfinite(grad).all()
    per_pixel = 1.0 / video[0].numel()
    # replaced samples keep only the finite reward's gradient; the healthy sample gets both
    torch.testing.assert_close(grad[0], torch.full_like(grad[0], per_pixel))
    torch.testing.assert_close(grad[1], torch.full_like(grad[1], 2 * per_pixel))
    torch.testing.assert_close(grad[2], torch.full_like(grad[2], per_pixel))
    # a second occurrence is counted but not warned about again
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="icreward.rewards.combined"):
        reward.compute(video.detach(), torch.rand(3, 3, 4, 4))
    assert reward.total_nonfinite["broken"] == 4 and "non-finite" not in caplog.text


def test_nonfinite_gradients_of_a_finite_score_are_zeroed():
    def sqrt_at_zero(video):  # finite value 0, infinite derivative
        return (video - video.detach()).abs().sqrt().mean(dim=(1, 2, 3, 4))

    reward = CombinedReward({"sqrt": sqrt_at_zero, "bright": brightness})
    video = torch.rand(2, 2, 3, 4, 4, requires_grad=True)
    reward.compute(video, torch.rand(2, 3, 4, 4)).total.sum().backward()
    assert torch.isfinite(video.grad).all() and reward.num_nonfinite_gradients > 0
    torch.testing.assert_close(video.grad, torch.full_like(video.grad, 1.0 / video[0].numel()))


# ---------------------------------------------------------------------------------------------------------------
# CallableReward and conversions
# ---------------------------------------------------------------------------------------------------------------


def test_callable_reward_passes_as_many_arguments_as_the_function_takes():
    video, references = torch.rand(2, 2, 3, 4, 4), torch.rand(2, 3, 4, 4)
    batch = {"prompts": ["a", "bb"]}
    torch.testing.assert_close(CallableReward(brightness)(video, references, batch), brightness(video))
    torch.testing.assert_close(CallableReward(redness)(video, references, batch), redness(video, references))
    prompt_length = CallableReward(lambda v, r, b: torch.tensor([float(len(p)) for p in b["prompts"]]))
    torch.testing.assert_close(prompt_length(video, references, batch), torch.tensor([1.0, 2.0]))
    star = CallableReward(lambda *args: torch.full((2,), float(len(args))))
    torch.testing.assert_close(star(video, references, batch), torch.tensor([3.0, 3.0]))
    as_list = CallableReward(lambda v: [0.5, 0.25])
    torch.testing.assert_close(as_list(video, references, batch), torch.tensor([0.5, 0.25]))
    with pytest.raises(ValueError, match="takes 4 positional arguments"):
        CallableReward(lambda a, b, c, d: a)
    assert CallableReward(brightness).name == "brightness" and CallableReward(lambda v: v).name == "reward"


def test_module_rewards_move_with_the_combination():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.ones(1))

        def forward(self, video):
            return video.mean(dim=(1, 2, 3, 4)) * self.weight

    reward = CombinedReward({"scale": Scale()})
    assert [n for n, _ in reward.named_parameters()] == ["rewards.scale.fn.weight"]
    reward.to(torch.float64)
    assert reward.rewards["scale"].fn.weight.dtype == torch.float64


def test_as_video_reward_conversions(tiny_models):
    icreward_model, mlp_model = tiny_models
    assert isinstance(as_video_reward(brightness), CallableReward)
    wrapped = as_video_reward(icreward_model)
    assert isinstance(wrapped, RewardModelReward) and wrapped.name == "icreward"
    assert as_video_reward(mlp_model, name="baseline").name == "baseline"
    kept = CallableReward(brightness)
    assert as_video_reward(kept) is kept
    with pytest.raises(TypeError, match="cannot use a int"):
        as_video_reward(3)


# ---------------------------------------------------------------------------------------------------------------
# RewardModelReward: the processor's preprocessing, in torch, with gradients to the pixels
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_models():
    from icreward.models import ICRewardModel, MLPRewardModel
    from icreward.testing import tiny_icreward_config, tiny_mlp_reward_config

    torch.manual_seed(0)
    return ICRewardModel(tiny_icreward_config()).eval(), MLPRewardModel(tiny_mlp_reward_config()).eval()


@pytest.mark.parametrize("which", [0, 1], ids=["icreward", "mlp"])
@pytest.mark.parametrize("size", [(32, 32), (48, 40)], ids=["same-size", "resized"])
def test_reward_model_reward_matches_the_processor_and_reaches_the_pixels(tiny_models, which, size):
    model = tiny_models[which]
    height, width = size
    generator = torch.Generator().manual_seed(1)
    # uint8-representable pixels, so the processor's uint8 round trip loses nothing
    video_u8 = torch.randint(0, 256, (2, 6, 3, height, width), generator=generator, dtype=torch.uint8)
    references_u8 = torch.randint(0, 256, (2, 3, height, width), generator=generator, dtype=torch.uint8)
    inputs = model.get_processor()(videos=list(video_u8), reference_images=list(references_u8))
    with torch.no_grad():
        expected = model(**inputs).scores

    reward = RewardModelReward(model)
    video = (video_u8.float() / 255).requires_grad_()
    scores = reward(video, references_u8.float() / 255, {})
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-5)
    scores.sum().backward()
    assert video.grad is not None and video.grad.abs().sum() > 0
    # only the sampled frames (4 of 6) receive gradient; the model itself stays frozen
    touched = video.grad.abs().sum(dim=(0, 2, 3, 4)) > 0
    assert int(touched.sum()) == reward.num_frames == 4
    assert all(p.grad is None and not p.requires_grad for p in model.parameters())


# ---------------------------------------------------------------------------------------------------------------
# FaceReward
# ---------------------------------------------------------------------------------------------------------------


class TinyFaceEmbedder(nn.Module):
    name, input_size, alignment, embedding_dim = "tiny", 32, "box", 16

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten())
        self.fc = nn.Linear(32, 16)

    def forward(self, chips):
        return self.fc(self.net(chips))


def _astronaut(size=None):
    import skimage.data

    image = torch.from_numpy(skimage.data.astronaut()[0:256, 96:352].copy()).permute(2, 0, 1).float() / 255
    if size is not None:
        image = torch.nn.functional.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0]
    return image.clamp(0, 1)


def test_face_reward_pools_per_row_scores_faces_and_handles_faceless_videos():
    from icreward.rewards.face import FaceIdentityReward, FaceNotFoundError

    reward = FaceReward(FaceIdentityReward(TinyFaceEmbedder()))
    reference = _astronaut()
    frames = torch.stack([_astronaut()[:, 4 * i : 4 * i + 240, 3 * i : 3 * i + 240] for i in range(2)])
    reward.prepare(reference, (frames * 255).round().to(torch.uint8), key="row-0")
    reward.prepare(reference, frames, key="row-0")  # already cached: not rebuilt
    assert reward.num_pools == 1
    with pytest.raises(FaceNotFoundError):
        reward.prepare(torch.full((3, 128, 128), 0.5), key="blank")

    face = _astronaut(96)
    video = torch.stack([face[None].repeat(3, 1, 1, 1), torch.rand(3, 3, 96, 96)]).requires_grad_()
    small_references = torch.stack([_astronaut(96)] * 2)  # used only for rows without a prepared pool
    scores = reward(video, small_references, {"keys": ["row-0", "row-0"]})
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    assert scores[0] > 0.5 and scores[1] == 0.0  # the face video matches its pool; noise has no face
    assert reward.last_stats == {"faces_found_rate": 0.5, "no_face_videos": 1.0}
    scores.sum().backward()
    assert video.grad[0].abs().sum() > 0 and video.grad[1].abs().sum() == 0
    # without keys, a row gets a pool from its (small) reference image on first use, cached by its pixels
    reward(face[None, None].repeat(1, 2, 1, 1, 1), small_references[:1], {})
    assert reward.num_pools == 2
    assert reward_key(small_references[0]) == reward_key((small_references[0] * 255).round().to(torch.uint8))


def test_face_reward_builds_from_an_embedder_name_only_with_its_kwargs():
    with pytest.raises(ValueError, match="only apply when face_reward is an embedder name"):
        FaceReward(object(), min_face_prob=0.5)
    with pytest.raises(TypeError, match="FaceIdentityReward or an embedder name"):
        FaceReward(object())
