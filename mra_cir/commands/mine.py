"""`mra-cir mine`: image features in, (reference, target, rank, score) pairs out, as a `datasets.Dataset`.

Each reference's target is drawn from its similarity ranks `q1..q2` ([`mra_cir.dataset_builders.mra_triplets.mining.sample_rank_window`]).
Under `accelerate launch` every process mines a contiguous slice of the references against all keys; the slices are
gathered and merged in order by the main process, so the result does not depend on the number of processes.

The job itself: `mra_cir.pipelines.mine`.

Example:

```bash
mra-cir mine --features photos-features/ --output pairs/ --q1 51 --q2 60
accelerate launch --multi_gpu --num_processes 2 -m mra_cir.cli mine --features photos-features/ --output pairs/
python -c "import datasets; print(datasets.load_from_disk('pairs')[0])"
```
"""

from __future__ import annotations

import json
import sys

from transformers import HfArgumentParser

from mra_cir.pipelines.mining import REPORT_FILE, MineArguments, mine


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(MineArguments).parse_args_into_dataclasses(args=argv)
    try:
        summary = mine(args)
    except ValueError as error:
        print(f"mra-cir mine: {error}", file=sys.stderr)
        return 1
    if summary is not None:  # the main process
        print(json.dumps(summary))
    return 0


__all__ = ["REPORT_FILE", "main"]

if __name__ == "__main__":
    sys.exit(main())
