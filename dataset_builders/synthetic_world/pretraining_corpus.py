"""The pretraining corpus of the offline stand-in for BLIP-2: what `mra-cir pretrain-stand-in` sees, and what it never
sees.

A real BLIP-2 was pretrained once, long and on data far larger than any experiment built on it (129M web images with
alt texts, and a BERT text encoder pretrained on books and Wikipedia before that). The world's stand-in is made the
same way: once, from world seeds reserved for it, far from every quickstart, benchmark and test seed.

**What it sees** (deterministic in the seed; seeds `>= PRETRAINING_SEED_BASE` are reserved for it):

- *Image-caption pairs*: scenes drawn like the pool's ([`~.scenes.sample_scene`], any (shape, colour) pair: a web-scale
  corpus shows blue circles too), rendered with the world's renderer, each with an alt text in one of many phrasings
  ([`pretraining_caption`]): full and partial descriptions (web alt texts name some attributes and omit others), in
  several word orders. The pool's three caption templates are among them (the pool is drawn from the same
  distribution of web images).
- *Change-description paraphrases* (the language pretraining of the text side, as BLIP-2's Q-Former starts from BERT):
  pairs of texts describing the same set of 1-3 changes of a scene ([`~.edits.sample_edits`]) in two independently
  drawn phrasings ([`change_description`]): imperative ("recolour the circle blue"), declarative ("the circle turns
  blue"), before/after ("the circle goes from red to blue"), with several joins and openings. A sentence encoder
  learns from such pairs that different words can say the same thing (sentence-transformers' paraphrase data).

**What it never sees**: a benchmark image or scene drawn from a benchmark's random stream; a pool image of any
quickstart seed (seeds below `PRETRAINING_SEED_BASE`); and the benchmarks' held-out phrasings: no text of the corpus
contains the fixed words of a clause template ([`~.edits.CLAUSE_TEMPLATES`]), a single-edit template
([`~.scenes.BENCHMARK_TEMPLATES`]) or a join form ("same scene but", "; also", ", which", " while ") in their order
(checked by [`held_out_phrasing_in`] and by the tests). Words are not held out, as a pretrained model knows the words
of a benchmark it was never trained on; a word that only the held-out phrasings use ("becomes", "disappears") is never
seen, as a real zero-shot model meets unusual wordings.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np

from .edits import CLAUSE_TEMPLATES, GROWS, apply_edits, sample_edits, valid_scene
from .scenes import (
    BENCHMARK_TEMPLATES,
    CAPTION_TEMPLATES,
    POSITIONS,
    canonical,
    pool_caption,
    render_scene,
    sample_scene,
)

#: world seeds from here on are reserved for the stand-in's pretraining (the quickstart refuses them)
PRETRAINING_SEED_BASE = 1_000_000

#: alt-text phrasings of a whole scene (`{objs}`: every object with its slot; `{bg}`: the background)
SCENE_TEMPLATES = (
    "{objs} on a {bg} background",
    "{bg} background with {objs}",
    "a picture of {objs}, {bg} background",
    "photo: {objs} against a {bg} backdrop",
    "{objs}; the backdrop is {bg}",
    "there is {objs} on {bg}",
    "on a {bg} background: {objs}",
)
#: alt-text phrasings of one object in its slot
OBJECT_TEMPLATES = (
    "a {size} {color} {shape} on the {slot}",
    "a {color} {shape} on the {slot}",
    "a {size} {shape} in {color} on the {slot}",
    "on the {slot} a {size} {color} {shape}",
    "a {color} {size} {shape} at the {slot}",
    "a {shape}, {color} and {size}, on the {slot}",
)
#: partial alt texts (web captions name a few things and omit the rest)
PARTIAL_TEMPLATES = (
    "a {color} {shape}",
    "a {size} {shape}",
    "something {color} on {bg}",
    "a {shape} on a {bg} background",
    "{color} {shape} and more",
)
#: change predicates, per kind (`{subj}`: the edited object or the background; imperative ones start with the verb)
CHANGE_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": (
        "{subj} turns {new}",
        "{subj} is now {new}",
        "{subj} changes from {old} to {new}",
        "{subj} goes from {old} to {new}",
        "{subj} should be {new}",
        "{subj} is {new} rather than {old}",
        "recolour {subj} {new}",
        "paint {subj} {new}",
        "make {subj} {new}",
        "{subj} in {new}, not {old}",
    ),
    "shape": (
        "{subj} turns into a {new}",
        "{subj} is replaced by a {new}",
        "{subj} changes into a {new}",
        "{subj} should be a {new}",
        "{subj} is now a {new}",
        "swap {subj} for a {new}",
        "replace {subj} by a {new}",
        "a {new} takes the spot of {subj}",
    ),
    "size": (
        "{subj} is now {new}",
        "{subj} should be {new}",
        "{subj} is made {new}",
        "{subj} turns {new}",
        "{scale} {subj}",
        "make {subj} {comparative}",
        "{subj} is {comparative} than before",
    ),
    "background": (
        "{subj} turns {new}",
        "{subj} is now {new}",
        "{subj} changes from {old} to {new}",
        "set the background to {new}",
        "use a {new} background",
        "a {new} backdrop, not {old}",
    ),
    "position": (
        "{subj} moves to the {new}",
        "{subj} is now on the {new}",
        "shift {subj} to the {new}",
        "put {subj} over on the {new}",
        "{subj} goes over to the {new}",
    ),
    "swap": (
        "{a} and {b} exchange positions",
        "exchange {a} and {b}",
        "{a} and {b} change places",
        "switch {a} and {b}",
        "mirror the layout",
    ),
    "add": (
        "{obj} is placed on the {slot}",
        "there is now {obj} on the {slot}",
        "put {obj} on the {slot}",
        "include {obj} on the {slot}",
        "{obj} shows up on the {slot}",
        "add {obj} on the {slot}",
    ),
    "remove": (
        "{subj} is removed",
        "{subj} vanishes",
        "{subj} is taken away",
        "delete {subj}",
        "drop {subj}",
        "remove {subj}",
        "get rid of {subj}",
    ),
}
#: how several changes are joined, and how a description may open
JOINS = (" and ", ", ", "; ", " then ", ", plus ", " as well as ")
OPENINGS = ("", "", "", "please ", "edit: ", "the same picture except ", "change it so that ")
_SCALE = {"large": "enlarge", "small": "shrink"}
_COMPARATIVE = {"large": "bigger", "small": "smaller"}


# ----------------------------------------------------------------------------------------------------------------------
# The held-out check
# ----------------------------------------------------------------------------------------------------------------------
def _template_pattern(template: str) -> re.Pattern:
    """A template's fixed words in order, each slot any one or two words (`{objs}`-free templates only)."""
    parts = re.split(r"\{[a-z_]+\}", template)
    words = [re.escape(p.strip()) for p in parts]
    body = r"\s+(?:\S+\s+){0,1}\S+\s+".join(w for w in words if w)
    return re.compile(rf"(?:^|\b){body}(?:\b|$)")


