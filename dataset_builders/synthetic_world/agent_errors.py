"""How the scene agent ([`.scene_agent`]) errs when asked to (`SceneGraphAgent(error_kinds=...)`): the failure kinds
that multimodal LLM outputs show, each applied to the change records of a pair, and the misreading of one image that
its captions, its caption-led texts and its own self-check share.

The kinds (`ERROR_KINDS`), and the real behaviour each one mimics:

- `wrong_value`: a colour or shape change with the wrong new value ("make the circle blue" for red): a misperceived
  attribute, the commonest MLLM error on fine-grained attributes;
- `hallucinated_change`: a change that is not there (an unchanged object's colour or shape, or the background):
  object/attribute hallucination, the best-documented MLLM failure (POPE, CHAIR);
- `missed_change`: one change left out (a lone change becomes "no change"): omission in multi-change pairs;
- `wrong_object`: the right change said of the reference's other object: mis-binding attributes to objects;
- `refusal`: "no change", "there is no visible difference" or a refusal ("I'm sorry, I can't ...") for a pair that
  differs: the answer an MLLM gives on a pair it finds ambiguous (some of them the output filter catches, some not);
- `caption_repeat`: the text is written from the reference's *wrong caption* (the same misreading the caption shows):
  the two-step agent trusting its own step-1 caption, so the caption error propagates into step 2. Only possible when
  the reference's caption is wrong and the request carries captions (not in `agent_mode="direct"`).

An answer errs with probability `error_rate`; its kind is drawn uniformly from the enabled kinds that apply to the
pair (a kind that cannot apply, e.g. `wrong_object` in a one-object scene, is drawn again among those that can).
Everything is drawn from a generator seeded by `(seed, step, images)`, so re-runs and caches agree.
"""

from __future__ import annotations

import numpy as np

from .agent_wording import scene_changes
from .scenes import BACKGROUNDS, COLORS, SHAPES, SIZES

ERROR_KINDS = ("wrong_value", "hallucinated_change", "missed_change", "wrong_object", "refusal", "caption_repeat")
#: what the agent says when it sees (or claims to see) no difference; the first is its error-free "no change"
REFUSALS = (
    "no change",
    "there is no visible difference",
    "I cannot tell what changed",
    "I'm sorry, I can't compare these pictures",
)
VALUES = {"color": tuple(COLORS), "shape": SHAPES, "size": SIZES, "background": tuple(BACKGROUNDS)}


def parse_error_kinds(kinds) -> tuple[str, ...]:
    """`"all"` / `"wrong_value,refusal"` / a sequence -> a tuple of known kinds (`ValueError` naming unknown ones)."""
    if isinstance(kinds, str):
        kinds = ERROR_KINDS if kinds.strip() == "all" else [k.strip() for k in kinds.split(",") if k.strip()]
    kinds = tuple(dict.fromkeys(kinds))
    unknown = [k for k in kinds if k not in ERROR_KINDS]
    if unknown or not kinds:
        raise ValueError(f"agent error kinds must be 'all' or some of {list(ERROR_KINDS)}, got {unknown or kinds}")
    return kinds


def wrong_value(rng: np.random.Generator, attribute: str, *exclude: str) -> str:
    choices = [v for v in VALUES[attribute] if v not in exclude]
    return str(choices[int(rng.integers(len(choices)))])


def misread(graph: dict, rng: np.random.Generator) -> dict:
    """One misreading of a scene: one object attribute wrong, or one object overlooked (two-object scenes)."""
    objects = [dict(o) for o in graph["objects"]]
    if len(objects) > 1 and rng.random() < 0.3:
        objects.pop(int(rng.integers(len(objects))))
    else:
        obj = objects[int(rng.integers(len(objects)))]
        attribute = ("color", "shape", "size")[int(rng.integers(3))]
        obj[attribute] = wrong_value(rng, attribute, obj[attribute])
    return {"background": graph["background"], "objects": objects}


