"""Test-server submission files (writers that validate before writing) and readers of rankings files.

Formats:

- CIRR test1 (evaluation server, two files): `{"version": "rc2", "metric": "recall", "<pairid>": [top-50 names]}`
  (reference excluded) and `{"version": "rc2", "metric": "recall_subset", "<pairid>": [top-3 names]}` (among the
  other five members of the query's image set).
- CIRCO test: `{"<query id>": [top-50 COCO image ids]}` for every query id, ids unique per query.
- FashionIQ test (official starter kit): per category, the caption records of `cap.<cat>.test.json` in file order,
  each with a `ranking` field (the ranked gallery names), written as `<cat>.test.pred.json`.

The readers (`read_cirr_rankings`, `read_circo_rankings`, `read_fashioniq_rankings`) accept the same formats (on any
split) and are what `mra-cir evaluate-rankings` uses; every error names the file and the query.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

CIRR_VERSION = "rc2"
CIRR_RECALL_LENGTH = 50
CIRR_SUBSET_LENGTH = 3
CIRCO_LENGTH = 50
FASHIONIQ_LENGTH = 50


class SubmissionError(ValueError):
    """A rankings or submission file does not have the expected shape or content."""


def _head(items: Sequence, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (", ..." if len(items) > n else "")


def _check_ids(where: str, given: Sequence[str], expected: Sequence[str]) -> None:
    given_set, expected_set = set(given), set(expected)
    missing = [q for q in expected if q not in given_set]
    extra = [q for q in given if q not in expected_set]
    if extra and len(missing) == len(expected):
        raise SubmissionError(
            f"{where}: none of its {len(given)} query ids (first: {_head(given)}) is a query id of this split "
            f"(first: {_head(expected)}); wrong file, split or benchmark?"
        )
    if missing:
        raise SubmissionError(f"{where}: {len(missing)} query id(s) missing (first: {_head(missing)})")
    if extra:
        raise SubmissionError(
            f"{where}: {len(extra)} unknown query id(s) (first: {_head(extra)}); wrong split or wrong benchmark?"
        )


def _check_ranking(where: str, qid: str, ranking, length: int | None = None, exact: bool = False) -> list[str]:
    if not isinstance(ranking, (list, tuple)):
        raise SubmissionError(f"{where}: query {qid!r}: expected a list of ids, got {type(ranking).__name__}")
    ranking = [str(x) for x in ranking]
    if len(set(ranking)) != len(ranking):
        seen: set[str] = set()
        dup = next(x for x in ranking if x in seen or seen.add(x))  # type: ignore[func-returns-value]
        raise SubmissionError(f"{where}: query {qid!r}: duplicate prediction {dup!r} (predictions must be unique)")
    if length is not None and ((exact and len(ranking) != length) or len(ranking) > length):
        raise SubmissionError(f"{where}: query {qid!r}: {len(ranking)} predictions, expected {length}")
    return ranking


def _write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


# ----------------------------------------------------------------------------------------------------------------------
# CIRR
# ----------------------------------------------------------------------------------------------------------------------
def validate_cirr_submission(
    data: Mapping,
    metric: str,
    query_ids: Sequence[str],
    references: Mapping[str, str] | None = None,
    members: Mapping[str, Sequence[str]] | None = None,
    where: str = "CIRR submission",
) -> None:
    """Check a CIRR server file: version, metric, every pair id once, unique predictions, 50 (recall) or 3
    (recall_subset) names, no reference, subset names among the other set members."""
    if data.get("version") != CIRR_VERSION or data.get("metric") != metric:
        raise SubmissionError(f"{where}: needs 'version': {CIRR_VERSION!r} and 'metric': {metric!r}")
    length = CIRR_RECALL_LENGTH if metric == "recall" else CIRR_SUBSET_LENGTH
    preds = {k: v for k, v in data.items() if k not in ("version", "metric")}
    _check_ids(where, list(preds), query_ids)
    for qid, ranking in preds.items():
        ranking = _check_ranking(where, qid, ranking, length, exact=True)
        if references is not None and references[qid] in ranking:
            raise SubmissionError(f"{where}: query {qid!r}: the reference {references[qid]!r} is in the ranking")
        if metric == "recall_subset" and members is not None:
            outside = [x for x in ranking if x not in set(members[qid])]
            if outside:
                raise SubmissionError(f"{where}: query {qid!r}: {_head(outside)} not in the query's image set")


def cirr_submission(
    rankings: Mapping[str, Sequence[str]],
    subset_rankings: Mapping[str, Sequence[str]],
    references: Mapping[str, str],
    members: Mapping[str, Sequence[str]],
) -> tuple[dict, dict]:
    """Build the two CIRR server dicts from rankings (reference and non-members removed, cut to 50 and 3).

    Args:
        rankings (`Mapping[str, Sequence[str]]`): pair id -> full-gallery ranking (at least 51 names).
        subset_rankings (`Mapping[str, Sequence[str]]`): pair id -> ranking of the image set members.
        references (`Mapping[str, str]`): pair id -> reference name.
        members (`Mapping[str, Sequence[str]]`): pair id -> `img_set.members`.
    """
    recall = {"version": CIRR_VERSION, "metric": "recall"}
    subset = {"version": CIRR_VERSION, "metric": "recall_subset"}
    for qid, ranking in rankings.items():
        ref = references[qid]
        recall[qid] = [str(x) for x in ranking if str(x) != ref][:CIRR_RECALL_LENGTH]
        allowed = {str(m) for m in members[qid]} - {ref}
        subset[qid] = [str(x) for x in subset_rankings.get(qid, ()) if str(x) in allowed][:CIRR_SUBSET_LENGTH]
    return recall, subset


def write_cirr_submission(
    output_dir: str | os.PathLike,
    rankings: Mapping[str, Sequence[str]],
    subset_rankings: Mapping[str, Sequence[str]],
    references: Mapping[str, str],
    members: Mapping[str, Sequence[str]],
    prefix: str = "test1_pred_ranks",
) -> tuple[Path, Path]:
    """Validate and write `<prefix>_recall.json` and `<prefix>_recall_subset.json` (the evaluation server's names).

    Every pair id of `references` must have a ranking. Returns the two paths.
    """
    recall, subset = cirr_submission(rankings, subset_rankings, references, members)
    query_ids = list(references)
    validate_cirr_submission(recall, "recall", query_ids, references, members, "CIRR recall submission")
    validate_cirr_submission(subset, "recall_subset", query_ids, references, members, "CIRR recall_subset submission")
    out = Path(output_dir)
    return (
        _write_json(out / f"{prefix}_recall.json", recall),
        _write_json(out / f"{prefix}_recall_subset.json", subset),
    )


def read_cirr_rankings(path: str | os.PathLike, metric: str, query_ids: Sequence[str]) -> dict[str, list[str]]:
    """Read a CIRR server-format file (`"version"`/`"metric"` optional, checked when present).

    Returns:
        `dict[str, list[str]]`: pair id -> ranked names, for every id of `query_ids` (unknown or missing ids, a
        wrong metric or version, and duplicate predictions raise [`SubmissionError`]).
    """
    where = str(path)
    data = _load(path)
    if not isinstance(data, dict):
        raise SubmissionError(f"{where}: expected a JSON object pair id -> ranked names (CIRR server format)")
    if "version" in data and data["version"] != CIRR_VERSION:
        raise SubmissionError(f"{where}: version {data['version']!r}, expected {CIRR_VERSION!r}")
    if "metric" in data and data["metric"] != metric:
        hint = " (pass a recall_subset file with --subset-rankings)" if data["metric"] == "recall_subset" else ""
        raise SubmissionError(f"{where}: metric {data['metric']!r}, expected {metric!r}{hint}")
    preds = {str(k): v for k, v in data.items() if k not in ("version", "metric")}
    _check_ids(where, list(preds), query_ids)
    return {qid: _check_ranking(where, qid, preds[qid]) for qid in query_ids}


# ----------------------------------------------------------------------------------------------------------------------
# CIRCO
# ----------------------------------------------------------------------------------------------------------------------
def validate_circo_submission(data: Mapping, query_ids: Sequence[str], where: str = "CIRCO submission") -> None:
    """Check a CIRCO server file: every query id once, 50 unique integer COCO ids each."""
    _check_ids(where, [str(k) for k in data], query_ids)
    for qid, ranking in data.items():
        _check_ranking(where, str(qid), ranking, CIRCO_LENGTH, exact=True)
        if not all(isinstance(x, int) for x in ranking):
            raise SubmissionError(f"{where}: query {qid!r}: COCO ids must be integers")


def write_circo_submission(
    path: str | os.PathLike, rankings: Mapping[str, Sequence[str | int]], query_ids: Sequence[str]
) -> Path:
    """Validate and write `{"<query id>": [top-50 COCO ids]}` (the CIRCO server format) to `path`."""
    data = {str(qid): [int(x) for x in rankings[qid]][:CIRCO_LENGTH] for qid in query_ids if qid in rankings}
    validate_circo_submission(data, [str(q) for q in query_ids])
    return _write_json(Path(path), data)


def read_circo_rankings(path: str | os.PathLike, query_ids: Sequence[str]) -> dict[str, list[str]]:
    """Read `{"<query id>": [COCO ids]}`; returns query id -> ranked ids as strings, for every id of `query_ids`."""
    where = str(path)
    data = _load(path)
    if not isinstance(data, dict):
        raise SubmissionError(f"{where}: expected a JSON object query id -> ranked COCO ids (CIRCO server format)")
    preds = {str(k): v for k, v in data.items()}
    _check_ids(where, list(preds), query_ids)
    return {qid: _check_ranking(where, qid, preds[qid]) for qid in query_ids}


# ----------------------------------------------------------------------------------------------------------------------
# FashionIQ
# ----------------------------------------------------------------------------------------------------------------------
def write_fashioniq_submission(
    output_dir: str | os.PathLike,
    category: str,
    records: Sequence[Mapping],
    rankings: Sequence[Sequence[str]],
    split: str = "test",
    length: int = FASHIONIQ_LENGTH,
) -> Path:
    """Validate and write `<category>.<split>.pred.json`: the caption records with a `ranking` field (starter kit).

    Args:
        records (`Sequence[Mapping]`): the records of `cap.<category>.<split>.json`, in file order.
        rankings (`Sequence[Sequence[str]]`): one ranking per record, cut to `length` names.
    """
    where = f"FashionIQ {category} submission"
    if len(rankings) != len(records):
        raise SubmissionError(f"{where}: {len(rankings)} rankings for {len(records)} caption records")
    out = []
    for i, (record, ranking) in enumerate(zip(records, rankings)):
        ranking = _check_ranking(where, str(i), list(ranking)[:length], length, exact=True)
        out.append({**record, "ranking": ranking})
    return _write_json(Path(output_dir) / f"{category}.{split}.pred.json", out)


def read_fashioniq_rankings(path: str | os.PathLike, num_queries: Mapping[str, int]) -> dict[str, list[list[str]]]:
    """Read `{"dress": [[names...] per query in caption-file order], "shirt": ..., "toptee": ...}`.

    Args:
        num_queries (`Mapping[str, int]`): category -> number of caption records; every category is required and
            must have exactly that many rankings.
    """
    where = str(path)
    data = _load(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise SubmissionError(f"{where}: expected {{category: [[names...] per caption record]}} (FashionIQ format)")
    unknown = sorted(set(data) - set(num_queries))
    if unknown:
        raise SubmissionError(f"{where}: unknown categories {unknown}; expected {sorted(num_queries)}")
    out: dict[str, list[list[str]]] = {}
    for cat, n in num_queries.items():
        if cat not in data:
            raise SubmissionError(f"{where}: category {cat!r} missing (all of {list(num_queries)} are required)")
        if len(data[cat]) != n:
            raise SubmissionError(
                f"{where}: {cat!r} has {len(data[cat])} rankings but cap.{cat} has {n} caption records "
                "(one ranking per record, in file order)"
            )
        out[cat] = [_check_ranking(where, f"{cat}[{i}]", r) for i, r in enumerate(data[cat])]
    return out


def _load(path: str | os.PathLike):
    from dataset_builders.cir_benchmarks import read_json

    try:
        return read_json(Path(path), "rankings file")
    except (FileNotFoundError, ValueError) as e:
        raise SubmissionError(str(e)) from e


__all__ = [
    "CIRCO_LENGTH",
    "CIRR_RECALL_LENGTH",
    "CIRR_SUBSET_LENGTH",
    "CIRR_VERSION",
    "SubmissionError",
    "cirr_submission",
    "read_circo_rankings",
    "read_cirr_rankings",
    "read_fashioniq_rankings",
    "validate_circo_submission",
    "validate_cirr_submission",
    "write_circo_submission",
    "write_cirr_submission",
    "write_fashioniq_submission",
]
