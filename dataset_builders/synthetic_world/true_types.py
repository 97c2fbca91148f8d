"""The true transformation types of the world's pairs, read off their scene graphs: the ground truth the lexical tagger
([`~mra_cir.dataset_builders.mra_triplets.transformation_types`]) is measured against, and the world's own split of
queries and triplets by type.

Mapping (the tagger's type names): a colour change -> `color`; a size change -> `size`; a shape change, alone or with
other changes of the same object ("replace the red circle with a blue square": another object) -> `shape`; an added
or removed object -> `added` / `removed`; a moved object or two swapped ones -> `position`; the background -> `background`.
The world has no material, count, style or other change.
"""

from __future__ import annotations

import json

import numpy as np

from .agent_wording import scene_changes
from .edits import modification_text, sample_query

#: edit kind (benchmark edits and the scene agent's change records) -> transformation type
KIND_TYPES = {
    "color": "color",
    "shape": "shape",
    "replace": "shape",
    "size": "size",
    "add": "added",
    "remove": "removed",
    "position": "position",
    "move": "position",
    "background": "background",
}


def edit_types(edits: list[dict] | str) -> list[str]:
    """The types of a benchmark query's `edits` (a list or its JSON string), each once, in the edits' order."""
    edits = json.loads(edits) if isinstance(edits, str) else edits
    return list(dict.fromkeys(KIND_TYPES[e["kind"]] for e in edits))


def pair_types(reference: dict | str, target: dict | str) -> list[str]:
    """The types of the difference between two pool scenes (the scene agent's change records: a replaced object is a
    shape change, colour and size changes of one object are both kept). Empty when the scenes are equal."""
    reference = json.loads(reference) if isinstance(reference, str) else reference
    target = json.loads(target) if isinstance(target, str) else target
    out = []
    for change in scene_changes(reference, target):
        kind = change["kind"]
        if kind == "replace":
            shape_changed = change["obj"]["shape"] not in change["new"].split()
            kinds = (
                ["shape"] if shape_changed else [k for k in ("color", "size") if change["obj"][k] not in change["new"]]
            )
            out += [KIND_TYPES[k] for k in kinds or ["replace"]]
        else:
            out.append(KIND_TYPES[kind])
    return list(dict.fromkeys(out))


def held_out_texts(seed: int, count: int) -> list[tuple[str, list[str]]]:
    """`count` texts in the benchmarks' held-out phrasings with their true types: `[(text, types)]` (queries drawn as
    the CIRR-style and CIRCO-style benchmarks draw them, without rendering)."""
    rng = np.random.default_rng([seed, 11])
    out = []
    for _ in range(count):
        reference, edits, _ = sample_query(rng)
        text, _ = modification_text(reference, edits, rng)
        out.append((text, edit_types(edits)))
    return out


__all__ = ["KIND_TYPES", "edit_types", "held_out_texts", "pair_types"]
