"""Multi-edit queries of the synthetic world: edits of a scene, and crowd-like texts that describe every edit in
held-out phrasings. Shared by the CIRR-style and CIRCO-style benchmarks ([`.cirr_style`], [`.circo_style`]).

- *Edits.* A query's target differs from its reference by 1, 2 or 3 edits (probabilities 0.25 / 0.5 / 0.25, mean 2:
  "mostly 2") among colour, shape, size, background, position (a lone object moves, two objects swap), adding and
  removing an object. CIRR's crowd-written texts usually describe several differences: in its rc2 val captions 35% of
  the texts contain " and ", 29% "with", 13% a comma (counted on the official files); a mean of 2 described
  differences is our reading of that, not a published number. Object attribute edits are the most frequent
  (`EDIT_WEIGHTS`), as CIRR's texts mostly address objects directly, with spatial, background and cardinality changes.
- *Texts.* Every edit is described (`CLAUSE_TEMPLATES`: phrasings that neither the pool captions nor the scene agent
  use: held out, as a zero-shot benchmark's phrasings are), in random order, joined in several forms (`JOIN_FORMS`:
  "A, B and C"; "A; also B"; "same scene but A and B"; relative clauses such as "the circle, which is blue now,
  becomes large", or "A while B"), like crowd texts (CIRR rc2 val: 11 words on average; here ~13).
- *Held out pairs*: every query has a `HELD_OUT_PAIRS` (shape, colour) combination in its reference or its target.
  The words are not held out ([`benchmark_texts`] goes into the tokenizer's corpus, as a pretrained model knows the
  words of a benchmark it never saw).
"""

from __future__ import annotations

import itertools
import re

import numpy as np

from .scenes import BACKGROUNDS, COLORS, POSITIONS, SHAPES, SIZES, canonical, has_held_out_pair, sample_scene

#: mostly "direct addressing" / "compare and change" of objects, with spatial, background and cardinality changes)
EDIT_WEIGHTS = {"color": 3.0, "shape": 2.0, "size": 2.0, "background": 1.5, "position": 1.0, "add": 1.0, "remove": 1.0}
#: number of edits per query (mean 2.0: "mostly 2")
NUM_EDITS_PROBS = {1: 0.25, 2: 0.5, 3: 0.25}
STRUCTURAL = ("position", "add", "remove")
ATTRIBUTES = ("color", "shape", "size")
_VALUES = {"color": tuple(COLORS), "shape": SHAPES, "size": SIZES, "background": tuple(BACKGROUNDS)}

#: held-out clause phrasings: per edit kind, predicates of a subject (the edited object in the reference, "the
#: background", the two swapped objects). Neither `CAPTION_TEMPLATES` nor the scene agent's `AGENT_TEMPLATES` uses them.
CLAUSE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": ("is {new} now", "is {new} instead of {old}", "becomes {new}"),
    "shape": ("is a {new} now", "becomes a {new}", "is a {new} instead"),
    "size": ("is {new} now", "becomes {new}", "{grows}"),
    "background": ("becomes {new}", "is {new} instead of {old}", "switches to {new}"),
    "position": ("sits on the {new} now", "is on the {new} side instead", "has moved to the {new}"),
    "swap": ("swap sides", "trade places", "are swapped"),
    "add": ("appears on the {slot}", "is added on the {slot}", "now stands on the {slot}"),
    "remove": ("is gone", "is no longer there", "disappears"),
}
GROWS = {"large": "grows larger", "small": "gets smaller"}
#: how clauses are joined, with their probabilities (CIRR-like: plain conjunction most often)
JOIN_FORMS = {"and": 0.4, "also": 0.15, "but": 0.2, "relative": 0.25}


# ----------------------------------------------------------------------------------------------------------------------
# Edits
# ----------------------------------------------------------------------------------------------------------------------
def _other(slot: str) -> str:
    return POSITIONS[1 - POSITIONS.index(slot)]


