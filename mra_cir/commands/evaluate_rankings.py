"""`mra-cir evaluate-rankings`: score a rankings file from any model with the benchmarks' official protocols.

Prints ONE JSON object on stdout (percentages):

- FashionIQ: `dress_R@10`, `dress_R@50`, `shirt_R@10`, `shirt_R@50`, `toptee_R@10`, `toptee_R@50`, `average_R@10`,
  `average_R@50`. Input: `{"dress": [[names...] per caption record in file order], "shirt": ..., "toptee": ...}`.
  The reference stays in the gallery (nothing is removed).
- CIRR: `R@1`, `R@5`, `R@10`, `R@50`, `R_subset@1`, `R_subset@2`, `R_subset@3`. Input: the evaluation server's format
  `{"version": "rc2", "metric": "recall", "<pairid>": [names]}`. The reference is deleted from every ranking before
  scoring (a no-op for a server file, which already excludes it). `R_subset` is read from `--subset-rankings`
  (`"metric": "recall_subset"`) when given, else computed from the main ranking restricted to the other members of
  the image set (give a full-gallery ranking then: a top-50 list may hold fewer than 3 members).
- CIRCO: `mAP@5`, `mAP@10`, `mAP@25`, `mAP@50`. Input: `{"<query id>": [COCO ids]}`. The reference is kept unless
  `--exclude-reference`.

`--annotations` is the benchmark's annotation folder in its official layout (the one holding `captions/` and
`image_splits/` for FashionIQ and CIRR, `annotations/` for CIRCO), or a folder above it (`<dir>/fashioniq`,
`<dir>/cirr`, `<dir>/circo` are tried). Only `--split val` has public ground truth.

Example:

```bash
mra-cir evaluate-rankings --benchmark cirr --annotations ../shared/benchmarks/cirr --rankings val_recall.json
```
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser

BENCHMARKS = ("fashioniq", "cirr", "circo")


@dataclass
class EvaluateRankingsArguments:
    benchmark: str = field(metadata={"help": "fashioniq, cirr or circo.", "choices": list(BENCHMARKS)})
    annotations: str = field(metadata={"help": "The benchmark's annotation folder (official layout)."})
    rankings: str = field(metadata={"help": "The rankings JSON file (formats above)."})
    subset_rankings: str | None = field(
        default=None, metadata={"help": "CIRR only: the recall_subset file (server format)."}
    )
    split: str = field(default="val", metadata={"help": "The split the rankings are for (val has ground truth)."})
    exclude_reference: bool = field(
        default=False, metadata={"help": "CIRCO only: delete the reference from each ranking (official: kept)."}
    )
    output: str | None = field(default=None, metadata={"help": "Also write the metrics JSON to this file."})


def score_rankings(
    benchmark: str,
    annotations: str,
    rankings: str,
    subset_rankings: str | None = None,
    split: str = "val",
    exclude_reference: bool = False,
) -> dict[str, float]:
    """Score the rankings file `rankings` of `benchmark` against the annotation folder `annotations`.

    Returns:
        `dict[str, float]`: the benchmark's metrics in percent (keys in the module docstring).
    """
    from dataset_builders.cir_benchmarks import FASHIONIQ_CATEGORIES, get_loader
    from trainers import cir_metrics, submissions

    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {list(BENCHMARKS)}")
    if subset_rankings is not None and benchmark != "cirr":
        raise ValueError("--subset-rankings is for CIRR only")
    if exclude_reference and benchmark != "circo":
        raise ValueError("--exclude-reference is for CIRCO only (FashionIQ keeps the reference, CIRR always drops it)")
    loader = get_loader(benchmark, data_root=annotations)
    split = loader.normalize_split(split)

    if benchmark == "fashioniq":
        rows = {cat: loader.read_queries(split, cat)[1] for cat in FASHIONIQ_CATEGORIES}
        _require_ground_truth(benchmark, split, rows["dress"])
        ranked = submissions.read_fashioniq_rankings(rankings, {cat: len(r) for cat, r in rows.items()})
        for cat in FASHIONIQ_CATEGORIES:
            _warn_unknown(f"{rankings} [{cat}]", ranked[cat], set(loader.read_gallery_ids(split, cat)))
        targets = {cat: [row["target_ids"][0] for row in rows[cat]] for cat in FASHIONIQ_CATEGORIES}
        return cir_metrics.score_fashioniq(ranked, targets)

    rows = loader.read_queries(split)[1]
    _require_ground_truth(benchmark, split, rows)
    query_ids = [row["query_id"] for row in rows]
    gallery = set(loader.read_gallery_ids(split)) if benchmark == "cirr" else None
    if benchmark == "cirr":
        ranked = submissions.read_cirr_rankings(rankings, "recall", query_ids)
        _warn_unknown(rankings, list(ranked.values()), gallery)
        subset = None
        if subset_rankings is not None:
            subset_map = submissions.read_cirr_rankings(subset_rankings, "recall_subset", query_ids)
            subset = [subset_map[q] for q in query_ids]
            _warn_outside_members(subset_rankings, subset, rows)
        return cir_metrics.score_cirr(
            [ranked[q] for q in query_ids],
            references=[row["reference_id"] for row in rows],
            targets=[row["target_ids"][0] for row in rows],
            members=[row["members"] for row in rows],
            subset_rankings=subset,
            query_ids=query_ids,
        )
    ranked = submissions.read_circo_rankings(rankings, query_ids)
    return cir_metrics.score_circo(
        [ranked[q] for q in query_ids],
        ground_truths=[row["target_ids"] for row in rows],
        references=[row["reference_id"] for row in rows],
        exclude_reference=exclude_reference,
        query_ids=query_ids,
    )


def _require_ground_truth(benchmark: str, split: str, rows: list[dict]) -> None:
    if not rows or not all(row["target_ids"] for row in rows):
        raise ValueError(
            f"{benchmark} {split}: the annotation file has no ground truth (test splits are scored by the "
            "benchmark's server; write submission files with `mra-cir evaluate --split test`)"
        )


def _warn_unknown(where: str, rankings: list[list[str]], gallery: set[str] | None) -> None:
    if gallery is None:
        return
    unknown = sorted({x for r in rankings for x in r if x not in gallery})
    if unknown:
        print(
            f"warning: {where}: {len(unknown)} name(s) not in the split's gallery (first: {unknown[:5]})",
            file=sys.stderr,
        )


def _warn_outside_members(where: str, rankings: list[list[str]], rows: list[dict]) -> None:
    bad = [row["query_id"] for r, row in zip(rankings, rows) if any(x not in set(row["members"]) for x in r)]
    if bad:
        print(
            f"warning: {where}: {len(bad)} subset ranking(s) name images outside the query's image set "
            f"(ignored; first pair ids: {bad[:5]})",
            file=sys.stderr,
        )


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(
        EvaluateRankingsArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        metrics = score_rankings(
            args.benchmark, args.annotations, args.rankings, args.subset_rankings, args.split, args.exclude_reference
        )
    except (ValueError, FileNotFoundError) as e:
        print(f"mra-cir evaluate-rankings: error: {e}", file=sys.stderr)
        return 2
    text = json.dumps(metrics)
    print(text)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
