"""Tiny things that need no download: small random configs, an offline tokenizer/processor, random images, toy
triplets and clustered token features.

For tests, the README's snippets, benchmarks, CPU smoke runs, and the offline quickstart (whose stand-in for BLIP-2
is a small model with an in-memory tokenizer). None of it is meaningful data: real use loads a pretrained BLIP-2
checkpoint with its processor, and real triplets come from `mra_cir.dataset_builders.mra_triplets`. The synthetic
world (`mra_cir.dataset_builders.synthetic_world`) is not toy data: it is the offline benchmark, built like real ones.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch

from mra_cir.modeling_mra_cir.configuration_mra_cir import MraCirConfig

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

    from mra_cir.modeling_mra_cir.processing_mra_cir import MraCirProcessor

    image_processor = BlipImageProcessorPil(size={"height": image_size, "width": image_size})
    return MraCirProcessor(image_processor, offline_tokenizer(texts, vocab_size=vocab_size))


def random_image(seed: int, size: int = 40):
    """A reproducible random RGB `PIL.Image` (noise), for tests and smoke runs."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8))


TOY_WORDS = (
    "make it red green blue yellow black white small large add remove more less circle square left right top bottom"
).split()


def random_triplet_dataset(num_triplets: int = 16, num_images: int | None = None, image_size: int = 32, seed: int = 0):
    """A `datasets.Dataset` of `num_triplets` random triplets (the builder's features) over `num_images` random
    images: random colour blocks and random word strings (a model can fit them; nothing here is meaningful).

    Args:
        num_triplets (`int`, defaults to 16): rows.
        num_images (`int`, *optional*): distinct images (default `2 * num_triplets`); fewer images than rows make
            targets repeat, as mined data does.
        image_size (`int`, defaults to 32): side of the square PIL images.
        seed (`int`, defaults to 0): everything is derived from it.
    """
    from datasets import Dataset
    from PIL import Image

    from mra_cir.dataset_builders.mra_triplets.config import FEATURES

    rng = np.random.default_rng(seed)
    num_images = num_images or 2 * num_triplets
    images = []
    for _ in range(num_images):
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.integers(-40, 40, (image_size, image_size, 3))
        images.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)))
    rows = {name: [] for name in FEATURES}
    for _ in range(num_triplets):
        ref, tgt = int(rng.integers(num_images)), int(rng.integers(num_images))
        if tgt == ref:
            tgt = (ref + 1) % num_images
        rows["reference_image"].append(images[ref])
        rows["target_image"].append(images[tgt])
        rows["modification_text"].append(" ".join(rng.choice(TOY_WORDS, size=int(rng.integers(2, 6)))))
        rows["reference_caption"].append(f"image {ref}")
        rows["target_caption"].append(f"image {tgt}")
        rows["rank"].append(int(rng.integers(51, 61)))
        rows["score"].append(float(rng.random()))
        rows["reference_id"].append(f"img_{ref:05d}")
        rows["target_id"].append(f"img_{tgt:05d}")
    return Dataset.from_dict(rows, features=FEATURES)


def synthetic_clustered_tokens(
    num_items: int,
    num_tokens: int = 32,
    dim: int = 256,
    num_clusters: int | None = None,
    aspect_scale: float = 0.5,
    item_noise: float = 0.5,
    token_noise: float = 0.3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 8192,
) -> torch.Tensor:
    """Clustered synthetic image features (benchmarks and tests): `(num_items, num_tokens, dim)`, L2-normalised.

    Token t of an item of cluster c is `centre_c + aspect_scale * aspect_{c,t} + item_noise * e_item + token_noise *
    e_token` (standard normal vectors, then normalised): the tokens of an image share its cluster's content and its
    own variation (`e_item`) and differ by aspect, so both the pooled vectors and the token-level maxima have
    neighbourhoods, as photos of one product would. (Uniform noise has no neighbours for any index to find.)
    `num_clusters` defaults to `num_items // 100` (about 100 items per cluster).
    """
    gen = torch.Generator().manual_seed(seed)
    num_clusters = num_clusters or max(1, num_items // 100)
    centres = torch.randn(num_clusters, 1, dim, generator=gen)
    aspects = aspect_scale * torch.randn(num_clusters, num_tokens, dim, generator=gen)
    assign = torch.randint(0, num_clusters, (num_items,), generator=gen)
    out = torch.empty(num_items, num_tokens, dim, dtype=dtype)
    for start in range(0, num_items, chunk_size):
        stop = min(start + chunk_size, num_items)
        b = stop - start
        x = centres[assign[start:stop]] + aspects[assign[start:stop]]
        x += item_noise * torch.randn(b, 1, dim, generator=gen)
        x += token_noise * torch.randn(b, num_tokens, dim, generator=gen)
        out[start:stop] = torch.nn.functional.normalize(x, dim=-1).to(dtype)
    return out


__all__ = [
    "SPECIAL_TOKENS",
    "TOY_WORDS",
    "offline_processor",
    "offline_tokenizer",
    "random_image",
    "random_triplet_dataset",
    "synthetic_clustered_tokens",
    "tiny_config",
]
