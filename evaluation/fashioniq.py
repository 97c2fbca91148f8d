"""FashionIQ (Wu et al., 2021): loader, protocol scorer, rankings and submission files, evaluator.

Official layout: `<root>/captions/cap.<cat>.<split>.json`, `<root>/image_splits/split.<cat>.<split>.json`,
`<root>/images/<name>.png|jpg` (`<root>` or `<root>/fashioniq`). Per category, the queries are every record of the
caption file in file order, the gallery is the split file; the reference stays in the gallery. Metrics: R@10 and R@50
per category (`dress`, `shirt`, `toptee`) and their mean (`average_R@10`, `average_R@50`), in percent.

Rankings file (`mra-cir evaluate-rankings`): `{"dress": [[names...] per caption record in file order], "shirt": ...,
"toptee": ...}`. Test submission (official starter kit): per category, the caption records of `cap.<cat>.test.json`
with a `ranking` field, written as `<cat>.test.pred.json`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .benchmark import CirBenchmarkLoader, contained_path, index_folder, read_json
from .evaluator import CirEvaluator
from .metrics import Rankings, as_strings, check_unique, recall_at_k
from .submissions import (
    SubmissionError,
    check_ranking,
    load_rankings_json,
    require_ground_truth,
    warn_unknown,
    write_json,
)

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
FASHIONIQ_KS = (10, 50)
FASHIONIQ_LENGTH = 50


def join_fashioniq_captions(captions: list[str], reverse: bool = False) -> str:
    """FashionIQ's two relative captions as one text, as the peers do.

    `c1.strip('.?, ').capitalize() + " and " + c2.strip('.?, ')`; `reverse=True` joins them in the other order.
    """
    if len(captions) != 2:
        raise ValueError(f"a FashionIQ record has two captions, got {len(captions)}: {captions!r}")
    c1, c2 = (captions[1], captions[0]) if reverse else (captions[0], captions[1])
    return f"{c1.strip('.?, ').capitalize()} and {c2.strip('.?, ')}"


class FashionIQLoader(CirBenchmarkLoader):
    """FashionIQ (Wu et al., 2021): per category, queries = every record of `cap.<cat>.<split>.json` in file order,
    gallery = `split.<cat>.<split>.json`. The reference stays in the gallery when ranking."""

    name = "fashioniq"
    subsets = FASHIONIQ_CATEGORIES
    annotation_probe = "captions/cap.dress.val.json"
    annotation_subdirs = ("fashioniq", "fashionIQ_dataset")

    @property
    def image_root(self) -> Path:
        if self._image_root is not None:
            return self._image_root
        for cand in (self.data_root / "images", self.annotations_dir / "images"):
            if cand.is_dir():
                return cand
        return self.data_root / "images"

    def read_queries(self, split, subset=None):
        path = self.annotations_dir / "captions" / f"cap.{subset}.{split}.json"
        records = read_json(path, f"FashionIQ {subset} {split} captions")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of caption records")
        rows = []
        for i, rec in enumerate(records):
            if "candidate" not in rec or "captions" not in rec:
                raise ValueError(f"{path}: record {i} lacks 'candidate' or 'captions'")
            rows.append(
                {
                    "query_id": str(i),
                    "reference_id": rec["candidate"],
                    "text": join_fashioniq_captions(rec["captions"]),
                    "captions": list(rec["captions"]),
                    "target_ids": [rec["target"]] if "target" in rec else [],
                    "members": [],
                }
            )
        return records, rows

    def read_gallery_ids(self, split, subset=None):
        path = self.annotations_dir / "image_splits" / f"split.{subset}.{split}.json"
        names = read_json(path, f"FashionIQ {subset} {split} image split")
        if not isinstance(names, list):
            raise ValueError(f"{path}: expected a list of image names")
        return [str(n) for n in names]

    def image_paths(self, ids, split):
        root = self.image_root
        for i in ids:  # names, looked up in the image folder: one with a path in it must not leave the folder
            if "/" in i or "\\" in i or i.startswith(".."):
                contained_path(root, i, f"FashionIQ {split} annotations", i)
        index = index_folder(root)
        return {i: index.get(i) for i in ids}


def score_fashioniq(
    rankings: Mapping[str, Rankings], targets: Mapping[str, Sequence[str]], ks: Sequence[int] = FASHIONIQ_KS
) -> dict[str, float]:
    """FashionIQ: per-category Recall@K (reference kept in the gallery) and the mean over the categories, in percent.

    Args:
        rankings (`Mapping[str, Sequence[Sequence[str]]]`): category -> one ranking per caption record (file order).
        targets (`Mapping[str, Sequence[str]]`): category -> the `target` of each caption record.

    Returns:
        `dict[str, float]`: `{cat}_R@{k}` for each category given (in `dress, shirt, toptee` order), then
        `average_R@{k}` (the mean of the categories' percentages).
    """
    categories = [c for c in FASHIONIQ_CATEGORIES if c in rankings] + sorted(set(rankings) - set(FASHIONIQ_CATEGORIES))
    out: dict[str, float] = {}
    for cat in categories:
        if cat not in targets:
            raise ValueError(f"FashionIQ: no targets for category {cat!r}")
        ranked = as_strings(rankings[cat])
        check_unique(ranked, [f"{cat}[{i}]" for i in range(len(ranked))])
        recalls = recall_at_k(ranked, [str(t) for t in targets[cat]], ks)
        out.update({f"{cat}_R@{k}": 100.0 * v for k, v in recalls.items()})
    for k in ks:
        out[f"average_R@{k}"] = float(np.mean([out[f"{cat}_R@{k}"] for cat in categories]))
    return out


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
        ranking = check_ranking(where, str(i), list(ranking)[:length], length, exact=True)
        out.append({**record, "ranking": ranking})
    return write_json(Path(output_dir) / f"{category}.{split}.pred.json", out)


def read_fashioniq_rankings(path: str | os.PathLike, num_queries: Mapping[str, int]) -> dict[str, list[list[str]]]:
    """Read `{"dress": [[names...] per query in caption-file order], "shirt": ..., "toptee": ...}`.

    Args:
        num_queries (`Mapping[str, int]`): category -> number of caption records; every category is required and
            must have exactly that many rankings.
    """
    where = str(path)
    data = load_rankings_json(path)
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
        out[cat] = [check_ranking(where, f"{cat}[{i}]", r) for i, r in enumerate(data[cat])]
    return out


def score_rankings_file(
    loader: FashionIQLoader, split: str, rankings: str | os.PathLike, **unused
) -> dict[str, float]:
    """Score a FashionIQ rankings file (format in the module docstring) against the loader's annotations."""
    rows = {cat: loader.read_queries(split, cat)[1] for cat in FASHIONIQ_CATEGORIES}
    require_ground_truth("fashioniq", split, rows["dress"])
    ranked = read_fashioniq_rankings(rankings, {cat: len(r) for cat, r in rows.items()})
    for cat in FASHIONIQ_CATEGORIES:
        warn_unknown(f"{rankings} [{cat}]", ranked[cat], set(loader.read_gallery_ids(split, cat)))
    return score_fashioniq(ranked, {cat: [row["target_ids"][0] for row in rows[cat]] for cat in FASHIONIQ_CATEGORIES})


class FashionIQEvaluator(CirEvaluator):
    """FashionIQ: the three categories (or `categories`), the reference kept in the gallery; R@10, R@50 and their
    mean. `caption_order_average=True` averages the composed features of both caption orders."""

    benchmark = "fashioniq"
    primary_metric = "average_R@10"
    loader_class = FashionIQLoader

    def __init__(
        self, *args, categories: Sequence[str] = FASHIONIQ_CATEGORIES, caption_order_average: bool = False, **kwargs
    ):
        super().__init__(*args, **kwargs)
        unknown = set(categories) - set(FASHIONIQ_CATEGORIES)
        if unknown:
            raise ValueError(f"unknown FashionIQ categories {sorted(unknown)}; choose from {FASHIONIQ_CATEGORIES}")
        self.categories = tuple(categories)
        self.caption_order_average = caption_order_average

    @property
    def parts(self):
        return self.categories

    def query_texts(self, split):
        if not self.caption_order_average:
            return super().query_texts(split)
        return [
            [join_fashioniq_captions(c), join_fashioniq_captions(c, reverse=True)] for c in split.queries["captions"]
        ]

    def score(self):
        rankings = {cat: list(self.rankings[cat].values()) for cat in self.categories}
        targets = {cat: [t[0] for t in self.splits[cat].queries["target_ids"]] for cat in self.categories}
        return score_fashioniq(rankings, targets)

    def rankings_files(self):
        return {"fashioniq_rankings.json": {cat: list(self.rankings[cat].values()) for cat in self.categories}}

    def write_submission(self, output_dir):
        return [
            write_fashioniq_submission(
                output_dir,
                cat,
                self.loader.read_queries(self.split, cat)[0],
                list(self.rankings[cat].values()),
                split=self.split,
            )
            for cat in self.categories
        ]


__all__ = [
    "FASHIONIQ_CATEGORIES",
    "FashionIQEvaluator",
    "FashionIQLoader",
    "join_fashioniq_captions",
    "read_fashioniq_rankings",
    "score_fashioniq",
    "score_rankings_file",
    "write_fashioniq_submission",
]
