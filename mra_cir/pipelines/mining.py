"""The `mine` job: image features in, (reference, target, rank, score) pairs out, as a `datasets.Dataset` saved to
disk with `mining_report.json` (what `mra-cir mine` runs).

Each reference's target is drawn from its similarity ranks `q1..q2`
([`~mra_cir.dataset_builders.mra_triplets.mining.sample_rank_window`]). Under `accelerate launch` every process mines a
contiguous slice of the references against all keys; the slices are gathered and merged in order by the main process,
so the result does not depend on the number of processes.

Example:

```python
>>> from mra_cir.pipelines import MineArguments, mine
>>> mine(MineArguments(features="photos-features/", output="pairs/", q1=51, q2=60))["stats"]["pairs"]
```
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPORT_FILE = "mining_report.json"


@dataclass
class MineArguments:
    features: str = field(metadata={"help": "An `extract_image_features` output directory (manifest + shards)."})
    output: str = field(metadata={"help": "Where to save the pairs dataset (`datasets.Dataset.save_to_disk`)."})
    q1: int = field(default=51, metadata={"help": "First rank of the window (1-based, after self and duplicates)."})
    q2: int = field(default=60, metadata={"help": "Last rank of the window (inclusive)."})
    window: str | None = field(
        default=None,
        metadata={
            "help": "'adaptive': each reference's targets from a band of its own similarity scale instead of ranks "
            "--q1..--q2 (mra_triplets.adaptive_window; --adaptive-depth, --adaptive-band)."
        },
    )
    adaptive_depth: int = field(default=100, metadata={"help": "--window adaptive: the rank whose similarity is 0."})
    adaptive_band: str = field(
        default="0.4,0.6", metadata={"help": "--window adaptive: the band of normalised similarity, low,high."}
    )
    targets_per_reference: int = field(default=1, metadata={"help": "Distinct targets drawn per reference."})
    seed: int = field(default=0, metadata={"help": "Seed of the draws (per reference: seed and reference id)."})
    reduce: str = field(
        default="max", metadata={"help": "Token reduction: max or mean_max.", "choices": ["max", "mean_max"]}
    )
    approximate: bool = field(default=False, metadata={"help": "faiss candidates + exact re-rank (large sets)."})
    n_candidates: int | None = field(default=None, metadata={"help": "Approximate: candidates per reference."})
    check_window: bool = field(
        default=False,
        metadata={"help": "Approximate: report the fraction of targets whose exact rank is in the window."},
    )
    check_sample: int = field(default=100, metadata={"help": "Approximate: targets checked exactly."})
    device: str | None = field(default=None, metadata={"help": "Search device (default: the process's device)."})
    no_progress: bool = field(default=False, metadata={"help": "Hide progress bars."})


def _merge(parts: list[dict]) -> dict:
    pairs = [p for part in parts for p in part["pairs"]]
    too_few = [r for part in parts for r in part["too_few"]]
    stats: dict = {}
    for part in parts:
        for key, value in part["stats"].items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                stats[key] = value
            elif key in ("window_agreement", "recall_at_q2", "mean_rank"):
                continue
            else:
                stats[key] = stats.get(key, 0) + value
    checked = [p["stats"] for p in parts if "window_agreement" in p["stats"]]
    if checked:
        total = sum(s["window_check_sample"] for s in checked)
        stats["window_agreement"] = sum(s["window_agreement"] * s["window_check_sample"] for s in checked) / total
        stats["recall_at_q2"] = sum(s["recall_at_q2"] * s["window_check_sample"] for s in checked) / total
    if "rank_sum" in stats:  # the adaptive window: the mean rank of the drawn targets
        stats["mean_rank"] = stats["rank_sum"] / max(1, stats["pairs"])
    return {"pairs": pairs, "too_few": too_few, "stats": stats}


def _adaptive_part(args: MineArguments, features, loaded, start: int, stop: int):
    """This process's slice of the references mined with the adaptive window."""
    from mra_cir.dataset_builders.mra_triplets.adaptive_window import parse_band, sample_adaptive_window

    if args.window != "adaptive":
        raise ValueError(f"--window: only 'adaptive' is known (fixed ranks are --q1/--q2), got {args.window!r}")
    if args.approximate:
        raise ValueError("--window adaptive ranks exactly: drop --approximate")
    return sample_adaptive_window(
        features, loaded.ids, targets_per_reference=args.targets_per_reference, seed=args.seed, reduce=args.reduce,
        duplicates=loaded.duplicates, depth=args.adaptive_depth, band=parse_band(args.adaptive_band), start=start,
        stop=stop,
    )  # fmt: skip


def mine(args: MineArguments) -> dict | None:
    """Mine, save the pairs and the report to `args.output`; return the report's summary on the main process (None on
    the others).

    Raises:
        `ValueError`: the features folder holds no image features, or a bad window (named).
    """
    import datasets

    from mra_cir.dataset_builders.mra_triplets.mining import mining_query_block_size, sample_rank_window
    from mra_cir.retrieval.distributed import distributed_state, shard_bounds
    from mra_cir.retrieval.image_features import load_image_features

    state = distributed_state()
    loaded = load_image_features(args.features)
    if len(loaded) == 0:
        raise ValueError(f"{args.features} holds no image features")
    features = loaded.features.to(args.device or state.device)
    start, stop = shard_bounds(
        len(loaded), state.num_processes, state.process_index, align=mining_query_block_size(features)
    )
    if args.window is not None:
        part = _adaptive_part(args, features, loaded, start, stop)
    else:
        part = sample_rank_window(
            features,
            loaded.ids,
            q1=args.q1,
            q2=args.q2,
            targets_per_reference=args.targets_per_reference,
            seed=args.seed,
            reduce=args.reduce,
            duplicates=loaded.duplicates,
            approximate=args.approximate,
            n_candidates=args.n_candidates,
            check_window=args.check_window,
            check_sample=args.check_sample,
            show_progress=not args.no_progress and state.is_local_main_process,
            start=start,
            stop=stop,
        )
    local = {"pairs": part.pairs, "too_few": part.too_few, "stats": part.stats}
    if state.num_processes > 1:
        from accelerate.utils import gather_object

        parts = gather_object([local])  # one entry per process, in process order
    else:
        parts = [local]
    if state.is_main_process:
        merged = _merge(parts)
        columns = {
            "reference_id": [p["reference_id"] for p in merged["pairs"]],
            "target_id": [p["target_id"] for p in merged["pairs"]],
            "rank": [p["rank"] for p in merged["pairs"]],
            "score": [p["score"] for p in merged["pairs"]],
        }
        schema = datasets.Features(
            reference_id=datasets.Value("string"),
            target_id=datasets.Value("string"),
            rank=datasets.Value("int32"),
            score=datasets.Value("float32"),
        )
        datasets.Dataset.from_dict(columns, features=schema).save_to_disk(args.output)
        report = {
            "arguments": asdict(args),
            "num_processes": state.num_processes,
            "num_images": len(loaded),
            "skipped_images": len(loaded.skipped),
            "duplicates": len(loaded.duplicates),
            "too_few": merged["too_few"],
            "stats": merged["stats"],
        }
        (Path(args.output) / REPORT_FILE).write_text(json.dumps(report, indent=2))
        summary = {k: v for k, v in report.items() if k not in ("arguments", "too_few")}
        summary["too_few"] = len(merged["too_few"])
        summary["output"] = args.output
    state.wait_for_everyone()
    return summary if state.is_main_process else None


__all__ = ["REPORT_FILE", "MineArguments", "mine"]
