"""`mra-cir mine`: image features in, (reference, target, rank, score) pairs out, as a `datasets.Dataset`.

Each reference's target is drawn from its similarity ranks `q1..q2` ([`mra_cir.dataset_builders.mra_triplets.mining.sample_rank_window`]).
Under `accelerate launch` every process mines a contiguous slice of the references against all keys; the slices are
gathered and merged in order by the main process, so the result does not depend on the number of processes.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

REPORT_FILE = "mining_report.json"


@dataclass
class MineArguments:
    features: str = field(metadata={"help": "An `extract_image_features` output directory (manifest + shards)."})
    output: str = field(metadata={"help": "Where to save the pairs dataset (`datasets.Dataset.save_to_disk`)."})
    q1: int = field(default=51, metadata={"help": "First rank of the window (1-based, after self and duplicates)."})
    q2: int = field(default=60, metadata={"help": "Last rank of the window (inclusive)."})
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
            elif key in ("window_agreement", "recall_at_q2"):
                continue
            else:
                stats[key] = stats.get(key, 0) + value
    checked = [p["stats"] for p in parts if "window_agreement" in p["stats"]]
    if checked:
        total = sum(s["window_check_sample"] for s in checked)
        stats["window_agreement"] = sum(s["window_agreement"] * s["window_check_sample"] for s in checked) / total
        stats["recall_at_q2"] = sum(s["recall_at_q2"] * s["window_check_sample"] for s in checked) / total
    return {"pairs": pairs, "too_few": too_few, "stats": stats}


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(MineArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)

    import datasets

    from mra_cir.dataset_builders.mra_triplets.image_features import distributed_state, load_image_features
    from mra_cir.dataset_builders.mra_triplets.mining import mining_query_block_size, sample_rank_window, slice_bounds

    state = distributed_state()
    loaded = load_image_features(args.features)
    if len(loaded) == 0:
        print(f"mra-cir mine: {args.features} holds no image features", file=sys.stderr)
        return 1
    features = loaded.features.to(args.device or state.device)
    start, stop = slice_bounds(
        len(loaded), state.num_processes, state.process_index, align=mining_query_block_size(features)
    )
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
        print(json.dumps(summary))
    state.wait_for_everyone()
    return 0


if __name__ == "__main__":
    sys.exit(main())