def held_out_patterns() -> list[re.Pattern]:
    """The benchmarks' held-out phrasings as patterns: clause templates (with the size growth phrases), single-edit
    templates and the join forms that only the benchmarks use."""
    templates = [t for group in CLAUSE_TEMPLATES.values() for t in group if t != "{grows}"]
    templates += [t for group in BENCHMARK_TEMPLATES.values() for t in group]
    patterns = [_template_pattern(t) for t in templates]
    patterns += [re.compile(re.escape(p)) for p in (*GROWS.values(), "same scene but", "; also", ", which", " while ")]
    return patterns


def held_out_phrasing_in(text: str) -> str | None:
    """The first held-out phrasing pattern found in `text` (its regular expression), or None."""
    for pattern in held_out_patterns():
        if pattern.search(text):
            return pattern.pattern
    return None


# ----------------------------------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------------------------------
def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def pretraining_caption(graph: dict, rng: np.random.Generator) -> str:
    """An alt text of `graph`: a full description (60%: one of `SCENE_TEMPLATES` with `OBJECT_TEMPLATES`), a pool-style
    caption (25%: `CAPTION_TEMPLATES`) or a partial one (15%: `PARTIAL_TEMPLATES`)."""
    draw = rng.random()
    if draw < 0.25:
        return pool_caption(graph, int(rng.integers(len(CAPTION_TEMPLATES))))
    if draw < 0.4:
        obj = graph["objects"][int(rng.integers(len(graph["objects"])))]
        return _pick(rng, PARTIAL_TEMPLATES).format(bg=graph["background"], **obj)
    template = _pick(rng, OBJECT_TEMPLATES)
    objs = " and ".join(template.format(slot=o["position"], **o) for o in graph["objects"])
    return _pick(rng, SCENE_TEMPLATES).format(objs=objs, bg=graph["background"])


