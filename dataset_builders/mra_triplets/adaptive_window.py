"""The adaptive rank window: each reference's targets are drawn from a band of its *own* similarity scale instead of
fixed ranks.

Why: the paper's window (ranks 51-60 of ~1.2M ImageNet images) means "moderately similar: related, not a copy". How
many ranks that takes depends on the pool's semantic density: in a catalogue of near-identical products the first
hundred neighbours may all be near-copies, in a diverse photo collection rank 50 may already be unrelated. A rank says
nothing about how similar the candidate is; the similarity itself does, relative to what this reference's neighbours
look like.

The rule: rank the reference's neighbours down to `depth` (default 100, the paper's window sits in the middle of its
top 100); with `s_1` the nearest neighbour's similarity and `s_depth` the similarity at rank `depth`, normalise every
candidate's similarity to `u = (s - s_depth) / (s_1 - s_depth)` (1 = as close as the nearest neighbour, 0 = as far
as rank `depth`) and draw the targets among the candidates with `u` in `band` (default `[0.4, 0.6]`: halfway between
the nearest neighbour and rank `depth`). When similarity falls evenly with rank over the top 100 this band is ranks
40-60, the paper's window; when near-duplicates crowd the top (similarities flat near `s_1`, then a drop) the band
moves to deeper ranks, past the copies; when the pool is diverse (a steep drop after the first few) it moves closer.
The band's numbers were set from this reading of the similarity curve, not tuned on any result.

If fewer than `targets_per_reference` candidates fall in the band, the candidates closest to the band's middle are
taken (counted in `stats["band_short"]`). Draws are seeded per reference, like [`sample_rank_window`].
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .mining import MinedPairs, Ranker, mining_inputs, mining_query_block_size, reference_rng

#: the default band of normalised similarity (see the module docstring)
DEFAULT_BAND = (0.4, 0.6)
#: the default depth: the rank whose similarity is the band's zero
DEFAULT_DEPTH = 100


def band_candidates(scores: Sequence[float], band: tuple[float, float]) -> tuple[list[int], np.ndarray]:
    """Positions (0-based ranks) of `scores` (decreasing) whose normalised similarity lies in `band`, and every
    candidate's normalised similarity `u` (a flat list, `s_1 == s_depth`, gives `u = 0.5` everywhere)."""
    values = np.asarray(scores, dtype=np.float64)
    top, bottom = values[0], values[-1]
    u = (values - bottom) / (top - bottom) if top > bottom else np.full(len(values), 0.5)
    low, high = band
    return [i for i, x in enumerate(u) if low <= x <= high], u


