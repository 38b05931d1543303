"""FaceSim: identity similarity between the face in a reference image and the faces in the frames of a video.

For a reference face embedding ``r`` and the embeddings ``e_i`` of the frames where a face was found::

    facesim_i = cos(r, e_i),        FaceSim = mean over frames with a face of facesim_i

This is the "FaceSim" of identity-preserving video generation papers (e.g. FaceSim-Arc with ArcFace embeddings,
FaceSim-Cur with CurricularFace); which face recognition network produced the embeddings must be reported with
the number. Cosines are raw, in ``[-1, 1]``. Frames without a detected face are excluded and counted; a video
without any face gets ``mean = 0.0`` and ``num_valid = 0`` rather than NaN.

:func:`face_similarity` works on precomputed embeddings. :class:`FaceSim` computes them: it takes a face
embedder (any module ``(N, 3, h, w) -> (N, D)``, or a name resolved lazily through
``icreward.rewards.face.build_face_embedder``) and a face cropper.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from icreward.video import to_unit_float

__all__ = ["FaceSim", "FaceSimResult", "face_similarity"]

#: ``cropper(frames (N, 3, H, W) float in [0, 1]) -> (crops (N, 3, h, w), valid (N,) bool)``; crops of frames
#: without a face may hold anything (they are ignored) but must be present so that the shapes line up.
FaceCropper = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class FaceSimResult:
    """FaceSim of one video.

    Attributes:
        mean: 0-dim tensor, mean cosine over the frames with a face (``0.0`` when there is none).
        per_frame: ``(F,)`` cosine of every frame to the reference; ``0.0`` where ``valid`` is False.
        num_valid: number of frames with a face.
        valid: ``(F,)`` bool, which frames had a face.
    """

    mean: torch.Tensor
    per_frame: torch.Tensor
    num_valid: int
    valid: torch.Tensor

    @property
    def has_face(self) -> bool:
        """Whether at least one frame had a face (otherwise ``mean`` is a placeholder ``0.0``)."""
        return self.num_valid > 0


def face_similarity(
    reference_face_embedding: torch.Tensor,
    frame_embeddings: torch.Tensor,
    valid: torch.Tensor | None = None,
) -> FaceSimResult:
    """FaceSim from precomputed face embeddings (normalised here). Differentiable with respect to both inputs.

    Args:
        reference_face_embedding: ``(D,)`` embedding of the reference face.
        frame_embeddings: ``(F, D)`` embeddings of the faces in the frames.
        valid: ``(F,)`` bool, False for frames where no face was detected; ``None`` means every frame has one.

    Returns:
        :class:`FaceSimResult`.
    """
    if reference_face_embedding.ndim != 1:
        raise ValueError(f"reference_face_embedding must have shape (D,), got {tuple(reference_face_embedding.shape)}")
    if frame_embeddings.ndim != 2 or frame_embeddings.shape[1] != reference_face_embedding.shape[0]:
        raise ValueError(
            f"frame_embeddings must have shape (F, {reference_face_embedding.shape[0]}), "
            f"got {tuple(frame_embeddings.shape)}"
        )
    num_frames = frame_embeddings.shape[0]
    if valid is None:
        valid = torch.ones(num_frames, dtype=torch.bool, device=frame_embeddings.device)
    valid = torch.as_tensor(valid, device=frame_embeddings.device)
    if valid.shape != (num_frames,) or valid.dtype != torch.bool:
        raise ValueError(f"valid must be a ({num_frames},) bool tensor, got {tuple(valid.shape)} {valid.dtype}")

    ref = F.normalize(reference_face_embedding.float(), dim=-1)
    # Zero the embeddings of faceless frames *before* any arithmetic (torch.where, not a multiplication): they may
    # be garbage, even NaN, and NaN * 0 would still reach the result and the gradients.
    frames = torch.where(valid[:, None], frame_embeddings.float(), torch.zeros((), device=frame_embeddings.device))
    from .consistency import check_finite

    check_finite("reference_face_embedding", reference_face_embedding)
    check_finite("frame_embeddings", frames)  # the valid frames (faceless ones are zeroed above)
    per_frame = F.normalize(frames, dim=-1) @ ref
    num_valid = int(valid.sum())
    mean = per_frame.sum() / num_valid if num_valid > 0 else per_frame.sum() * 0.0
    return FaceSimResult(mean=mean, per_frame=per_frame, num_valid=num_valid, valid=valid)


class FaceSim(nn.Module):
    """Compute FaceSim end to end: crop faces, embed them, compare with the reference face.

    Args:
        embedder: a module mapping face crops ``(N, 3, h, w)`` float in ``[0, 1]`` to embeddings ``(N, D)`` (it
            does its own normalisation), or the name of a face embedder, built with
            ``icreward.rewards.face.build_face_embedder(name, **embedder_kwargs)`` on first use of this class.
        face_cropper: callable ``frames (N, 3, H, W) float [0, 1] -> (crops (N, 3, h, w), valid (N,) bool)``
            that detects and aligns one face per frame in the layout the embedder expects. ``None`` means the
            inputs are already aligned face crops of the embedder's input size.
        embedder_kwargs: passed to ``build_face_embedder`` when ``embedder`` is a name.
        batch_size: frames per cropper/embedder call.

    Calling it with ``reference (3, H, W)`` and ``video (F, 3, H, W)`` (uint8 or float in ``[0, 1]``) returns a
    :class:`FaceSimResult`; with ``(B, 3, H, W)`` and ``(B, F, 3, H, W)`` a list of them. A reference image
    without a detectable face raises ``ValueError``: there is no identity to compare against.
    """

    def __init__(
        self,
        embedder: nn.Module | str,
        face_cropper: FaceCropper | None = None,
        *,
        embedder_kwargs: dict | None = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if isinstance(embedder, str):
            # Imported lazily: face models pull in optional dependencies that metrics users may not need.
            from icreward.rewards.face import build_face_embedder

            embedder = build_face_embedder(embedder, **(embedder_kwargs or {}))
        elif embedder_kwargs:
            raise ValueError("embedder_kwargs is only used when embedder is given by name")
        if not callable(embedder):
            raise TypeError(f"embedder must be a module or a name, got {type(embedder).__name__}")
        self.embedder = embedder.eval() if isinstance(embedder, nn.Module) else embedder
        self.face_cropper = face_cropper
        self.batch_size = batch_size

    def embed_faces(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Crop and embed ``(N, 3, H, W)`` images: ``(N, D)`` embeddings and ``(N,)`` bool face mask."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        embeddings, masks = [], []
        for start in range(0, images.shape[0], self.batch_size):
            chunk = to_unit_float(images[start : start + self.batch_size], "images", dtype=None)
            if self.face_cropper is None:
                crops, valid = chunk, torch.ones(chunk.shape[0], dtype=torch.bool, device=chunk.device)
            else:
                crops, valid = self.face_cropper(chunk)
                valid = torch.as_tensor(valid, dtype=torch.bool, device=crops.device).reshape(-1)
                if crops.shape[0] != chunk.shape[0] or valid.shape[0] != chunk.shape[0]:
                    raise ValueError(
                        f"face_cropper must return one crop and one flag per frame; got {crops.shape[0]} crops and "
                        f"{valid.shape[0]} flags for {chunk.shape[0]} frames"
                    )
            emb = self.embedder(crops)
            if emb.ndim != 2 or emb.shape[0] != crops.shape[0]:
                raise ValueError(f"the embedder must return (N, D) embeddings, got {tuple(emb.shape)}")
            embeddings.append(emb)
            masks.append(valid)
        return torch.cat(embeddings), torch.cat(masks)

    def forward(self, reference: torch.Tensor, video: torch.Tensor) -> FaceSimResult | list[FaceSimResult]:
        if reference.ndim == 4 and video.ndim == 5:
            if reference.shape[0] != video.shape[0]:
                raise ValueError(f"batch sizes differ: {reference.shape[0]} references, {video.shape[0]} videos")
            return [self.forward(r, v) for r, v in zip(reference, video, strict=True)]
        if reference.ndim != 3 or video.ndim != 4:
            raise ValueError(
                "expected reference (3, H, W) with video (F, 3, H, W), or (B, 3, H, W) with (B, F, 3, H, W); got "
                f"{tuple(reference.shape)} and {tuple(video.shape)}"
            )
        ref_embedding, ref_valid = self.embed_faces(reference[None])
        if not bool(ref_valid[0]):
            raise ValueError("no face was found in the reference image; FaceSim is undefined")
        frame_embeddings, valid = self.embed_faces(video)
        return face_similarity(ref_embedding[0], frame_embeddings, valid.to(frame_embeddings.device))
