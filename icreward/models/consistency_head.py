"""The Image Consistency head of :class:`~icreward.models.modeling.ICRewardModel`: frame tokens cross-attend to the
reference tokens, then matching statistics are pooled over space and time.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["ImageConsistencyHead"]


class CrossAttentionBlock(nn.Module):
    """Pre-norm block: frame tokens attend to reference tokens, then an MLP."""

    def __init__(self, hidden: int, num_heads: int, dropout: float):
        super().__init__()
        self.norm_q = nn.LayerNorm(hidden)
        self.norm_kv = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, num_heads, dropout=dropout, batch_first=True)
        self.norm_mlp = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(
            nn.Linear(hidden, 2 * hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * hidden, hidden)
        )

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        kv = self.norm_kv(ref)
        x = x + self.attn(self.norm_q(x), kv, kv, need_weights=False)[0]
        return x + self.mlp(self.norm_mlp(x))


def matching_stats(frames: torch.Tensor, ref: torch.Tensor, global_cosine: bool) -> torch.Tensor:
    """Per-frame matching statistics of ``frames (B, F, T, D)`` against ``ref (B, Tr, D)`` -> ``(B, F, 3 or 4)``."""
    batch, num_frames, tokens, _ = frames.shape
    sim = F.normalize(frames.flatten(1, 2), dim=-1) @ F.normalize(ref, dim=-1).transpose(1, 2)  # (B, F * T, Tr)
    sim = sim.view(batch, num_frames, tokens, -1)
    explained = sim.max(dim=3).values.mean(dim=2)  # (B, F): frame tokens found in the reference
    coverage = sim.max(dim=2).values  # (B, F, Tr): reference tokens found in the frame
    stats = [explained, coverage.mean(dim=2), coverage.min(dim=2).values]
    if global_cosine:
        stats.append(F.cosine_similarity(frames.mean(dim=2), ref.mean(dim=1)[:, None], dim=-1))
    return torch.stack(stats, dim=2)


class ImageConsistencyHead(nn.Module):
    """The attention-based Image Consistency head.

    1. Reference and frame tokens share one projection (so they live in one space); frames get a frame-index
       embedding. No spatial position embedding: matching is by content, so camera motion that moves content
       around the frame is not mistaken for inconsistency.
    2. Cross-attention blocks: every frame token attends to the reference tokens.
    3. Per frame: attention pooling over tokens, plus matching statistics, both of the learned projection and
       of the raw backbone features (parameter-free, so they cannot overfit): how well frame tokens are
       explained by the reference, how well the reference is covered by the frame (catches removed objects),
       its worst-covered reference token, and (raw only) the cosine of the pooled features.
    4. Over time: masked mean, max and min of the per-frame vectors and their mean frame-to-frame change
       (catches flicker and drift), plus video-level summaries of the raw statistics: their mean and minimum
       over time and the consistency of consecutive frames' pooled features (mean, minimum, and the spread of
       the reference cosine over time), as VBench's I2V metrics use them. These summaries also reach the logits
       through a linear skip, initialised so that the untrained head ranks videos exactly like the zero-shot
       feature cosine (:meth:`init_as_feature_cosine`); training learns what the cosine misses.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int,
        num_heads: int,
        num_layers: int,
        dropout: float,
        max_frames: int,
        num_outputs: int,
    ):
        super().__init__()
        self.num_stats = 3 + 4  # learned-space and raw-feature matching statistics
        self.proj = nn.Sequential(nn.Linear(in_dim, hidden), nn.LayerNorm(hidden))
        self.frame_embedding = nn.Embedding(max_frames, hidden)
        self.blocks = nn.ModuleList(CrossAttentionBlock(hidden, num_heads, dropout) for _ in range(num_layers))
        self.pool_query = nn.Parameter(torch.zeros(1, 1, hidden))
        self.pool = nn.MultiheadAttention(hidden, num_heads, batch_first=True)
        self.frame_mlp = nn.Sequential(
            nn.Linear(hidden + self.num_stats, hidden), nn.GELU(), nn.Linear(hidden, hidden)
        )
        self.num_video_stats = 2 * self.num_stats + 3
        self.skip = nn.Linear(self.num_video_stats, num_outputs)
        self.out = nn.Sequential(
            nn.LayerNorm(4 * hidden + self.num_video_stats),
            nn.Linear(4 * hidden + self.num_video_stats, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_outputs),
        )
        self.max_frames = max_frames
        self.gradient_checkpointing = False

    #: Position in the video statistics of the mean over frames of the raw pooled-feature cosine to the reference
    #: (the zero-shot feature-cosine baseline).
    FEATURE_COSINE_INDEX = 6

    @torch.no_grad()
    def init_as_feature_cosine(self, gain: float = 8.0, centre: float = 0.6) -> None:
        """Start as the zero-shot feature cosine: ``logits = gain * (mean frame cosine - centre)`` through the linear
        skip, with the learned branch's output layer at zero. The head then ranks videos exactly like the
        feature-cosine baseline (a monotone function of it) before training, and training learns the residual."""
        self.skip.weight.zero_()
        self.skip.weight[:, self.FEATURE_COSINE_INDEX] = gain
        self.skip.bias.fill_(-gain * centre)
        last = self.out[-1]
        last.weight.zero_()
        last.bias.zero_()

    def forward(self, ref_tokens: torch.Tensor, frame_tokens: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """``ref_tokens (B, Tr, D)``, ``frame_tokens (B, F, T, D)`` (anything at padded frames), ``frame_mask (B, F)``."""
        batch, num_frames, tokens = frame_tokens.shape[:3]
        if num_frames > self.max_frames:
            raise ValueError(
                f"got {num_frames} frames but the head was built for at most max_frames={self.max_frames}"
            )
        ref = self.proj(ref_tokens)  # (B, Tr, H)
        frames = self.proj(frame_tokens) + self.frame_embedding.weight[:num_frames, None, :]  # (B, F, T, H)
        # All frames of a video side by side, (B, F * T, H): cross-attention is per query token, so attending per
        # video equals attending per frame, without copying the reference for every frame.
        x = frames.flatten(1, 2)

        stats = torch.cat(
            [
                matching_stats(frames, ref, global_cosine=False),
                matching_stats(frame_tokens.float(), ref_tokens.float(), True),
            ],
            dim=2,
        )  # (B, F, num_stats)

        for block in self.blocks:
            if self.gradient_checkpointing and self.training:
                x = checkpoint(block, x, ref, use_reentrant=False)
            else:
                x = block(x, ref)
        x = x.view(batch * num_frames, tokens, -1)
        pooled = self.pool(self.pool_query.expand(x.shape[0], -1, -1), x, x, need_weights=False)[0][:, 0]
        grid = self.frame_mlp(
            torch.cat([pooled.view(batch, num_frames, -1), stats.to(pooled.dtype)], dim=2)
        )  # (B, F, H)

        # Pool over time, ignoring padded frames.
        mask = frame_mask[..., None]
        count = mask.sum(dim=1).clamp(min=1)
        mean = (grid * mask).sum(dim=1) / count
        maxi = grid.masked_fill(~mask, float("-inf")).max(dim=1).values
        mini = grid.masked_fill(~mask, float("inf")).min(dim=1).values
        pair_mask = (frame_mask[:, 1:] & frame_mask[:, :-1])[..., None]
        change = ((grid[:, 1:] - grid[:, :-1]).abs() * pair_mask).sum(dim=1) / pair_mask.sum(dim=1).clamp(min=1)
        video_stats = self._video_stats(frame_tokens.float(), stats, frame_mask)
        video_stats = video_stats.to(grid.dtype)  # computed in fp32; the head may run in fp16/bf16
        return self.out(torch.cat([mean, maxi, mini, change, video_stats], dim=1)) + self.skip(video_stats)

    @staticmethod
    def _video_stats(frame_tokens: torch.Tensor, stats: torch.Tensor, frame_mask: torch.Tensor) -> torch.Tensor:
        """Parameter-free video-level summaries: mean/min over time of the per-frame statistics, and the
        consistency of consecutive frames' pooled features (mean, min) and spread of the reference cosine."""
        mask = frame_mask[..., None]
        count = mask.sum(dim=1).clamp(min=1)
        stats_mean = (stats * mask).sum(dim=1) / count
        stats_min = stats.masked_fill(~mask, float("inf")).min(dim=1).values
        pooled = frame_tokens.mean(dim=2)  # (B, F, D)
        if pooled.shape[1] == 1:  # no frame pairs at all
            pooled = pooled.expand(-1, 2, -1)
            frame_mask = frame_mask.expand(-1, 2) & torch.tensor([True, False], device=frame_mask.device)
        consecutive = F.cosine_similarity(pooled[:, 1:], pooled[:, :-1], dim=-1)  # (B, F - 1)
        pair_mask = frame_mask[:, 1:] & frame_mask[:, :-1]
        pairs = pair_mask.sum(dim=1)
        # A single-frame video has no consecutive pair: it counts as perfectly consistent over time (as VBench).
        tc_mean = torch.where(pairs > 0, (consecutive * pair_mask).sum(dim=1) / pairs.clamp(min=1), 1.0)
        tc_min = torch.where(pairs > 0, consecutive.masked_fill(~pair_mask, float("inf")).min(dim=1).values, 1.0)
        global_cos = stats[..., -1]
        spread = ((global_cos - stats_mean[:, -1:]).pow(2) * frame_mask).sum(dim=1) / count[:, 0]
        return torch.cat([stats_mean, stats_min, tc_mean[:, None], tc_min[:, None], spread.sqrt()[:, None]], dim=1)
