"""Random triplet datasets with the MRA triplet builder's features: for tests, benchmarks and CPU smoke runs.

The images are random colour blocks and the texts random word strings: a model can fit them (each target differs),
but nothing here is meaningful data. Real triplets come from `dataset_builders.mra_triplets`.
"""

from __future__ import annotations

import numpy as np

TOY_WORDS = (
    "make it red green blue yellow black white small large add remove more less circle square left right top bottom"
).split()


def triplet_features():
    """The builder's features (`datasets.Features`)."""
    from datasets import Features, Image, Value

    return Features(
        {
            "reference_image": Image(),
            "target_image": Image(),
            "modification_text": Value("string"),
            "reference_caption": Value("string"),
            "target_caption": Value("string"),
            "rank": Value("int32"),
            "score": Value("float32"),
            "reference_id": Value("string"),
            "target_id": Value("string"),
        }
    )


def random_triplet_dataset(num_triplets: int = 16, num_images: int | None = None, image_size: int = 32, seed: int = 0):
    """A `datasets.Dataset` of `num_triplets` random triplets over `num_images` random images.

    Args:
        num_triplets (`int`, defaults to 16): rows.
        num_images (`int`, *optional*): distinct images (default `2 * num_triplets`); fewer images than rows make
            targets repeat, as mined data does.
        image_size (`int`, defaults to 32): side of the square PIL images.
        seed (`int`, defaults to 0): everything is derived from it.
    """
    from datasets import Dataset
    from PIL import Image

    rng = np.random.default_rng(seed)
    num_images = num_images or 2 * num_triplets
    images = []
    for _ in range(num_images):
        base = rng.integers(0, 255, (1, 1, 3))
        noise = rng.integers(-40, 40, (image_size, image_size, 3))
        images.append(Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8)))
    rows = {name: [] for name in triplet_features()}
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
    return Dataset.from_dict(rows, features=triplet_features())


__all__ = ["TOY_WORDS", "random_triplet_dataset", "triplet_features"]
