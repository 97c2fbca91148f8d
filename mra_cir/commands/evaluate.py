"""`mra-cir evaluate`: zero-shot evaluation of a model on FashionIQ, CIRR or CIRCO.

On `--split val` the metrics (percent, the papers' keys) are printed as ONE JSON object and saved with the rankings
(files that `mra-cir evaluate-rankings` scores back); on `--split test` the test-server submission files are written.
CIRCO val also reports what its official script prints beside mAP@K: `Recall@K` against the single `target_img_id`
and `mAP@10_<aspect>` per semantic aspect.

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
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser


@dataclass
class EvaluateArguments:
    model: str = field(
        metadata={
            "help": "A saved MRA-CIR model folder, or a BLIP-2 ITM checkpoint (e.g. Salesforce/blip2-itm-vit-g)."
        }
    )
    benchmark: str = field(metadata={"help": "fashioniq, cirr or circo.", "choices": ["fashioniq", "cirr", "circo"]})
    data_root: str = field(metadata={"help": "The benchmark's folder in its official layout (annotations + images)."})
    split: str = field(default="val", metadata={"help": "val (metrics) or test (submission files)."})
    output: str | None = field(default=None, metadata={"help": "Output folder (default: eval-<benchmark>-<split>)."})
    annotations_dir: str | None = field(default=None, metadata={"help": "Override the annotation folder."})
    image_root: str | None = field(default=None, metadata={"help": "Override the image folder."})
    allow_missing: bool = field(
        default=False, metadata={"help": "Evaluate on the images present (reported; not comparable to papers)."}
    )
    max_queries: int | None = field(default=None, metadata={"help": "Only the first N queries (smoke runs)."})
    batch_size: int = field(default=32, metadata={"help": "Images or queries per forward pass."})
    num_workers: int = field(default=0, metadata={"help": "DataLoader workers decoding images."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "Gallery feature cache (default ~/.cache/mra_cir/gallery_features; '' = off)."}
    )
    device: str | None = field(default=None, metadata={"help": "cpu, cuda, cuda:1 ... (default: cuda if available)."})
    dtype: str = field(default="float32", metadata={"help": "float32, bfloat16 or float16."})
    categories: str = field(default="dress,shirt,toptee", metadata={"help": "FashionIQ: comma-separated categories."})
    caption_order_average: bool = field(
        default=False, metadata={"help": "FashionIQ: average the features of both caption orders."}
    )
    exclude_reference: bool = field(default=False, metadata={"help": "CIRCO: delete the reference (official: kept)."})
    no_progress: bool = field(default=False, metadata={"help": "Hide progress bars."})


def build_evaluator(args: EvaluateArguments):
    """The [`CirEvaluator`] subclass of `args.benchmark`, configured from the command's arguments."""
    from mra_cir.evaluation import EVALUATORS

    kwargs = dict(
        data_root=args.data_root,
        split=args.split,
        batch_size=args.batch_size,
        cache_dir=args.cache_dir,
        allow_missing=args.allow_missing,
        max_queries=args.max_queries,
        annotations_dir=args.annotations_dir,
        image_root=args.image_root,
        num_workers=args.num_workers,
        show_progress=not args.no_progress,
    )
    if args.benchmark == "fashioniq":
        kwargs.update(
            categories=[c.strip() for c in args.categories.split(",") if c.strip()],
            caption_order_average=args.caption_order_average,
        )
    elif args.caption_order_average or args.categories != "dress,shirt,toptee":
        raise ValueError("--categories and --caption-order-average are for FashionIQ only")
    if args.benchmark == "circo":
        kwargs["exclude_reference"] = args.exclude_reference
    elif args.exclude_reference:
        raise ValueError("--exclude-reference is for CIRCO only")
    return EVALUATORS[args.benchmark](**kwargs)


def _start_processes() -> int:
    """This process's rank: with several processes (`WORLD_SIZE` > 1) the process group is started, so the evaluator
    shards the gallery and the queries over them (gathered once); 0 alone."""
    if int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return 0
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available()).process_index  # gloo on CPU-only machines


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(
        EvaluateArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    try:
        import torch

        from mra_cir.modeling_mra_cir.loading import load_model_and_processor

        evaluator = build_evaluator(args)
        rank = _start_processes()  # under accelerate launch / torchrun every process encodes its shard
        device = args.device or (f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else "cpu")
        model, processor = load_model_and_processor(args.model, device=device, dtype=args.dtype)
        metrics = evaluator(model, processor)
        if rank != 0:
            return 0
    except (ValueError, OSError) as e:  # files, ids, models: one line naming them, no traceback
        print(f"mra-cir evaluate: error: {e}", file=sys.stderr)
        return 2
    output = Path(args.output or f"eval-{args.benchmark}-{evaluator.split}")
    output.mkdir(parents=True, exist_ok=True)
    result = {
        "benchmark": args.benchmark,
        "split": evaluator.split,
        "model": args.model,
        "complete": evaluator.complete,
        "primary_metric": evaluator.primary_metric,
        "metrics": metrics,
        "report": evaluator.report,
    }
    if metrics:
        result["rankings_files"] = [str(p) for p in evaluator.save_rankings(output)]
    else:
        try:
            result["submission_files"] = [str(p) for p in evaluator.write_submission(output)]
        except ValueError as e:
            print(f"mra-cir evaluate: error: cannot write the submission files: {e}", file=sys.stderr)
            return 2
    if not evaluator.complete:
        result["note"] = (
            "subset of the benchmark (missing images or --max-queries): not comparable to published numbers"
        )
    (output / f"{args.benchmark}_{evaluator.split}_results.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
