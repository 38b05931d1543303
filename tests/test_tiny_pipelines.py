import numpy as np
import PIL.Image
import pytest
import torch

from icreward.testing import tiny_pipelines
from icreward.testing.tiny_pipelines import TINY_DEFAULTS, build_tiny_tokenizer, tiny_pipeline

FAMILIES = ["wan21", "wan22", "cogvideox"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models are fastest single-threaded; two threads on a shared 2-core machine spin-wait.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def image():
    return PIL.Image.fromarray((np.random.RandomState(0).rand(40, 56, 3) * 255).astype(np.uint8))


def _generate(pipe, image, seed=0, **overrides):
    kwargs = {**TINY_DEFAULTS, "num_inference_steps": 2, **overrides}
    generator = torch.Generator().manual_seed(seed)
    return pipe(image=image, prompt="a cat walks", generator=generator, output_type="pt", **kwargs).frames


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("num_frames,height,width", [(9, 32, 32), (17, 48, 32)])
def test_generates_requested_shape(family, num_frames, height, width, image):
    frames = _generate(tiny_pipeline(family), image, num_frames=num_frames, height=height, width=width)
    assert frames.shape == (1, num_frames, 3, height, width)
    assert torch.isfinite(frames).all()
    assert frames.min() >= 0 and frames.max() <= 1


@pytest.mark.parametrize("family", FAMILIES)
def test_seeding(family, image):
    first = _generate(tiny_pipeline(family, seed=0), image)
    again = _generate(tiny_pipeline(family, seed=0), image)
    other_weights = _generate(tiny_pipeline(family, seed=1), image)
    other_noise = _generate(tiny_pipeline(family, seed=0), image, seed=1)
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    assert (first - other_weights).abs().max() > 1e-3
    assert (first - other_noise).abs().max() > 1e-3


def test_wan22_has_two_distinct_experts():
    pipe = tiny_pipelines.tiny_wan22_pipeline(seed=0)
    assert pipe.transformer_2 is not None and pipe.config.boundary_ratio == 0.875
    assert pipe.image_encoder is None and pipe.transformer.config.image_dim is None
    w1 = next(pipe.transformer.parameters())
    w2 = next(pipe.transformer_2.parameters())
    assert not torch.equal(w1, w2)


def test_tokenizer_is_t5_like():
    tok = build_tiny_tokenizer()
    ids = tok("A cat walks!").input_ids
    assert ids[-1] == tok.eos_token_id == 1 and tok.pad_token_id == 0
    assert tok.unk_token_id not in ids
    padded = tok(["a cat"], padding="max_length", max_length=512, return_tensors="pt")
    assert padded.input_ids.shape == (1, 512) and int(padded.attention_mask.sum()) == len(tok("a cat").input_ids)


def test_save_and_reload_roundtrip(tmp_path, image):
    from diffusers import WanImageToVideoPipeline

    pipe = tiny_pipelines.tiny_wan_i2v_pipeline(seed=0)
    pipe.save_pretrained(tmp_path)
    reloaded = WanImageToVideoPipeline.from_pretrained(tmp_path)
    torch.testing.assert_close(_generate(pipe, image), _generate(reloaded, image))


def test_unknown_family():
    with pytest.raises(ValueError, match="unknown tiny pipeline family"):
        tiny_pipeline("open-sora")
