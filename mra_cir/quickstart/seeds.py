"""Several seeds at once (`mra-cir quickstart`, the default run: seeds 0, 1, 2; or `--seeds ...`): one run per seed,
then one table of mean and spread per method and benchmark, and the margin of the MRA-trained model over the best
baseline on the headline metrics.

Writes `<output_dir>/seed_<S>/` (each a full quickstart run), `<output_dir>/seeds.json` and `<output_dir>/seeds.md`
(the Markdown table the README shows).
"""

from __future__ import annotations

import dataclasses
import json
import statistics
from pathlib import Path

from .arguments import DEFAULT_SEEDS, QuickstartArguments
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
    summary = {"seeds": seeds, "table": table, "margins": margins}
    if all("cirr_style_rephrased" in runs[s] for s in seeds):
        summary["cirr_style_r1"] = _r1_profile(runs, seeds, table)
    return summary


def _r1_profile(runs: dict[int, dict], seeds: list[int], table: dict) -> dict:
    """CIRR-style R@1 against the real benchmarks' profile: MRA-trained's mean over the best other method's, and over
    the target-caption ceiling (the backbone queried with the target's caption); plus MRA-trained on the agent's
    phrasing of the same queries."""

    def mean(who: str, variant: str) -> float:
        return round(statistics.fmean(runs[s]["cirr_style_rephrased"][who][variant]["R@1"] for s in seeds), 2)

    cells = table["cirr_style"]
    mra = cells["mra_trained"]["R@1"]["mean"]
    best = max((m for m in METHODS if m != "mra_trained"), key=lambda m: cells[m]["R@1"]["mean"])
    ceiling = mean("backbone", "target_caption")
    return {
        "mra_trained": mra,
        "best_other": best,
        "best_other_r1": cells[best]["R@1"]["mean"],
        "ratio_to_best_other": round(mra / max(cells[best]["R@1"]["mean"], 1e-9), 2),
        "target_caption_ceiling": ceiling,
        "fraction_of_ceiling": round(mra / max(ceiling, 1e-9), 2),
        "mra_trained_agent_phrasing": mean("mra_trained", "agent"),
    }


def markdown(summary: dict) -> str:
    """The summary as Markdown tables (mean ± std over the seeds), the CIRR-style benchmark first."""
    seeds = ", ".join(str(s) for s in summary["seeds"])
    if tuple(summary["seeds"]) == DEFAULT_SEEDS:
        command = "mra-cir quickstart"
    else:
        command = f"mra-cir quickstart --seeds {' '.join(str(s) for s in summary['seeds'])}"
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
    profile = summary.get("cirr_style_r1")
    if profile:
        lines.append(
            f"CIRR-style R@1: MRA-trained {profile['mra_trained']:.1f} is {profile['ratio_to_best_other']:.2f} x the "
            f"best other method ({profile['best_other'].replace('_', ' ')}, {profile['best_other_r1']:.1f}) and "
            f"{profile['fraction_of_ceiling']:.2f} x the target-caption ceiling ({profile['target_caption_ceiling']:.1f}: "
            f"the backbone queried with the target's own caption); on the same queries in the agent's phrasing "
            f"MRA-trained reaches {profile['mra_trained_agent_phrasing']:.1f}."
        )
    return "\n".join(lines).rstrip() + "\n"


def _run_one(args: QuickstartArguments) -> tuple[int, dict]:
    return args.seed, run_quickstart(args)


def run_seeds(args: QuickstartArguments) -> dict:
    """Run the quickstart for each of `args.seeds` (in `args.seed_workers` spawned processes side by side; each run is
    the same whichever process runs it) and write `seeds.json` and `seeds.md` under `args.output_dir`."""
    out = Path(args.output_dir)
    workers = min(args.seed_workers, len(args.seeds))
    jobs = [
        dataclasses.replace(
            args,
            seed=seed,
            seeds=[],
            output_dir=str(out / f"seed_{seed}"),
            show_progress=args.show_progress and workers == 1,
            window_workers=args.window_workers if workers == 1 else 1,
        )
        for seed in args.seeds
    ]
    for job in jobs:
        print(f"[quickstart] seed {job.seed} -> {job.output_dir}", flush=True)
    if workers <= 1:
        runs = dict(_run_one(job) for job in jobs)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            runs = dict(pool.map(_run_one, jobs))
    summary = summarize(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "seeds.json").write_text(json.dumps(summary, indent=2))
    table = markdown(summary)
    (out / "seeds.md").write_text(table)
    print()
    print(table)
    for name, margin in summary["margins"].items():
        print(
            f"{name}: mra_trained - {margin['best_baseline']} = {margin['margin']:+.2f} (spread {margin['spread']:.2f}; "
            f"per seed {margin['margin_per_seed']})"
        )
    profile = summary.get("cirr_style_r1")
    if profile:
        print(
            f"cirr_style/R@1: mra_trained {profile['mra_trained']:.1f} = {profile['ratio_to_best_other']:.2f} x "
            f"{profile['best_other']} and {profile['fraction_of_ceiling']:.2f} x the target-caption ceiling "
            f"({profile['target_caption_ceiling']:.1f}); on the agent's phrasing {profile['mra_trained_agent_phrasing']:.1f}"
        )
    print(f"\nsummary: {out / 'seeds.json'}\ntable:   {out / 'seeds.md'}")
    return summary


__all__ = ["HEADLINE", "markdown", "run_seeds", "summarize"]
