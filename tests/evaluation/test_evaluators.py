"""End to end: a tiny random model evaluates a subset of each benchmark on placeholder images."""

from __future__ import annotations

import pytest
import torch
from cir_placeholders import circo_images, cirr_images, fashioniq_images

from mra_cir.evaluation import CircoEvaluator, CirrEvaluator, FashionIQEvaluator
from mra_cir.evaluation.circo import score_circo
from mra_cir.evaluation.cirr import score_cirr
from mra_cir.retrieval.encoding import model_fingerprint

N_QUERIES = 4


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: thread wake-ups cost more than the math on a shared 2-core machine (7.5 s -> 1.3 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _brute_force_rankings(model, processor, split, exclude_reference: bool, k: int = 50) -> dict[str, list[str]]:
    """Rank the gallery by the token-level max cosine, one image at a time, without the evaluator's code."""
    with torch.no_grad():
        ids = list(split.gallery["image_id"])
        keys = torch.cat(
            [
                model.get_image_features(processor(images=[row["image"].convert("RGB")])["pixel_values"])
                for row in split.gallery
            ]
        )
        out = {}
        for row in split.queries:
            enc = processor(images=[row["reference_image"].convert("RGB")], text=[row["text"]])
            q = model.get_composed_features(enc["pixel_values"], enc["input_ids"], enc["attention_mask"])[0]
            scores = (keys @ q).amax(dim=-1)
            order = [ids[i] for i in torch.argsort(scores, descending=True, stable=True).tolist()]
            if exclude_reference:
                order = [x for x in order if x != row["reference_id"]]
            out[row["query_id"]] = order[:k]
    return out


def test_cirr_end_to_end(benchmarks_dir, tmp_path, tiny_model, tiny_processor):
    root = cirr_images(benchmarks_dir, tmp_path / "cirr", N_QUERIES, n_extra=8)
    evaluator = CirrEvaluator(
        root,
        annotations_dir=benchmarks_dir / "cirr",
        allow_missing=True,
        max_queries=N_QUERIES,
        cache_dir=tmp_path / "cache",
        batch_size=8,
        show_progress=False,
    )
    metrics = evaluator(tiny_model, tiny_processor)
    assert list(metrics) == ["R@1", "R@5", "R@10", "R@50", "R_subset@1", "R_subset@2", "R_subset@3"]
    split = evaluator.splits["cirr"]
    assert not evaluator.complete and len(split.queries) == N_QUERIES
    expected = _brute_force_rankings(tiny_model, tiny_processor, split, exclude_reference=True)
    assert evaluator.rankings["cirr"] == expected  # reference removed, same order as brute force
    for row in split.queries:
        ranked_members = evaluator.subset_rankings["cirr"][row["query_id"]]
        assert sorted(ranked_members) == sorted(m for m in row["members"] if m != row["reference_id"])
        full = expected[row["query_id"]]
        assert ranked_members == [x for x in full if x in set(ranked_members)]  # same order as the full ranking
    # the metrics are the protocol applied to these rankings
    rescored = score_cirr(
        list(expected.values()),
        split.queries["reference_id"],
        [t[0] for t in split.queries["target_ids"]],
        split.queries["members"],
    )
    assert metrics == pytest.approx(rescored)
    # the gallery features are cached: a second run does not encode the gallery again
    assert len(list((tmp_path / "cache").glob("cirr-val-*.safetensors"))) == 1
    original = tiny_model.get_image_features
    tiny_model.get_image_features = lambda *a, **k: (_ for _ in ()).throw(AssertionError("gallery re-encoded"))
    try:
        assert evaluator(tiny_model, tiny_processor) == metrics
    finally:
        tiny_model.get_image_features = original
    files = evaluator.save_rankings(tmp_path / "out")
    assert sorted(p.name for p in files) == ["cirr_val_recall.json", "cirr_val_recall_subset.json"]


def test_fashioniq_end_to_end(benchmarks_dir, tmp_path, tiny_model, tiny_processor):
    fashioniq_images(benchmarks_dir, tmp_path, N_QUERIES, n_extra=6)
    common = dict(
        annotations_dir=benchmarks_dir / "fashioniq",
        allow_missing=True,
        max_queries=N_QUERIES,
        cache_dir="",
        show_progress=False,
        batch_size=4,
    )
    evaluator = FashionIQEvaluator(tmp_path, **common)
    metrics = evaluator(tiny_model, tiny_processor)
    assert list(metrics) == [f"{c}_R@{k}" for c in ("dress", "shirt", "toptee") for k in (10, 50)] + [
        "average_R@10",
        "average_R@50",
    ]
    for cat in ("dress", "shirt", "toptee"):
        split = evaluator.splits[cat]
        # the reference stays in the gallery; galleries are tiny, so every target is within the top 50
        assert evaluator.rankings[cat] == _brute_force_rankings(tiny_model, tiny_processor, split, False)
        assert metrics[f"{cat}_R@50"] == 100.0
    assert evaluator.primary_metric in metrics
    averaged = FashionIQEvaluator(tmp_path, categories=["dress"], caption_order_average=True, **common)
    out = averaged(tiny_model, tiny_processor)
    assert list(out) == ["dress_R@10", "dress_R@50", "average_R@10", "average_R@50"]
    texts = averaged.query_texts(averaged.splits["dress"])
    assert texts[0][0].split(" and ")[0].lower() != texts[0][1].split(" and ")[0].lower() or texts[0][0] == texts[0][1]


def test_circo_end_to_end(benchmarks_dir, tmp_path, tiny_model, tiny_processor):
    root = circo_images(benchmarks_dir, tmp_path, N_QUERIES, n_extra=5)
    kwargs = dict(annotations_dir=benchmarks_dir / "circo", max_queries=N_QUERIES, cache_dir="", show_progress=False)
    evaluator = CircoEvaluator(root, **kwargs)
    metrics = evaluator(tiny_model, tiny_processor)
    assert list(metrics)[:8] == [f"{m}@{k}" for m in ("mAP", "Recall") for k in (5, 10, 25, 50)]
    split = evaluator.splits["circo"]
    expected = _brute_force_rankings(tiny_model, tiny_processor, split, exclude_reference=False)
    assert evaluator.rankings["circo"] == expected
    rescored = score_circo(list(expected.values()), split.queries["target_ids"])
    assert {k: metrics[k] for k in rescored} == pytest.approx(rescored)  # extras: tests/evaluation/test_circo_extras
    excluded = CircoEvaluator(root, exclude_reference=True, **kwargs)
    excluded(tiny_model, tiny_processor)
    for row in split.queries:
        assert row["reference_id"] not in excluded.rankings["circo"][row["query_id"]]
    # a subset cannot make a test-server file: the writer names the missing queries
    with pytest.raises(ValueError, match="query id"):
        evaluator.write_submission(tmp_path / "sub")


def test_model_fingerprint_tracks_weights(tiny_model):
    before = model_fingerprint(tiny_model)
    assert model_fingerprint(tiny_model) == before
    with torch.no_grad():
        tiny_model.text_projection.weight[0, 0] += 1.0
    try:
        assert model_fingerprint(tiny_model) != before
    finally:
        with torch.no_grad():
            tiny_model.text_projection.weight[0, 0] -= 1.0
