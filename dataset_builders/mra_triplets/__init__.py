"""MRA triplets from unlabeled images: embed (`image_features`), mine (`mining`), the builder (`config`, `builder`:
the agent's captions and modification texts through a `datasets` builder) and publishing (`publishing`)."""

from __future__ import annotations

from .builder import MraTriplets
from .config import FEATURES, MraTripletsConfig

__all__ = ["FEATURES", "MraTriplets", "MraTripletsConfig"]
