"""Rank-window mining of (reference, target) pairs from image token features.

For each reference image, every other image is ranked by token-level similarity
([`~mra_cir.retrieval.similarity.topk_token_similarity`]); after removing the reference itself and exact duplicates
(same bytes, listed by `extract_image_features`, or identical features), the target is drawn uniformly from ranks
`q1..q2` (1-based; the paper uses 51..60): similar enough to be related, different enough for a non-trivial
modification text. Draws are seeded per reference (`seed` and the reference id), so the result does not depend on
the order of processing nor on how references are split across processes.

Approximate mining (`approximate=True`) ranks only faiss candidates, re-ranked exactly
([`~mra_cir.retrieval.approximate_search.ApproximateTokenIndex`]); with `check_window=True` it reports the fraction of sampled
targets whose exact rank lies in `[q1, q2]` (`stats["window_agreement"]`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from mra_cir.retrieval.approximate_search import ApproximateTokenIndex
from mra_cir.retrieval.similarity import default_block_sizes, topk_token_similarity

RANK_MARGIN = 16  # extra neighbours fetched so that dropped feature duplicates rarely force a second search
DUPLICATE_SCORE = 1.0 - 1e-4  # candidates scoring at least this are compared feature-for-feature with the reference


@dataclass
class MinedPairs:
    """Result of [`sample_rank_window`].

    Args:
        pairs (`list[dict]`): `{"reference_id", "target_id", "rank", "score"}` in reference order, then rank order;
            `rank` is 1-based after self-exclusion and duplicate removal, `score` the fp32 similarity.
        too_few (`list[str]`): references with fewer than `q2` candidates (no pair drawn for them).
        stats (`dict`): counts (`references`, `duplicate_references`, `feature_duplicates`, `pairs`) and, for
            approximate mining with `check_window`, `window_agreement`, `window_check_sample`, `recall_at_q2`.
    """

    pairs: list[dict] = field(default_factory=list)
    too_few: list[str] = field(default_factory=list)
    stats: dict = field(default_factory=dict)


def parse_window(text: str) -> tuple[int, int] | None:
    """One rank window as users write it: `"51-60"` -> `(51, 60)`, `"5"` -> `(5, 5)`, `"random"` -> None (uniform over
    the whole pool). The one spelling of a window in every command (`--window`, `--windows`, the quickstart)."""
    text = text.strip()
    if text.lower() == "random":
        return None
    q1, _, q2 = text.partition("-")
    try:
        window = (int(q1), int(q2 or q1))
    except ValueError:
        raise ValueError(f"a window is 'q1-q2' (e.g. 51-60), one rank or 'random', got {text!r}") from None
    if not 1 <= window[0] <= window[1]:
        raise ValueError(f"a window needs 1 <= q1 <= q2, got {text!r}")
    return window


def parse_windows(spec: str) -> list[tuple[int, int]]:
    """Comma-separated windows: `"1-1,11-20"` (or `"1,11-20"`) -> `[(1, 1), (11, 20)]`, no repeats, no `random`."""
    windows = []
    for part in (p.strip() for p in spec.split(",") if p.strip()):
        window = parse_window(part)
        if window is None:
            raise ValueError(f"{part!r}: give ranks q1-q2 here")
        if window in windows:
            raise ValueError(f"{part!r} given twice")
        windows.append(window)
    if not windows:
        raise ValueError("no window given")
    return windows


def _validate(q1: int, q2: int, targets_per_reference: int, reduce: str) -> None:
    if not 1 <= q1 <= q2:
        raise ValueError(f"need 1 <= q1 <= q2, got q1={q1}, q2={q2}")
    if not 1 <= targets_per_reference <= q2 - q1 + 1:
        raise ValueError(
            f"targets_per_reference must be in [1, {q2 - q1 + 1}] (the window size q2-q1+1), got {targets_per_reference}"
        )
    if reduce not in ("max", "mean_max"):
        raise ValueError(f"reduce must be 'max' or 'mean_max', got {reduce!r}")


def reference_rng(seed: int, reference_id: str) -> np.random.Generator:
    """The random generator of one reference: a function of `seed` and the id only (order/process independent)."""
    digest = hashlib.sha256(f"{seed}:{reference_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def mining_query_block_size(features: torch.Tensor) -> int:
    """The query block size mining uses; process slices are aligned to it so results are bit-identical across any
    number of processes (the same GEMM tiles are computed)."""
    q = features.shape[1] if features.dim() == 3 else 1
    return min(64, default_block_sizes(q, q, features.device, features.dtype)[0])


def mining_inputs(
    features: torch.Tensor, ids: Sequence, duplicates: dict[str, str] | None
) -> tuple[torch.Tensor, list[str], list[int], list[str]]:
    """The checked inputs of a mining run: `(features as (N, Q, D), ids as strings, positions kept, ids kept)`, the
    byte duplicates (`duplicates`: duplicate id -> first id) left out of the keys.

    Raises:
        `ValueError`: a shape that does not match the ids, or repeated ids.
    """
    ids = [str(i) for i in ids]
    if features.dim() == 2:
        features = features.unsqueeze(1)
    if features.dim() != 3 or features.shape[0] != len(ids):
        raise ValueError(
            f"features must have shape (N, Q, D) with N = len(ids) = {len(ids)}, got {tuple(features.shape)}"
        )
    if len(set(ids)) != len(ids):
        raise ValueError("ids must be unique")
    keep = [i for i, id_ in enumerate(ids) if id_ not in (duplicates or {})]
    return features, ids, keep, [ids[i] for i in keep]


class Ranker:
    """Ranked, cleaned candidate lists for references (exact or approximate): the one ranking of the candidates that
    fixed windows, the adaptive window and the cycle-consistency check read."""

    def __init__(self, keys: torch.Tensor, reduce: str, approximate: bool, n_candidates: int | None, block: int):
        self.keys = keys
        self.reduce = reduce
        self.block = block
        self.n_candidates = n_candidates
        self.index = ApproximateTokenIndex(keys) if approximate else None
        self.feature_duplicates = 0

    def ranked(self, positions: torch.Tensor, depth: int, exact: bool = False, show_progress: bool = False):
        """For key positions `positions` (N,), lists of (key position, score) by decreasing score, cleaned."""
        m = self.keys.shape[0]
        k = min(m - 1, depth + RANK_MARGIN)
        if k < 1:
            return [[] for _ in range(len(positions))]
        if self.index is None or exact:
            # query blocks aligned to multiples of `block` in key positions: any slicing of the references computes
            # the same GEMM tiles, so the scores are bit-identical whatever the number of processes
            groups = torch.unique_consecutive(positions // self.block, return_counts=True)[1].tolist()
            parts = []
            for chunk in tqdm(positions.split(groups), desc="ranking", unit="block", disable=not show_progress):
                parts.append(
                    topk_token_similarity(
                        self.keys[chunk],
                        self.keys,
                        k,
                        self.reduce,
                        exclude_self=True,
                        query_indices=chunk,
                        query_block_size=self.block,
                    )
                )
            scores = torch.cat([p[0] for p in parts])
            indices = torch.cat([p[1] for p in parts])
        else:
            n_cand = self.n_candidates or max(10 * k, 256)
            result = self.index.search(
                self.keys[positions], k, self.reduce, n_candidates=n_cand, query_indices=positions
            )
            scores, indices = result.scores, result.indices
        out = []
        for row, pos in enumerate(positions.tolist()):
            cands = []
            for j, s in zip(indices[row].tolist(), scores[row].tolist()):
                if j < 0:
                    continue
                if s >= DUPLICATE_SCORE and torch.equal(self.keys[j], self.keys[pos]):
                    self.feature_duplicates += 1
                    continue
                cands.append((j, s))
            if len(cands) < depth and k < m - 1:  # duplicates ate the margin: rank this reference against all keys
                full_scores, full_idx = topk_token_similarity(
                    self.keys[pos : pos + 1],
                    self.keys,
                    m - 1,
                    self.reduce,
                    exclude_self=True,
                    query_indices=torch.tensor([pos]),
                )
                cands = [
                    (j, s)
                    for j, s in zip(full_idx[0].tolist(), full_scores[0].tolist())
                    if not (s >= DUPLICATE_SCORE and torch.equal(self.keys[j], self.keys[pos]))
                ]
            out.append(cands)
        return out


def sample_rank_window(
    features: torch.Tensor,
    ids: Sequence[str],
    q1: int = 51,
    q2: int = 60,
    targets_per_reference: int = 1,
    seed: int = 0,
    reduce: str = "max",
    duplicates: dict[str, str] | None = None,
    approximate: bool = False,
    *,
    n_candidates: int | None = None,
    check_window: bool = False,
    check_sample: int = 100,
    show_progress: bool = False,
    start: int = 0,
    stop: int | None = None,
) -> MinedPairs:
    """Draw each reference's targets from its similarity ranks `q1..q2`.

    Args:
        features (`torch.Tensor` of shape `(N, Q, D)` or `(N, D)`): L2-normalised image tokens.
        ids (`list[str]`): the N image ids (unique).
        q1 (`int`, defaults to 51), q2 (`int`, defaults to 60): the rank window, 1-based, inclusive, counted after
            removing the reference itself and exact duplicates.
        targets_per_reference (`int`, defaults to 1): distinct targets drawn per reference (at most `q2 - q1 + 1`).
        seed (`int`, defaults to 0): draws are reproducible and depend only on `seed` and the reference id.
        reduce (`str`, defaults to `"max"`): `"max"` or `"mean_max"` token reduction.
        duplicates (`dict[str, str]`, *optional*): duplicate id -> first id (`ImageFeatures.duplicates`); these ids
            are neither references nor candidates. Candidates with features identical to the reference are also
            dropped.
        approximate (`bool`, defaults to `False`): faiss candidates + exact re-rank instead of exact ranking.
        n_candidates (`int`, *optional*): candidates per reference in approximate mode (default `max(10 k, 256)`).
        check_window (`bool`, defaults to `False`): with `approximate`, compute the exact rank of `check_sample`
            sampled targets and report `stats["window_agreement"]` (fraction in `[q1, q2]`).
        show_progress (`bool`, defaults to `False`): a progress bar over the exact search.
        start (`int`, defaults to 0), stop (`int`, *optional*): mine only the references `ids[start:stop]` (against
            all keys). Concatenating the slices of a partition of `range(len(ids))` in order gives the same pairs as
            one call over all references (per-reference seeds; slice boundaries aligned to
            [`mining_query_block_size`] keep the scores bit-identical): `mra-cir mine` runs one slice per process.

    Returns:
        [`MinedPairs`]: `pairs`, `too_few` (references with fewer than `q2` candidates) and `stats`.

    Example:

    ```python
    >>> mined = sample_rank_window(feats.features, feats.ids, q1=51, q2=60, duplicates=feats.duplicates)
    >>> mined.pairs[0]
    {'reference_id': 'a.jpg', 'target_id': 'k.jpg', 'rank': 57, 'score': 0.83}
    ```
    """
    _validate(q1, q2, targets_per_reference, reduce)
    stop = len(ids) if stop is None else stop
    features, ids, keep, kept_ids = mining_inputs(features, ids, duplicates)
    position = {i: p for p, i in enumerate(keep)}
    keys = features[keep]
    references = [i for i in range(start, stop) if i in position]
    ref_positions = torch.tensor([position[i] for i in references], dtype=torch.long)
    ranker = Ranker(keys, reduce, approximate, n_candidates, mining_query_block_size(keys))
    ranked = ranker.ranked(ref_positions, q2, show_progress=show_progress) if len(references) else []

    result = MinedPairs()
    drawn: list[tuple[int, int]] = []  # (reference position, target position) for the window check
    for pos, cands in zip(ref_positions.tolist(), ranked):
        ref_id = kept_ids[pos]
        if len(cands) < q2:
            result.too_few.append(ref_id)
            continue
        rng = reference_rng(seed, ref_id)
        picks = sorted(rng.choice(q2 - q1 + 1, size=targets_per_reference, replace=False).tolist())
        for offset in picks:
            target, score = cands[q1 - 1 + offset]
            rank = q1 + offset
            result.pairs.append(
                {"reference_id": ref_id, "target_id": kept_ids[target], "rank": rank, "score": float(score)}
            )
            drawn.append((pos, target))
    result.stats = {
        "references": len(references),
        "duplicate_references": (stop - start) - len(references),
        "feature_duplicates": ranker.feature_duplicates,
        "pairs": len(result.pairs),
        "too_few": len(result.too_few),
        "approximate": approximate,
    }
    if approximate and check_window and drawn:
        result.stats.update(_window_check(ranker, drawn, q1, q2, seed, check_sample, ranked, ref_positions))
    return result


def _window_check(ranker: Ranker, drawn, q1, q2, seed, sample, approx_ranked, ref_positions) -> dict:
    """Exact ranks of a sample of approximately drawn targets: fraction in [q1, q2], and recall of the exact top-q2."""
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(drawn), size=min(sample, len(drawn)), replace=False).tolist())
    pairs = [drawn[i] for i in chosen]
    positions = torch.tensor(sorted({p for p, _ in pairs}), dtype=torch.long)
    exact = dict(zip(positions.tolist(), ranker.ranked(positions, q2, exact=True)))
    approx = dict(zip(ref_positions.tolist(), approx_ranked))
    in_window = 0
    for pos, target in pairs:
        exact_order = [j for j, _ in exact[pos]]
        rank = exact_order.index(target) + 1 if target in exact_order else len(exact_order) + 1
        in_window += q1 <= rank <= q2
    recalls = [
        len({j for j, _ in exact[p][:q2]} & {j for j, _ in approx[p][:q2]}) / max(1, len(exact[p][:q2]))
        for p in positions.tolist()
    ]
    return {
        "window_agreement": in_window / len(pairs),
        "window_check_sample": len(pairs),
        "recall_at_q2": float(np.mean(recalls)),
    }


def checked_pairs(mined, ids: list[str]) -> dict:
    """A `pair_miner`'s result (a dict or an object with `.pairs` / `.too_few`) in the triplet builder's format, every
    id checked against the embedded images."""
    pairs = mined["pairs"] if isinstance(mined, dict) else mined.pairs
    too_few = (mined.get("too_few") if isinstance(mined, dict) else getattr(mined, "too_few", None)) or []
    known = set(ids)
    out = []
    for pair in pairs:
        if pair["reference_id"] not in known or pair["target_id"] not in known:
            raise ValueError(f"pair_miner returned a pair with an image that was not embedded: {pair}")
        rank, score = int(pair["rank"]), float(pair["score"])
        out.append(
            {"reference_id": pair["reference_id"], "target_id": pair["target_id"], "rank": rank, "score": score}
        )
    return {"pairs": out, "too_few": list(too_few)}
