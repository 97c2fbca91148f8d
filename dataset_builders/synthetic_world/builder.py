"""The synthetic world as a `datasets` builder: an unlabeled pool, a stage-1 caption corpus and the benchmarks.

The world has two parts, both produced by the [`SyntheticWorld`] builder (one `part` per config):

- **pool** (`part="pool"`): unlabeled images (id, image, scene graph, a ground-truth caption in one of a few
  alt-text templates). The MRA pipeline mines pairs here; stage-1 alignment trains on the (image, caption) pairs.
- **benchmarks** (`part="gallery"` and `part="queries"`, one `benchmark` per config): the CIRR-style benchmark
  ([`.cirr_style`]), the CIRCO-style benchmark ([`.circo_style`]) and the single-edit diagnostic ([`.single_edit`]).
  [`.export`] writes each in the official file layout of the benchmark it imitates.

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

from .circo_style import generate_circo_style
from .cirr_style import generate_cirr_style
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
from .variant_pool import generate_variant_pool, parse_edit_weights


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
#: the world's benchmarks: the CIRR-style and CIRCO-style ones lead, the single-edit one is a labelled diagnostic
BENCHMARKS = ("cirr_style", "circo_style", "single_edit")

_GALLERY_FEATURES = {"id": "string", "image": datasets.Image(), "scene_graph": "string", "role": "string"}
_SEQ = datasets.Sequence(datasets.Value("string"))
_QUERY_FEATURES = {
    "single_edit": {
        "query_id": "string",
        "reference_id": "string",
        "modification_text": "string",
        "target_ids": _SEQ,
        "edit": "string",
        "reference_scene_graph": "string",
        "target_scene_graph": "string",
    },
    "cirr_style": {
        "query_id": "string",
        "reference_id": "string",
        "target_id": "string",
        "members": _SEQ,
        "set_id": "int32",
        "modification_text": "string",
        "join_form": "string",
        "num_edits": "int32",
        "edits": "string",
        "reference_scene_graph": "string",
        "target_scene_graph": "string",
    },
    "circo_style": {
        "query_id": "string",
        "reference_id": "string",
        "gt_ids": _SEQ,
        "gt_scene_graphs": _SEQ,
        "modification_text": "string",
        "semantic_aspects": _SEQ,
        "join_form": "string",
        "num_edits": "int32",
        "edits": "string",
        "reference_scene_graph": "string",
        "target_scene_graph": "string",
    },
}


@dataclass
class SyntheticWorldConfig(datasets.BuilderConfig):
    """Configuration of [`SyntheticWorld`]: every field changes the output, so all of them are in the cache key.

    Args:
        part (`str`, defaults to `"pool"`): `"pool"`, `"gallery"` or `"queries"`.
        benchmark (`str`, defaults to `"single_edit"`): for the gallery and queries parts, which benchmark
            (`BENCHMARKS`: `"cirr_style"`, `"circo_style"` or `"single_edit"`).
        seed (`int`, defaults to 0): world seed (the pool and each benchmark use independent streams of it).
        pool_size (`int`, defaults to 2000): number of pool images.
        num_queries (`int`, defaults to 200): queries of the single-edit benchmark (~8.3 gallery images per query).
        cirr_queries (`int`, defaults to 400): queries of the CIRR-style benchmark (~0.8 gallery images per query).
        circo_queries (`int`, defaults to 200): queries of the CIRCO-style benchmark (~5.5 gallery images per query).
        image_size (`int`, defaults to 32): side of the rendered images in pixels.
        reference_distractors (`int`, defaults to 3), text_distractors (`int`, defaults to 3): the single-edit
            benchmark's distractors per query (see [`.single_edit`]).
        variants_per_root (`int`, defaults to 0): 0 = the default pool of independent scenes; N > 0 = a pool of
            families of variants, N images per root scene ([`.variant_pool`]); with it `duplicate_rate` (share of
            near-duplicate re-renders) and `edit_weights` (`"color=0.7,shape=0.05,..."`, the kind of edit of a
            variant; empty = the benchmarks' mix).
    """

    part: str = "pool"
    benchmark: str = "single_edit"
    seed: int = 0
    pool_size: int = 2000
    num_queries: int = 200
    cirr_queries: int = 400
    circo_queries: int = 200
    image_size: int = 32
    reference_distractors: int = 3
    text_distractors: int = 3
    variants_per_root: int = 0
    duplicate_rate: float = 0.0
    edit_weights: str = ""

    def __post_init__(self):
        super().__post_init__()
        if self.part not in PARTS:
            raise ValueError(f"SyntheticWorldConfig.part must be one of {PARTS}, got {self.part!r}")
        if self.benchmark not in BENCHMARKS:
            raise ValueError(f"SyntheticWorldConfig.benchmark must be one of {BENCHMARKS}, got {self.benchmark!r}")
        for name in ("pool_size", "num_queries", "cirr_queries", "circo_queries", "image_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"SyntheticWorldConfig.{name} must be positive, got {getattr(self, name)}")
        if self.image_size < 8:
            raise ValueError(f"SyntheticWorldConfig.image_size must be at least 8 pixels, got {self.image_size}")
        if self.name == "default":
            what = self.part if self.part == "pool" else f"{self.benchmark}-{self.part}"
            size = {
                "single_edit": self.num_queries,
                "cirr_style": self.cirr_queries,
                "circo_style": self.circo_queries,
            }
            self.name = f"{what}-s{self.seed}-n{self.pool_size}-q{size[self.benchmark]}-px{self.image_size}"
            if self.part != "pool" and self.benchmark == "single_edit":
                self.name += f"-d{self.reference_distractors}x{self.text_distractors}"
            if self.part == "pool" and self.variants_per_root:
                weights = self.edit_weights.replace("=", "").replace(",", "_").replace(".", "p")
                self.name += f"-v{self.variants_per_root}-dup{self.duplicate_rate:g}-{weights or 'mix'}"


class SyntheticWorld(datasets.GeneratorBasedBuilder):
    """The synthetic composed-retrieval world (one split, `train`, per part). See the module docstring."""

    VERSION = datasets.Version("2.0.0")  # 2.0: the CIRR-style and CIRCO-style benchmarks
    BUILDER_CONFIG_CLASS = SyntheticWorldConfig
    config: SyntheticWorldConfig

    def _info(self) -> datasets.DatasetInfo:
        c = self.config
        if c.part == "pool":
            features = {"id": "string", "image": datasets.Image(), "scene_graph": "string", "caption": "string"}
        elif c.part == "gallery":
            features = _GALLERY_FEATURES
        else:
            features = _QUERY_FEATURES[c.benchmark]
        features = {k: datasets.Value(v) if isinstance(v, str) else v for k, v in features.items()}
        return datasets.DatasetInfo(description=__doc__.split("\n")[0], features=datasets.Features(features))

    def _split_generators(self, dl_manager):
        return [datasets.SplitGenerator(name=datasets.Split.TRAIN)]

    def _generate_examples(self):
        c = self.config
        if c.part == "pool" and c.variants_per_root:
            weights = parse_edit_weights(c.edit_weights)
            yield from generate_variant_pool(
                c.seed, c.pool_size, c.image_size, c.variants_per_root, c.duplicate_rate, weights
            )
            return
        if c.part == "pool":
            yield from generate_pool(c.seed, c.pool_size, c.image_size)
            return
        if c.benchmark == "cirr_style":
            gallery, queries = generate_cirr_style(c.seed, c.cirr_queries, c.image_size)
        elif c.benchmark == "circo_style":
            gallery, queries = generate_circo_style(c.seed, c.circo_queries, c.image_size)
        else:
            gallery, queries = generate_benchmark(
                c.seed, c.num_queries, c.image_size, c.reference_distractors, c.text_distractors
            )
        rows = gallery if c.part == "gallery" else queries
        key = "id" if c.part == "gallery" else "query_id"
        names = set(self.info.features)
        for row in rows:
            yield row[key], {k: v for k, v in row.items() if k in names}


@dataclass
class World:
    """A built world: the pool and each benchmark's gallery and queries (`datasets.Dataset`s), and its settings."""

    pool: datasets.Dataset
    benchmarks: dict[str, tuple[datasets.Dataset, datasets.Dataset]]
    settings: dict = field(default_factory=dict)

    @property
    def gallery(self) -> datasets.Dataset:
        """The single-edit benchmark's gallery."""
        return self.benchmarks["single_edit"][0]

    @property
    def queries(self) -> datasets.Dataset:
        """The single-edit benchmark's queries."""
        return self.benchmarks["single_edit"][1]


def build_world(
    seed: int = 0,
    pool_size: int = 2000,
    num_queries: int = 200,
    image_size: int = 32,
    cache_dir: str | Path | None = None,
    reference_distractors: int = 3,
    text_distractors: int = 3,
    cirr_queries: int = 400,
    circo_queries: int = 200,
    benchmarks: tuple[str, ...] = BENCHMARKS,
    pool_options: dict | None = None,
) -> World:
    """Build (or load from `cache_dir`) the pool and the benchmarks with [`SyntheticWorld`].

    Args:
        seed, pool_size, num_queries, image_size, reference_distractors, text_distractors, cirr_queries,
            circo_queries: see [`SyntheticWorldConfig`].
        cache_dir (`str` or `Path`, *optional*): where the Arrow files go (the datasets default cache otherwise).
        benchmarks (`tuple[str, ...]`, defaults to all of `BENCHMARKS`): which benchmarks to build.
        pool_options (`dict`, *optional*): `variants_per_root`, `duplicate_rate`, `edit_weights` of the pool (see
            [`SyntheticWorldConfig`]; the benchmarks do not depend on them).

    Returns:
        [`World`].
    """
    settings = dict(
        seed=seed,
        pool_size=pool_size,
        num_queries=num_queries,
        cirr_queries=cirr_queries,
        circo_queries=circo_queries,
        image_size=image_size,
        reference_distractors=reference_distractors,
        text_distractors=text_distractors,
    )
    cache = str(cache_dir) if cache_dir else None

    pool_options = {k: v for k, v in (pool_options or {}).items() if v}

    def part(name: str, benchmark: str = "single_edit") -> datasets.Dataset:
        extra = pool_options if name == "pool" else {}
        builder = SyntheticWorld(cache_dir=cache, part=name, benchmark=benchmark, **settings, **extra)
        builder.download_and_prepare()
        return builder.as_dataset(split="train")

    built = {name: (part("gallery", name), part("queries", name)) for name in benchmarks}
    return World(pool=part("pool"), benchmarks=built, settings={**settings, **pool_options})


__all__ = [
    "BENCHMARKS",
    "PARTS",
    "SyntheticWorld",
    "SyntheticWorldConfig",
    "World",
    "build_world",
    "generate_alignment_corpus",
    "generate_pool",
]
