"""Small configurations and an offline tokenizer/processor: for tests, benchmarks, the demo and the synthetic world.

Nothing here downloads anything. Real use loads a pretrained BLIP-2 checkpoint and its processor instead.
"""

from __future__ import annotations

from collections.abc import Iterable

from .configuration_mra_cir import MraCirConfig

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def tiny_config(
    hidden_size: int = 32,
    num_hidden_layers: int = 2,
    num_attention_heads: int = 4,
    image_size: int = 32,
    patch_size: int = 8,
    num_query_tokens: int = 4,
    embed_dim: int = 16,
    vocab_size: int = 128,
    vision_hidden_size: int | None = None,
    **overrides,
) -> MraCirConfig:
    """A small random `MraCirConfig` (defaults: width 32, 2 layers, 4 heads, 32 px images, 4 query tokens, D=16).

    `Blip2VisionConfig.initializer_range` defaults to 1e-10 in transformers 5 (a random tower would then map every
    image to the same output); 0.02 is used here.
    """
    vision_hidden_size = vision_hidden_size or hidden_size
    return MraCirConfig(
        vision_config=dict(
            hidden_size=vision_hidden_size,
            intermediate_size=vision_hidden_size * 2,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            image_size=image_size,
            patch_size=patch_size,
            initializer_range=0.02,
        ),
        qformer_config=dict(
            hidden_size=hidden_size,
            intermediate_size=hidden_size * 2,
            num_hidden_layers=num_hidden_layers,
            num_attention_heads=num_attention_heads,
            vocab_size=vocab_size,
            max_position_embeddings=128,
            cross_attention_frequency=1,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        ),
        num_query_tokens=num_query_tokens,
        image_text_hidden_size=embed_dim,
        **overrides,
    )


def offline_tokenizer(texts: Iterable[str] = (), vocab_size: int = 128, lowercase: bool = True):
    """A BERT-style fast tokenizer ([CLS] words [SEP]) trained in memory on `texts` (word level, readable ids).

    Returns:
        [`~transformers.PreTrainedTokenizerFast`] with `[PAD]`=0, `[UNK]`, `[CLS]`, `[SEP]`, `[MASK]`.
    """
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from tokenizers.trainers import WordLevelTrainer
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase()] if lowercase else [])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = WordLevelTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=1)
    corpus = list(texts) or ["a photo of an image"]
    tok.train_from_iterator(corpus, trainer=trainer)
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def offline_processor(image_size: int = 32, texts: Iterable[str] = (), vocab_size: int = 128):
    """An [`MraCirProcessor`] with a PIL BLIP image processor (CLIP mean/std, bicubic) and [`offline_tokenizer`]."""
    from transformers import BlipImageProcessorPil

    from .processing_mra_cir import MraCirProcessor

    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return MraCirProcessor(image_processor, offline_tokenizer(texts, vocab_size=vocab_size))


def random_image(seed: int, size: int = 40):
    """A reproducible random RGB `PIL.Image` (noise), for tests and smoke runs."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))
