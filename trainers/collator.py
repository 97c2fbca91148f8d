"""`MraCirCollator`: triplet rows (the MRA triplet builder's features) to `MraCirModel.forward` inputs."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mra_cir.dataset_builders.mra_triplets.config import REQUIRED_COLUMNS
from mra_cir.retrieval.encoding import rgb

from .vit_cache import VitOutputCache

#: the tokenizer's ids that the model config records (transformers' Trainer aligns the config with them)
SPECIAL_TOKEN_IDS = ("pad_token_id", "bos_token_id", "eos_token_id")


def record_special_token_ids(config, processing_class) -> dict[str, int]:
    """Write the tokenizer's pad / bos / eos ids into `config` (the ids the model is trained with), so that the saved
    config states them and `Trainer` has nothing to realign (it warns when it must). Returns the ids written.

    Args:
        config ([`MraCirConfig`]): the model's configuration, changed in place.
        processing_class ([`MraCirProcessor`] or a tokenizer): where the ids come from (`processor.tokenizer`).
    """
    tokenizer = getattr(processing_class, "tokenizer", processing_class)
    ids = {name: getattr(tokenizer, name, None) for name in SPECIAL_TOKEN_IDS}
    ids = {name: value for name, value in ids.items() if isinstance(value, int)}
    for name, value in ids.items():
        setattr(config, name, value)
    return ids


class MraCirCollator:
    r"""
    Batch triplet rows into model inputs through [`MraCirProcessor`].

    A row has the builder's features: `reference_image`, `target_image` (PIL images, or `{"bytes", "path"}` dicts
    when the column is not decoded), `modification_text`, and optionally `reference_id`, `target_id`, captions,
    `rank`, `score` (ignored here).

    Args:
        processor ([`MraCirProcessor`]): makes `reference_pixel_values`, `input_ids`, `attention_mask`,
            `target_pixel_values`.
        vit_cache ([`VitOutputCache`], *optional*): cached frozen-ViT outputs. When every image of one side of the
            batch is cached (by `reference_id` / `target_id`), that side is sent as `reference_vision_embeds` /
            `target_vision_embeds` and its images are not even processed.
        max_length (`int`, defaults to 64): maximum number of text tokens (BLIP-2 uses 32-64).

    Returns (from `__call__`):
        `dict[str, torch.Tensor]` with `input_ids` `(B, L)`, `attention_mask` `(B, L)` and, per side,
        `reference_pixel_values` `(B, 3, H, W)` or `reference_vision_embeds` `(B, P, H_vit)`, and
        `target_pixel_values` or `target_vision_embeds`.

    Example:

    ```python
    >>> collator = MraCirCollator(processor)
    >>> batch = collator([dataset[0], dataset[1]])
    >>> loss = model(**batch).loss
    ```
    """

    def __init__(self, processor, vit_cache: VitOutputCache | None = None, max_length: int = 64):
        self.processor = processor
        self.vit_cache = vit_cache
        self.max_length = max_length

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not rows:
            raise ValueError("MraCirCollator got an empty batch")
        missing = [c for c in REQUIRED_COLUMNS if c not in rows[0]]
        if missing:
            raise ValueError(
                f"triplet rows lack the field(s) {missing} (fields: {sorted(rows[0])}); expected the MRA triplet "
                "builder's features (set remove_unused_columns=False so that Trainer keeps them)"
            )
        texts = []
        for i, row in enumerate(rows):
            text = row["modification_text"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"row {i} of the batch has an empty or non-string modification_text: {text!r}")
            texts.append(text)
        encoded = self.processor.tokenizer(
            texts,
            padding=True,
            truncation=True,
            max_length=self.max_length,
            return_token_type_ids=False,
            return_tensors="pt",
        )
        batch = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        for side in ("reference", "target"):
            embeds = self._cached(rows, side)
            if embeds is not None:
                batch[f"{side}_vision_embeds"] = embeds
            else:
                images = [rgb(row[f"{side}_image"]) for row in rows]
                batch[f"{side}_pixel_values"] = self.processor.image_processor(images, return_tensors="pt")[
                    "pixel_values"
                ]
        return batch

    def _cached(self, rows: Sequence[Mapping[str, Any]], side: str) -> torch.Tensor | None:
        if self.vit_cache is None or f"{side}_id" not in rows[0]:
            return None
        ids = [row[f"{side}_id"] for row in rows]
        return self.vit_cache.get(ids) if self.vit_cache.contains_all(ids) else None


__all__ = ["MraCirCollator", "REQUIRED_COLUMNS"]
