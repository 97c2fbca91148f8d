"""The world's single-edit benchmark (a labelled diagnostic): every query asks for ONE attribute change.

CIRCO-style queries (reference id, modification text, *all* ground-truth target ids in the gallery). The target is the
reference with one attribute of one object changed (colour, shape or size). The gallery holds, per query, the
reference, one or two renderings of the target, distractors that share the reference's other attributes (the
reference with a *different* single edit) and distractors that match the text but not the reference (the changed
object in another scene). Each query has a held-out (shape, colour) pair in its reference or its target and a
held-out phrasing (`BENCHMARK_TEMPLATES`).

It was the quickstart's first benchmark. Real zero-shot benchmarks describe several differences per text, and here
the image alone nearly finds the target (its near twins fill the gallery): it stays as a diagnostic of one-attribute
precision, beside the CIRR-style and CIRCO-style benchmarks that lead the results.
"""

from __future__ import annotations

import json

import numpy as np

from .scenes import (
    apply_edit,
    benchmark_text,
    canonical,
    has_held_out_pair,
    possible_edits,
    render_scene,
    sample_scene,
)


def generate_benchmark(
    seed: int,
    num_queries: int,
    image_size: int = 32,
    reference_distractors: int = 3,
    text_distractors: int = 3,
    held_out: bool = True,
) -> tuple[list[dict], list[dict]]:
    """The benchmark's gallery rows and query rows (see the module docstring for the construction).

    Returns:
        `(gallery, queries)`: gallery rows `{"id", "image", "scene_graph", "role"}` (role: reference, target,
        reference_distractor, text_distractor) and query rows `{"query_id", "reference_id", "modification_text",
        "target_ids", "edit", "reference_scene_graph", "target_scene_graph"}`; `target_ids` are *all* gallery images
        whose scene graph equals the target's (the reference never counts). `held_out=False` (a diagnostic, not the
        benchmark) draws every scene like the pool, without `HELD_OUT_PAIRS`, keeping the held-out phrasings.
    """
    mode = "allow" if held_out else "never"
    rng = np.random.default_rng([seed, 2])
    gallery: list[dict] = []
    queries: list[dict] = []

    def add(graph: dict, role: str) -> str:
        gid = f"gal_{len(gallery):05d}"
        gallery.append(
            {"id": gid, "image": render_scene(graph, image_size, rng), "scene_graph": canonical(graph), "role": role}
        )
        return gid

    for q in range(num_queries):
        while True:
            reference = sample_scene(rng, held_out=mode, unique_shapes=True)
            edits = [
                e for e in possible_edits(reference) if held_out or not has_held_out_pair(apply_edit(reference, e))
            ]
            edit = edits[int(rng.integers(len(edits)))]
            target = apply_edit(reference, edit)
            if has_held_out_pair(reference) or has_held_out_pair(target) or not held_out:
                break
        reference_id = add(reference, "reference")
        for _ in range(1 + int(rng.random() < 0.3)):
            add(target, "target")
        others = [e for e in edits if canonical(apply_edit(reference, e)) != canonical(target)]
        for index in rng.permutation(len(others))[:reference_distractors]:
            add(apply_edit(reference, others[int(index)]), "reference_distractor")
        changed = target["objects"][edit["object"]]
        for _ in range(text_distractors):
            while True:
                scene = sample_scene(rng, held_out=mode, unique_shapes=True)
                slot = int(rng.integers(len(scene["objects"])))
                if any(o["shape"] == changed["shape"] for j, o in enumerate(scene["objects"]) if j != slot):
                    continue
                scene["objects"][slot] = {**changed, "position": scene["objects"][slot]["position"]}
                if canonical(scene) != canonical(target):
                    break
            add(scene, "text_distractor")
        queries.append(
            {
                "query_id": f"q_{q:05d}",
                "reference_id": reference_id,
                "modification_text": benchmark_text(reference, edit, int(rng.integers(2))),
                "edit": json.dumps(edit, sort_keys=True),
                "reference_scene_graph": canonical(reference),
                "target_scene_graph": canonical(target),
            }
        )
    by_graph: dict[str, list[str]] = {}
    for row in gallery:
        by_graph.setdefault(row["scene_graph"], []).append(row["id"])
    for query in queries:
        query["target_ids"] = [g for g in by_graph[query["target_scene_graph"]] if g != query["reference_id"]]
    return gallery, queries