def _matched(reference: dict, target: dict, changes: list[dict]) -> list[tuple[dict, str]]:
    """(reference object, attribute) pairs that stay the same in the target: where a change can be hallucinated."""
    target_at = {o["position"]: o for o in target["objects"]}
    changed = {(c["obj"].get("position"), c["kind"]) for c in changes if c.get("obj")}
    out = []
    for obj in reference["objects"]:
        other = target_at.get(obj["position"])
        if other is None or (obj["position"], "replace") in changed or (obj["position"], "remove") in changed:
            continue
        out += [(obj, a) for a in ("color", "shape") if other[a] == obj[a] and (obj["position"], a) not in changed]
    return out


def applicable(kind: str, changes: list[dict], reference: dict, target: dict, caption_misread: dict | None) -> bool:
    """Whether `kind` can make this pair's text wrong."""
    if kind == "wrong_value":
        return any(c["kind"] in ("color", "shape") for c in changes)
    if kind == "hallucinated_change":
        return bool(_matched(reference, target, changes)) or reference["background"] == target["background"]
    if kind == "missed_change":
        return bool(changes)
    if kind == "wrong_object":
        return len(reference["objects"]) > 1 and any(c.get("obj") and c["kind"] != "add" for c in changes)
    if kind == "caption_repeat":
        return caption_misread is not None
    return True  # refusal


def apply_error(
    kind: str,
    changes: list[dict],
    reference: dict,
    target: dict,
    caption_misread: dict | None,
    rng: np.random.Generator,
) -> tuple[list[dict], dict, str | None]:
    """The pair's text made wrong by `kind` -> `(changes said, reference as read (names objects), fixed text or None)`."""
    if kind == "refusal":
        return [], reference, REFUSALS[int(rng.integers(len(REFUSALS)))]
    if kind == "caption_repeat":
        return scene_changes(caption_misread, target), caption_misread, None
    changes = [dict(c) for c in changes]
    if kind == "missed_change":
        changes.pop(int(rng.integers(len(changes))))
    elif kind == "wrong_value":
        options = [i for i, c in enumerate(changes) if c["kind"] in ("color", "shape")]
        change = changes[options[int(rng.integers(len(options)))]]
        change["new"] = wrong_value(rng, change["kind"], change["new"], change["obj"][change["kind"]])
    elif kind == "wrong_object":
        options = [c for c in changes if c.get("obj") and c["kind"] != "add"]
        change = options[int(rng.integers(len(options)))]
        others = [o for o in reference["objects"] if o["position"] != change["obj"]["position"]]
        change["obj"] = others[int(rng.integers(len(others)))]
    elif kind == "hallucinated_change":
        options = _matched(reference, target, changes)
        if options and (reference["background"] != target["background"] or rng.random() < 0.8):
            obj, attribute = options[int(rng.integers(len(options)))]
            extra = {"kind": attribute, "obj": obj, "new": wrong_value(rng, attribute, obj[attribute])}
        else:
            background = reference["background"]
            extra = {"kind": "background", "new": wrong_value(rng, "background", background), "old": background}
        changes.insert(int(rng.integers(len(changes) + 1)), extra)
    else:
        raise ValueError(f"unknown agent error kind {kind!r}")
    return changes, reference, None


def draw_error(
    rng: np.random.Generator,
    kinds: tuple[str, ...],
    changes: list[dict],
    reference: dict,
    target: dict,
    caption_misread: dict | None,
) -> str | None:
    """One of `kinds` that applies to the pair, uniformly (None when none does)."""
    usable = [k for k in kinds if applicable(k, changes, reference, target, caption_misread)]
    return usable[int(rng.integers(len(usable)))] if usable else None


__all__ = ["ERROR_KINDS", "REFUSALS", "apply_error", "draw_error", "misread", "parse_error_kinds", "wrong_value"]