def apply_edits(graph: dict, edits: list[dict]) -> dict:
    """The scene with `edits` applied: attribute and background edits first (objects named by their slot in `graph`),
    then the structural one (`position`: a lone object moves to the other slot, two objects swap; `add`; `remove`)."""
    objects = {o["position"]: dict(o) for o in graph["objects"]}
    background = graph["background"]
    for edit in edits:
        if edit["kind"] in ATTRIBUTES:
            objects[edit["slot"]][edit["kind"]] = edit["new"]
        elif edit["kind"] == "background":
            background = edit["new"]
    for edit in edits:
        if edit["kind"] == "remove":
            del objects[edit["slot"]]
        elif edit["kind"] == "add":
            objects[edit["slot"]] = {**edit["object"], "position": edit["slot"]}
        elif edit["kind"] == "position":
            objects = {_other(p): {**o, "position": _other(p)} for p, o in objects.items()}
    return {"background": background, "objects": [objects[p] for p in POSITIONS if p in objects]}


def valid_scene(graph: dict) -> bool:
    """At least one object, distinct shapes (so "the circle" names one object)."""
    shapes = [o["shape"] for o in graph["objects"]]
    return bool(shapes) and len(set(shapes)) == len(shapes)


def candidate_edits(reference: dict, chosen: list[dict], rng: np.random.Generator) -> list[dict]:
    """Every edit kind that can still be added to `chosen` (one random value each): one edit per (object, attribute)
    and for the background, at most one structural edit, never an attribute edit of a removed object."""
    slots = [o["position"] for o in reference["objects"]]
    objects = {o["position"]: o for o in reference["objects"]}
    taken = {(e["kind"], e.get("slot")) for e in chosen}
    removed = {e["slot"] for e in chosen if e["kind"] == "remove"}
    structural = any(e["kind"] in STRUCTURAL for e in chosen)
    edited_slots = {e["slot"] for e in chosen if e["kind"] in ATTRIBUTES}
    out = []
    for slot in slots:
        if slot in removed:
            continue
        for attribute in ATTRIBUTES:
            if (attribute, slot) in taken:
                continue
            old = objects[slot][attribute]
            values = [v for v in _VALUES[attribute] if v != old]
            out.append(
                {"kind": attribute, "slot": slot, "old": old, "new": str(values[int(rng.integers(len(values)))])}
            )
    if ("background", None) not in taken:
        out.append({"kind": "background", "old": reference["background"], "new": _other_bg(reference["background"])})
    if not structural:
        if len(slots) == 1:
            out.append({"kind": "position", "slot": slots[0], "new": _other(slots[0])})
            shape = str(rng.choice([s for s in SHAPES if s != objects[slots[0]]["shape"]]))
            obj = {"shape": shape, "color": str(rng.choice(list(COLORS))), "size": str(rng.choice(SIZES))}
            out.append({"kind": "add", "slot": _other(slots[0]), "object": obj})
        else:
            out.append({"kind": "position", "slot": None, "new": None})
            free = [s for s in slots if s not in edited_slots]
            if free:
                out.append({"kind": "remove", "slot": str(rng.choice(free))})
    return out


def _other_bg(background: str) -> str:
    return next(b for b in BACKGROUNDS if b != background)


def minimal(reference: dict, edits: list[dict]) -> bool:
    """Every edit matters: the target differs from the reference, and from the scene without any one of the edits."""
    target = canonical(apply_edits(reference, edits))
    if target == canonical(reference):
        return False
    return all(canonical(apply_edits(reference, edits[:i] + edits[i + 1 :])) != target for i in range(len(edits)))


def sample_edits(rng: np.random.Generator, reference: dict, count: int, tries: int = 50) -> list[dict] | None:
    """`count` edits of `reference` (weighted by `EDIT_WEIGHTS`) giving a valid scene where every edit matters."""
    for _ in range(tries):
        edits: list[dict] = []
        for _ in range(count):
            options = candidate_edits(reference, edits, rng)
            if not options:
                break
            weights = np.array([EDIT_WEIGHTS[o["kind"]] for o in options])
            edits.append(options[int(rng.choice(len(options), p=weights / weights.sum()))])
        if len(edits) == count and valid_scene(apply_edits(reference, edits)) and minimal(reference, edits):
            return edits
    return None


