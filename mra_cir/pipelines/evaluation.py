"""The evaluation jobs: `evaluate` (a model on FashionIQ, CIRR or CIRCO, what `mra-cir evaluate` runs) and
`evaluate_rankings` (a rankings file from any model, scored with the official protocols: `mra-cir evaluate-rankings`).

Example:

```python
>>> from mra_cir.pipelines import EvaluateArguments, evaluate
>>> result = evaluate(EvaluateArguments(model="out/mra-cir", benchmark="cirr", data_root="/data/cirr_dataset"))
>>> result["metrics"]["R@1"], result["rankings_files"]
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


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
    by_type: bool = field(
        default=False,
        metadata={
            "help": "Also report the scores per transformation type of the query texts (primary type; "
            "mra_cir.evaluation.by_type), in the results file under 'by_type' (val only)."
        },
    )
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


def evaluate(args: EvaluateArguments) -> dict | None:
    """Evaluate `args.model` on `args.benchmark`; write `<benchmark>_<split>_results.json` and the rankings (val) or the
    submission files (test) to `args.output`, and return what was written. Every process of a launched job encodes
    its shard; only the main process writes and returns (the others return None).

    Raises:
        `ValueError` / `OSError`: files, ids, models, options (named).
    """
    import torch

    from mra_cir.modeling_mra_cir.loading import load_model_and_processor
    from mra_cir.retrieval.distributed import distributed_state, launched_processes

    evaluator = build_evaluator(args)
    # under accelerate launch / torchrun: start the process group, every process encodes its shard
    state = distributed_state() if launched_processes() > 1 else None
    rank = state.process_index if state else 0
    device = args.device or (str(state.device) if state else "cuda" if torch.cuda.is_available() else "cpu")
    model, processor = load_model_and_processor(args.model, device=device, dtype=args.dtype)
    metrics = evaluator(model, processor)
    if rank != 0:
        return None
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
    if metrics and args.by_type:
        from mra_cir.dataset_builders.mra_triplets.transformation_types import TYPES, tag_types
        from mra_cir.evaluation.by_type import evaluator_by_type, with_types

        result["metrics"] = with_types(metrics, evaluator_by_type(evaluator, tag_types, TYPES), args.benchmark)
    if metrics:
        result["rankings_files"] = [str(p) for p in evaluator.save_rankings(output)]
    else:
        try:
            result["submission_files"] = [str(p) for p in evaluator.write_submission(output)]
        except ValueError as e:
            raise ValueError(f"cannot write the submission files: {e}") from None
    if not evaluator.complete:
        result["note"] = (
            "subset of the benchmark (missing images or --max-queries): not comparable to published numbers"
        )
    (output / f"{args.benchmark}_{evaluator.split}_results.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


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
    by_type: bool = field(
        default=False,
        metadata={
            "help": "Also report the scores per transformation type of the query texts ('by_type': the primary-type "
            "groups, whose query-weighted mean is the overall figure, and 'any'; CIRCO: mAP@10_type_<type> beside "
            "mAP@10_<aspect>)."
        },
    )


def evaluate_rankings(args: EvaluateRankingsArguments) -> dict:
    """The metrics of `args.rankings` (percent, the benchmark's keys), also written to `args.output` when given.

    Raises:
        `ValueError` / `OSError`: files, ids (named).
    """
    from mra_cir.evaluation import score_rankings_file

    tagger = None
    if args.by_type:
        from mra_cir.dataset_builders.mra_triplets.transformation_types import tag_types as tagger
    metrics = score_rankings_file(
        args.benchmark,
        args.annotations,
        args.rankings,
        args.subset_rankings,
        args.split,
        args.exclude_reference,
        tagger=tagger,
    )
    if args.output:
        Path(args.output).write_text(json.dumps(metrics) + "\n", encoding="utf-8")
    return metrics


__all__ = [
    "BENCHMARKS",
    "EvaluateArguments",
    "EvaluateRankingsArguments",
    "build_evaluator",
    "evaluate",
    "evaluate_rankings",
]