def sample_adaptive_window(
    features: torch.Tensor,
    ids: Sequence[str],
    targets_per_reference: int = 1,
    seed: int = 0,
    reduce: str = "max",
    duplicates: dict[str, str] | None = None,
    depth: int = DEFAULT_DEPTH,
    band: tuple[float, float] = DEFAULT_BAND,
    start: int = 0,
    stop: int | None = None,
) -> MinedPairs:
    """Draw each reference's targets from its adaptive band (module docstring); the result is like
    [`sample_rank_window`]'s (`rank` is the drawn target's rank), with `stats["mean_rank"]` and `stats["band_short"]`.

    Args:
        features (`torch.Tensor` of shape `(N, Q, D)` or `(N, D)`): L2-normalised image tokens.
        ids (`list[str]`): the N image ids (unique).
        targets_per_reference (`int`, defaults to 1): distinct targets per reference.
        seed (`int`, defaults to 0): draws depend only on `seed` and the reference id.
        reduce (`str`, defaults to `"max"`): token reduction (`"max"` or `"mean_max"`).
        duplicates (`dict[str, str]`, *optional*): duplicate id -> first id; neither references nor candidates.
        depth (`int`, defaults to 100): the rank whose similarity is the band's zero (capped at the pool).
        band (`tuple[float, float]`, defaults to `(0.4, 0.6)`): the normalised similarity band, `0 <= low <= high <= 1`.
        start (`int`, defaults to 0), stop (`int`, *optional*): mine only the references `ids[start:stop]` (against
            all keys), as `sample_rank_window` does for one process of `mra-cir mine`.
    """
    low, high = band
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"adaptive window: band must satisfy 0 <= low <= high <= 1, got {band}")
    if depth < 2:
        raise ValueError(f"adaptive window: depth must be >= 2, got {depth}")
    if targets_per_reference < 1:
        raise ValueError(f"adaptive window: targets_per_reference must be >= 1, got {targets_per_reference}")
    if reduce not in ("max", "mean_max"):
        raise ValueError(f"reduce must be 'max' or 'mean_max', got {reduce!r}")
    features, ids, keep, kept_ids = mining_inputs(features, ids, duplicates)
    keys = features[keep]
    depth = min(depth, len(keep) - 1)
    stop = len(ids) if stop is None else stop
    position = {i: p for p, i in enumerate(keep)}
    positions = torch.tensor([position[i] for i in range(start, stop) if i in position], dtype=torch.long)
    ranker = Ranker(keys, reduce, False, None, mining_query_block_size(keys))
    ranked = ranker.ranked(positions, depth) if len(keep) > 1 and len(positions) else []
    result = MinedPairs()
    ranks, short = [], 0
    for pos, cands in zip(positions.tolist(), ranked):
        cands = cands[:depth]
        if len(cands) < max(2, targets_per_reference):
            result.too_few.append(kept_ids[pos])
            continue
        inside, u = band_candidates([s for _, s in cands], band)
        rng = reference_rng(seed, kept_ids[pos])
        if len(inside) >= targets_per_reference:
            picks = sorted(rng.choice(inside, size=targets_per_reference, replace=False).tolist())
        else:
            short += 1
            middle = (low + high) / 2
            picks = sorted(np.argsort(np.abs(u - middle), kind="stable")[:targets_per_reference].tolist())
        for offset in picks:
            target, score = cands[offset]
            ranks.append(offset + 1)
            result.pairs.append(
                {
                    "reference_id": kept_ids[pos],
                    "target_id": kept_ids[target],
                    "rank": offset + 1,
                    "score": float(score),
                }
            )
    result.stats = {
        "references": len(positions),
        "duplicate_references": (stop - start) - len(positions),
        "feature_duplicates": ranker.feature_duplicates,
        "pairs": len(result.pairs),
        "too_few": len(result.too_few),
        "approximate": False,
        "band_short": short,
        "rank_sum": int(sum(ranks)),
        "mean_rank": float(np.mean(ranks)) if ranks else 0.0,
        "band": [*band, depth],
    }
    return result


@dataclass
class AdaptiveWindowMiner:
    """The adaptive window as the triplet builder's `pair_miner` (`MraTriplets(pair_miner=AdaptiveWindowMiner())`):
    `targets_per_reference`, `seed` and `reduce` come from the builder's config, `depth` and `band` from here; its
    `cache_key` names them, so another band is another dataset."""

    depth: int = DEFAULT_DEPTH
    band: tuple[float, float] = DEFAULT_BAND

    @property
    def cache_key(self) -> str:
        return f"adaptive-window-v1-depth{self.depth}-band{self.band[0]:g}-{self.band[1]:g}"

    def __call__(self, features, config) -> MinedPairs:
        return sample_adaptive_window(
            features.features, features.ids, targets_per_reference=config.targets_per_reference, seed=config.seed,
            reduce=config.reduce, duplicates=features.duplicates, depth=self.depth, band=tuple(self.band),
        )  # fmt: skip


def parse_band(text: str) -> tuple[float, float]:
    """`"0.4,0.6"` -> `(0.4, 0.6)` (a clear error otherwise)."""
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"an adaptive band must be 'low,high' (e.g. 0.4,0.6), got {text!r}") from None
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"an adaptive band needs 0 <= low <= high <= 1, got {text!r}")
    return low, high


__all__ = [
    "DEFAULT_BAND",
    "DEFAULT_DEPTH",
    "AdaptiveWindowMiner",
    "band_candidates",
    "parse_band",
    "sample_adaptive_window",
]
