"""The synthetic world as a `datasets` builder: an unlabeled pool, a stage-1 caption corpus and the benchmarks.

The world has two parts, both produced by the [`SyntheticWorld`] builder (one `part` per config):

- **pool** (`part="pool"`): unlabeled images (id, image, scene graph, a ground-truth caption in one of a few
  alt-text templates). The MRA pipeline mines pairs here; stage-1 alignment trains on the (image, caption) pairs.
- **benchmark** (`part="gallery"` and `part="queries"`): the single-edit benchmark ([`.single_edit`]).

Scenes, edits, phrasings and the renderer are in [`.scenes`]; the scene-graph agent in [`.scene_agent`].

Example:

```python
>>> from mra_cir.dataset_builders.synthetic_world import build_world
>>> world = build_world(seed=0, pool_size=200, num_queries=20, cache_dir="/tmp/world")
>>> world.pool[0]["caption"], world.queries[0]["modification_text"]
```
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np
from PIL import Image

from .scenes import (
    CAPTION_TEMPLATES,
    apply_edit,
    canonical,
    has_held_out_pair,
    pool_caption,
    possible_edits,
    render_scene,
    sample_scene,
)
from .single_edit import generate_benchmark


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
    "PARTS",
    "SyntheticWorld",
    "SyntheticWorldConfig",
    "World",
    "build_world",
    "generate_alignment_corpus",
    "generate_pool",
]
