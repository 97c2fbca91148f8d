"""The naive token-level similarity that the library's blocked search (`mra_cir.retrieval.similarity`) is tested
against: every token pair in one `einsum`, so it holds the whole `(N, M, Q, Q)` tensor in memory."""

from __future__ import annotations

import torch

from mra_cir.retrieval.similarity import REDUCTIONS, as_tokens


def brute_force_token_similarity(queries: torch.Tensor, keys: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """The full `(N, M)` fp32 similarity matrix, computed naively (`einsum` over all token pairs). The reference the blocked search is checked against."""
    queries = as_tokens(queries, "queries").float()
    keys = as_tokens(keys, "keys").float()
    sims = torch.einsum("nqd,mkd->nmqk", queries, keys)
    if reduce == "max":
        return sims.amax(dim=(2, 3))
    if reduce == "mean_max":
        return sims.amax(dim=3).mean(dim=2)
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
