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
- CIRCO: `mAP@5`, `mAP@10`, `mAP@25`, `mAP@50`, then what CIRCO's official script prints beside them: `Recall@5` ...
  `Recall@50` (against the single `target_img_id`) and `mAP@10_<aspect>` for each semantic aspect of
  `annotations/val.json` (`mAP@10_cardinality`, `mAP@10_addition`, ...). Input: `{"<query id>": [COCO ids]}`. The
  reference is kept unless `--exclude-reference`.

`--annotations` is the benchmark's annotation folder in its official layout (the one holding `captions/` and
`image_splits/` for FashionIQ and CIRR, `annotations/` for CIRCO), or a folder above it (`<dir>/fashioniq`,
`<dir>/cirr`, `<dir>/circo` are tried). Only `--split val` has public ground truth.

`--by-type` adds the scores per transformation type of the query texts (`by_type`: `types`, each query in the group of
the first type its text names, so the query-weighted mean of a metric over the groups is its overall value; `any`,
every query whose text names the type); for CIRCO also `mAP@10_type_<type>` right after `mAP@10_<aspect>`.

The job itself: `mra_cir.pipelines.evaluate_rankings`.

Example:

```bash
mra-cir evaluate-rankings --benchmark cirr --annotations data/cirr_dataset --rankings val_recall.json
```
"""

from __future__ import annotations

import argparse
import json
import sys

from transformers import HfArgumentParser

from mra_cir.pipelines.evaluation import EvaluateRankingsArguments, evaluate_rankings


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(
        EvaluateRankingsArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        metrics = evaluate_rankings(args)
    except (ValueError, OSError) as e:  # files, ids, models: one line naming them, no traceback
        print(f"mra-cir evaluate-rankings: error: {e}", file=sys.stderr)
        return 2
    print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
