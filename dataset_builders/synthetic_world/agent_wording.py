"""How the scene agent ([`.scene_agent`]) words what it sees: its phrasings of each kind of change, the ways it names
an object and joins several changes, its captions, and the change records it reads off two scene graphs.

A multimodal LLM words the same change in many ways; the agent draws from several templates per kind (imperative,
"should be", declarative), several namings and several joins, none of them a held-out benchmark phrasing (the tests
check with `pretraining_corpus.held_out_phrasing_in`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from .scenes import POSITIONS

#: the agent's phrasings (the pool side; the benchmark never uses them). `{obj}` is "colour shape". A multimodal LLM
#: words the same change in many ways (imperative, "should be", before/after), so the agent draws from several per
#: kind; none holds a held-out benchmark phrasing (`pretraining_corpus.held_out_phrasing_in` checks, in the tests).
AGENT_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": (
        "make the {obj} {new}",
        "change the {obj} to {new}",
        "turn the {obj} {new}",
        "the {obj} should be {new}",
        "paint the {obj} {new}",
        "color the {obj} {new}",
        "the {obj} turns {new}",
        "the {obj} is now {new}",
    ),
    "shape": (
        "change the {obj} to a {new}",
        "turn the {obj} into a {new}",
        "replace the {obj} with a {color} {new}",
        "the {obj} should be a {new}",
        "make the {obj} a {new}",
        "swap the {obj} for a {color} {new}",
        "the {obj} turns into a {new}",
        "the {obj} is now a {new}",
    ),
    "size": (
        "make the {obj} {comparative}",
        "make the {obj} {new}",
        "the {obj} should be {comparative}",
        "the {obj} should be {new}",
        "the {obj} is now {new}",
    ),
    "replace": (
        "replace the {obj} with a {new}",
        "change the {obj} to a {new}",
        "swap the {obj} for a {new}",
    ),
    "remove": (
        "remove the {obj}",
        "take away the {obj}",
        "delete the {obj}",
        "get rid of the {obj}",
        "the {obj} is removed",
        "the {obj} vanishes",
    ),
    "add": (
        "add a {new} on the {position}",
        "put a {new} on the {position}",
        "include a {new} on the {position}",
        "there is now a {new} on the {position}",
    ),
    "move": (
        "move the {obj} to the {position}",
        "shift the {obj} to the {position}",
        "put the {obj} on the {position}",
        "the {obj} moves to the {position}",
    ),
    "background": (
        "make the background {new}",
        "change the background to {new}",
        "use a {new} background",
        "the background should be {new}",
        "set the background to {new}",
        "the background turns {new}",
    ),
}
#: how the agent names an object (index 0 is the plain "colour shape"; the others when they name it unambiguously)
NAMINGS = ("{color} {shape}", "{size} {color} {shape}", "{shape}", "object on the {position}")
#: how the agent joins several changes
JOINS = (" and ", ", ", "; ", " then ", ", plus ")
JOIN_PATTERN = "|".join(re.escape(j) for j in sorted(JOINS, key=len, reverse=True))


def agent_texts() -> list[str]:
    """Every word the agent can say (for the tokenizer's training corpus)."""
    words = "bigger smaller no change object , ; then plus".split()
    return [" ".join(words), *(t.replace("{", " ").replace("}", " ") for g in AGENT_TEMPLATES.values() for t in g)]


def _describe(obj: dict, with_size: bool = True) -> str:
    return f"{obj['size']} {obj['color']} {obj['shape']}" if with_size else f"{obj['color']} {obj['shape']}"


def agent_caption(graph: dict) -> str:
    """The agent's caption style (error-free): objects left to right with their slot, then the background."""
    objects = " and ".join(f"a {_describe(o)} on the {o['position']}" for o in graph["objects"])
    return f"{objects} on a {graph['background']} background"


def scene_changes(reference: dict, target: dict) -> list[dict]:
    """The differences reference -> target as change records (kind, object, new value ...), in a fixed order.

    Objects are matched by slot; a lone object that changes slot (and nothing else) is a `move`.
    """
    ref = {o["position"]: o for o in reference["objects"]}
    tgt = {o["position"]: o for o in target["objects"]}
    changes: list[dict] = []
    pairs = [(o["color"], o["shape"]) for o in reference["objects"]]
    if len(set(pairs)) < len(pairs):  # two look-alike objects: name them with their slot
        ref = {p: {**o, "name": f"{o['color']} {o['shape']} on the {p}"} for p, o in ref.items()}
    if len(ref) == len(tgt) == 1 and set(ref) != set(tgt):
        (r,), (t,) = ref.values(), tgt.values()
        same = {k: v for k, v in r.items() if k not in ("position", "name")}
        if same == {k: v for k, v in t.items() if k != "position"}:
            changes.append({"kind": "move", "obj": r, "position": t["position"]})
            ref, tgt = {}, {}
    for position in POSITIONS:
        r, t = ref.get(position), tgt.get(position)
        if r is None and t is None:
            continue
        if r is None:
            changes.append({"kind": "add", "obj": t, "new": _describe(t), "position": position})
        elif t is None:
            changes.append({"kind": "remove", "obj": r})
        else:
            differing = [a for a in ("color", "shape", "size") if r[a] != t[a]]
            if len(differing) >= 2:
                changes.append({"kind": "replace", "obj": r, "new": _describe(t, with_size="size" in differing)})
            elif differing:
                changes.append({"kind": differing[0], "obj": r, "new": t[differing[0]]})
    if reference["background"] != target["background"]:
        changes.append({"kind": "background", "new": target["background"], "old": reference["background"]})
    return changes


def _name(obj: dict, naming: int, others: list[dict]) -> str:
    """The object's name in naming `naming` of `NAMINGS` (the plain "colour shape" when that naming would not single
    it out among the scene's other objects, or when a look-alike pair forces its slot name)."""
    if not obj:
        return ""
    if obj.get("name"):
        return obj["name"]
    naming = naming % len(NAMINGS)
    if naming == 2 and any(o["shape"] == obj["shape"] for o in others):
        naming = 0
    if naming == 3 and "position" not in obj:
        naming = 0
    return NAMINGS[naming].format(**{"size": "", "position": "", **obj}).strip()


def phrase(change: dict, template: int, naming: int = 0, others: Sequence[dict] = ()) -> str:
    """One change in the agent's words: template `template` of its kind (taken modulo their number), the object named
    by naming `naming` ([`NAMINGS`]; `others`: the reference's other objects, which a name must not fit)."""
    templates = AGENT_TEMPLATES[change["kind"]]
    obj = change.get("obj") or {}
    new = change.get("new", "")
    comparative = "bigger" if new == "large" else "smaller"
    return templates[template % len(templates)].format(
        obj=_name(obj, naming, list(others)),
        color=obj.get("color", ""),
        new=new,
        position=change.get("position", ""),
        comparative=comparative,
    )


def other_objects(change: dict, reference: dict) -> list[dict]:
    obj = change.get("obj") or {}
    return [o for o in reference["objects"] if o.get("position") != obj.get("position")]


__all__ = [
    "AGENT_TEMPLATES",
    "JOINS",
    "JOIN_PATTERN",
    "NAMINGS",
    "agent_caption",
    "agent_texts",
    "other_objects",
    "phrase",
    "scene_changes",
]
