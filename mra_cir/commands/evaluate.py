"""`mra-cir evaluate`: zero-shot evaluation of a model on FashionIQ, CIRR or CIRCO.

On `--split val` the metrics (percent, the papers' keys) are printed as ONE JSON object and saved with the rankings
(files that `mra-cir evaluate-rankings` scores back); on `--split test` the test-server submission files are written.
CIRCO val also reports what its official script prints beside mAP@K: `Recall@K` against the single `target_img_id`
and `mAP@10_<aspect>` per semantic aspect.

The job itself: `mra_cir.pipelines.evaluate`.

Example:

```bash
mra-cir evaluate --model out/mra-cir --benchmark cirr --data-root /data/cirr_dataset --output eval/cirr
mra-cir evaluate --model out/mra-cir --benchmark cirr --data-root /data/cirr_dataset --split test --output sub/
accelerate launch --num_processes 8 -m mra_cir.cli evaluate --model out/mra-cir --benchmark circo --data-root /data/CIRCO
```
"""

from __future__ import annotations

import argparse
import json
import sys

from transformers import HfArgumentParser

from mra_cir.pipelines.evaluation import EvaluateArguments, evaluate


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(
        EvaluateArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        result = evaluate(args)
    except (ValueError, OSError) as e:  # files, ids, models: one line naming them, no traceback
        print(f"mra-cir evaluate: error: {e}", file=sys.stderr)
        return 2
    if result is not None:  # the main process
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
