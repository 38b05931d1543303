"""Offline text components: a T5-style tokenizer built with the ``tokenizers`` library (no files, no network) and
tiny T5 / UMT5 encoders.

The shipped tiny policy (:mod:`icreward.policy`, whose prompts carry no information: its clips have no captions)
uses them, and so do the tiny test pipelines of :mod:`icreward.testing`.
"""

from __future__ import annotations

import string
from typing import Any

import torch

__all__ = ["TEXT_DIM", "TINY_T5_KWARGS", "build_tiny_tokenizer", "tiny_t5_encoder", "tiny_umt5_encoder"]

#: Width of the tiny text encoders' embeddings (the ``text_dim`` of the tiny transformers).
TEXT_DIM = 32
_WORDS = ("a", "the", "cat", "dog", "person", "coffee", "astronaut", "walks", "moves", "camera", "video", "of", "in")


def build_tiny_tokenizer(model_max_length: int = 512):
    """A T5-style fast tokenizer built offline with the ``tokenizers`` library (no files, no network).

    Ids: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2, then ``▁``-prefixed words and single characters. Every encoded
    sequence ends with ``</s>``, as with T5 / UMT5 sentencepiece tokenizers. Lowercases its input.
    """
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import Unigram
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "</s>", "<unk>"]
    chars = sorted(set(string.ascii_lowercase + string.digits + string.punctuation))
    pieces = [(tok, 0.0) for tok in specials]
    pieces += [(f"▁{w}", -1.0) for w in _WORDS]
    pieces += [("▁", -2.0)] + [(c, -3.0) for c in chars] + [(f"▁{c}", -3.5) for c in chars]
    backend = Tokenizer(Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        model_max_length=model_max_length,
        padding_side="right",
    )


# Both families' text encoders are T5-shaped: Wan's UMT5 (gated GELU) and CogVideoX's T5. 2 layers of width 32 with
# 4 heads of 8, relative positions bucketed 8 ways up to 32 tokens apart, no dropout.
TINY_T5_KWARGS: dict[str, Any] = dict(d_model=TEXT_DIM, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
TINY_T5_KWARGS.update(relative_attention_num_buckets=8, relative_attention_max_distance=32, dropout_rate=0.0)


def tiny_umt5_encoder(seed: int, vocab_size: int):
    """The tiny Wan text encoder: a 2-layer ``UMT5EncoderModel`` (d_model 32, gated GELU) initialised under ``seed``,
    in eval mode; ``vocab_size``: ``len(build_tiny_tokenizer())``."""
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    config = UMT5Config(vocab_size=vocab_size, feed_forward_proj="gated-gelu", **TINY_T5_KWARGS)
    return UMT5EncoderModel(config).eval()


def tiny_t5_encoder(seed: int, vocab_size: int):
    """The tiny CogVideoX / LTX text encoder: a 2-layer ``T5EncoderModel`` (d_model 32) initialised under ``seed``, in
    eval mode."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=vocab_size, **TINY_T5_KWARGS)).eval()
