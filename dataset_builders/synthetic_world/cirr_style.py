"""The world's CIRR-style benchmark: multi-edit queries over image sets of 6, built the way CIRR (Liu et al., ICCV 2021)
was built, scored by the real CIRR evaluator on its official file layout (`export.export_cirr_layout`).

Each choice, with the real statistic it mimics (CIRR figures counted on the official rc2 val files):

- *Image sets of 6.* Every set holds 6 images: a reference, a target and 4 hard members built around that pair:
  up to 2 *partial edits* (the reference with a strict subset of the edits), *wrong edits* (one edit replaced by
  another) and one *text-only* scene (another scene holding what the text names). CIRR: every `img_set.members` has 6
  names; its sets are groups of visually similar NLVR2 images, which the partial and wrong edits stand for.
- *Several queries per set.* Beside the pair the set was built around, other ordered pairs of its members (never the
  text-only scene) whose difference is 1 to 3 edits become queries, up to `queries_per_set` (default 8). CIRR val:
  4,181 queries over 503 sets, 8.3 per set. Hence the gallery per query: 0.75 images here, 0.55 in CIRR val (2,297
  images); the gallery is the union of the sets.
- *Edits per text:* 1 to 3, mostly 2 (see [`.edits`]; pairs are accepted with weights that keep the mix near 1:2:1).
- *Held out:* the phrasings (`edits.CLAUSE_TEMPLATES`) and, in every query, a `HELD_OUT_PAIRS` combination in the
  reference or the target, as in the world's other benchmarks.
- *One ground truth:* no two gallery images show the same scene, so `target_hard` is the only correct image (CIRR
  scores `target_hard`).
- *Protocol:* CIRR's: the whole gallery ranked, the reference deleted, R@1/5/10/50; R_subset@1/2/3 on the same ranking
  restricted to the set's other 5 members.

Example:

```python
>>> from mra_cir.dataset_builders.synthetic_world.cirr_style import generate_cirr_style
>>> gallery, queries = generate_cirr_style(seed=0, num_queries=16)
>>> queries[0]["modification_text"], len(queries[0]["members"])
```
"""

from __future__ import annotations

import itertools
import json

import numpy as np

from .edits import diff_edits, hard_members, modification_text, sample_query, valid_scene
from .scenes import canonical, has_held_out_pair, render_scene

#: how often a secondary pair with 1, 2 or 3 edits is kept (keeps the mix of edits per text near 1:2:1)
PAIR_ACCEPTANCE = {1: 0.5, 2: 1.0, 3: 1.0}


def generate_cirr_style(
    seed: int, num_queries: int = 400, image_size: int = 32, queries_per_set: int = 8
) -> tuple[list[dict], list[dict]]:
    """The CIRR-style benchmark (see the module docstring): gallery rows and query rows, deterministic in `seed`.

    Args:
        seed (`int`): the benchmark's seed (its own random stream of the world's seed).
        num_queries (`int`, defaults to 400): queries (the gallery then has about 0.75 images per query).
        image_size (`int`, defaults to 32): side of the rendered images.
        queries_per_set (`int`, defaults to 8): at most this many queries per image set (CIRR val: 8.3).

    Returns:
        `(gallery, queries)`: gallery rows `{"id", "image", "scene_graph", "role", "set"}` (role: reference, target,
        partial_edit, wrong_edit, text_only, as built around the set's first pair); query rows `{"query_id",
        "reference_id", "target_id", "members", "set_id", "modification_text", "join_form", "num_edits", "edits",
        "reference_scene_graph", "target_scene_graph"}` (`members`: the 6 ids of the set, in gallery order).
    """
    if num_queries < 1 or queries_per_set < 1:
        raise ValueError(f"num_queries and queries_per_set must be >= 1, got {num_queries} and {queries_per_set}")
    rng = np.random.default_rng([seed, 14, 1])
    gallery: list[dict] = []
    queries: list[dict] = []
    seen: set[str] = set()
    while len(queries) < num_queries:
        reference, edits, target = sample_query(rng)
        hard = hard_members(rng, reference, edits, target)
        members = [("reference", reference), ("target", target), *hard]
        keys = [canonical(scene) for _, scene in members]
        if len(hard) != 4 or len(set(keys)) != 6 or seen.intersection(keys):
            continue  # another image of the gallery would show a member's scene: a false negative
        set_id = len(gallery) // 6
        rows = []
        for position in rng.permutation(6):
            role, scene = members[int(position)]
            rows.append(
                {
                    "id": f"set{set_id:04d}_{len(rows)}",
                    "image": render_scene(scene, image_size, rng),
                    "scene_graph": canonical(scene),
                    "role": role,
                    "set": set_id,
                }
            )
        gallery += rows
        seen.update(keys)
        for reference_id, target_id, pair_edits in _set_queries(rng, rows, edits, queries_per_set):
            if len(queries) == num_queries:
                break
            first = json.loads(next(r["scene_graph"] for r in rows if r["id"] == reference_id))
            text, form = modification_text(first, pair_edits, rng)
            queries.append(
                {
                    "query_id": f"cirr_q_{len(queries):05d}",
                    "reference_id": reference_id,
                    "target_id": target_id,
                    "members": [r["id"] for r in rows],
                    "set_id": set_id,
                    "modification_text": text,
                    "join_form": form,
                    "num_edits": len(pair_edits),
                    "edits": json.dumps(pair_edits, sort_keys=True),
                    "reference_scene_graph": canonical(first),
                    "target_scene_graph": next(r["scene_graph"] for r in rows if r["id"] == target_id),
                }
            )
    return gallery, queries


def _set_queries(rng: np.random.Generator, rows: list[dict], edits: list[dict], limit: int):
    """The queries of one set: the pair it was built around first, then other ordered pairs of its members (never the
    text-only scene) that differ by 1 to 3 edits and show a held-out pair, up to `limit`."""
    role = {r["id"]: r["role"] for r in rows}
    scene = {r["id"]: json.loads(r["scene_graph"]) for r in rows}
    reference = next(i for i, r in role.items() if r == "reference")
    target = next(i for i, r in role.items() if r == "target")
    yield reference, target, edits
    count = 1
    pairs = [
        p for p in itertools.permutations([i for i in role if role[i] != "text_only"], 2) if p != (reference, target)
    ]
    for index in rng.permutation(len(pairs)):
        if count == limit:
            return
        first, second = pairs[int(index)]
        pair_edits = diff_edits(scene[first], scene[second])
        if not pair_edits or not 1 <= len(pair_edits) <= 3 or not valid_scene(scene[second]):
            continue
        if not (has_held_out_pair(scene[first]) or has_held_out_pair(scene[second])):
            continue
        if rng.random() < PAIR_ACCEPTANCE[len(pair_edits)]:
            count += 1
            yield first, second, pair_edits


__all__ = ["PAIR_ACCEPTANCE", "generate_cirr_style"]
