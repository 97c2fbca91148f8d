"""The CIRR-style benchmark re-phrased: the same queries, galleries and ground truths with other texts.

Two questions a composed query's failures raise, answered on the benchmark itself:

- **Does the phrasing limit it?** `agent`: each query's text rewritten in the scene agent's phrasing (the phrasing of
  the training triplets: [`~mra_cir.dataset_builders.synthetic_world.scene_agent.scene_changes`] then `phrase`), instead
  of the benchmark's held-out one. A composed query that wins much more here reads only the phrasings it was trained on.
- **What can the backbone tell apart?** `target_caption`: the target's full caption as a text-only query (the query
  that knows the answer's description): the ceiling of any query made of the backbone's text features.

Each variant is written in CIRR's official layout next to the benchmark and scored by the same evaluator.
"""

from __future__ import annotations

import json
from pathlib import Path

#: variant -> the query mode it is scored with
VARIANTS = {"agent": "composed", "target_caption": "text"}


def agent_phrasing(reference: dict, target: dict) -> str:
    """The scene agent's error-free modification text for reference -> target (its first phrasing of each change)."""
    from mra_cir.dataset_builders.synthetic_world.agent_wording import phrase, scene_changes
    from mra_cir.dataset_builders.synthetic_world.scene_agent import NO_CHANGE

    changes = scene_changes(reference, target)
    return " and ".join(phrase(change, 0) for change in changes) if changes else NO_CHANGE


def export_variants(world, folder: str | Path) -> dict[str, Path]:
    """Write the `VARIANTS` of the world's CIRR-style benchmark under `folder/<variant>`: variant -> folder."""
    from mra_cir.dataset_builders.synthetic_world import pool_caption
    from mra_cir.dataset_builders.synthetic_world.export import export_cirr_layout

    gallery, queries = world.benchmarks["cirr_style"]
    columns = ["reference_id", "target_id", "members", "set_id", "reference_scene_graph", "target_scene_graph"]
    rows = queries.select_columns(columns).to_list()
    texts = {
        "agent": [
            agent_phrasing(json.loads(r["reference_scene_graph"]), json.loads(r["target_scene_graph"])) for r in rows
        ],
        "target_caption": [pool_caption(json.loads(r["target_scene_graph"]), 0) for r in rows],
    }
    out = {}
    for variant, variant_texts in texts.items():
        kept = [{**{k: r[k] for k in columns[:4]}, "modification_text": text} for r, text in zip(rows, variant_texts)]
        out[variant] = export_cirr_layout(gallery, kept, Path(folder) / variant)
    return out


def score_variants(model, processor, folders: dict[str, Path], cache_dir: str | Path) -> dict[str, dict]:
    """Each variant scored with its query mode by the CIRR evaluator: variant -> metrics (no curve)."""
    from .benchmarks import evaluate_method

    scores = {}
    for variant, folder in folders.items():
        metrics = evaluate_method(model, processor, "cirr_style", folder, VARIANTS[variant], cache_dir)
        scores[variant] = {k: v for k, v in metrics.items() if k != "curve"}
    return scores


__all__ = ["VARIANTS", "agent_phrasing", "export_variants", "score_variants"]
