"""Composed image retrieval metrics, one implementation for every benchmark (pure numpy, no torch).

Rankings are lists (one per query) of gallery ids, best first; ids are compared with `==`, so use one type per call
(the benchmark scorers of [`.fashioniq`], [`.cirr`] and [`.circo`] convert everything to `str`). The functions return
fractions in `[0, 1]`; the benchmark modules apply each benchmark's published protocol and return percentages under
the keys the papers report.

Example:

```python
>>> from mra_cir.evaluation.metrics import recall_at_k, map_at_k
>>> recall_at_k([["b", "a"], ["c", "d"]], ["a", "x"], ks=(1, 2))
{1: 0.0, 2: 0.5}
>>> map_at_k([[1, 9, 2]], [[1, 2]], ks=(5,))  # (1/1 + 2/3) / min(2, 5)
{5: 0.8333333333333333}
```
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Sequence

import numpy as np

CIRR_KS = (1, 5, 10, 50)
CIRR_SUBSET_KS = (1, 2, 3)
CIRCO_KS = (5, 10, 25, 50)

Rankings = Sequence[Sequence[Hashable]]


# ----------------------------------------------------------------------------------------------------------------------
# Ranking helpers
# ----------------------------------------------------------------------------------------------------------------------
def check_unique(rankings: Rankings, query_ids: Sequence[Hashable] | None = None) -> None:
    """Raise `ValueError` naming the first query whose ranking repeats an id (scores would be inflated otherwise)."""
    for i, ranking in enumerate(rankings):
        if len(set(ranking)) == len(ranking):
            continue
        seen: set = set()
        for x in ranking:
            if x in seen:
                name = query_ids[i] if query_ids is not None else i
                raise ValueError(
                    f"query {name!r}: duplicate prediction {x!r} in its ranking (predictions must be unique)"
                )
            seen.add(x)


def remove_from_rankings(rankings: Rankings, exclude: Sequence[Hashable | None]) -> list[list]:
    """Delete `exclude[i]` from ranking `i` (idempotent; `None` keeps the ranking as is).

    Args:
        rankings (`Sequence[Sequence]` of length N): ranked ids per query.
        exclude (`Sequence` of length N): the id to delete per query (CIRR: the reference image).

    Returns:
        `list[list]`: the rankings without those ids, order kept.
    """
    if len(exclude) != len(rankings):
        raise ValueError(f"remove_from_rankings: {len(rankings)} rankings but {len(exclude)} ids to exclude")
    return [[x for x in r if x != e] if e is not None else list(r) for r, e in zip(rankings, exclude)]


def restrict_rankings(rankings: Rankings, allowed: Sequence[Collection[Hashable]]) -> list[list]:
    """Keep, in order, only the ids of ranking `i` that are in `allowed[i]` (CIRR: the query's image set)."""
    if len(allowed) != len(rankings):
        raise ValueError(f"restrict_rankings: {len(rankings)} rankings but {len(allowed)} allowed sets")
    out = []
    for ranking, ids in zip(rankings, allowed):
        ids = set(ids)
        out.append([x for x in ranking if x in ids])
    return out


def hit_matrix(rankings: Rankings, ground_truths: Sequence[Collection[Hashable]], depth: int) -> np.ndarray:
    """`(N, depth)` boolean array: `[i, r]` is True when the id at rank `r` of query `i` is a ground truth of `i`.

    Rankings shorter than `depth` are padded with misses.
    """
    if len(ground_truths) != len(rankings):
        raise ValueError(f"{len(rankings)} rankings but {len(ground_truths)} ground-truth entries")
    hits = np.zeros((len(rankings), depth), dtype=bool)
    for i, (ranking, gts) in enumerate(zip(rankings, ground_truths)):
        gts = set(gts)
        for r, x in enumerate(ranking[:depth]):
            hits[i, r] = x in gts
    return hits


def _as_ground_truths(targets: Sequence) -> list[Collection]:
    return [t if isinstance(t, (list, tuple, set, frozenset)) else (t,) for t in targets]


# ----------------------------------------------------------------------------------------------------------------------
# Generic metrics (fractions)
# ----------------------------------------------------------------------------------------------------------------------
def recall_at_k(rankings: Rankings, targets: Sequence, ks: Sequence[int] = CIRR_KS) -> dict[int, float]:
    """Recall@K: the fraction of queries with a target among their first K ids.

    Args:
        rankings (`Sequence[Sequence]` of length N): ranked ids per query, best first.
        targets (`Sequence` of length N): the target id per query, or a collection of acceptable ids.
        ks (`Sequence[int]`, defaults to `(1, 5, 10, 50)`): cut-offs.

    Returns:
        `dict[int, float]`: K -> recall in `[0, 1]` (0.0 for no queries is refused: `ValueError`).
    """
    if len(rankings) == 0:
        raise ValueError("recall_at_k: no queries")
    hits = hit_matrix(rankings, _as_ground_truths(targets), max(ks))
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def recall_subset_at_k(
    rankings: Rankings,
    targets: Sequence,
    members: Sequence[Collection[Hashable]],
    references: Sequence[Hashable | None] | None = None,
    ks: Sequence[int] = CIRR_SUBSET_KS,
) -> dict[int, float]:
    """CIRR Recall_subset@K: Recall@K of each ranking restricted to its image set, the reference deleted.

    Args:
        rankings (`Sequence[Sequence]` of length N): ranked ids (a full-gallery ranking or a subset ranking).
        targets (`Sequence` of length N): `target_hard` per query.
        members (`Sequence[Collection]` of length N): `img_set.members` per query (6 ids, reference included).
        references (`Sequence`, *optional*): the reference per query, deleted before scoring.
        ks (`Sequence[int]`, defaults to `(1, 2, 3)`).
    """
    if references is not None:
        rankings = remove_from_rankings(rankings, references)
    return recall_at_k(restrict_rankings(rankings, members), targets, ks)


def average_precision_at_k(ranking: Sequence[Hashable], ground_truths: Collection[Hashable], k: int) -> float:
    """AP@K of one ranking with several ground truths (CIRCO's definition).

    `sum over ranks r <= K holding a ground truth of precision@r`, divided by `min(len(ground_truths), K)`.
    """
    gts = set(ground_truths)
    if not gts:
        raise ValueError("average_precision_at_k: a query needs at least one ground truth")
    hits = np.fromiter((x in gts for x in ranking[:k]), dtype=bool, count=min(len(ranking), k))
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision * hits) / min(len(gts), k))


