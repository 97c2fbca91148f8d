"""Several seeds at once (`mra-cir quickstart --seeds 0 1 2`): one run per seed, then one table of mean and spread per
method and benchmark, and the margin of the MRA-trained model over the best baseline on the headline metrics.

Writes `<output_dir>/seed_<S>/` (each a full quickstart run), `<output_dir>/seeds.json` and `<output_dir>/seeds.md`
(the Markdown table the README shows).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from .arguments import QuickstartArguments
from .benchmarks import BENCHMARK_KEYS, METHODS
from .pipeline import run_quickstart

#: the metrics the margin is reported on (the issue's check: R@1 and R@10 on the CIRR-style, mAP@10 on the CIRCO-style)
HEADLINE = (("cirr_style", "R@1"), ("cirr_style", "R@10"), ("circo_style", "mAP@10"))
TITLES = {"cirr_style": "CIRR-style", "circo_style": "CIRCO-style", "single_edit": "single-edit (diagnostic)"}


def summarize(runs: dict[int, dict]) -> dict:
    """Mean and sample standard deviation over the seeds of every method's metrics on every benchmark, and the margin
    of `mra_trained` over the best other method on the `HEADLINE` metrics.

    Args:
        runs (`dict[int, dict]`): seed -> that run's `results.json` content.
    """
    seeds = sorted(runs)
    table: dict = {}
    for benchmark, keys in BENCHMARK_KEYS.items():
        table[benchmark] = {}
        for method in METHODS:
            table[benchmark][method] = {}
            for key in keys:
                values = [runs[s]["benchmarks"][benchmark]["methods"][method][key] for s in seeds]
                spread = statistics.stdev(values) if len(values) > 1 else 0.0
                table[benchmark][method][key] = {"mean": round(statistics.fmean(values), 2), "std": round(spread, 2)}
    margins = {}
    for benchmark, key in HEADLINE:
        cells = table[benchmark]
        best = max((m for m in METHODS if m != "mra_trained"), key=lambda m: cells[m][key]["mean"])
        per_seed = [
            runs[s]["benchmarks"][benchmark]["methods"]["mra_trained"][key]
            - max(runs[s]["benchmarks"][benchmark]["methods"][m][key] for m in METHODS if m != "mra_trained")
            for s in seeds
        ]
        margin = cells["mra_trained"][key]["mean"] - cells[best][key]["mean"]
        spread = max(cells["mra_trained"][key]["std"], cells[best][key]["std"])
        margins[f"{benchmark}/{key}"] = {
            "best_baseline": best,
            "margin": round(margin, 2),
            "spread": round(spread, 2),
            "margin_exceeds_spread": margin > spread,
            "wins_on_every_seed": all(d > 0 for d in per_seed),
            "margin_per_seed": [round(d, 2) for d in per_seed],
        }
    return {"seeds": seeds, "table": table, "margins": margins}


def markdown(summary: dict, fast: bool) -> str:
    """The summary as Markdown tables (mean ± std over the seeds), the CIRR-style benchmark first."""
    seeds = ", ".join(str(s) for s in summary["seeds"])
    command = f"mra-cir quickstart {'--fast ' if fast else ''}--seeds {' '.join(str(s) for s in summary['seeds'])}"
    lines = [f"Seeds {seeds}; mean ± std, percent; `{command}`.", ""]
    for benchmark, keys in BENCHMARK_KEYS.items():
        lines += [
            f"**{TITLES[benchmark]}**",
            "",
            "| method | " + " | ".join(keys) + " |",
            "|---" * (len(keys) + 1) + "|",
        ]
        for method in METHODS:
            cells = summary["table"][benchmark][method]
            row = [f"{cells[k]['mean']:.1f} ± {cells[k]['std']:.1f}" for k in keys]
            name = method.replace("_", " ")
            if method == "mra_trained":
                row, name = [f"**{c}**" for c in row], f"**{name}**"
            lines.append(f"| {name} | " + " | ".join(row) + " |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def run_seeds(args: QuickstartArguments) -> dict:
    """Run the quickstart for each of `args.seeds` and write `seeds.json` and `seeds.md` under `args.output_dir`."""
    out = Path(args.output_dir)
    runs = {}
    for seed in args.seeds:
        one = dataclasses.replace(args, seed=seed, seeds=[], output_dir=str(out / f"seed_{seed}"))
        print(f"[quickstart] seed {seed} -> {one.output_dir}", flush=True)
        runs[seed] = run_quickstart(one)
    summary = summarize(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2))
    table = markdown(summary, args.fast)
    (out / "seeds.md").write_text(table)
    print()
    print(table)
    for name, margin in summary["margins"].items():
        print(
            f"{name}: mra_trained - {margin['best_baseline']} = {margin['margin']:+.2f} (spread {margin['spread']:.2f}; "
            f"per seed {margin['margin_per_seed']})"
        )
    print(f"\nsummary: {out / 'seeds.json'}\ntable:   {out / 'seeds.md'}")
    return summary


__all__ = ["HEADLINE", "markdown", "run_seeds", "summarize"]
