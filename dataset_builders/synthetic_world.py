"""A small synthetic world for composed image retrieval: rendered scenes with known scene graphs.

Each image is one or two objects (shape, colour, size, left/right slot) on a coloured background, rendered with PIL
(4x super-sampled, small position and size jitter, faint pixel noise) and described by its scene graph:

```json
{"background": "gray", "objects": [{"shape": "circle", "color": "red", "size": "large", "position": "left"}]}
```

The world has two parts, both produced by the [`SyntheticWorld`] builder (one `part` per config):

- **pool** (`part="pool"`): unlabeled images (id, image, scene graph, a ground-truth caption in one of a few
  alt-text templates). The MRA pipeline mines pairs here; stage-1 alignment trains on the (image, caption) pairs.
- **benchmark** (`part="gallery"` and `part="queries"`): CIRCO-style queries (reference id, modification text,
  *all* ground-truth target ids in the gallery). The target is the reference with one attribute of one object
  changed (colour, shape or size). The gallery holds, per query, the reference, one or two renderings of the target,
  distractors that share the reference's other attributes (the reference with a *different* single edit) and
  distractors that match the text but not the reference (the changed object in another scene), so the task needs
  both the image and the text.

What is held out (the zero-shot part):

- *attribute combinations*: the (shape, colour) pairs in `HELD_OUT_PAIRS` never occur in the pool; every benchmark
  query has one in its reference or its target;
- *phrasing*: the benchmark's modification templates (`BENCHMARK_TEMPLATES`) are never used by the pool captions or by
  the scene agent. The *words* are not held out: the tokenizer is trained on every word of the world, and every
  content word (colours, shapes, sizes) occurs in the pool captions, as a pretrained model knows the words of a
  benchmark it was never trained on. A few function words of the benchmark templates ("instead", "place") appear in
  no training text; their embeddings stay at initialisation, as a real zero-shot model meets unseen phrasings.

Example:

```python
>>> from dataset_builders.synthetic_world import build_world
>>> world = build_world(seed=0, pool_size=200, num_queries=20, cache_dir="/tmp/world")
>>> world.pool[0]["caption"], world.queries[0]["modification_text"]
```
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import datasets
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


# ----------------------------------------------------------------------------------------------------------------------
# Generation (deterministic in the seed; the pool and the benchmark use independent streams)
# ----------------------------------------------------------------------------------------------------------------------
def generate_pool(seed: int, pool_size: int, image_size: int = 32):
    """Yield `(id, row)` for the pool: `row = {"id", "image", "scene_graph", "caption"}`; no `HELD_OUT_PAIRS`."""
    rng = np.random.default_rng([seed, 1])
    for i in range(pool_size):
        graph = sample_scene(rng, held_out="never")
        caption, image = _captioned_render(graph, image_size, rng)
        yield (
            f"pool_{i:05d}",
            {"id": f"pool_{i:05d}", "image": image, "scene_graph": canonical(graph), "caption": caption},
        )


def _captioned_render(graph: dict, image_size: int, rng: np.random.Generator) -> tuple[str, Image.Image]:
    """A pool-style caption (random template) and a rendering of `graph`, drawn from `rng` in that order."""
    caption = pool_caption(graph, int(rng.integers(len(CAPTION_TEMPLATES))))
    return caption, render_scene(graph, image_size, rng)


def generate_alignment_corpus(
    seed: int, size: int, image_size: int = 32, edit_pairs: bool = False
) -> tuple[list, list[str], list[str]]:
    """A captioned corpus for stage-1 alignment, disjoint from the pool: `(images, captions, scene_graphs)`.

    The stand-in for the web-scale image-text data a real BLIP-2 was pretrained on: drawn like the pool (no
    `HELD_OUT_PAIRS`, the pool's caption templates) from its own random stream, so the unlabeled pool stays unlabeled
    and the benchmark stays zero-shot.

    Args:
        edit_pairs (`bool`, defaults to `False`): draw the corpus as consecutive pairs, a scene and the same scene with
            one attribute of one object changed (never into a held-out pair), each with its own caption: in-batch
            hard negatives for contrastive training when a pair shares a batch (NegCLIP-style), which web-scale data
            provides by sheer size and a 20k-image corpus does not. No modification text is written.
    """
    rng = np.random.default_rng([seed, 3])
    images, captions, graphs = [], [], []

    def add(graph: dict) -> None:
        caption, image = _captioned_render(graph, image_size, rng)
        captions.append(caption)
        images.append(image)
        graphs.append(canonical(graph))

    while len(images) < size:
        graph = sample_scene(rng, held_out="never")
        add(graph)
        if edit_pairs and len(images) < size:
            edits = [e for e in possible_edits(graph) if not has_held_out_pair(apply_edit(graph, e))]
            add(apply_edit(graph, edits[int(rng.integers(len(edits)))]))
    return images, captions, graphs


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


# ----------------------------------------------------------------------------------------------------------------------
# The builder
# ----------------------------------------------------------------------------------------------------------------------
PARTS = ("pool", "gallery", "queries")


@dataclass
class SyntheticWorldConfig(datasets.BuilderConfig):
    """Configuration of [`SyntheticWorld`]: every field changes the output, so all of them are in the cache key.

    Args:
        part (`str`, defaults to `"pool"`): `"pool"`, `"gallery"` or `"queries"`.
        seed (`int`, defaults to 0): world seed (pool and benchmark use independent streams of it).
        pool_size (`int`, defaults to 2000): number of pool images.
        num_queries (`int`, defaults to 200): number of benchmark queries (the gallery has ~8.3 images per query).
        image_size (`int`, defaults to 32): side of the rendered images in pixels.
        reference_distractors (`int`, defaults to 3): gallery images per query that are the reference with another
            single edit.
        text_distractors (`int`, defaults to 3): gallery images per query that contain the changed object in another
            scene.
    """

    part: str = "pool"
    seed: int = 0
    pool_size: int = 2000
    num_queries: int = 200
    image_size: int = 32
    reference_distractors: int = 3
    text_distractors: int = 3

    def __post_init__(self):
        super().__post_init__()
        if self.part not in PARTS:
            raise ValueError(f"SyntheticWorldConfig.part must be one of {PARTS}, got {self.part!r}")
        for name in ("pool_size", "num_queries", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticWorldConfig.{name} must be positive, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ValueError(f"SyntheticWorldConfig.image_size must be at least 8 pixels, got {self.image_size}")
        if self.name == "default":
            self.name = (
                f"{self.part}-s{self.seed}-n{self.pool_size}-q{self.num_queries}-px{self.image_size}"
                f"-d{self.reference_distractors}x{self.text_distractors}"
            )


class SyntheticWorld(datasets.GeneratorBasedBuilder):
    """The synthetic composed-retrieval world (one split, `train`, per part). See the module docstring."""

    VERSION = datasets.Version("1.0.0")
    BUILDER_CONFIG_CLASS = SyntheticWorldConfig
    config: SyntheticWorldConfig

    def _info(self) -> datasets.DatasetInfo:
        if self.config.part == "pool":
            features = {"id": "string", "image": datasets.Image(), "scene_graph": "string", "caption": "string"}
        elif self.config.part == "gallery":
            features = {"id": "string", "image": datasets.Image(), "scene_graph": "string", "role": "string"}
        else:
            features = {
                "query_id": "string",
                "reference_id": "string",
                "modification_text": "string",
                "target_ids": datasets.Sequence(datasets.Value("string")),
                "edit": "string",
                "reference_scene_graph": "string",
                "target_scene_graph": "string",
            }
        features = {k: datasets.Value(v) if isinstance(v, str) else v for k, v in features.items()}
        return datasets.DatasetInfo(description=__doc__.split("\n")[0], features=datasets.Features(features))

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN)]

    def _generate_examples(self):
        c = self.config
        if c.part == "pool":
            yield from generate_pool(c.seed, c.pool_size, c.image_size)
            return
        gallery, queries = generate_benchmark(
            c.seed, c.num_queries, c.image_size, c.reference_distractors, c.text_distractors
        )
        rows = gallery if c.part == "gallery" else queries
        key = "id" if c.part == "gallery" else "query_id"
        for row in rows:
            yield row[key], row


@dataclass
class World:
    """The three parts of a built world (each a `datasets.Dataset`) and the settings that made them."""

    pool: datasets.Dataset
    gallery: datasets.Dataset
    queries: datasets.Dataset
    settings: dict = field(default_factory=dict)


def build_world(
    seed: int = 0,
    pool_size: int = 2000,
    num_queries: int = 200,
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    reference_distractors: int = 3,
    text_distractors: int = 3,
) -> World:
    """Build (or load from `cache_dir`) the pool, the gallery and the queries with [`SyntheticWorld`].

    Args:
        seed, pool_size, num_queries, image_size, reference_distractors, text_distractors: see
            [`SyntheticWorldConfig`].
        cache_dir (`str` or `Path`, *optional*): where the Arrow files go (the datasets default cache otherwise).

    Returns:
        [`World`].
    """
    settings = dict(
        seed=seed,
        pool_size=pool_size,
        num_queries=num_queries,
        image_size=image_size,
        reference_distractors=reference_distractors,
        text_distractors=text_distractors,
    )
    parts = {}
    for part in PARTS:
        builder = SyntheticWorld(cache_dir=str(cache_dir) if cache_dir else None, part=part, **settings)
        builder.download_and_prepare()
        parts[part] = builder.as_dataset(split="train")
    return World(pool=parts["pool"], gallery=parts["gallery"], queries=parts["queries"], settings=settings)


__all__ = [
    "BENCHMARK_TEMPLATES",
    "CAPTION_TEMPLATES",
    "HELD_OUT_PAIRS",
    "SyntheticWorld",
    "SyntheticWorldConfig",
    "World",
    "apply_edit",
    "benchmark_text",
    "build_world",
    "canonical",
    "generate_alignment_corpus",
    "generate_benchmark",
    "generate_pool",
    "pool_caption",
    "possible_edits",
    "render_scene",
    "sample_scene",
    "world_texts",
]


def _scene_agent_factory(**kwargs):
    from .scene_agent import SceneGraphAgent

    return SceneGraphAgent(**kwargs)


def _register() -> None:
    from .agent_base import register_agent_backend

    register_agent_backend("scene", _scene_agent_factory)


_register()