def _num_edits(rng: np.random.Generator) -> int:
    counts = list(NUM_EDITS_PROBS)
    return counts[int(rng.choice(len(counts), p=list(NUM_EDITS_PROBS.values())))]


def sample_query(rng: np.random.Generator, held_out: bool = True) -> tuple[dict, list[dict], dict]:
    """A reference (benchmark distribution), its edits and the target; with `held_out`, the reference or the target
    holds a `HELD_OUT_PAIRS` combination (as every query of the world's benchmark does)."""
    while True:
        reference = sample_scene(rng, held_out="allow" if held_out else "never", unique_shapes=True)
        edits = sample_edits(rng, reference, _num_edits(rng))
        if edits is None:
            continue
        target = apply_edits(reference, edits)
        if held_out and not (has_held_out_pair(reference) or has_held_out_pair(target)):
            continue
        if not held_out and has_held_out_pair(target):
            continue
        return reference, edits, target


# ----------------------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------------------
def _name(obj: dict, rng: np.random.Generator) -> str:
    """How a text names an object of the reference: "the circle" or "the red circle" (shapes are distinct)."""
    return f"the {obj['shape']}" if rng.random() < 0.5 else f"the {obj['color']} {obj['shape']}"


def _subject_and_predicate(edit: dict, reference: dict, rng: np.random.Generator, open_size: bool = False):
    """`(subject key, subject text, predicate text)` of one edit in a held-out phrasing."""
    objects = {o["position"]: o for o in reference["objects"]}
    kind = edit["kind"]
    if kind == "position" and len(objects) == 2:
        templates, subject_key = CLAUSE_TEMPLATES["swap"], "both"
        first, second = (objects[p] for p in POSITIONS)
        subject = f"the {first['shape']} and the {second['shape']}"
    elif kind == "background":
        templates, subject_key, subject = CLAUSE_TEMPLATES["background"], "background", "the background"
    elif kind == "add":
        templates, subject_key = CLAUSE_TEMPLATES["add"], "added"
        obj = edit["object"]
        size = "" if open_size else f"{obj['size']} "
        subject = f"a {size}{obj['color']} {obj['shape']}"
    else:
        templates, subject_key = CLAUSE_TEMPLATES[kind], edit["slot"]
        obj = objects[edit["slot"]]
        colours = [o["color"] for o in objects.values()]
        by_colour = kind == "shape" and colours.count(obj["color"]) == 1 and rng.random() < 0.5
        subject = f"the {obj['color']} object" if by_colour else _name(obj, rng)
    predicate = templates[int(rng.integers(len(templates)))].format(
        new=edit.get("new"), old=edit.get("old"), slot=edit.get("slot"), grows=GROWS.get(edit.get("new"), "")
    )
    return subject_key, subject, predicate


def _join(parts: list[str], conjunction: str = "and") -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} {conjunction} {parts[-1]}"


def modification_text(
    reference: dict, edits: list[dict], rng: np.random.Generator, open_size: bool = False
) -> tuple[str, str]:
    """A crowd-like text describing every edit (random order, held-out phrasings), and its join form.

    Forms: `and` ("A, B and C"), `also` ("A; also B"), `but` ("same scene but A and B"), `relative` (two edits of one
    object: "the circle, which is blue now, becomes large"; otherwise "A while B").
    """
    clauses = [_subject_and_predicate(e, reference, rng, open_size) for e in edits]
    clauses = [clauses[i] for i in rng.permutation(len(clauses))]
    forms = list(JOIN_FORMS)
    form = forms[int(rng.choice(len(forms), p=list(JOIN_FORMS.values())))]
    if len(clauses) == 1 and form in ("also", "relative"):
        form = "and"
    sentences = [f"{s} {p}" for _, s, p in clauses]
    if form == "and":
        return _join(sentences), form
    if form == "also":
        return f"{sentences[0]}; also {_join(sentences[1:])}", form
    if form == "but":
        return f"same scene but {_join(sentences)}", form
    keys = [k for k, _, _ in clauses]
    shared = next((k for k in keys if keys.count(k) > 1 and k in POSITIONS), None)
    if shared is not None:
        i, j = [n for n, k in enumerate(keys) if k == shared][:2]
        rest = [sentences[n] for n in range(len(clauses)) if n not in (i, j)]
        head = f"{clauses[i][1]}, which {clauses[i][2]}, {clauses[j][2]}"
        return _join([head, *rest]), form
    return f"{sentences[0]} while {_join(sentences[1:])}", form


