"""The window sweep's table and plot (`mra-cir window-sweep --stages report`), from its `results.json`.

`window_sweep.md`: one row per window (and the untrained base), with the triplets used, the final training loss and
each benchmark's headline metrics; `window_sweep.png`: each benchmark's primary metric against the window, the base
model as a dashed line, the paper's window [51, 60] marked.
"""

from __future__ import annotations

from pathlib import Path

#: the columns of the table per benchmark (those the papers report)
TABLE_METRICS = {
    "fashioniq": ("average_R@10", "average_R@50"),
    "cirr": ("R@1", "R@5", "R@10", "R_subset@1"),
    "circo": ("mAP@5", "mAP@10", "mAP@25"),
}
PAPER_CHOICE = (51, 60)


#: the adaptive window's place in a sweep's window list (`--adaptive`; `mra_triplets.adaptive_window`)
ADAPTIVE = (0, 0)


def window_name(window) -> str:
    """The key of a window in `results.json` (`"51-60"`, or `"adaptive"`)."""
    return "adaptive" if tuple(window) == ADAPTIVE else f"{window[0]}-{window[1]}"


def window_label(window) -> str:
    """How tables and plots name a window (`"[51, 60]"`, or `"adaptive"`)."""
    return "adaptive" if tuple(window) == ADAPTIVE else f"[{window[0]}, {window[1]}]"


def _rows(results: dict, windows) -> list[tuple[str, dict]]:
    rows = [(window_label(w), results.get("windows", {}).get(window_name(w), {})) for w in windows]
    if results.get("base"):
        rows.insert(0, ("base (untrained)", results["base"]))
    return rows


def _fmt(value) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else "–"


def write_table(results: dict, windows, benchmarks: list[str], path: Path) -> Path:
    """`path` (Markdown): window | triplets | train loss | each benchmark's metrics (percent)."""
    header = ["window", "triplets", "train loss"]
    columns = [(b, m) for b in benchmarks for m in TABLE_METRICS.get(b, ())]
    header += [f"{b} {m}" for b, m in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in _rows(results, windows):
        metrics = entry.get("metrics", {})
        cells = [label, str(entry.get("triplets_used", "–")), _fmt(entry.get("train", {}).get("train_loss"))]
        cells += [_fmt(metrics.get(b, {}).get(m)) for b, m in columns]
        lines.append("| " + " | ".join(cells) + " |")
    incomplete = sorted({b for _, e in _rows(results, windows) for b, ok in e.get("complete", {}).items() if not ok})
    if incomplete:
        lines += [
            "",
            f"Subsets of {', '.join(incomplete)} (missing images or a query limit): not comparable to papers.",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_plot(results: dict, windows, benchmarks: list[str], path: Path) -> Path:
    """`path` (PNG): the primary metric of each benchmark against the window."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mra_cir.evaluation import EVALUATORS

    fig, axes = plt.subplots(1, len(benchmarks), figsize=(4.5 * len(benchmarks), 3.6), squeeze=False)
    labels = [window_label(w).replace(" ", "") for w in windows]
    for ax, benchmark in zip(axes[0], benchmarks):
        metric = EVALUATORS[benchmark].primary_metric
        values = [
            results.get("windows", {}).get(window_name(w), {}).get("metrics", {}).get(benchmark, {}).get(metric)
            for w in windows
        ]
        xs = list(range(len(windows)))
        ax.plot([x for x, v in zip(xs, values) if v is not None], [v for v in values if v is not None], "o-")
        base = results.get("base", {}).get("metrics", {}).get(benchmark, {}).get(metric)
        if base is not None:
            ax.axhline(base, linestyle="--", color="grey", label="base (untrained)")
            ax.legend(loc="best", fontsize=8)
        marked = PAPER_CHOICE in [tuple(w) for w in windows]
        if marked:
            ax.axvline([tuple(w) for w in windows].index(PAPER_CHOICE), color="tab:red", alpha=0.3, linewidth=6)
        ax.set_xticks(xs, labels)
        ax.set_xlabel("mining window [q1, q2]" + (" (red: the paper's)" if marked else ""))
        ax.set_ylabel(f"{benchmark} {metric} (%)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(results: dict, args, output: Path) -> list[Path]:
    """Write `window_sweep.md` and `window_sweep.png` under `output`; returns their paths."""
    benchmarks = sorted(
        {
            b
            for entry in [results.get("base", {}), *results.get("windows", {}).values()]
            for b in entry.get("metrics", {})
        }
    )
    paths = [write_table(results, args.window_list, benchmarks, output / "window_sweep.md")]
    if benchmarks:
        paths.append(write_plot(results, args.window_list, benchmarks, output / "window_sweep.png"))
    return paths


__all__ = ["ADAPTIVE", "TABLE_METRICS", "window_label", "window_name", "write_plot", "write_report", "write_table"]
