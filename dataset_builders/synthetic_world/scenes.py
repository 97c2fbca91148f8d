"""Scenes of the synthetic world: the vocabulary, scene graphs, edits, their phrasings and the renderer.

A scene is one or two objects (shape, colour, size, left/right slot) on a coloured background, described by its scene
graph and rendered with PIL (4x super-sampled, small position and size jitter, faint pixel noise):

```json
{"background": "gray", "objects": [{"shape": "circle", "color": "red", "size": "large", "position": "left"}]}
```

What is held out from everything the method trains on (the zero-shot part of the world's benchmarks):

- *attribute combinations*: the (shape, colour) pairs in `HELD_OUT_PAIRS` never occur in the pool; every benchmark
  query has one in its reference or its target;
- *phrasing*: the benchmarks' modification templates (`BENCHMARK_TEMPLATES`) are never used by the pool captions or by
  the scene agent. The *words* are not held out: the tokenizer is trained on every word of the world, and every
  content word (colours, shapes, sizes) occurs in the pool captions, as a pretrained model knows the words of a
  benchmark it was never trained on. A few function words of the benchmark templates ("instead", "place") appear in
  no training text; their embeddings stay at initialisation, as a real zero-shot model meets unseen phrasings.
"""

from __future__ import annotations

import json
import re

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "cross")
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "white": (245, 245, 245),
}
SIZES = ("small", "large")
POSITIONS = ("left", "right")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"gray": (120, 120, 120), "black": (15, 15, 15)}
#: (shape, colour) pairs that never occur in the pool; every benchmark query uses one (one per shape and per colour).
HELD_OUT_PAIRS = frozenset({("circle", "blue"), ("square", "green"), ("triangle", "yellow"), ("cross", "red")})
EDIT_TYPES = ("color", "shape", "size")

#: ground-truth alt-text templates of the pool (stage-1 captions); `{objs}` etc. are filled by `pool_caption`.
CAPTION_TEMPLATES = (
    "{objs_pos} on a {bg} background",
    "an image of {objs_pos} on {bg}",
    "{objs_is}, the background is {bg}",
)
#: the benchmark's modification phrasings (held out: neither the pool captions nor the scene agent use them).
BENCHMARK_TEMPLATES: dict[str, tuple[str, ...]] = {
    "color": ("the {shape} in {new} instead of {old}", "same scene but the {shape} is {new}"),
    "shape": ("a {new} in place of the {color} {old}", "same scene but the {color} object is a {new}"),
    "size": ("the {color} {shape} is {new} instead", "same scene but with a {new} {color} {shape}"),
}

_SUPERSAMPLE = 4


# ----------------------------------------------------------------------------------------------------------------------
# Scene graphs
# ----------------------------------------------------------------------------------------------------------------------
def canonical(graph: dict) -> str:
    """The scene graph as a canonical JSON string (sorted keys, objects left to right): equal scenes, equal strings."""
    objects = sorted(graph["objects"], key=lambda o: POSITIONS.index(o["position"]))
    return json.dumps({"background": graph["background"], "objects": objects}, sort_keys=True)


def has_held_out_pair(graph: dict) -> bool:
    return any((o["shape"], o["color"]) in HELD_OUT_PAIRS for o in graph["objects"])


def _sample_object(rng: np.random.Generator, position: str, held_out: str, exclude_shapes=()) -> dict:
    """`held_out`: "never" (the pool), "allow" (benchmark)."""
    while True:
        shape = str(rng.choice([s for s in SHAPES if s not in exclude_shapes]))
        color = str(rng.choice(list(COLORS)))
        if held_out == "never" and (shape, color) in HELD_OUT_PAIRS:
            continue
        return {"shape": shape, "color": color, "size": str(rng.choice(SIZES)), "position": position}


def sample_scene(rng: np.random.Generator, held_out: str = "never", unique_shapes: bool = False) -> dict:
    """A random scene graph: one object (25%, random slot) or two (left and right), a random background.

    Args:
        rng (`np.random.Generator`): the source of randomness.
        held_out (`str`, defaults to `"never"`): `"never"` excludes `HELD_OUT_PAIRS` (the pool); `"allow"` keeps them.
        unique_shapes (`bool`, defaults to `False`): the two objects get different shapes (benchmark scenes, so that
            "the circle" names one object).
    """
    background = str(rng.choice(list(BACKGROUNDS)))
    if rng.random() < 0.25:
        objects = [_sample_object(rng, str(rng.choice(POSITIONS)), held_out)]
    else:
        first = _sample_object(rng, "left", held_out)
        second = _sample_object(rng, "right", held_out, exclude_shapes=(first["shape"],) if unique_shapes else ())
        objects = [first, second]
    return {"background": background, "objects": objects}