def benchmark_texts() -> list[str]:
    """Every word the two benchmarks' texts use (for the tokenizer's training corpus)."""
    words = "same scene but while which also , ; a the and object side larger smaller grows gets instead of now"
    templates = [re.sub(r"\{[a-z_]+\}", " ", t) for group in CLAUSE_TEMPLATES.values() for t in group]
    return [words, *templates, *GROWS.values()]


# ----------------------------------------------------------------------------------------------------------------------
# The hard members of an image set
# ----------------------------------------------------------------------------------------------------------------------
def text_only_scene(rng: np.random.Generator, reference: dict, edits: list[dict], target: dict) -> dict:
    """A random scene holding what the text of `edits` names, and nothing else of the reference: every object an
    attribute edit or an addition names, as it ends up in the target (at its target slot); for a swap, the two named
    shapes in the target's order (random colours and sizes); for a move, the moved object; the new background if the
    background changes. The rest is random (a removed object is simply absent or random)."""
    moved = any(e["kind"] == "position" for e in edits)
    target_objects = {o["position"]: o for o in target["objects"]}
    scene = sample_scene(rng, held_out="allow", unique_shapes=True)
    objects = {o["position"]: o for o in scene["objects"]}
    for edit in edits:
        if edit["kind"] in ATTRIBUTES or edit["kind"] == "add":
            slot = _other(edit["slot"]) if moved else edit["slot"]
            objects[slot] = dict(target_objects[slot])
        elif edit["kind"] == "position" and len(target_objects) == 1:
            objects[next(iter(target_objects))] = dict(next(iter(target_objects.values())))
        elif edit["kind"] == "position":
            for slot, obj in target_objects.items():
                if not any(e["kind"] in ATTRIBUTES and _other(e["slot"]) == slot for e in edits):
                    colour, size = str(rng.choice(list(COLORS))), str(rng.choice(SIZES))
                    objects[slot] = {**obj, "color": colour, "size": size}
    background = target["background"] if any(e["kind"] == "background" for e in edits) else scene["background"]
    return {"background": background, "objects": [objects[p] for p in POSITIONS if p in objects]}


def hard_members(rng: np.random.Generator, reference: dict, edits: list[dict], target: dict) -> list[tuple[str, dict]]:
    """The 4 hard members of a query's image set, `[(role, scene)]`, or `[]` if none fits: up to 2 *partial edits*
    (the reference with a strict subset of the edits, "one edit missed" first), *wrong edits* (one edit replaced by
    another edit of the reference) to make 3, and one *text-only* scene ([`text_only_scene`])."""
    seen = {canonical(reference), canonical(target)}
    members: list[tuple[str, dict]] = []

    def take(role: str, scene: dict) -> bool:
        key = canonical(scene)
        if not valid_scene(scene) or key in seen:
            return False
        seen.add(key)
        members.append((role, scene))
        return True

    # partial edits: strict non-empty subsets, the largest first ("one edit missed"), at most 2
    subsets = [s for size in range(len(edits) - 1, 0, -1) for s in itertools.combinations(range(len(edits)), size)]
    by_size: dict[int, list] = {}
    for s in subsets:
        by_size.setdefault(len(s), []).append(s)
    ordered = [s for size in sorted(by_size, reverse=True) for s in (by_size[size][i] for i in
               rng.permutation(len(by_size[size])))]  # fmt: skip
    for subset in ordered:
        if sum(r == "partial_edit" for r, _ in members) == 2:
            break
        take("partial_edit", apply_edits(reference, [edits[i] for i in subset]))
    # wrong edits: one of the edits replaced by another edit of the reference, up to 3 hard members so far
    for _ in range(200):
        if len(members) == 3:
            break
        i = int(rng.integers(len(edits)))
        rest = edits[:i] + edits[i + 1 :]
        options = [
            o
            for o in candidate_edits(reference, rest, rng)
            if canonical(apply_edits(reference, [*rest, o])) != canonical(target)
        ]
        same_kind = [o for o in options if o["kind"] == edits[i]["kind"]]
        pool = same_kind if same_kind and rng.random() < 0.6 else options
        if pool:
            take("wrong_edit", apply_edits(reference, [*rest, pool[int(rng.integers(len(pool)))]]))
    # text-only: another scene holding what the text names (the edited objects as they end up, the new background)
    for _ in range(200):
        if len(members) == 4:
            break
        take("text_only", text_only_scene(rng, reference, edits, target))
    return members if len(members) == 4 else []


