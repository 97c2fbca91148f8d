"""The world's pool of variants (near-duplicates, families, an unbalanced mix of edits): what it draws, that it uses
no word outside the world's vocabulary, and that the world builder keeps it apart in its cache."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest

from mra_cir.dataset_builders.synthetic_world import build_world, world_texts
from mra_cir.dataset_builders.synthetic_world.scenes import has_held_out_pair
from mra_cir.dataset_builders.synthetic_world.true_types import pair_types
from mra_cir.dataset_builders.synthetic_world.variant_pool import generate_variant_pool, one_edit, parse_edit_weights


def _rows(**kwargs):
    return [row for _, row in generate_variant_pool(0, 60, image_size=16, **kwargs)]


def test_families_are_one_edit_from_their_root():
    rows = _rows(variants_per_root=10, edit_weights={"color": 1.0})
    graphs = [json.loads(r["scene_graph"]) for r in rows]
    roots = graphs[:6]  # ceil(60 / 10)
    for graph in graphs[6:]:
        types = [pair_types(root, graph) for root in roots]
        assert ["color"] in types or [] in types  # a recolouring of one root (or, rarely, a copy)
    assert not any(has_held_out_pair(g) for g in graphs)


def test_unbalanced_weights_set_the_mix_of_edits():
    rng = np.random.default_rng(0)
    weights = parse_edit_weights("color=0.7,shape=0.1,size=0.1,background=0.1")
    graph = {
        "background": "gray",
        "objects": [{"shape": "circle", "color": "red", "size": "small", "position": "left"}],
    }
    kinds = Counter(one_edit(rng, graph, weights)[1] for _ in range(400))
    assert 0.6 < kinds["color"] / 400 < 0.8 and set(kinds) <= {"color", "shape", "size", "background"}


def test_duplicate_rate_gives_near_copies():
    rows = _rows(variants_per_root=30, duplicate_rate=1.0)
    graphs = [r["scene_graph"] for r in rows]
    assert len(set(graphs)) == 2  # every variant re-renders its root
    root = next(r for r in rows[:2] if r["scene_graph"] == graphs[2])
    assert rows[2]["image"].tobytes() != root["image"].tobytes()  # the same scene, rendered again (jitter, noise)


def test_captions_use_only_the_worlds_words():
    """The shipped stand-in's tokenizer knows the world's words only: a new pool must not need another."""
    known = {w for text in world_texts() for w in re.findall(r"[a-z]+", text)}
    words = {w for r in _rows(variants_per_root=5, duplicate_rate=0.3) for w in re.findall(r"[a-z]+", r["caption"])}
    assert words <= known


def test_parse_edit_weights_errors():
    assert parse_edit_weights("")["color"] == 3.0  # the benchmarks' mix
    with pytest.raises(ValueError, match="KIND=WEIGHT"):
        parse_edit_weights("colour=1")
    with pytest.raises(ValueError, match="not a number"):
        parse_edit_weights("color=x")
    with pytest.raises(ValueError, match="positive weight"):
        parse_edit_weights("color=0")


def test_world_builder_keeps_pool_kinds_apart(tmp_path):
    options = {"variants_per_root": 10, "duplicate_rate": 0.5, "edit_weights": "color=1"}
    varied = build_world(0, 40, 4, 16, cache_dir=tmp_path, cirr_queries=4, circo_queries=4, pool_options=options)
    plain = build_world(0, 40, 4, 16, cache_dir=tmp_path, cirr_queries=4, circo_queries=4)
    assert varied.pool["scene_graph"] != plain.pool["scene_graph"]
    assert len(set(varied.pool["scene_graph"])) < len(set(plain.pool["scene_graph"]))  # denser
    assert varied.settings["variants_per_root"] == 10 and "variants_per_root" not in plain.settings
    assert varied.benchmarks["cirr_style"][1]["query_id"] == plain.benchmarks["cirr_style"][1]["query_id"]
