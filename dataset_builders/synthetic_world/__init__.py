"""The synthetic world: rendered scenes with known scene graphs, the offline stand-in for real images and benchmarks.

`scenes` (vocabulary, scene graphs, single edits, pool captions, renderer), `edits` (multi-edit queries and their
held-out phrasings), `cirr_style` and `circo_style` (the benchmarks built like CIRR and CIRCO), `single_edit` (the
one-edit diagnostic benchmark), `builder` (the `SyntheticWorld` datasets builder: pool, stage-1 corpus, benchmark
parts; `build_world`), `export` (each benchmark in its real counterpart's official file layout), `scene_agent` (the MRA
agent answering from scene graphs, registered as the `"scene"` agent backend).
"""

from __future__ import annotations

from .builder import (
    BENCHMARKS,
    PARTS,
    SyntheticWorld,
    SyntheticWorldConfig,
    World,
    build_world,
    generate_alignment_corpus,
    generate_pool,
)
from .circo_style import generate_circo_style
from .cirr_style import generate_cirr_style
from .edits import benchmark_texts
from .scenes import (
    BACKGROUNDS,
    BENCHMARK_TEMPLATES,
    CAPTION_TEMPLATES,
    COLORS,
    EDIT_TYPES,
    HELD_OUT_PAIRS,
    POSITIONS,
    SHAPES,
    SIZES,
    apply_edit,
    benchmark_text,
    canonical,
    has_held_out_pair,
    object_phrase,
    pool_caption,
    possible_edits,
    render_scene,
    sample_scene,
    world_texts,
)
from .single_edit import generate_benchmark

__all__ = [
    "BACKGROUNDS",
    "BENCHMARKS",
    "BENCHMARK_TEMPLATES",
    "CAPTION_TEMPLATES",
    "COLORS",
    "EDIT_TYPES",
    "HELD_OUT_PAIRS",
    "PARTS",
    "POSITIONS",
    "SHAPES",
    "SIZES",
    "SyntheticWorld",
    "SyntheticWorldConfig",
    "World",
    "apply_edit",
    "benchmark_texts",
    "benchmark_text",
    "build_world",
    "canonical",
    "generate_alignment_corpus",
    "generate_benchmark",
    "generate_circo_style",
    "generate_cirr_style",
    "generate_pool",
    "has_held_out_pair",
    "object_phrase",
    "pool_caption",
    "possible_edits",
    "render_scene",
    "sample_scene",
    "world_texts",
]