# ----------------------------------------------------------------------------------------------------------------------
# Change descriptions
# ----------------------------------------------------------------------------------------------------------------------
def _subject(obj: dict, rng: np.random.Generator) -> str:
    return _pick(
        rng,
        (
            f"the {obj['shape']}",
            f"the {obj['color']} {obj['shape']}",
            f"the {obj['size']} {obj['color']} {obj['shape']}",
            f"the {obj['position']} {obj['shape']}",
            f"the object on the {obj['position']}",
        ),
    )


def _clause(edit: dict, reference: dict, rng: np.random.Generator) -> str:
    objects = {o["position"]: o for o in reference["objects"]}
    kind = edit["kind"]
    if kind == "position" and len(objects) == 2:
        first, second = (objects[p] for p in POSITIONS)
        return _pick(rng, CHANGE_TEMPLATES["swap"]).format(a=_subject(first, rng), b=_subject(second, rng))
    if kind == "add":
        obj = edit["object"]
        name = _pick(rng, (f"a {obj['color']} {obj['shape']}", f"a {obj['size']} {obj['color']} {obj['shape']}"))
        return _pick(rng, CHANGE_TEMPLATES["add"]).format(obj=name, slot=edit["slot"])
    subject = "the background" if kind == "background" else _subject(objects[edit["slot"]], rng)
    new = edit.get("new")
    return _pick(rng, CHANGE_TEMPLATES[kind]).format(
        subj=subject,
        new=new,
        old=edit.get("old"),
        scale=_SCALE.get(new, ""),
        comparative=_COMPARATIVE.get(new, ""),
    )


def change_description(reference: dict, edits: list[dict], rng: np.random.Generator) -> str:
    """One phrasing of `edits` applied to `reference`: a clause per edit in random order, joined and opened at random
    (`JOINS`, `OPENINGS`). Never a held-out phrasing (the templates avoid them; [`held_out_phrasing_in`] checks)."""
    clauses = [_clause(edits[i], reference, rng) for i in rng.permutation(len(edits))]
    text = clauses[0]
    for clause in clauses[1:]:
        text += _pick(rng, JOINS) + clause
    return (_pick(rng, OPENINGS) + text).strip()


# ----------------------------------------------------------------------------------------------------------------------
# The corpus
# ----------------------------------------------------------------------------------------------------------------------
def check_pretraining_seed(seed: int) -> None:
    if seed < PRETRAINING_SEED_BASE:
        raise ValueError(
            f"pretraining seeds start at {PRETRAINING_SEED_BASE} (lower seeds belong to quickstart runs and their "
            f"benchmarks), got {seed}"
        )


def image_caption_pairs(seed: int, count: int, image_size: int = 32) -> tuple[np.ndarray, list[str], list[str]]:
    """`count` rendered scenes with alt texts: `(images (count, H, W, 3) uint8, captions, canonical scene graphs)`."""
    check_pretraining_seed(seed)
    rng = np.random.default_rng([seed, 101])
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    captions, graphs = [], []
    for i in range(count):
        graph = sample_scene(rng, held_out="allow")
        captions.append(pretraining_caption(graph, rng))
        graphs.append(canonical(graph))
        images[i] = np.asarray(render_scene(graph, image_size, rng))
    return images, captions, graphs


def paraphrase_pairs(seed: int, count: int) -> Iterator[tuple[str, str]]:
    """`count` pairs of independent phrasings of one set of 1-3 changes of a random scene."""
    check_pretraining_seed(seed)
    rng = np.random.default_rng([seed, 102])
    made = 0
    while made < count:
        reference = sample_scene(rng, held_out="allow", unique_shapes=True)
        edits = sample_edits(rng, reference, int(rng.integers(1, 4)))
        if edits is None or not valid_scene(apply_edits(reference, edits)):
            continue
        made += 1
        yield change_description(reference, edits, rng), change_description(reference, edits, rng)


def corpus_texts() -> list[str]:
    """Every word the corpus can say (for the tokenizer's training corpus)."""
    groups = [SCENE_TEMPLATES, OBJECT_TEMPLATES, PARTIAL_TEMPLATES, *CHANGE_TEMPLATES.values(), JOINS, OPENINGS]
    words = [*_SCALE.values(), *_COMPARATIVE.values()]
    return [" ".join(words), *(re.sub(r"\{[a-z_]+\}", " ", t) for group in groups for t in group)]


__all__ = [
    "CHANGE_TEMPLATES",
    "PRETRAINING_SEED_BASE",
    "change_description",
    "check_pretraining_seed",
    "corpus_texts",
    "held_out_patterns",
    "held_out_phrasing_in",
    "image_caption_pairs",
    "paraphrase_pairs",
    "pretraining_caption",
]
