"""MRA triplets from unlabeled images, on the features that `mra_cir.retrieval` embeds: mine (`mining`: the rank window
and its spelling; `shared_windows`: every rank window from one ranking pass), the builder (`config`, `builder`,
`agent_steps`: the agent's captions and modification texts through a `datasets` builder; `pool_messages`: why a pool
gives no pair) and publishing (`publishing`)."""

from __future__ import annotations

from .builder import MraTriplets
from .config import FEATURES, MraTripletsConfig

__all__ = ["FEATURES", "MraTriplets", "MraTripletsConfig"]
