"""A Qwen2-VL-family VLM as the ICReward backbone: it reads the reference image and the video together.

As in VideoReward (which scores a text prompt and a video with Qwen2-VL), the reference image takes the prompt's
place: each sample is one sequence ``<|vision_start|> <|image_pad|> * n_img <|vision_end|> <|vision_start|>
<|video_pad|> * n_vid <|vision_end|>`` fed to the base ``Qwen2VLModel`` / ``Qwen2_5_VLModel`` (no LM head, no
tokenizer: the special token ids come from the config). The LM's last hidden states at the image-token
positions are the reference tokens ``(B, Tr, D)``; those at the video-token positions, grouped by the VLM's
temporal patches, are the frame grid ``(B, F', T, D)`` with ``F' = ceil(F / temporal_patch_size)``, which the
:class:`~icreward.models.modeling.ImageConsistencyHead` then cross-attends as with any other backbone.

Pixels arrive as the :class:`~icreward.models.processing.ICRewardProcessor` makes them (resized square, CLIP
mean/std, the normalisation of ``Qwen2VLImageProcessor``) and are patchified here, in torch, exactly as
``Qwen2VLImageProcessor`` / ``Qwen2VLVideoProcessor`` do, so gradients can flow back to the pixels.

Padded frames (``frame_mask``): every sample gets its own sequence over its valid frames only (a clip whose
valid length is not a multiple of ``temporal_patch_size`` repeats its last valid frame, as the video processor
does); shorter sequences are right-padded with an attention mask. The LM is causal, so right padding cannot
change a valid token: a padded batch gives exactly the features of encoding each sample alone.
"""

from __future__ import annotations

from typing import Any

import torch

from .backbones import BackboneFeatures, VisionBackbone

__all__ = ["QWEN2_VL_MODEL_TYPES", "Qwen2VLBackbone", "patchify_images", "patchify_video"]

QWEN2_VL_MODEL_TYPES = ("qwen2_vl", "qwen2_5_vl")

_TEXT, _IMAGE, _VIDEO = 0, 1, 2  # mm_token_type_ids values the rope index expects