def map_at_k(rankings: Rankings, ground_truths: Sequence[Collection[Hashable]], ks=CIRCO_KS) -> dict[int, float]:
    """mAP@K over queries (CIRCO): the mean of [`average_precision_at_k`]. Rankings must hold unique ids.

    Args:
        rankings (`Sequence[Sequence]` of length N): ranked ids per query.
        ground_truths (`Sequence[Collection]` of length N): the ground-truth ids per query (at least one each).
        ks (`Sequence[int]`, defaults to `(5, 10, 25, 50)`).

    Returns:
        `dict[int, float]`: K -> mAP in `[0, 1]`.
    """
    if len(rankings) == 0:
        raise ValueError("map_at_k: no queries")
    if len(ground_truths) != len(rankings):
        raise ValueError(f"map_at_k: {len(rankings)} rankings but {len(ground_truths)} ground-truth entries")
    check_unique(rankings)
    return {k: float(np.mean([average_precision_at_k(r, g, k) for r, g in zip(rankings, ground_truths)])) for k in ks}


def as_strings(rankings: Rankings) -> list[list[str]]:
    """Every id of every ranking as a string (the benchmark scorers compare string ids)."""
    return [[str(x) for x in r] for r in rankings]


__all__ = [
    "CIRCO_KS",
    "CIRR_KS",
    "CIRR_SUBSET_KS",
    "as_strings",
    "average_precision_at_k",
    "check_unique",
    "hit_matrix",
    "map_at_k",
    "recall_at_k",
    "recall_subset_at_k",
    "remove_from_rankings",
    "restrict_rankings",
]
