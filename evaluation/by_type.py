"""Retrieval scores per transformation type: which kinds of change a model retrieves well, on any benchmark.

Each query's modification text carries one or more transformation types (colour, shape, added object, ...: the
tagger is `mra_cir.dataset_builders.mra_triplets.transformation_types`, passed in as `labels`, so this module does not
depend on how texts are tagged). Two splits are reported:

- `types` (**primary type**, a partition): each query belongs to the group of its *first* type (the change its text
  names first). Every metric of these benchmarks is a mean over queries (Recall@K, Recall_subset@K, mAP@K), so the
  query-weighted mean of the groups' figures equals the overall figure exactly ([`query_weighted_mean`]).
- `any` (overlapping): the queries whose text carries the type anywhere; a multi-type query counts in several groups,
  so these figures do not average to the overall one.

The scorers are the benchmarks' own ([`~.cirr.score_cirr`], [`~.circo.score_circo`], recall for FashionIQ), run on the
subsets of queries.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from .circo import score_circo
from .cirr import score_cirr
from .metrics import recall_at_k

#: the name of the partition, as reports print it
SPLIT = "primary type: the first transformation type of the query's text"


def group_queries(labels: Sequence[Sequence[str]], primary: bool = True) -> dict[str, list[int]]:
    """Type -> query indices: by primary (first) type (a partition), or every type a query carries (`primary=False`).
    A query with no label is `other`."""
    groups: dict[str, list[int]] = {}
    for index, types in enumerate(labels):
        types = list(types) or ["other"]
        for kind in types[:1] if primary else dict.fromkeys(types):
            groups.setdefault(kind, []).append(index)
    return groups


def scores_by_type(
    score: Callable[[list[int]], Mapping[str, float]], labels: Sequence[Sequence[str]], order: Sequence[str] = ()
) -> dict:
    """`score(indices)` (a subset's metrics) for each type group -> `{"split", "types": {type: {"queries", metric:
    value}}, "any": {...}}`, types in `order` first, then by name."""

    def table(groups: dict[str, list[int]]) -> dict:
        names = [t for t in order if t in groups] + sorted(t for t in groups if t not in order)
        return {t: {"queries": len(groups[t]), **dict(score(groups[t]))} for t in names}

    return {"split": SPLIT, "types": table(group_queries(labels)), "any": table(group_queries(labels, primary=False))}


def query_weighted_mean(types: Mapping[str, Mapping[str, float]], key: str) -> float:
    """The mean of `key` over the groups weighted by their query counts (equals the overall figure for a partition)."""
    total = sum(group["queries"] for group in types.values())
    return sum(group["queries"] * group[key] for group in types.values()) / total


def _take(values: Sequence, indices: list[int]) -> list:
    return [values[i] for i in indices]


def cirr_by_type(
    rows: Sequence[dict], rankings: Sequence[Sequence[str]], labels, subset_rankings=None, order=()
) -> dict:
    """CIRR's R@K and R_subset@K per type (`rows`: the loader's query rows, `rankings` in the same order)."""

    def score(indices: list[int]) -> dict:
        return score_cirr(
            _take(rankings, indices),
            references=[rows[i]["reference_id"] for i in indices],
            targets=[rows[i]["target_ids"][0] for i in indices],
            members=[rows[i]["members"] for i in indices],
            subset_rankings=_take(subset_rankings, indices) if subset_rankings is not None else None,
        )

    return scores_by_type(score, labels, order)


def circo_by_type(
    rows: Sequence[dict], rankings: Sequence[Sequence[str]], labels, exclude_reference: bool = False, order=()
) -> dict:
    """CIRCO's mAP@K per type (aspects are reported beside, by `score_circo`, over all queries)."""

    def score(indices: list[int]) -> dict:
        return score_circo(
            _take(rankings, indices),
            [rows[i]["target_ids"] for i in indices],
            references=[rows[i]["reference_id"] for i in indices],
            exclude_reference=exclude_reference,
        )

    return scores_by_type(score, labels, order)


def fashioniq_by_type(
    rows: Mapping[str, Sequence[dict]], rankings: Mapping[str, Sequence[Sequence[str]]], labels: Mapping, order=(),
    ks: Sequence[int] = (10, 50),
) -> dict:  # fmt: skip
    """FashionIQ's R@10 / R@50 per type, the three categories pooled (`labels`: category -> labels per query). The
    identity holds against the pooled recall (`all_R@K`, query-weighted), not the benchmark's mean of the categories."""
    flat_rows = [row for cat in rankings for row in rows[cat]]
    flat_rankings = [ranking for cat in rankings for ranking in rankings[cat]]
    flat_labels = [label for cat in rankings for label in labels[cat]]

    def score(indices: list[int]) -> dict:
        recalls = recall_at_k(_take(flat_rankings, indices), [flat_rows[i]["target_ids"][0] for i in indices], ks)
        return {f"all_R@{k}": 100.0 * v for k, v in recalls.items()}

    out = scores_by_type(score, flat_labels, order)
    out["overall"] = score(list(range(len(flat_rows))))
    return out


def rankings_file_by_type(
    benchmark: str, loader, split: str, rankings, tagger: Callable[[str], Sequence[str]], subset_rankings=None,
    exclude_reference: bool = False, order: Sequence[str] = (),
) -> dict:  # fmt: skip
    """Per-type scores of a rankings file (the formats of `score_rankings_file`), each query's text tagged by
    `tagger` (text -> its types, first = primary)."""
    from .circo import read_circo_rankings
    from .cirr import read_cirr_rankings
    from .fashioniq import FASHIONIQ_CATEGORIES, read_fashioniq_rankings

    if benchmark == "fashioniq":
        rows = {cat: loader.read_queries(split, cat)[1] for cat in FASHIONIQ_CATEGORIES}
        ranked = read_fashioniq_rankings(rankings, {cat: len(r) for cat, r in rows.items()})
        labels = {cat: [list(tagger(row["text"])) for row in rows[cat]] for cat in rows}
        return fashioniq_by_type(rows, ranked, labels, order)
    rows = loader.read_queries(split)[1]
    query_ids = [row["query_id"] for row in rows]
    labels = [list(tagger(row["text"])) for row in rows]
    if benchmark == "cirr":
        ranked = read_cirr_rankings(rankings, "recall", query_ids)
        subset = None
        if subset_rankings is not None:
            subset_map = read_cirr_rankings(subset_rankings, "recall_subset", query_ids)
            subset = [subset_map[q] for q in query_ids]
        return cirr_by_type(rows, [ranked[q] for q in query_ids], labels, subset, order)
    ranked = read_circo_rankings(rankings, query_ids)
    return circo_by_type(rows, [ranked[q] for q in query_ids], labels, exclude_reference, order)


def evaluator_by_type(run, tagger: Callable[[str], Sequence[str]], order: Sequence[str] = ()) -> dict:
    """Per-type scores of an evaluator that has run (`run(model, processor)`): its rankings, the same protocol."""
    if run.benchmark == "fashioniq":
        rows = {cat: run.rows(cat) for cat in run.parts}
        ranked = {cat: [run.rankings[cat][row["query_id"]] for row in rows[cat]] for cat in rows}
        labels = {cat: [list(tagger(row["text"])) for row in rows[cat]] for cat in rows}
        return fashioniq_by_type(rows, ranked, labels, order)
    key = run.benchmark
    rows = run.rows(key)
    ranked = [run.rankings[key][row["query_id"]] for row in rows]
    labels = [list(tagger(row["text"])) for row in rows]
    if run.benchmark == "cirr":
        subset = [run.subset_rankings[key][row["query_id"]] for row in rows]
        return cirr_by_type(rows, ranked, labels, subset, order)
    return circo_by_type(rows, ranked, labels, run.exclude_reference, order)


def with_types(metrics: dict, by_type: dict, benchmark: str) -> dict:
    """`metrics` with the per-type figures: `mAP@10_type_<type>` beside CIRCO's `mAP@10_<aspect>` (CIRCO), and the
    whole table under `by_type`."""
    out = dict(metrics)
    if benchmark == "circo":
        out.update(flat_type_keys(by_type, "mAP@10"))
    out["by_type"] = by_type
    return out


def flat_type_keys(by_type: dict, key: str) -> dict[str, float]:
    """`{f"{key}_type_{type}": value}` for every primary-type group (for one-line JSON beside the aspects)."""
    return {f"{key}_type_{t}": group[key] for t, group in by_type["types"].items()}


__all__ = [
    "SPLIT",
    "cirr_by_type",
    "circo_by_type",
    "evaluator_by_type",
    "fashioniq_by_type",
    "flat_type_keys",
    "group_queries",
    "query_weighted_mean",
    "rankings_file_by_type",
    "scores_by_type",
    "with_types",
]
