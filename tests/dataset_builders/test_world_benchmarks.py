"""The world's CIRR-style and CIRCO-style benchmarks: how they are built, their official-layout export read back by the
real loaders, byte-for-byte determinism, and scoring by the real evaluators checked against hand-computed rankings."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from mra_cir.dataset_builders.synthetic_world import (
    CAPTION_TEMPLATES,
    build_world,
    canonical,
    has_held_out_pair,
    world_texts,
)
from mra_cir.dataset_builders.synthetic_world.circo_style import generate_circo_style
from mra_cir.dataset_builders.synthetic_world.cirr_style import generate_cirr_style
from mra_cir.dataset_builders.synthetic_world.edits import CLAUSE_TEMPLATES, apply_edits, benchmark_texts
from mra_cir.dataset_builders.synthetic_world.export import cirr_names, export_circo_layout, export_cirr_layout
from mra_cir.dataset_builders.synthetic_world.scene_agent import AGENT_TEMPLATES, agent_texts
from mra_cir.evaluation import CircoEvaluator, CircoLoader, CirrEvaluator, CirrLoader


@pytest.fixture(scope="module")
def cirr():
    return generate_cirr_style(seed=3, num_queries=60, image_size=16)


def test_cirr_style_sets_texts_and_targets(cirr):
    gallery, queries = cirr
    scene = {g["id"]: g["scene_graph"] for g in gallery}
    assert len(set(scene)) == len(gallery) and len(set(scene.values())) == len(gallery)  # one image per scene
    sets = Counter(g["set"] for g in gallery)
    assert set(sets.values()) == {6}
    per_set = Counter(q["set_id"] for q in queries)
    assert max(per_set.values()) <= 8 and len(gallery) / len(queries) < 1.0  # several queries per set (CIRR: 8.3)
    roles = Counter(g["role"] for g in gallery)
    assert roles["reference"] == roles["target"] == roles["text_only"] == len(sets)
    for q in queries:
        assert len(q["members"]) == len(set(q["members"])) == 6
        assert q["reference_id"] in q["members"] and q["target_id"] in q["members"]
        assert {gallery_set for gallery_set in (g["set"] for g in gallery if g["id"] in q["members"])} == {q["set_id"]}
        edits = json.loads(q["edits"])
        assert 1 <= len(edits) == q["num_edits"] <= 3
        reference = json.loads(q["reference_scene_graph"])
        assert canonical(apply_edits(reference, edits)) == q["target_scene_graph"] == scene[q["target_id"]]
        assert has_held_out_pair(reference) or has_held_out_pair(json.loads(q["target_scene_graph"]))
    counts = Counter(q["num_edits"] for q in queries)
    assert counts.most_common(1)[0][0] == 2 and set(counts) == {1, 2, 3}  # mostly 2


def test_circo_style_ground_truths_are_every_matching_image():
    gallery, queries = generate_circo_style(seed=3, num_queries=20, image_size=16)
    scene = {g["id"]: g["scene_graph"] for g in gallery}
    for q in queries:
        assert q["gt_ids"] and q["reference_id"] not in q["gt_ids"]
        assert scene[q["gt_ids"][0]] == q["target_scene_graph"]  # the main target first (CIRCO's target_img_id)
        matching = [g for g in scene if g != q["reference_id"] and scene[g] in q["gt_scene_graphs"]]
        assert sorted(matching) == sorted(q["gt_ids"])
        assert q["semantic_aspects"] and ("statement_with_conjunction" in q["semantic_aspects"]) == (
            q["num_edits"] > 1
        )
    assert 2 <= sum(len(q["gt_ids"]) for q in queries) / len(queries) <= 7  # CIRCO val: mean 4.16


def test_phrasings_are_held_out_and_words_known(cirr):
    training = [*CAPTION_TEMPLATES, *(t for group in AGENT_TEMPLATES.values() for t in group)]
    for clause in (re.sub(r"\{[a-z_]+\}", "", t).strip() for group in CLAUSE_TEMPLATES.values() for t in group):
        assert not clause or not any(clause in re.sub(r"\{[a-z_]+\}", "", t) for t in training), clause
    vocabulary = set(" ".join(world_texts() + agent_texts() + benchmark_texts()).replace(",", " , ").split())
    for q in cirr[1]:
        words = q["modification_text"].replace(",", " , ").replace(";", " ; ").split()
        assert set(words) <= vocabulary, set(words) - vocabulary


def _digest(folder) -> dict[str, str]:
    return {
        p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_export_loads_through_the_real_loaders_and_repeats_byte_for_byte(tmp_path):
    from mra_cir.quickstart.benchmarks import export_benchmarks

    world = build_world(
        seed=5, pool_size=20, num_queries=4, cirr_queries=30, circo_queries=10, cache_dir=tmp_path / "c"
    )
    first = export_benchmarks(world, tmp_path / "a")
    again = export_benchmarks(build_world(seed=5, pool_size=20, num_queries=4, cirr_queries=30, circo_queries=10,
                                          cache_dir=tmp_path / "c2"), tmp_path / "b")  # fmt: skip
    for name in first:
        assert _digest(first[name]) == _digest(again[name]), name
    other = export_benchmarks(build_world(seed=6, pool_size=20, num_queries=4, cirr_queries=30, circo_queries=10,
                                          cache_dir=tmp_path / "c3"), tmp_path / "o")  # fmt: skip
    assert _digest(first["cirr_style"]) != _digest(other["cirr_style"])

    split = CirrLoader(first["cirr_style"]).load("val")
    gallery = set(split.gallery["image_id"])
    assert len(gallery) == len(split.gallery) == len(world.benchmarks["cirr_style"][0])  # unique ids, all present
    assert len(split.queries) == 30 and split.complete
    for row in split.queries:
        assert len(row["members"]) == 6 and set(row["members"]) <= gallery
        assert row["target_ids"][0] in row["members"] and row["reference_id"] in row["members"]
    names = cirr_names(world.benchmarks["cirr_style"][0])
    queries = world.benchmarks["cirr_style"][1]
    assert [names[r] for r in split.queries["reference_id"]] == queries["reference_id"]
    assert [names[t[0]] for t in split.queries["target_ids"]] == queries["target_id"]

    circo = CircoLoader(first["circo_style"]).load("val")
    assert len(circo.gallery) == len(world.benchmarks["circo_style"][0]) and circo.complete
    assert all(set(t) <= set(circo.gallery["image_id"]) for t in circo.queries["target_ids"])
    records = json.loads((first["circo_style"] / "annotations" / "val.json").read_text())
    assert all(r["gt_img_ids"][0] == r["target_img_id"] for r in records)


def test_export_refuses_an_image_outside_the_gallery(tmp_path, cirr):
    import datasets

    gallery = datasets.Dataset.from_list([{"id": g["id"], "image": g["image"]} for g in cirr[0][:12]])
    query = {**cirr[1][0], "target_id": "nowhere"}
    with pytest.raises(ValueError, match="not in the gallery"):
        export_cirr_layout(gallery, [query], tmp_path / "x")
    with pytest.raises(ValueError, match="not in the gallery"):
        export_circo_layout(
            gallery, [{"reference_id": "nowhere", "target_ids": [], "modification_text": "a"}], tmp_path
        )


class _TokenModel(torch.nn.Module):
    """A model whose features are known: image i has the Q tokens `tokens[i]` (read from pixel 0 of its red channel),
    texts map to fixed vectors; the composed query is never asked for. Lets the evaluators be checked by hand."""

    def __init__(self, tokens: torch.Tensor, text_vectors: dict[str, torch.Tensor]):
        super().__init__()
        self.tokens, self.text_vectors = tokens, text_vectors
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"num_query_tokens": tokens.shape[1], "image_text_hidden_size": tokens.shape[2],
                                     "to_json_string": lambda self, use_diff=False: "{}"})()  # fmt: skip

    def get_image_features(self, pixel_values):
        return self.tokens[pixel_values[:, 0, 0, 0].round().long()]

    def get_text_features(self, input_ids, attention_mask=None):
        return torch.stack([self.text_vectors[int(i)] for i in input_ids[:, 0]])


class _Processor:
    """Images carry their gallery index in pixel (0, 0); a text is its query number."""

    image_processor = None

    def __call__(self, images=None, text=None, return_tensors="pt", **kwargs):
        out = {}
        if images is not None:
            out["pixel_values"] = torch.tensor([float(im.getpixel((0, 0))[0]) for im in images]).view(-1, 1, 1, 1)
            out["pixel_values"] = out["pixel_values"].expand(-1, 3, 1, 1).contiguous()
        if text is not None:
            out["input_ids"] = torch.tensor([[int(t)] for t in text])
            out["attention_mask"] = torch.ones_like(out["input_ids"])
        return out


def test_late_fusion_and_subset_recall_against_hand_computed_rankings(tmp_path):
    """A tiny CIRR-layout export scored by `CirrEvaluator` (late fusion) equals rankings computed by hand."""
    import datasets
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    count, tokens_per_image, dim = 12, 2, 8
    tokens = F.normalize(torch.randn(count, tokens_per_image, dim, generator=generator), dim=-1)
    texts = {q: F.normalize(torch.randn(dim, generator=generator), dim=0) for q in range(4)}
    ids = [f"img{i}" for i in range(count)]
    images = [Image.new("RGB", (4, 4), (i, 0, 0)) for i in range(count)]
    gallery = datasets.Dataset.from_dict({"id": ids, "image": images})
    sets = [ids[0:6], ids[6:12]]
    queries = [
        {"reference_id": ids[0], "target_id": ids[3], "members": sets[0], "set_id": 0, "modification_text": "0"},
        {"reference_id": ids[2], "target_id": ids[5], "members": sets[0], "set_id": 0, "modification_text": "1"},
        {"reference_id": ids[7], "target_id": ids[6], "members": sets[1], "set_id": 1, "modification_text": "2"},
        {"reference_id": ids[11], "target_id": ids[9], "members": sets[1], "set_id": 1, "modification_text": "3"},
    ]
    folder = export_cirr_layout(gallery, queries, tmp_path / "cirr")
    names = cirr_names(gallery)
    model, processor = _TokenModel(tokens, texts), _Processor()
    run = CirrEvaluator(str(folder), cache_dir="", query_mode="image_text_fusion", show_progress=False, top_k=50)
    metrics = run(model, processor)

    expected_full, expected_subset = {}, {}
    for q, query in enumerate(queries):
        reference = ids.index(query["reference_id"])
        fused = F.normalize(tokens[reference] + texts[q], dim=-1)  # (Q, D): each image token + the text, normalised
        scores = torch.einsum("qd,mkd->mqk", fused, tokens).amax(dim=(1, 2))
        order = [ids[i] for i in torch.argsort(scores, descending=True, stable=True).tolist()]
        expected_full[q] = [i for i in order if i != query["reference_id"]]
        expected_subset[q] = [i for i in order if i in query["members"] and i != query["reference_id"]]
    for q, query_id in enumerate(run.rankings["cirr"]):
        assert [names[i] for i in run.rankings["cirr"][query_id]] == expected_full[q]
        assert [names[i] for i in run.subset_rankings["cirr"][query_id]] == expected_subset[q]
    hits = [expected_full[q].index(query["target_id"]) for q, query in enumerate(queries)]
    assert metrics["R@1"] == pytest.approx(100 * sum(h < 1 for h in hits) / 4)
    assert metrics["R@5"] == pytest.approx(100 * sum(h < 5 for h in hits) / 4)
    subset_hits = [expected_subset[q].index(query["target_id"]) for q, query in enumerate(queries)]
    for k in (1, 2, 3):
        assert metrics[f"R_subset@{k}"] == pytest.approx(100 * sum(h < k for h in subset_hits) / 4)

    circo_folder = export_circo_layout(
        gallery,
        [{"reference_id": q["reference_id"], "target_ids": [q["target_id"]], "modification_text": q["modification_text"]}
         for q in queries],
        tmp_path / "circo",
    )  # fmt: skip
    circo = CircoEvaluator(str(circo_folder), cache_dir="", query_mode="image", show_progress=False)(model, processor)
    precision = []
    for query in queries:  # image-only, reference kept (CIRCO's protocol): AP@5 of one ground truth = 1 / rank
        reference = ids.index(query["reference_id"])
        scores = torch.einsum("qd,mkd->mqk", tokens[reference], tokens).amax(dim=(1, 2))
        order = [ids[i] for i in torch.argsort(scores, descending=True, stable=True).tolist()]
        rank = order.index(query["target_id"]) + 1
        precision.append(1 / rank if rank <= 5 else 0.0)
    assert circo["mAP@5"] == pytest.approx(100 * sum(precision) / 4)