def semantic_aspects(edits: list[dict], text: str) -> list[str]:
    """CIRCO's semantic-aspect labels of a query (the names of CIRCO's `annotations/val.json`), from its edits and
    text: `direct_addressing` (an object's colour, shape or size), `compare_change` (a shape replaced, "instead of"),
    `comparative_statement` ("larger" / "smaller"), `addition`, `negation` (an object removed), `cardinality` (the
    number of objects changes), `spatial_relations_background` (a move, a swap or the background),
    `statement_with_conjunction` (several edits in one text)."""
    kinds = {e["kind"] for e in edits}
    aspects = []
    if kinds & set(ATTRIBUTES):
        aspects.append("direct_addressing")
    if "shape" in kinds or " instead" in text:
        aspects.append("compare_change")
    if "larger" in text or "smaller" in text:
        aspects.append("comparative_statement")
    if "add" in kinds:
        aspects.append("addition")
    if "remove" in kinds:
        aspects.append("negation")
    if kinds & {"add", "remove"}:
        aspects.append("cardinality")
    if kinds & {"position", "background"}:
        aspects.append("spatial_relations_background")
    if len(edits) > 1:
        aspects.append("statement_with_conjunction")
    return aspects


def diff_edits(first: dict, second: dict) -> list[dict] | None:
    """The edits (attribute and background changes, at most one added or removed object, by slot) that turn scene
    `first` into scene `second`, or None when these edit kinds cannot say it (e.g. both slots added and removed)."""
    a = {o["position"]: o for o in first["objects"]}
    b = {o["position"]: o for o in second["objects"]}
    edits: list[dict] = []
    for slot in POSITIONS:
        if slot in a and slot in b:
            edits += [
                {"kind": attr, "slot": slot, "old": a[slot][attr], "new": b[slot][attr]}
                for attr in ATTRIBUTES
                if a[slot][attr] != b[slot][attr]
            ]
        elif slot in a:
            edits.append({"kind": "remove", "slot": slot})
        elif slot in b:
            edits.append({"kind": "add", "slot": slot, "object": {k: b[slot][k] for k in ("shape", "color", "size")}})
    if first["background"] != second["background"]:
        edits.append({"kind": "background", "old": first["background"], "new": second["background"]})
    if sum(e["kind"] in ("add", "remove") for e in edits) > 1 or canonical(apply_edits(first, edits)) != canonical(
        second
    ):
        return None
    return edits


__all__ = [
    "ATTRIBUTES",
    "CLAUSE_TEMPLATES",
    "EDIT_WEIGHTS",
    "JOIN_FORMS",
    "NUM_EDITS_PROBS",
    "apply_edits",
    "benchmark_texts",
    "candidate_edits",
    "diff_edits",
    "hard_members",
    "minimal",
    "modification_text",
    "sample_edits",
    "sample_query",
    "semantic_aspects",
    "text_only_scene",
    "valid_scene",
]
