"""The synthetic world: rendered scenes with known scene graphs, the offline stand-in for real images and benchmarks.

`scenes` (vocabulary, scene graphs, edits, phrasings, renderer), `builder` (the `SyntheticWorld` datasets builder:
pool, stage-1 corpus, benchmark parts; `build_world`), `single_edit` (the one-edit diagnostic benchmark),
`scene_agent` (the MRA agent answering from scene graphs, registered as the `"scene"` agent backend).
"""

from __future__ import annotations

from .builder import (
    PARTS,
    SyntheticWorld,
    SyntheticWorldConfig,
    World,
    build_world,
    generate_alignment_corpus,
    generate_pool,
)
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
    "benchmark_text",
    "build_world",
    "canonical",
    "generate_alignment_corpus",
    "generate_benchmark",
    "generate_pool",
    "has_held_out_pair",
    "object_phrase",
    "pool_caption",
    "possible_edits",
    "render_scene",
    "sample_scene",
    "world_texts",
]