def patchify_video(
    video: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[torch.Tensor, tuple[int, int, int]]:
    """``(F, C, H, W)`` -> ``(grid_t * grid_h * grid_w, C * temporal_patch_size * patch_size ** 2)`` and the grid,
    in ``Qwen2VLVideoProcessor.patchify``'s layout (an odd tail repeats the last frame)."""
    num_frames, channel, height, width = video.shape
    factor = patch_size * merge_size
    if height % factor or width % factor:
        raise ValueError(
            f"the Qwen2-VL backbone needs height and width divisible by patch_size * merge_size = {factor}, "
            f"got {height}x{width}"
        )
    if pad := -num_frames % temporal_patch_size:
        video = torch.cat([video, video[-1:].expand(pad, -1, -1, -1)], dim=0)
        num_frames += pad
    grid_t, grid_h, grid_w = num_frames // temporal_patch_size, height // patch_size, width // patch_size
    patches = video.reshape(
        grid_t,
        temporal_patch_size,
        channel,
        grid_h // merge_size,
        merge_size,
        patch_size,
        grid_w // merge_size,
        merge_size,
        patch_size,
    )
    # [grid_t, grid_h/merge, grid_w/merge, merge, merge, channel, temporal, patch, patch]
    patches = patches.permute(0, 3, 6, 4, 7, 2, 1, 5, 8)
    flat = patches.reshape(grid_t * grid_h * grid_w, channel * temporal_patch_size * patch_size * patch_size)
    return flat, (grid_t, grid_h, grid_w)


def patchify_images(
    images: torch.Tensor, patch_size: int, merge_size: int, temporal_patch_size: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(N, C, H, W)`` -> concatenated patches and ``image_grid_thw (N, 3)`` as ``Qwen2VLImageProcessor`` makes them
    (each image repeated over the temporal patch)."""
    flats, grids = [], []
    for image in images:
        flat, grid = patchify_video(
            image[None].expand(temporal_patch_size, -1, -1, -1), patch_size, merge_size, temporal_patch_size
        )
        flats.append(flat)
        grids.append(grid)
    return torch.cat(flats, dim=0), torch.tensor(grids, dtype=torch.long, device=images.device)


class Qwen2VLBackbone(VisionBackbone):
    """The base model of a Qwen2-VL / Qwen2.5-VL checkpoint, encoding reference and video jointly.

    Only :meth:`encode_pair` is meaningful: the VLM encodes a (reference, video) pair, not single images.
    """

    supports_gradient_checkpointing = True

    def __init__(self, config: dict[str, Any]):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config = dict(config)
        model_type = config.pop("model_type")
        if model_type not in QWEN2_VL_MODEL_TYPES:
            raise ValueError(
                f"backbone_type='qwen2_vl' needs model_type in {QWEN2_VL_MODEL_TYPES}, got {model_type!r}"
            )
        hf_config = AutoConfig.for_model(model_type, **config)
        self.model = AutoModel.from_config(hf_config)  # Qwen2VLModel / Qwen2_5_VLModel: no LM head
        self.hf_config = hf_config
        self.hidden_size = hf_config.text_config.hidden_size
        vision = hf_config.vision_config
        self.patch_size = int(vision.patch_size)
        self.merge_size = int(vision.spatial_merge_size)
        self.temporal_patch_size = int(vision.temporal_patch_size)

    def forward(self, pixel_values: torch.Tensor) -> BackboneFeatures:
        raise NotImplementedError(
            "the Qwen2-VL backbone encodes a reference image and a video together; use encode_pair(...)"
        )

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs=None, **kwargs) -> None:
        ckpt_kwargs = activation_checkpointing_kwargs or {"use_reentrant": False}
        self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=ckpt_kwargs, **kwargs)

    def activation_checkpointing_disable(self) -> None:
        self.model.activation_checkpointing_disable()

    def _sequence(self, n_img: int, n_vid: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.hf_config
        start, end = cfg.vision_start_token_id, cfg.vision_end_token_id
        ids = [start] + [cfg.image_token_id] * n_img + [end, start] + [cfg.video_token_id] * n_vid + [end]
        types = [_TEXT] + [_IMAGE] * n_img + [_TEXT, _TEXT] + [_VIDEO] * n_vid + [_TEXT]
        return torch.tensor(ids, device=device), torch.tensor(types, device=device)

    def encode_pair(
        self,
        pixel_values: torch.Tensor,
        reference_pixel_values: torch.Tensor,
        frame_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``pixel_values (B, F, 3, H, W)``, ``reference_pixel_values (B, 3, H', W')``, boolean ``frame_mask (B, F)``
        -> ``ref_tokens (B, Tr, D)``, ``frame_grid (B, F', T, D)`` (zeros at padded groups), ``frame_mask (B, F')``.
        """
        batch, device = pixel_values.shape[0], pixel_values.device
        dtype = self.model.visual.dtype
        merge2, tps = self.merge_size**2, self.temporal_patch_size
        ref_patches, image_grid_thw = patchify_images(
            reference_pixel_values.to(dtype), self.patch_size, self.merge_size, tps
        )
        n_img = int(image_grid_thw[0].prod()) // merge2  # every reference has the same size
        vid_patches, vid_grids, seqs, lengths = [], [], [], []
        for b in range(batch):
            # valid frames in their order (padding may sit anywhere the mask says)
            flat, grid = patchify_video(
                pixel_values[b][frame_mask[b]].to(dtype), self.patch_size, self.merge_size, tps
            )
            vid_patches.append(flat)
            vid_grids.append(grid)
            seqs.append(self._sequence(n_img, flat.shape[0] // merge2, device))
            lengths.append(seqs[-1][0].shape[0])
        video_grid_thw = torch.tensor(vid_grids, dtype=torch.long, device=device)
        length = max(lengths)
        input_ids = torch.full((batch, length), self.hf_config.vision_end_token_id, dtype=torch.long, device=device)
        token_types = torch.zeros(batch, length, dtype=torch.long, device=device)
        attention_mask = torch.zeros(batch, length, dtype=torch.long, device=device)
        for b, (ids, types) in enumerate(seqs):
            input_ids[b, : len(ids)], token_types[b, : len(ids)], attention_mask[b, : len(ids)] = ids, types, 1
        self.model.rope_deltas = None  # never reuse the generation-time cache of an earlier call
        hidden = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=ref_patches,
            image_grid_thw=image_grid_thw,
            pixel_values_videos=torch.cat(vid_patches, dim=0),
            video_grid_thw=video_grid_thw,
            mm_token_type_ids=token_types,
            use_cache=False,
        ).last_hidden_state  # (B, L, D)

        ref_tokens = hidden[token_types == _IMAGE].view(batch, n_img, -1)
        groups = video_grid_thw[:, 0]
        tokens_per_group = int(video_grid_thw[0, 1:].prod()) // merge2
        new_mask = torch.arange(int(groups.max()), device=device)[None] < groups[:, None]  # (B, F')
        grid = hidden.new_zeros(batch, new_mask.shape[1], tokens_per_group, hidden.shape[-1])
        grid[new_mask] = hidden[token_types == _VIDEO].view(-1, tokens_per_group, hidden.shape[-1])
        return ref_tokens, grid, new_mask
