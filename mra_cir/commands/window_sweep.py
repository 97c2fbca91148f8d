"""`mra-cir window-sweep`: the paper's mining-window ablation ([1,1], [11,20], [31,40], [51,60], [91,100]) on real
data: one embedding, ranking and captioning pass builds every window's triplets, one model is trained per window with
the same settings, every model (and the untrained base) is evaluated, and one table and one plot are written.
Stages and outputs: `mra_cir.pipelines.window_sweep`.

Example (agent served by vLLM; training distributed as its own stage):

```bash
mra-cir window-sweep --images imagenet/train --per_class 100 --model Salesforce/blip2-itm-vit-g --output sweep/ \\
    --stages build --agent openai --agent_url http://gpu1:8000/v1 --agent_model openbmb/MiniCPM-V-2_6
accelerate launch --num_processes 8 -m mra_cir.cli window-sweep --images imagenet/train \\
    --model Salesforce/blip2-itm-vit-g --output sweep/ --stages train,evaluate,report \\
    --train_config examples/configs/train_paper_blip2_vitg.yaml \\
    --benchmarks fashioniq --benchmark_roots fashioniq=/data/fashionIQ_dataset
```
"""

from __future__ import annotations

import argparse
import json
import sys

from transformers import HfArgumentParser

from mra_cir.pipelines.sweep import SweepAgentArguments, WindowSweepArguments, window_sweep


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(
        (WindowSweepArguments, SweepAgentArguments),
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    try:
        args, agent_args = parser.parse_args_into_dataclasses(args=argv)
    except ValueError as error:  # --windows / --stages
        print(f"mra-cir window-sweep: error: {error}", file=sys.stderr)
        return 2
    try:
        results = window_sweep(args, agent_args)
    except (ValueError, OSError) as error:
        print(f"mra-cir window-sweep: error: {error}", file=sys.stderr)
        return 2
    print(
        json.dumps(
            {"output": args.output, "report": results.get("report", []), "windows": list(results.get("windows", {}))}
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
