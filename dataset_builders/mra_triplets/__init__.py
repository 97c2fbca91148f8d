"""MRA triplets from unlabeled images: the pool (`pool`: the folder's images, a seeded per-class / total sample),
embed (`image_features`), mine (`mining`; `shared_windows`: every rank window from one ranking pass), the builder
(`config`, `builder`, `agent_steps`: the agent's captions and modification texts through a `datasets` builder) and
publishing (`publishing`)."""

from __future__ import annotations

from .builder import MraTriplets
from .config import FEATURES, MraTripletsConfig

__all__ = ["FEATURES", "MraTriplets", "MraTripletsConfig"]
