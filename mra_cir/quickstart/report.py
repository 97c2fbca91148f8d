"""The quickstart's report: the printed tables, `results.json`'s content and `results.png`."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from .arguments import METHODS, METRIC_KEYS, QuickstartArguments
from .stages import EMBED_DIM


def format_table(rows: dict[str, dict], title: str, keys: Sequence[str] = METRIC_KEYS) -> str:
    """`rows` (name -> {key: number}) as a fixed-width table under `title`; floats with one decimal, ints as they are."""
    width = max(len(name) for name in rows) + 2
    columns = [max(9, len(k) + 2) for k in keys]
    lines = [title, "method".ljust(width) + "".join(k.rjust(c) for k, c in zip(keys, columns))]
    for name, values in rows.items():
        cells = (
            f"{values[k]:{c}d}" if isinstance(values[k], int) else f"{values[k]:{c}.1f}" for k, c in zip(keys, columns)
        )
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def plot_results(results: dict, path: Path) -> None:
    """Recall@K curves per method (left) and the window ablation (right) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ablation = results.get("window_ablation") or {}
    fig, axes = plt.subplots(1, 2 if ablation else 1, figsize=(11 if ablation else 6, 4), squeeze=False)
    ax = axes[0][0]
    for name in METHODS:
        curve = results["curves"][name]
        ax.plot([int(k) for k in curve], list(curve.values()), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    ax.set_title(f"synthetic CIR benchmark (seed {results['seed']})")
    ax.grid(alpha=0.3)
    ax.legend()
    if ablation:
        ax = axes[0][1]
        names = list(ablation)
        x = range(len(names))
        for offset, key in zip((-0.2, 0.0, 0.2), ("R@1", "R@10", "mAP@10")):
            ax.bar([i + offset for i in x], [ablation[n][key] for n in names], width=0.2, label=key)
        ax.set_xticks(list(x), [f"{n}\n{ablation[n]['window_in_pool']}" for n in names], fontsize=8)
        ax.set_ylabel("%")
        ax.set_title("mining window ablation (same triplets and steps)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def rounded_metrics(result: dict) -> dict:
    """The table's metrics of one evaluation, rounded to two decimals."""
    return {k: round(result[k], 2) for k in METRIC_KEYS}


def results_dict(
    args: QuickstartArguments, evaluations: dict, world, model, stage1: dict, main: dict, ablation: dict, timings: dict
) -> dict:
    """The content of `results.json`: per-method metrics and curves, the settings, stage 1, the triplet build, the
    window ablation, timings and the environment."""
    return {
        "methods": {name: rounded_metrics(evaluations[name]) for name in METHODS},
        "curves": {name: evaluations[name]["curve"] for name in METHODS},
        "seed": args.seed,
        "settings": {
            **asdict(args),
            "window_in_pool": main["window_in_pool"],
            "model": {
                "hidden_size": args.hidden_size,
                "vit_layers": args.num_layers,
                "qformer_layers": args.qformer_layers or args.num_layers,
                "query_tokens": args.num_query_tokens,
                "embed_dim": EMBED_DIM,
                "patch_size": args.patch_size,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "world": world.settings,
            "gallery_size": len(world.gallery),
        },
        "stage1": {
            **{k: v for k, v in stage1.items() if k != "arguments"},
            "batch_size": stage1["arguments"]["batch_size"],
        },
        "triplets": {"budget_per_window": args.num_triplets, "builder_summary": _jsonable(main["summary"])},
        "window_ablation": ablation if args.ablation else {},
        "window_ablation_note": None if args.ablation else "skipped (--fast or --ablation false)",
        "timings_s": timings,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.num_threads,
            "window_workers": args.window_workers,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        },
    }


def print_report(results: dict, args: QuickstartArguments, world, out: Path) -> None:
    """The tables and the paths of the outputs, on stdout."""
    print()
    print(format_table(results["methods"], f"Synthetic zero-shot CIR benchmark ({len(world.queries)} queries, "
                       f"gallery {len(world.gallery)}, seed {args.seed})"))  # fmt: skip
    if args.ablation:
        print()
        ablation = results["window_ablation"]
        print(format_table(ablation, f"Window ablation ({args.num_triplets} triplets, {args.train_steps} steps each)"))
    else:
        print("\nwindow ablation: skipped (--fast or --ablation false)")
    print(f"\nresults: {out / 'results.json'}\nplot:    {out / 'results.png'}\nmodel:   {out / 'mra_model'}")
    print(f"total time: {results['timings_s']['total']:.0f} s")


def _jsonable(data):
    return json.loads(json.dumps(data, default=str))


__all__ = ["format_table", "plot_results", "print_report", "results_dict", "rounded_metrics"]
