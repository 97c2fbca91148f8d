"""The synthetic world: determinism, the benchmark's construction, and what is held out from the pool and the agent."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mra_cir.dataset_builders.synthetic_world import (
    BENCHMARK_TEMPLATES,
    CAPTION_TEMPLATES,
    HELD_OUT_PAIRS,
    SyntheticWorldConfig,
    apply_edit,
    build_world,
    canonical,
    generate_alignment_corpus,
    generate_benchmark,
    generate_pool,
    has_held_out_pair,
    pool_caption,
    render_scene,
    world_texts,
)
from mra_cir.dataset_builders.synthetic_world.scene_agent import AGENT_TEMPLATES, agent_texts


def _pool(seed, n=60):
    return [row for _, row in generate_pool(seed, n)]


def test_pool_is_deterministic_in_the_seed():
    a, b, c = _pool(3), _pool(3), _pool(4)
    assert [r["scene_graph"] for r in a] == [r["scene_graph"] for r in b]
    assert all(np.array_equal(np.asarray(x["image"]), np.asarray(y["image"])) for x, y in zip(a, b))
    assert [r["scene_graph"] for r in a] != [r["scene_graph"] for r in c]


def test_benchmark_is_deterministic_and_independent_of_pool_size():
    g1, q1 = generate_benchmark(5, 10)
    g2, q2 = generate_benchmark(5, 10)
    assert q1 == q2 and [g["scene_graph"] for g in g1] == [g["scene_graph"] for g in g2]
    assert np.array_equal(np.asarray(g1[7]["image"]), np.asarray(g2[7]["image"]))


def test_pool_never_contains_held_out_pairs():
    for row in _pool(0, 400):
        graph = json.loads(row["scene_graph"])
        assert not has_held_out_pair(graph), row


def test_alignment_corpus_is_its_own_draw_without_held_out_pairs():
    images, captions, graphs = generate_alignment_corpus(0, 300)
    assert len(images) == len(captions) == len(graphs) == 300
    assert not any(has_held_out_pair(json.loads(g)) for g in graphs)
    pool = _pool(0, 300)
    assert graphs != [r["scene_graph"] for r in pool]  # not the pool: another random stream of the same seed
    again = generate_alignment_corpus(0, 300)
    assert again[1] == captions and np.array_equal(np.asarray(again[0][5]), np.asarray(images[5]))
    assert generate_alignment_corpus(1, 300)[2] != graphs
    for caption, graph in zip(captions, graphs):  # the pool's alt-text templates, describing the drawn scene
        assert caption in {pool_caption(json.loads(graph), t) for t in range(len(CAPTION_TEMPLATES))}


def test_alignment_corpus_edit_pairs_differ_by_one_attribute():
    images, captions, graphs = generate_alignment_corpus(2, 101, edit_pairs=True)
    assert len(images) == 101
    assert not any(has_held_out_pair(json.loads(g)) for g in graphs)
    for first, second in zip(graphs[0:100:2], graphs[1:100:2]):
        a, b = json.loads(first), json.loads(second)
        assert a["background"] == b["background"] and len(a["objects"]) == len(b["objects"])
        changed = [(k, oa[k], ob[k]) for oa, ob in zip(a["objects"], b["objects"]) for k in oa if oa[k] != ob[k]]
        assert len(changed) == 1 and changed[0][0] in ("shape", "color", "size"), (first, second)


def test_every_query_uses_a_held_out_pair_and_one_edit():
    gallery, queries = generate_benchmark(1, 40)
    by_id = {g["id"]: g for g in gallery}
    for query in queries:
        reference = json.loads(query["reference_scene_graph"])
        target = json.loads(query["target_scene_graph"])
        assert has_held_out_pair(reference) or has_held_out_pair(target)
        edit = json.loads(query["edit"])
        assert canonical(apply_edit(reference, edit)) == query["target_scene_graph"]
        differing = [(a, k) for a, b in zip(reference["objects"], target["objects"]) for k in a if a[k] != b[k]]
        assert len(differing) == 1
        # all ground truths: every gallery image of the target scene, never the reference
        expected = {g["id"] for g in gallery if g["scene_graph"] == query["target_scene_graph"]}
        assert set(query["target_ids"]) == expected - {query["reference_id"]} and query["target_ids"]
        assert by_id[query["reference_id"]]["scene_graph"] == query["reference_scene_graph"]
    roles = {g["role"] for g in gallery}
    assert roles == {"reference", "target", "reference_distractor", "text_distractor"}


def test_benchmark_phrasings_are_held_out_from_pool_and_agent():
    _, queries = generate_benchmark(2, 60)
    pool_captions = {row["caption"] for row in _pool(2, 200)}
    from mra_cir.dataset_builders.synthetic_world.pretraining_corpus import held_out_phrasing_in

    for query in queries:
        text = query["modification_text"]
        assert text not in pool_captions and held_out_phrasing_in(text)
    # no agent phrasing holds a held-out one (the check above finds one in every benchmark text)
    filled = [t.format(obj="red circle", new="blue", color="red", position="left", comparative="bigger")
              for group in AGENT_TEMPLATES.values() for t in group]  # fmt: skip
    assert [t for t in filled if held_out_phrasing_in(t)] == []
    agent_words = set(" ".join(agent_texts()).split())
    caption_words = set(" ".join(CAPTION_TEMPLATES).split())
    assert {"instead", "place", "same", "scene"}.isdisjoint(agent_words | caption_words)
    # the words are not held out: every word of a benchmark template is in the tokenizer corpus
    corpus = set(" ".join(world_texts()).split())
    for group in BENCHMARK_TEMPLATES.values():
        for template in group:
            assert {w for w in template.split() if "{" not in w} <= corpus


def test_render_scene_draws_the_colours():
    graph = {
        "background": "black",
        "objects": [{"shape": "square", "color": "red", "size": "large", "position": "left"}],
    }
    pixels = np.asarray(render_scene(graph, 32)).astype(int)
    assert pixels.shape == (32, 32, 3)
    left, right = pixels[:, :16], pixels[:, 16:]
    assert (left[..., 0] > 150).sum() > 40 and (right[..., 0] > 150).sum() == 0


def test_builder_parts_and_validation(tmp_path):
    world = build_world(seed=0, pool_size=12, num_queries=3, cache_dir=tmp_path)
    assert len(world.pool) == 12 and len(world.queries) == 3
    assert set(world.pool.column_names) == {"id", "image", "scene_graph", "caption"}
    gallery_ids = set(world.gallery["id"])
    for query in world.queries:
        assert query["reference_id"] in gallery_ids and set(query["target_ids"]) <= gallery_ids
    assert world.pool[0]["image"].size == (32, 32)
    with pytest.raises(ValueError, match="part"):
        SyntheticWorldConfig(part="train")
    with pytest.raises(ValueError, match="pool_size"):
        SyntheticWorldConfig(pool_size=0)


def test_held_out_pairs_cover_every_shape_once():
    assert len({s for s, _ in HELD_OUT_PAIRS}) == len(HELD_OUT_PAIRS)
    assert len({c for _, c in HELD_OUT_PAIRS}) == len(HELD_OUT_PAIRS)
