"""Every rank window's mined pairs from ONE ranking pass: the mining of the window sweep (the paper's ablation over
[1,1], [11,20], [31,40], [51,60], [91,100]), and a `pair_miner` for [`MraTriplets`]."""

from __future__ import annotations

from collections.abc import Sequence

from .mining import mining_query_block_size, reference_rng, sample_rank_window


class SharedWindowDraws:
    """Every window's mined pairs from one ranking pass.

    Each reference's candidates are ranked once, to the deepest window's last rank (`sample_rank_window` with the
    window `[1, depth]`, taking every rank, in slices of references), and each window's targets are drawn from that
    list with the per-reference generator `sample_rank_window` uses: the pairs are the ones a separate mining of each
    window would give. A reference with fewer candidates than the depth (tiny pools, duplicates) is mined for each
    window on its own. `ranking_passes` counts the full passes (1 for a sweep).

    It is a `pair_miner` for [`MraTriplets`]: `MraTriplets(..., q1=51, q2=60, pair_miner=draws)` mines window
    `[config.q1, config.q2]` from the shared ranking (the same pairs `sample_rank_window` gives, so `cache_key` names
    the method, not the object).

    Example:
        ```python
        >>> draws = SharedWindowDraws([(1, 1), (51, 60)], seed=0)
        >>> for q1, q2 in draws.windows:
        ...     MraTriplets(images="photos/", embedding_model="m/", q1=q1, q2=q2, pair_miner=draws).download_and_prepare()
        ```
    """

    cache_key = "rank-window-draws-v1"  # the pairs of `sample_rank_window` (tested equal), whichever object draws them

    def __init__(
        self, windows: Sequence[tuple[int, int]], targets_per_reference=1, seed=0, reduce="max", slice_size=4096
    ):
        self.windows, self.tpr, self.seed, self.reduce = list(windows), targets_per_reference, seed, reduce
        narrow = [f"[{q1}, {q2}]" for q1, q2 in self.windows if q2 - q1 + 1 < targets_per_reference]
        if narrow:
            raise ValueError(f"targets_per_reference={targets_per_reference} exceeds the size of window(s) {narrow}")
        self.depth = max(q2 for _, q2 in self.windows)
        self.slice_size = slice_size
        self.ranking_passes = 0
        self._key, self._results = None, {}

    def __call__(self, features, config) -> dict:
        """The `pair_miner` protocol of [`MraTriplets`]: the pairs of the config's window."""
        if (config.targets_per_reference, config.seed, config.reduce) != (self.tpr, self.seed, self.reduce):
            raise ValueError(
                "SharedWindowDraws was made for targets_per_reference, seed, reduce = "
                f"{(self.tpr, self.seed, self.reduce)}, the builder's config has "
                f"{(config.targets_per_reference, config.seed, config.reduce)}"
            )
        if (config.q1, config.q2) not in self.windows:
            raise ValueError(f"window [{config.q1}, {config.q2}] is not one of {self.windows}")
        return self.mined(features, config.q1, config.q2)

    def mined(self, features, q1: int, q2: int) -> dict:
        """`{"pairs": [...], "too_few": [...]}` of window `[q1, q2]` (the builder's mined-pairs format)."""
        key = (tuple(features.ids), tuple(features.features.shape), tuple(sorted(features.duplicates.items())))
        if key != self._key:
            self._results, self._key = self._rank(features), key
        return self._results[(q1, q2)]

    def _rank(self, features) -> dict:
        self.ranking_passes += 1
        feats, ids, dups = features.features, [str(i) for i in features.ids], dict(features.duplicates)
        results = {w: {"pairs": [], "too_few": []} for w in self.windows}
        align = mining_query_block_size(feats if feats.dim() == 3 else feats.unsqueeze(1))
        step = max(align, self.slice_size // align * align)
        common = dict(reduce=self.reduce, duplicates=dups)
        for start in range(0, len(ids), step):
            stop = min(len(ids), start + step)
            one = sample_rank_window(
                feats, ids, 1, self.depth, self.depth, self.seed, start=start, stop=stop, **common
            )
            ranked: dict[str, list] = {}
            for p in one.pairs:
                ranked.setdefault(p["reference_id"], []).append((p["target_id"], p["score"]))
            for position in range(start, stop):
                ref = ids[position]
                if ref in dups:
                    continue
                for q1, q2 in self.windows:
                    out = results[(q1, q2)]
                    if ref not in ranked:  # fewer candidates than the depth: mine this reference for this window
                        alone = sample_rank_window(
                            feats, ids, q1, q2, self.tpr, self.seed, start=position, stop=position + 1, **common
                        )
                        out["pairs"] += [
                            _pair(p["reference_id"], p["target_id"], p["rank"], p["score"]) for p in alone.pairs
                        ]
                        out["too_few"] += list(alone.too_few)
                        continue
                    rng = reference_rng(self.seed, ref)
                    for offset in sorted(rng.choice(q2 - q1 + 1, size=self.tpr, replace=False).tolist()):
                        target, score = ranked[ref][q1 - 1 + offset]
                        out["pairs"].append(_pair(ref, target, q1 + offset, score))
        return results


def _pair(reference: str, target: str, rank: int, score: float) -> dict:
    return {"reference_id": reference, "target_id": target, "rank": int(rank), "score": float(score)}


__all__ = ["SharedWindowDraws"]