def apply_edit(graph: dict, edit: dict) -> dict:
    """The scene with `edit = {"object": index, "attribute": "color"|"shape"|"size", "new": value}` applied."""
    objects = [dict(o) for o in graph["objects"]]
    objects[edit["object"]][edit["attribute"]] = edit["new"]
    return {"background": graph["background"], "objects": objects}


def possible_edits(graph: dict) -> list[dict]:
    """Every single-attribute edit of one object that keeps the objects' shapes distinct."""
    values = {"color": tuple(COLORS), "shape": SHAPES, "size": SIZES}
    edits = []
    for index, obj in enumerate(graph["objects"]):
        other_shapes = {o["shape"] for j, o in enumerate(graph["objects"]) if j != index}
        for attribute in EDIT_TYPES:
            for new in values[attribute]:
                if new == obj[attribute] or (attribute == "shape" and new in other_shapes):
                    continue
                edits.append({"object": index, "attribute": attribute, "old": obj[attribute], "new": new})
    return edits


# ----------------------------------------------------------------------------------------------------------------------
# Text
# ----------------------------------------------------------------------------------------------------------------------
def object_phrase(obj: dict) -> str:
    return f"{obj['size']} {obj['color']} {obj['shape']}"


def pool_caption(graph: dict, template: int) -> str:
    """The ground-truth alt text of a pool image in caption template `template` (index into `CAPTION_TEMPLATES`)."""
    objs = graph["objects"]
    objs_pos = " and ".join(f"a {object_phrase(o)} on the {o['position']}" for o in objs)
    objs_is = " and ".join(f"the {o['position']} object is a {object_phrase(o)}" for o in objs)
    return CAPTION_TEMPLATES[template].format(objs_pos=objs_pos, objs_is=objs_is, bg=graph["background"])


def benchmark_text(graph: dict, edit: dict, template: int) -> str:
    """The benchmark's (held-out) phrasing of `edit` applied to `graph`."""
    obj = graph["objects"][edit["object"]]
    return BENCHMARK_TEMPLATES[edit["attribute"]][template].format(
        shape=obj["shape"], color=obj["color"], old=edit["old"], new=edit["new"]
    )


def world_texts() -> list[str]:
    """Texts covering every word the world (captions and benchmark phrasings) uses: the tokenizer's training corpus."""
    words = [*SHAPES, *COLORS, *SIZES, *POSITIONS, *BACKGROUNDS]
    templates = [*CAPTION_TEMPLATES, *(t for group in BENCHMARK_TEMPLATES.values() for t in group)]
    return [" ".join(words), *(re.sub(r"\{[a-z_]+\}", " ", t) for t in templates), "a an the and on is object"]


# ----------------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------------
def render_scene(graph: dict, image_size: int = 32, rng: np.random.Generator | None = None) -> Image.Image:
    """Draw a scene graph as an RGB `image_size` x `image_size` PIL image.

    Args:
        graph (`dict`): the scene graph.
        image_size (`int`, defaults to 32): output side in pixels.
        rng (`np.random.Generator`, *optional*): jitter of position (+-6% of the side), radius (+-8%) and faint noise;
            `None` renders the exact layout.
    """
    side = image_size * _SUPERSAMPLE
    image = Image.new("RGB", (side, side), BACKGROUNDS[graph["background"]])
    draw = ImageDraw.Draw(image)
    for obj in graph["objects"]:
        cx = (0.25 if obj["position"] == "left" else 0.75) * side
        cy = 0.5 * side
        r = (0.12 if obj["size"] == "small" else 0.21) * side
        if rng is not None:
            cx += rng.uniform(-0.06, 0.06) * side
            cy += rng.uniform(-0.12, 0.12) * side
            r *= rng.uniform(0.92, 1.08)
        color = COLORS[obj["color"]]
        if obj["shape"] == "circle":
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=color)
        elif obj["shape"] == "square":
            h = 0.85 * r
            draw.rectangle([cx - h, cy - h, cx + h, cy + h], fill=color)
        elif obj["shape"] == "triangle":
            draw.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=color)
        else:  # cross
            t = 0.33 * r
            draw.rectangle([cx - r, cy - t, cx + r, cy + t], fill=color)
            draw.rectangle([cx - t, cy - r, cx + t, cy + r], fill=color)
    image = image.resize((image_size, image_size), Image.Resampling.LANCZOS)
    if rng is not None:
        pixels = np.asarray(image, dtype=np.int16) + rng.integers(-4, 5, size=(image_size, image_size, 3))
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    return image
