"""The quickstart's report: the printed tables, `results.json`'s content and `results.png`."""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from .arguments import QuickstartArguments
from .benchmarks import BENCHMARK_KEYS, METHODS

#: the benchmark the window ablation is scored on
ABLATION_BENCHMARK = "cirr_style"


def format_table(rows: dict[str, dict], title: str, keys: Sequence[str]) -> str:
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
    """The CIRR-style benchmark's recall@K per method (left), the CIRCO-style benchmark's mAP@K (middle) and the window
    ablation on the CIRR-style benchmark (right, when it ran) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benchmarks = results["benchmarks"]
    ablation = results.get("window_ablation") or {}
    panels = 3 if ablation else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    ax = axes[0][0]
    for name in METHODS:
        curve = benchmarks["cirr_style"]["curves"][name]
        ax.plot([int(k) for k in curve], list(curve.values()), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    ax.set_title(f"CIRR-style benchmark (seed {results['seed']})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax = axes[0][1]
    keys = BENCHMARK_KEYS["circo_style"]
    for name in METHODS:
        values = benchmarks["circo_style"]["methods"][name]
        ax.plot([int(k.split("@")[1]) for k in keys], [values[k] for k in keys], marker="o", label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("mAP@K (%)")
    ax.set_title("CIRCO-style benchmark")
    ax.grid(alpha=0.3)
    if ablation:
        ax = axes[0][2]
        names = list(ablation)
        x = range(len(names))
        for offset, key in zip((-0.2, 0.0, 0.2), ("R@1", "R@10", "Rsubset@1")):
            ax.bar([i + offset for i in x], [ablation[n][key] for n in names], width=0.2, label=key)
        ax.set_xticks(list(x), [f"{n}\n{ablation[n]['window_in_pool']}" for n in names], fontsize=8)
        ax.set_ylabel("%")
        ax.set_title("window ablation, CIRR-style (same triplets and steps)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def results_dict(
    args: QuickstartArguments,
    evaluations: dict,
    world,
    model,
    stage1: dict,
    main: dict,
    ablation: dict,
    timings: dict,
) -> dict:
    """The content of `results.json`: per benchmark, each method's metrics and recall curve (`benchmarks`: the
    CIRR-style one first), the settings, stage 1, the triplet build, the window ablation, timings and the
    environment."""
    return {
        "benchmarks": {
            benchmark: {
                "methods": {m: {k: evaluations[benchmark][m][k] for k in keys} for m in METHODS},
                "curves": {m: evaluations[benchmark][m]["curve"] for m in METHODS},
                "queries": len(world.benchmarks[benchmark][1]),
                "gallery_size": len(world.benchmarks[benchmark][0]),
            }
            for benchmark, keys in BENCHMARK_KEYS.items()
        },
        "seed": args.seed,
        "settings": {
            **asdict(args),
            "window_in_pool": main["window_in_pool"],
            "model": {
                "vision_hidden_size": model.config.vision_config.hidden_size,
                "vit_layers": model.config.vision_config.num_hidden_layers,
                "hidden_size": model.config.qformer_config.hidden_size,
                "qformer_layers": model.config.qformer_config.num_hidden_layers,
                "query_tokens": model.config.num_query_tokens,
                "embed_dim": model.config.image_text_hidden_size,
                "patch_size": model.config.vision_config.patch_size,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "world": world.settings,
        },
        "backbone": {k: v for k, v in stage1.items() if k != "arguments"},
        "triplets": {"budget_per_window": args.num_triplets, "builder_summary": _jsonable(main["summary"])},
        "window_ablation": ablation if args.ablation else {},
        "window_ablation_note": None if args.ablation else "skipped (run with --ablation)",
        "timings_s": timings,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.num_threads,
            "window_workers": args.window_workers,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        },
    }


def benchmark_tables(benchmarks: dict, suffix: str = "") -> str:
    """The tables of every benchmark (CIRR-style first), titled with their sizes."""
    titles = {
        "cirr_style": "CIRR-style benchmark",
        "circo_style": "CIRCO-style benchmark",
        "single_edit": "single-edit benchmark (a diagnostic)",
    }
    blocks = []
    for benchmark, keys in BENCHMARK_KEYS.items():
        entry = benchmarks[benchmark]
        title = f"{titles[benchmark]} ({entry['queries']} queries, gallery {entry['gallery_size']}{suffix})"
        blocks.append(format_table(entry["methods"], title, keys=keys))
    return "\n\n".join(blocks)


def print_report(results: dict, args: QuickstartArguments, out: Path) -> None:
    """The tables and the paths of the outputs, on stdout."""
    print()
    print(benchmark_tables(results["benchmarks"], f", seed {args.seed}"))
    if args.ablation:
        print()
        title = f"Window ablation on the CIRR-style benchmark ({args.num_triplets} triplets, {args.train_steps} steps)"
        print(format_table(results["window_ablation"], title, keys=BENCHMARK_KEYS[ABLATION_BENCHMARK]))
    rephrased = results.get("cirr_style_rephrased")
    if rephrased:
        print(
            f"\nCIRR-style, the same queries rephrased (R@1 / R@10): the backbone queried with the target's caption "
            f"{_pair(rephrased['backbone']['target_caption'])} (the ceiling); MRA-trained on the agent's phrasing "
            f"{_pair(rephrased['mra_trained']['agent'])} (held-out phrasing: "
            f"{_pair(results['benchmarks']['cirr_style']['methods']['mra_trained'])})"
        )
    print(f"\nresults: {out / 'results.json'}\nplot:    {out / 'results.png'}\nmodel:   {out / 'mra_model'}")
    print(f"total time: {results['timings_s']['total']:.0f} s")


def _pair(metrics: dict) -> str:
    return f"{metrics['R@1']:.1f} / {metrics['R@10']:.1f}"


def _jsonable(data):
    return json.loads(json.dumps(data, default=str))


__all__ = ["ABLATION_BENCHMARK", "benchmark_tables", "format_table", "plot_results", "print_report", "results_dict"]
