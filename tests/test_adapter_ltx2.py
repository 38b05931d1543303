"""LTX-2 image-to-video: the tiny pipeline runs through diffusers, and icreward refuses it (no adapter yet).

See docs/families/ltx2.md for what an adapter needs; these tests pin the current, documented state.
"""

import numpy as np
import PIL.Image
import pytest
import torch

from icreward.adapters import get_adapter
from icreward.testing.tiny_families_ltx import tiny_ltx2_i2v_pipeline


def test_tiny_ltx2_pipeline_generates_video_and_audio_latents_and_is_refused():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        pipe = tiny_ltx2_i2v_pipeline(seed=0)
        image = PIL.Image.fromarray((np.random.RandomState(0).rand(32, 32, 3) * 255).astype(np.uint8))
        out = pipe(
            image=image,
            prompt="a cat",
            num_frames=9,
            height=32,
            width=32,
            num_inference_steps=2,
            guidance_scale=1.0,
            max_sequence_length=16,
            output_type="latent",
            generator=torch.Generator().manual_seed(0),
        )
    finally:
        torch.set_num_threads(previous)
    assert out.frames.shape == (1, 4, 5, 16, 16)  # 2x temporal / 2x spatial tiny VAE, 4 channels
    assert out.audio.shape[:2] == (1, 2) and out.audio.shape[-1] == 2
    assert torch.isfinite(out.frames).all()
    with pytest.raises(ValueError, match="no adapter for a LTX2ImageToVideoPipeline"):
        get_adapter(pipe)
