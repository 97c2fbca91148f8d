"""A held-out slice of the MRA triplets: the only data a zero-shot run may select a checkpoint on.

Zero-shot composed image retrieval trains on triplets built from unlabeled images; no benchmark split may steer
training (no early stopping, no best-checkpoint selection on FashionIQ / CIRR / CIRCO val). What a run may watch
instead is a slice of its own triplets kept out of training: [`split_holdout`] removes it (and every triplet that
shares an image with it), the trainer reports the InfoNCE loss on it and [`TripletRecallEvaluator`] the recall of each
held-out triplet's target among the slice's targets, queried with the composed query.

Example:

```python
>>> train, held_out, report = split_holdout(triplets, 0.02, seed=0)
>>> TripletRecallEvaluator(held_out)(model, processor)
{'R@1': 12.5, 'R@5': 40.0, 'R@10': 55.0, 'R@50': 90.0}
```
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from mra_cir.retrieval.encoding import encode_images, rank_gallery
from mra_cir.retrieval.gallery_index import GalleryIndex

HOLDOUT_COLUMNS = ("reference_id", "target_id", "reference_image", "target_image", "modification_text")


def split_holdout(dataset, size: float, seed: int = 0):
    """Split triplets into a training part and a held-out part that share no image.

    Args:
        dataset (`datasets.Dataset`): triplets with `reference_id` and `target_id` columns.
        size (`float`): a fraction (< 1) of the distinct references, or a number (>= 1) of them, held out with every
            triplet they start.
        seed (`int`, defaults to 0): which references are held out.

    Returns:
        `(train, held_out, report)`: the two datasets and the counts (`held_out_triplets`, `train_triplets`,
        `dropped_triplets`: training triplets removed because they use a held-out image as reference or target).
    """
    missing = [c for c in ("reference_id", "target_id") if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"triplet_holdout needs the columns {missing} in the training triplets (the builder writes them)"
        )
    references = sorted(set(dataset["reference_id"]))
    count = int(size) if size >= 1 else round(size * len(references))
    if not 1 <= count < len(references):
        raise ValueError(
            f"triplet_holdout={size} holds out {count} of {len(references)} references; it must leave at least one on "
            "each side"
        )
    chosen = set(random.Random(seed).sample(references, count))
    refs, targets = dataset["reference_id"], dataset["target_id"]
    held = [i for i, r in enumerate(refs) if r in chosen]
    held_images = {refs[i] for i in held} | {targets[i] for i in held}
    train = [i for i, (r, t) in enumerate(zip(refs, targets)) if r not in held_images and t not in held_images]
    report = {
        "held_out_triplets": len(held),
        "train_triplets": len(train),
        "dropped_triplets": len(refs) - len(held) - len(train),
        "held_out_references": count,
    }
    return dataset.select(train), dataset.select(held), report


class TripletRecallEvaluator:
    """Recall@K of held-out triplets: each composed query (reference image + modification text) ranks the distinct
    target images of the slice (its own reference excluded); a hit is the triplet's target.

    Args:
        dataset (`datasets.Dataset`): the held-out triplets ([`split_holdout`]).
        batch_size (`int`, defaults to 32): images per forward pass.
        ks (`Sequence[int]`, defaults to `(1, 5, 10, 50)`): recall cut-offs (percent, keys `R@K`).
        num_workers (`int`, defaults to 0): `DataLoader` workers decoding images.
    """

    benchmark = "triplet"  # metrics logged as eval_triplet_R@K: not a benchmark split, so selectable zero-shot
    supports_distributed = False  # a small slice: the main process ranks it, the trainer shares the numbers

    def __init__(self, dataset, batch_size: int = 32, ks: Sequence[int] = (1, 5, 10, 50), num_workers: int = 0):
        missing = [c for c in HOLDOUT_COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(f"TripletRecallEvaluator needs the columns {missing}")
        self.dataset, self.batch_size, self.ks, self.num_workers = dataset, batch_size, tuple(ks), num_workers

    def __call__(self, model, processor=None) -> dict[str, float]:
        targets = list(self.dataset["target_id"])
        first = {}
        for i, target in enumerate(targets):
            first.setdefault(target, i)
        gallery = self.dataset.select(list(first.values()))["target_image"]
        features = encode_images(model, processor, gallery, self.batch_size, self.num_workers)
        index = GalleryIndex(features, list(first))
        references = list(self.dataset["reference_id"])
        ranking = rank_gallery(
            model,
            processor,
            index,
            self.dataset["reference_image"],
            list(self.dataset["modification_text"]),
            "composed",
            k=min(max(self.ks), len(first)),
            exclude=[r if r in index else None for r in references],
            batch_size=self.batch_size,
            num_workers=self.num_workers,
        )
        return {
            f"R@{k}": 100.0 * sum(t in ids[:k] for ids, t in zip(ranking.ids, targets)) / len(targets) for k in self.ks
        }


__all__ = ["TripletRecallEvaluator", "split_holdout"]
