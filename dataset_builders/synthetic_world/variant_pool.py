"""A pool of variants: scenes that descend from a few root scenes by single edits, for pools of other semantic density
and of another natural mix of differences than the default pool's independent scenes.

The default pool ([`.builder.generate_pool`]) draws every scene independently: a *diverse* collection, where an
image's nearest neighbours differ from it in several ways at once (a personal photo collection). Real pools are often
otherwise:

- *Near-duplicates* (`duplicate_rate`): a product catalogue shoots the same item several times (FashionIQ's galleries
  are single-category product photos, many of them near-identical); here a share of the images re-renders its parent
  scene (same scene graph, new position/size jitter and pixel noise), so an image's first neighbours are near-copies.
- *Families of variants* (`variants_per_root`): a catalogue lists each product in variants (colours, sizes, a detail
  changed); here each image after the roots is one edit of its family's root (a colour, shape or size of one object,
  the background, a move, an added or a removed object; [`.edits.candidate_edits`]), so two members of a family differ
  by one or two edits.
- *An unbalanced mix of differences* (`edit_weights`): which kind of edit makes a variant. Real mixes are far from
  even: 86% of FashionIQ's val texts name a colour and 8% an added object, while CIRR's spread over position,
  background, added objects and count (the lexical tagger's reading, `docs/evaluation.md`). A weight of 1 on one kind
  gives families whose members all differ from their root by that kind of change; how unbalanced the *mined* pairs
  are then also depends on the embedding (measured in `docs/findings.md`).

Words: captions use the pool's caption templates and the world's vocabulary only (no new word: the shipped stand-in's
tokenizer is built from the world's texts). No scene holds a `HELD_OUT_PAIRS` combination, as in the default pool.
"""

from __future__ import annotations

import numpy as np

from .edits import EDIT_WEIGHTS, apply_edits, candidate_edits, valid_scene
from .scenes import CAPTION_TEMPLATES, canonical, has_held_out_pair, pool_caption, render_scene, sample_scene

#: the edit kinds a variant can differ by (the world's multi-edit kinds)
VARIANT_KINDS = tuple(EDIT_WEIGHTS)


def parse_edit_weights(text: str | None) -> dict[str, float]:
    """`"color=0.7,shape=0.05,..."` -> weights per edit kind (kinds left out weigh 0); empty or None -> the world's
    benchmark mix `EDIT_WEIGHTS` (colour 3, shape 2, size 2, background 1.5, position, add, remove 1)."""
    if not text:
        return dict(EDIT_WEIGHTS)
    weights = {kind: 0.0 for kind in VARIANT_KINDS}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in weights:
            raise ValueError(f"edit weights: {item!r} is not KIND=WEIGHT with KIND one of {VARIANT_KINDS}")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"edit weights: {item!r}: {value!r} is not a number") from None
        if weights[name] < 0:
            raise ValueError(f"edit weights: {item!r}: weights must be >= 0")
    if sum(weights.values()) <= 0:
        raise ValueError(f"edit weights {text!r}: at least one kind needs a positive weight")
    return weights


def one_edit(rng: np.random.Generator, graph: dict, weights: dict[str, float], tries: int = 50) -> tuple[dict, str]:
    """`(scene, kind)`: `graph` with one edit of a kind drawn by `weights` among those possible, giving a valid scene
    with no held-out pair; `(graph, "duplicate")` when no such edit is found in `tries` draws."""
    for _ in range(tries):
        options = [o for o in candidate_edits(graph, [], rng) if weights.get(o["kind"], 0.0) > 0]
        if not options:
            break
        p = np.array([weights[o["kind"]] for o in options])
        edit = options[int(rng.choice(len(options), p=p / p.sum()))]
        scene = apply_edits(graph, [edit])
        if valid_scene(scene) and not has_held_out_pair(scene) and canonical(scene) != canonical(graph):
            return scene, edit["kind"]
    return graph, "duplicate"


def generate_variant_pool(
    seed: int,
    pool_size: int,
    image_size: int = 32,
    variants_per_root: int = 20,
    duplicate_rate: float = 0.0,
    edit_weights: dict[str, float] | None = None,
):
    """Yield `(id, row)` for a pool of families (`row = {"id", "image", "scene_graph", "caption"}`, as the default pool).

    Args:
        seed (`int`): the world seed (its own random stream, apart from the default pool's).
        pool_size (`int`): images.
        variants_per_root (`int`, defaults to 20): family size: `ceil(pool_size / variants_per_root)` root scenes (drawn
            like the default pool's), every other image is a variant of the root of a random family.
        duplicate_rate (`float`, defaults to 0): share of the variants that re-render their parent's scene unchanged
            (near-duplicates: new jitter and noise only).
        edit_weights (`dict[str, float]`, *optional*): the kind of edit of a variant ([`parse_edit_weights`]).
    """
    if variants_per_root < 1:
        raise ValueError(f"variants_per_root must be >= 1, got {variants_per_root}")
    if not 0.0 <= duplicate_rate <= 1.0:
        raise ValueError(f"duplicate_rate must be in [0, 1], got {duplicate_rate}")
    weights = dict(edit_weights or EDIT_WEIGHTS)
    rng = np.random.default_rng([seed, 7])
    roots = max(1, -(-pool_size // variants_per_root))
    families: list[list[dict]] = []
    for i in range(pool_size):
        if i < roots:
            graph = sample_scene(rng, held_out="never")
            families.append([graph])
        else:
            family = families[int(rng.integers(len(families)))]
            parent = family[0]  # a variant of the family's base product: one change away from it
            graph = parent if rng.random() < duplicate_rate else one_edit(rng, parent, weights)[0]
            family.append(graph)
        caption = pool_caption(graph, int(rng.integers(len(CAPTION_TEMPLATES))))
        image = render_scene(graph, image_size, rng)
        yield (
            f"pool_{i:05d}",
            {"id": f"pool_{i:05d}", "image": image, "scene_graph": canonical(graph), "caption": caption},
        )


__all__ = ["VARIANT_KINDS", "generate_variant_pool", "one_edit", "parse_edit_weights"]
