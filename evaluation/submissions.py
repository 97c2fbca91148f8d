"""Shared checks of rankings and submission files: ids, uniqueness, lengths, errors that name the file and the query.

Each benchmark module ([`.fashioniq`], [`.cirr`], [`.circo`]) writes its test-server files and reads its rankings
files with these helpers; every error is a [`SubmissionError`] naming the file (or the submission) and the query.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path


class SubmissionError(ValueError):
    """A rankings or submission file does not have the expected shape or content."""


def head(items: Sequence, n: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:n])) + (", ..." if len(items) > n else "")


def check_ids(where: str, given: Sequence[str], expected: Sequence[str]) -> None:
    """Every expected query id once, nothing else (the error says which are missing or unknown)."""
    given_set, expected_set = set(given), set(expected)
    missing = [q for q in expected if q not in given_set]
    extra = [q for q in given if q not in expected_set]
    if extra and len(missing) == len(expected):
        raise SubmissionError(
            f"{where}: none of its {len(given)} query ids (first: {head(given)}) is a query id of this split "
            f"(first: {head(expected)}); wrong file, split or benchmark?"
        )
    if missing:
        raise SubmissionError(f"{where}: {len(missing)} query id(s) missing (first: {head(missing)})")
    if extra:
        raise SubmissionError(
            f"{where}: {len(extra)} unknown query id(s) (first: {head(extra)}); wrong split or wrong benchmark?"
        )


def check_ranking(where: str, qid: str, ranking, length: int | None = None, exact: bool = False) -> list[str]:
    """A ranking as a list of unique string ids, at most (or, with `exact`, exactly) `length` of them."""
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


def write_json(path: Path, data) -> Path:
    """Write `data` as JSON to `path` (folders created); returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f)
    return path


def require_ground_truth(benchmark: str, split: str, rows: Sequence[dict]) -> None:
    """Raise when the split has no ground truth (test splits are scored by the benchmark's server)."""
    if not rows or not all(row["target_ids"] for row in rows):
        raise ValueError(
            f"{benchmark} {split}: the annotation file has no ground truth (test splits are scored by the "
            "benchmark's server; write submission files with `mra-cir evaluate --split test`)"
        )


def warn_unknown(where: str, rankings: Sequence[Sequence[str]], gallery: set[str]) -> None:
    """Warn on stderr about ranked names that are not in the split's gallery."""
    unknown = sorted({x for r in rankings for x in r if x not in gallery})
    if unknown:
        print(
            f"warning: {where}: {len(unknown)} name(s) not in the split's gallery (first: {unknown[:5]})",
            file=sys.stderr,
        )


def load_rankings_json(path: str | os.PathLike):
    """The JSON content of a rankings file ([`SubmissionError`] naming the file when it is missing or invalid, or when
    an object names a key twice: `json` would silently keep the last ranking of a query given twice)."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"rankings file not found: {path}")

    def unique_keys(pairs: list[tuple[str, object]]) -> dict:
        seen: dict = {}
        for key, value in pairs:
            if key in seen:
                raise SubmissionError(f"{path}: key {key!r} appears twice (each query id once)")
            seen[key] = value
        return seen

    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SubmissionError(f"{path} is not valid JSON (rankings file): {e}") from e


__all__ = [
    "SubmissionError",
    "check_ids",
    "check_ranking",
    "head",
    "load_rankings_json",
    "require_ground_truth",
    "warn_unknown",
    "write_json",
]
