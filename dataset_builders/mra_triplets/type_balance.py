"""Balanced sampling of triplets by transformation type: keep per-type quotas out of more candidates than needed.

Unlabeled pools have an unbalanced mix of differences (colour changes everywhere, added objects rare), and the
triplets inherit it. `--balance-types` mines more pairs than the dataset needs (more targets per reference), lets the
agent write every modification text, tags each text ([`.transformation_types`]) and keeps, per type, a quota of the
final size: uniform over the types present, or a target mix read from a file. A text counts for its primary type
(its first), so every triplet fills exactly one quota. A type with fewer candidates than its quota gives all it has and
its unfilled share goes to the other types in proportion to their quotas (the record says which types fell short).
`uniform` shares the rows equally among the *named* types present; texts the tagger types as `other` (no change, a
vague request) are not a kind of change to balance toward, and are kept only when a target file gives `other` a share.

The record (`balance_record`) goes into the build summary and the dataset card: the quotas, the candidates and the
kept count per type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .transformation_types import TYPES, tag_types


def read_target_mix(spec: str | dict | None) -> dict[str, float] | None:
    """`None` or `"uniform"` -> None (uniform over the types present); a dict or a JSON file `{"type": share, ...}` ->
    shares normalised to sum 1 (types must be among `TYPES`; shares >= 0)."""
    if spec is None or spec == "uniform":
        return None
    where = "target mix"
    if not isinstance(spec, dict):
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"--balance-types {spec!r}: neither 'uniform' nor an existing JSON file")
        where = str(path)
        try:
            spec = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{where}: not JSON ({error})") from None
        if not isinstance(spec, dict):
            raise ValueError(f'{where}: expected an object type -> share, e.g. {{"color": 0.2, "added": 0.2}}')
    unknown = sorted(set(spec) - set(TYPES))
    if unknown:
        raise ValueError(f"{where}: unknown type(s) {unknown}; types are {list(TYPES)}")
    if any(not isinstance(v, (int, float)) or v < 0 for v in spec.values()) or sum(spec.values()) <= 0:
        raise ValueError(f"{where}: shares must be numbers >= 0 with a positive sum")
    total = float(sum(spec.values()))
    return {t: float(spec[t]) / total for t in TYPES if spec.get(t, 0) > 0}


def uniform_shares(available: dict[str, int]) -> dict[str, float]:
    """Equal shares for the named types with candidates (not `other`; `other` alone when nothing else is there)."""
    named = {t: 1.0 for t, n in available.items() if n > 0 and t != "other"}
    return named or {"other": 1.0}


def quotas_for(size: int, available: dict[str, int], target: dict[str, float] | None) -> dict[str, int]:
    """Per-type counts summing to `min(size, what the target's types have)`: the target shares (uniform over the named
    types with candidates when None); a type with fewer candidates than its share gives all it has and the rest is
    shared out over the others in proportion to their shares (water-filling), then rounded by largest remainder."""
    shares = target or uniform_shares(available)
    shares = {t: s for t, s in shares.items() if s > 0 and available.get(t, 0) > 0}
    left = min(size, sum(available[t] for t in shares))
    quotas: dict[str, int] = {}
    open_types = dict(shares)
    for kind in sorted(shares, key=lambda t: (available[t] / shares[t], TYPES.index(t))):  # the scarcest first
        if available[kind] <= left * shares[kind] / sum(open_types.values()):
            quotas[kind] = available[kind]
            left -= available[kind]
            del open_types[kind]
        else:
            break
    if open_types:
        total = sum(open_types.values())
        raw = {t: left * s / total for t, s in open_types.items()}
        give = {t: int(np.floor(v)) for t, v in raw.items()}
        order = sorted(raw, key=lambda t: (-(raw[t] - give[t]), TYPES.index(t)))
        for kind in order[: left - sum(give.values())]:
            give[kind] += 1
        quotas.update(give)
    return {t: quotas[t] for t in TYPES if t in quotas}


def balance_indices(
    texts: Sequence[str],
    size: int,
    target: dict[str, float] | None = None,
    seed: int = 0,
    tagger: Callable[[str], list[str]] = tag_types,
) -> tuple[list[int], dict]:
    """The rows to keep (sorted indices into `texts`) and the record of a balanced draw of `size` rows.

    Returns:
        `(indices, record)`: `record = {"target": "uniform" | shares, "size", "candidates": {type: n}, "quotas":
        {type: n}, "kept": {type: n}, "short": [types whose candidates were fewer than their share]}`.
    """
    if size < 1:
        raise ValueError(f"balance: size must be >= 1, got {size}")
    primary = [(tagger(text) or ["other"])[0] for text in texts]
    by_type: dict[str, list[int]] = {}
    for index, kind in enumerate(primary):
        by_type.setdefault(kind, []).append(index)
    available = {t: len(by_type.get(t, [])) for t in TYPES}
    quotas = quotas_for(size, available, target)
    shares = target or uniform_shares(available)
    ideal = {t: size * s / sum(shares.values()) for t, s in shares.items()}
    rng = np.random.default_rng([seed, 23])
    keep: list[int] = []
    for kind, quota in quotas.items():
        rows = by_type[kind]
        keep += sorted(rng.choice(rows, size=quota, replace=False).tolist()) if quota < len(rows) else rows
    kept = {t: q for t, q in quotas.items() if q}
    record = {
        "target": "uniform" if target is None else {t: round(s, 4) for t, s in target.items()},
        "size": size,
        "candidates": {t: n for t, n in available.items() if n},
        "quotas": kept,
        "kept": kept,
        "short": sorted((t for t in ideal if available.get(t, 0) < ideal[t]), key=TYPES.index),
    }
    return sorted(keep), record


def balance_triplets(dataset, size: int, target: str | dict | None = "uniform", seed: int = 0, tagger=tag_types):
    """A `datasets.Dataset` of triplets cut to `size` rows with per-type quotas ([`balance_indices`] on its
    `modification_text` column) -> `(dataset, record)`."""
    if "modification_text" not in dataset.column_names:
        raise ValueError("balance: the triplets have no 'modification_text' column")
    indices, record = balance_indices(dataset["modification_text"], size, read_target_mix(target), seed, tagger)
    return dataset.select(indices), record


__all__ = ["balance_indices", "balance_triplets", "quotas_for", "read_target_mix", "uniform_shares"]
