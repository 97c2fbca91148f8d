"""The quickstart's benchmarks: the world's benchmarks exported in official layouts, scored by `mra_cir.evaluation`.

Nothing here ranks or scores by itself: the world's benchmark is written in CIRCO's layout
([`~mra_cir.dataset_builders.synthetic_world.export`]) and every method is an evaluator run (`CircoEvaluator` with a
`query_mode`), the code `mra-cir evaluate` runs on the real benchmarks. The gallery features are cached per model
(`cache_dir`), so the baselines of one model encode the gallery once.

Methods (the zero-shot CIR literature's baselines, then the method): `image_only` (the reference's image tokens),
`text_only` (the modification text's features), `composed_untrained` (the stage-1 model's composed query) and
`mra_trained` (the composed query after MRA training).
"""

from __future__ import annotations

from pathlib import Path

from mra_cir.evaluation.circo import CircoEvaluator
from mra_cir.evaluation.metrics import recall_at_k

#: ranks at which the recall curve of `results.png` is drawn
CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50)
#: quickstart method -> how its queries are made (`mra_cir.modeling_mra_cir.retrieval.QUERY_MODES`)
QUERY_MODES = {"image_only": "image", "text_only": "text", "composed_untrained": "composed", "mra_trained": "composed"}
#: images or queries per forward pass when scoring the world (one batch holds every query of the default world)
BATCH_SIZE = 256


def export_single_edit(world, folder: str | Path) -> Path:
    """The world's single-edit benchmark in CIRCO's layout under `folder` (see `synthetic_world.export`)."""
    from mra_cir.dataset_builders.synthetic_world.export import export_circo_layout

    queries = world.queries.select_columns(["reference_id", "target_ids", "modification_text"]).to_list()
    return export_circo_layout(world.gallery, queries, folder)


def single_edit_evaluator(folder: str | Path, mode: str, cache_dir: str | Path, show_progress: bool = False):
    """The `CircoEvaluator` of the exported single-edit benchmark (reference excluded, as the benchmark defines)."""
    return CircoEvaluator(
        str(folder),
        split="val",
        batch_size=BATCH_SIZE,
        top_k=max(CURVE_KS),
        cache_dir=str(cache_dir),
        exclude_reference=True,
        query_mode=mode,
        show_progress=show_progress,
    )


def evaluate_single_edit(
    model, processor, folder: str | Path, cache_dir: str | Path, modes: tuple[str, ...] = ("composed",)
) -> dict[str, dict]:
    """Score `model` on the exported single-edit benchmark with each query mode.

    Returns:
        `dict`: mode -> `{"R@1", "R@5", "R@10", "mAP@10", "curve": {K: R@K}}` in percent (recall counts every ground
        truth, as the benchmark's several renderings of the target are all correct).
    """
    out = {}
    for mode in modes:
        evaluator = single_edit_evaluator(folder, mode, cache_dir)
        metrics = evaluator(model, processor)
        rows = evaluator.rows("circo")
        rankings = [evaluator.rankings["circo"][row["query_id"]] for row in rows]
        curve = recall_at_k(rankings, [row["target_ids"] for row in rows], ks=CURVE_KS)
        out[mode] = {
            "R@1": 100 * curve[1],
            "R@5": 100 * curve[5],
            "R@10": 100 * curve[10],
            "mAP@10": metrics["mAP@10"],
            "curve": {str(k): 100 * v for k, v in curve.items()},
        }
    return out


__all__ = ["CURVE_KS", "QUERY_MODES", "evaluate_single_edit", "export_single_edit", "single_edit_evaluator"]
