"""The quickstart's benchmarks: the world's benchmarks exported in official layouts, scored by `mra_cir.evaluation`.

Nothing here ranks or scores by itself: each benchmark of the world is written in the file layout of the real benchmark
it imitates ([`~mra_cir.dataset_builders.synthetic_world.export`]: the CIRR-style one in CIRR's, the CIRCO-style and
the single-edit ones in CIRCO's) and every method is an evaluator run (`CirrEvaluator` / `CircoEvaluator` with a
`query_mode`), the code `mra-cir evaluate` runs on the real benchmarks. Gallery features are cached per model
(`cache_dir`), so the baselines of one model encode each gallery once.

Methods, the zero-shot CIR literature's baselines then the method: `image_only` (the reference's image tokens),
`text_only` (the modification text's features), `image_text_fusion` (late fusion: the sum of the normalised image and
text embeddings, token by token), `composed_untrained` (the stage-1 model's composed query) and `mra_trained` (the
composed query after MRA training).
"""

from __future__ import annotations

from pathlib import Path

from mra_cir.evaluation.circo import CircoEvaluator
from mra_cir.evaluation.cirr import CirrEvaluator
from mra_cir.evaluation.metrics import recall_at_k

METHODS = ("image_only", "text_only", "image_text_fusion", "composed_untrained", "mra_trained")
#: quickstart method -> how its queries are made (`mra_cir.retrieval.encoding.QUERY_MODES`)
QUERY_MODES = {
    "image_only": "image",
    "text_only": "text",
    "image_text_fusion": "image_text_fusion",
    "composed_untrained": "composed",
    "mra_trained": "composed",
}
#: the world's benchmarks in the order they are reported (the CIRR-style one leads) and their metrics
BENCHMARK_KEYS = {
    "cirr_style": ("R@1", "R@5", "R@10", "R@50", "Rsubset@1", "Rsubset@2", "Rsubset@3"),
    "circo_style": ("mAP@5", "mAP@10", "mAP@25", "mAP@50"),
    "single_edit": ("R@1", "R@5", "R@10", "mAP@10"),
}
#: ranks at which the recall curves of `results.png` are drawn
CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50)
#: images or queries per forward pass when scoring the world
BATCH_SIZE = 256


def export_benchmarks(world, folder: str | Path) -> dict[str, Path]:
    """Every benchmark of `world` in its official layout under `folder/<benchmark>`: benchmark -> folder."""
    from mra_cir.dataset_builders.synthetic_world.export import export_circo_layout, export_cirr_layout

    folder = Path(folder)
    out = {}
    for name, (gallery, queries) in world.benchmarks.items():
        if name == "cirr_style":
            rows = queries.select_columns(["reference_id", "target_id", "members", "set_id", "modification_text"])
            out[name] = export_cirr_layout(gallery, rows.to_list(), folder / name)
        elif name == "circo_style":
            rows = [
                {**row, "target_ids": row.pop("gt_ids")}
                for row in queries.select_columns(
                    ["reference_id", "gt_ids", "modification_text", "semantic_aspects"]
                ).to_list()
            ]
            out[name] = export_circo_layout(gallery, rows, folder / name)
        else:
            rows = queries.select_columns(["reference_id", "target_ids", "modification_text"]).to_list()
            out[name] = export_circo_layout(gallery, rows, folder / name)
    return out


def evaluator(benchmark: str, folder: str | Path, mode: str, cache_dir: str | Path):
    """The evaluator of an exported benchmark: CIRR's for the CIRR-style one, CIRCO's for the others (the single-edit
    diagnostic deletes the reference from the rankings, as it always has; CIRCO's protocol keeps it)."""
    common = dict(
        split="val", batch_size=BATCH_SIZE, top_k=max(CURVE_KS), cache_dir=str(cache_dir), query_mode=mode,
        show_progress=False,
    )  # fmt: skip
    if benchmark == "cirr_style":
        return CirrEvaluator(str(folder), **common)
    return CircoEvaluator(str(folder), exclude_reference=benchmark == "single_edit", **common)


def evaluate_method(
    model, processor, benchmark: str, folder: str | Path, mode: str, cache_dir: str | Path, by_type: bool = False
) -> dict:
    """One method on one exported benchmark: its metrics (`BENCHMARK_KEYS`, percent) and its recall curve (and, with
    `by_type`, its scores per transformation type)."""
    run = evaluator(benchmark, folder, mode, cache_dir)
    metrics = run(model, processor)
    key = run.benchmark
    rows = run.rows(key)
    rankings = [run.rankings[key][row["query_id"]] for row in rows]
    truths = [row["target_ids"] for row in rows]
    curve = recall_at_k(rankings, truths, ks=CURVE_KS)  # the reference is already out of CIRR's rankings
    if benchmark == "cirr_style":
        values = {k.replace("R_subset", "Rsubset"): v for k, v in metrics.items()}
    elif benchmark == "circo_style":
        values = dict(metrics)
    else:
        values = {"R@1": 100 * curve[1], "R@5": 100 * curve[5], "R@10": 100 * curve[10], "mAP@10": metrics["mAP@10"]}
    out = {k: round(values[k], 2) for k in BENCHMARK_KEYS[benchmark]}
    out["curve"] = {str(k): round(100 * v, 2) for k, v in curve.items()}
    if by_type and benchmark in ("cirr_style", "circo_style"):
        out["by_type"] = _by_type(benchmark, rows, rankings)
    return out


def _by_type(benchmark: str, rows: list[dict], rankings: list) -> dict:
    """Per transformation type (primary type of the query's text, the lexical tagger; `mra_cir.evaluation.by_type`):
    queries and R@1/R@10 (CIRR-style) or mAP@10 (CIRCO-style), rounded."""
    from mra_cir.dataset_builders.mra_triplets.transformation_types import TYPES, tag_types
    from mra_cir.evaluation.by_type import circo_by_type, cirr_by_type

    labels = [tag_types(row["text"]) for row in rows]
    if benchmark == "cirr_style":
        table, keys = cirr_by_type(rows, rankings, labels, order=TYPES), ("R@1", "R@10")
    else:
        table, keys = circo_by_type(rows, rankings, labels, order=TYPES), ("mAP@10",)
    return {
        split: {t: {"queries": g["queries"], **{k: round(g[k], 2) for k in keys}} for t, g in table[split].items()}
        for split in ("types", "any")
    }


def evaluate_methods(
    model, processor, folders: dict[str, Path], cache_dir: str | Path, methods: tuple[str, ...], by_type: bool = False
) -> dict[str, dict[str, dict]]:
    """`methods` (names of `METHODS`, all made by `model`) on every exported benchmark: benchmark -> method ->
    metrics (see [`evaluate_method`])."""
    return {
        benchmark: {
            method: evaluate_method(model, processor, benchmark, folder, QUERY_MODES[method], cache_dir, by_type)
            for method in methods
        }
        for benchmark, folder in folders.items()
    }


__all__ = [
    "BENCHMARK_KEYS",
    "CURVE_KS",
    "METHODS",
    "QUERY_MODES",
    "evaluate_method",
    "evaluate_methods",
    "evaluator",
    "export_benchmarks",
]
