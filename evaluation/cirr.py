"""CIRR (Liu et al., 2021), release rc2: loader, protocol scorer, rankings and submission files, evaluator.

Official layout: annotations `captions/cap.rc2.<split>.json` and `image_splits/split.rc2.<split>.json` (image name ->
path relative to the image root, e.g. `./dev/dev-244-0-img0.png`) in `<root>` or `<root>/cirr`; images under `<root>`
(or its parent when `<root>` is the `cirr/` annotation folder). Protocol: rank the whole gallery, delete the
reference from each ranking, then R@1/5/10/50 against `target_hard` and Recall_subset@1/2/3 on the same ranking
restricted to the other members of the query's 6-image set (`img_set.members`), in percent.

Rankings and test-server files (two files): `{"version": "rc2", "metric": "recall", "<pairid>": [top-50 names]}`
(reference excluded) and `{"version": "rc2", "metric": "recall_subset", "<pairid>": [top-3 names]}` (among the other
five members of the query's image set).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from .benchmark import CirBenchmarkLoader, contained_path, read_json
from .evaluator import CirEvaluator
from .metrics import (
    CIRR_KS,
    CIRR_SUBSET_KS,
    Rankings,
    as_strings,
    check_unique,
    recall_at_k,
    recall_subset_at_k,
    remove_from_rankings,
)
from .submissions import (
    SubmissionError,
    check_ids,
    check_ranking,
    head,
    load_rankings_json,
    require_ground_truth,
    warn_unknown,
    write_json,
)

CIRR_VERSION = "rc2"
CIRR_RECALL_LENGTH = 50
CIRR_SUBSET_LENGTH = 3


class CirrLoader(CirBenchmarkLoader):
    """CIRR (Liu et al., 2021), release rc2: queries `cap.rc2.<split>.json`, gallery `split.rc2.<split>.json` (image
    name -> path relative to the image root). The reference is deleted from each ranking when scoring."""

    name = "cirr"
    splits = ("val", "test1")
    split_aliases = {"test": "test1", "dev": "val"}
    annotation_probe = "captions/cap.rc2.val.json"
    annotation_subdirs = ("cirr",)

    @property
    def image_root(self) -> Path:
        if self._image_root is not None:
            return self._image_root
        for cand in (self.data_root, self.annotations_dir.parent, self.annotations_dir):
            if (cand / "dev").is_dir() or (cand / "test1").is_dir():
                return cand
        return self.data_root

    def _split_file(self, split: str) -> dict[str, str]:
        path = self.annotations_dir / "image_splits" / f"split.rc2.{split}.json"
        mapping = read_json(path, f"CIRR {split} image split")
        if not isinstance(mapping, dict):
            raise ValueError(f"{path}: expected an object image name -> relative path")
        return mapping

    def read_queries(self, split, subset=None):
        path = self.annotations_dir / "captions" / f"cap.rc2.{split}.json"
        records = read_json(path, f"CIRR {split} captions")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of caption records")
        rows = []
        for i, rec in enumerate(records):
            for key in ("pairid", "reference", "caption", "img_set"):
                if key not in rec:
                    raise ValueError(f"{path}: record {i} lacks {key!r}")
            rows.append(
                {
                    "query_id": str(rec["pairid"]),
                    "reference_id": rec["reference"],
                    "text": rec["caption"],
                    "captions": [rec["caption"]],
                    "target_ids": [rec["target_hard"]] if "target_hard" in rec else [],
                    "members": list(rec["img_set"]["members"]),
                }
            )
        return records, rows

    def read_gallery_ids(self, split, subset=None):
        return list(self._split_file(split))

    def image_paths(self, ids, split):
        mapping = self._split_file(split)
        where = str(self.annotations_dir / "image_splits" / f"split.rc2.{split}.json")
        root = self.image_root
        out: dict[str, Path | None] = {}
        for i in ids:
            rel = mapping.get(i)
            if rel is not None and not isinstance(rel, str):
                raise ValueError(f"{where}: entry {i!r} -> {rel!r} is not a path")
            path = contained_path(root, rel, where, i) if rel is not None else None
            out[i] = path if path is not None and path.is_file() else None
        return out


def score_cirr(
    rankings: Rankings,
    references: Sequence[str],
    targets: Sequence[str],
    members: Sequence[Collection[str]],
    subset_rankings: Rankings | None = None,
    ks: Sequence[int] = CIRR_KS,
    subset_ks: Sequence[int] = CIRR_SUBSET_KS,
    query_ids: Sequence[str] | None = None,
) -> dict[str, float]:
    """CIRR: Recall@K and Recall_subset@K in percent, the reference deleted from every ranking first (idempotent).

    Args:
        rankings (`Sequence[Sequence[str]]` of length N): full-gallery rankings (or their top 50).
        references, targets (`Sequence[str]` of length N): `reference` and `target_hard` per query.
        members (`Sequence[Collection[str]]` of length N): `img_set.members` per query.
        subset_rankings (`Sequence[Sequence[str]]`, *optional*): a separate subset ranking per query (the server's
            `recall_subset` file); without it, `rankings` restricted to the members is used.
        query_ids (`Sequence[str]`, *optional*): names for error messages.

    Returns:
        `dict[str, float]`: `R@1`, `R@5`, `R@10`, `R@50`, `R_subset@1`, `R_subset@2`, `R_subset@3`.
    """
    references = [str(r) for r in references]
    targets = [str(t) for t in targets]
    members = [{str(m) for m in ms} for ms in members]
    ranked = as_strings(rankings)
    check_unique(ranked, query_ids)
    ranked = remove_from_rankings(ranked, references)
    out = {f"R@{k}": 100.0 * v for k, v in recall_at_k(ranked, targets, ks).items()}
    if subset_rankings is None:
        subset = ranked
    else:
        subset = as_strings(subset_rankings)
        check_unique(subset, query_ids)
    sub = recall_subset_at_k(subset, targets, members, references, subset_ks)
    out.update({f"R_subset@{k}": 100.0 * v for k, v in sub.items()})
    return out


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
    check_ids(where, list(preds), query_ids)
    for qid, ranking in preds.items():
        ranking = check_ranking(where, qid, ranking, length, exact=True)
        if references is not None and references[qid] in ranking:
            raise SubmissionError(f"{where}: query {qid!r}: the reference {references[qid]!r} is in the ranking")
        if metric == "recall_subset" and members is not None:
            outside = [x for x in ranking if x not in set(members[qid])]
            if outside:
                raise SubmissionError(f"{where}: query {qid!r}: {head(outside)} not in the query's image set")


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
        write_json(out / f"{prefix}_recall.json", recall),
        write_json(out / f"{prefix}_recall_subset.json", subset),
    )


def read_cirr_rankings(path: str | os.PathLike, metric: str, query_ids: Sequence[str]) -> dict[str, list[str]]:
    """Read a CIRR server-format file (`"version"`/`"metric"` optional, checked when present).

    Returns:
        `dict[str, list[str]]`: pair id -> ranked names, for every id of `query_ids` (unknown or missing ids, a
        wrong metric or version, and duplicate predictions raise [`SubmissionError`]).
    """
    where = str(path)
    data = load_rankings_json(path)
    if not isinstance(data, dict):
        raise SubmissionError(f"{where}: expected a JSON object pair id -> ranked names (CIRR server format)")
    if "version" in data and data["version"] != CIRR_VERSION:
        raise SubmissionError(f"{where}: version {data['version']!r}, expected {CIRR_VERSION!r}")
    if "metric" in data and data["metric"] != metric:
        hint = " (pass a recall_subset file with --subset-rankings)" if data["metric"] == "recall_subset" else ""
        raise SubmissionError(f"{where}: metric {data['metric']!r}, expected {metric!r}{hint}")
    preds = {str(k): v for k, v in data.items() if k not in ("version", "metric")}
    check_ids(where, list(preds), query_ids)
    return {qid: check_ranking(where, qid, preds[qid]) for qid in query_ids}


def score_rankings_file(
    loader: CirrLoader,
    split: str,
    rankings: str | os.PathLike,
    subset_rankings: str | os.PathLike | None = None,
    **unused,
) -> dict[str, float]:
    """Score a CIRR server-format rankings file (and optionally its `recall_subset` file) against the annotations.

    Without `subset_rankings`, `R_subset` is computed from the main ranking restricted to the other members of the
    image set (give a full-gallery ranking then: a top-50 list may hold fewer than 3 members).
    """
    rows = loader.read_queries(split)[1]
    require_ground_truth("cirr", split, rows)
    query_ids = [row["query_id"] for row in rows]
    ranked = read_cirr_rankings(rankings, "recall", query_ids)
    warn_unknown(str(rankings), list(ranked.values()), set(loader.read_gallery_ids(split)))
    subset = None
    if subset_rankings is not None:
        subset_map = read_cirr_rankings(subset_rankings, "recall_subset", query_ids)
        subset = [subset_map[q] for q in query_ids]
        bad = [row["query_id"] for r, row in zip(subset, rows) if any(x not in set(row["members"]) for x in r)]
        if bad:
            print(
                f"warning: {subset_rankings}: {len(bad)} subset ranking(s) name images outside the query's image set "
                f"(ignored; first pair ids: {bad[:5]})",
                file=sys.stderr,
            )
    return score_cirr(
        [ranked[q] for q in query_ids],
        references=[row["reference_id"] for row in rows],
        targets=[row["target_ids"][0] for row in rows],
        members=[row["members"] for row in rows],
        subset_rankings=subset,
        query_ids=query_ids,
    )


class CirrEvaluator(CirEvaluator):
    """CIRR: the reference deleted from each ranking; R@1/5/10/50 and R_subset@1/2/3 (the other set members)."""

    benchmark = "cirr"
    primary_metric = "R@1"
    loader_class = CirrLoader
    excludes_reference = True

    def exclusions(self, split):
        return list(split.queries["reference_id"])

    def after_ranking(self, key, split, queries, index):
        refs = split.queries["reference_id"]
        candidates = [[m for m in members if m != ref] for members, ref in zip(split.queries["members"], refs)]
        ranked = index.score_candidates(queries, candidates)
        self.subset_rankings[key] = dict(zip(split.queries["query_id"], ([i for i, _ in r] for r in ranked)))

    def score(self):
        q = self.splits["cirr"].queries
        return score_cirr(
            list(self.rankings["cirr"].values()),
            references=q["reference_id"],
            targets=[t[0] for t in q["target_ids"]],
            members=q["members"],
            subset_rankings=list(self.subset_rankings["cirr"].values()),
            query_ids=q["query_id"],
        )

    def _server_dicts(self) -> tuple[dict, dict]:
        q = self.splits["cirr"].queries
        return cirr_submission(
            self.rankings["cirr"],
            self.subset_rankings["cirr"],
            dict(zip(q["query_id"], q["reference_id"])),
            dict(zip(q["query_id"], q["members"])),
        )

    def rankings_files(self):
        recall, subset = self._server_dicts()
        return {f"cirr_{self.split}_recall.json": recall, f"cirr_{self.split}_recall_subset.json": subset}

    def write_submission(self, output_dir):
        rows = self.loader.read_queries(self.split)[1]  # every official query must be there
        return list(
            write_cirr_submission(
                output_dir,
                self.rankings["cirr"],
                self.subset_rankings["cirr"],
                {r["query_id"]: r["reference_id"] for r in rows},
                {r["query_id"]: r["members"] for r in rows},
                prefix=f"{self.split}_pred_ranks",
            )
        )


__all__ = [
    "CIRR_RECALL_LENGTH",
    "CIRR_SUBSET_LENGTH",
    "CIRR_VERSION",
    "CirrEvaluator",
    "CirrLoader",
    "cirr_submission",
    "read_cirr_rankings",
    "score_cirr",
    "score_rankings_file",
    "validate_cirr_submission",
    "write_cirr_submission",
]
