"""CIRCO: what the official script prints beside mAP@K (Recall@K against `target_img_id`, mAP@10 per semantic aspect),
checked on hand-built rankings against a separate, loop-by-loop reading of miccunifi/CIRCO `src/evaluation.py`, through
`score_circo`, `mra-cir evaluate-rankings` and the evaluator."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from cir_placeholders import circo_images

from mra_cir.commands import evaluate_rankings
from mra_cir.evaluation import CircoEvaluator
from mra_cir.evaluation.circo import CIRCO_SEMANTIC_ASPECTS, official_extras, score_circo

KS = (5, 10, 25, 50)


def _official_reading(predictions: dict[str, list[int]], records: list[dict]) -> dict[str, float]:
    """The official script's three outputs, written out query by query (percent; aspects without queries left out)."""
    by_id = {str(r["id"]): r for r in records}
    aps, recalls, aspect_aps = {k: [] for k in KS}, {k: [] for k in KS}, {}
    for qid, ranking in predictions.items():
        record = by_id[qid]
        gts = set(record["gt_img_ids"])
        hits, precisions = 0, []
        for rank, image in enumerate(ranking, start=1):
            hits += image in gts
            precisions.append(hits / rank if image in gts else 0.0)
        for k in KS:
            aps[k].append(sum(precisions[:k]) / min(len(gts), k))
            recalls[k].append(float(record["target_img_id"] in ranking[:k]))
        for aspect in record["semantic_aspects"]:
            aspect_aps.setdefault(aspect, []).append(sum(precisions[:10]) / min(len(gts), 10))
    out = {f"mAP@{k}": 100 * float(np.mean(aps[k])) for k in KS}
    out.update({f"Recall@{k}": 100 * float(np.mean(recalls[k])) for k in KS})
    out.update({f"mAP@10_{a}": 100 * float(np.mean(aspect_aps[a])) for a in CIRCO_SEMANTIC_ASPECTS if a in aspect_aps})
    return out


def _hand_built(records: list[dict], seed: int) -> dict[str, list[int]]:
    """Per query 50 unique COCO ids: the target at a random rank (or absent), the other ground truths scattered."""
    rng = np.random.default_rng(seed)
    out = {}
    for r in records:
        others = [g for g in r["gt_img_ids"] if g != r["target_img_id"]]
        ranking = [int(x) for x in rng.choice(np.arange(10**6, 2 * 10**6), size=50, replace=False)]
        if rng.random() < 0.7:  # the target somewhere in the top 50 (sometimes first, sometimes past 25)
            ranking.insert(int(rng.integers(0, 50)), r["target_img_id"])
        for g in others:
            if rng.random() < 0.5:
                ranking.insert(int(rng.integers(0, 50)), g)
        out[str(r["id"])] = ranking[:50]
    return out


@pytest.fixture(scope="module")
def val_records(benchmarks_dir) -> list[dict]:
    return json.loads((benchmarks_dir / "circo/annotations/val.json").read_text())


def test_extras_match_the_official_reading_on_hand_built_rankings(val_records):
    predictions = _hand_built(val_records, seed=0)
    extras = official_extras(val_records)
    assert extras["targets"][0] == str(val_records[0]["target_img_id"]) and len(extras["semantic_aspects"]) == 220
    out = score_circo(
        [predictions[str(r["id"])] for r in val_records], [r["gt_img_ids"] for r in val_records], **extras
    )
    expected = _official_reading(predictions, val_records)
    assert list(out) == list(expected)
    assert out == pytest.approx(expected, abs=1e-9)
    # every one of the nine aspects has val queries, and the numbers are not degenerate
    assert [k for k in out if k.startswith("mAP@10_")] == [f"mAP@10_{a}" for a in CIRCO_SEMANTIC_ASPECTS]
    assert 0 < out["Recall@5"] < out["Recall@50"] < 100
    assert len({round(v, 6) for k, v in out.items() if k.startswith("mAP@10_")}) > 3
    # Recall@K counts the single target only: a ranking holding only the other ground truths scores 0 recall
    only_others = {str(r["id"]): [g for g in r["gt_img_ids"] if g != r["target_img_id"]] or [1] for r in val_records}
    out = score_circo(list(only_others.values()), [r["gt_img_ids"] for r in val_records], **extras)
    assert out["Recall@50"] == 0.0 and out["mAP@50"] > 0.0


def test_small_case_by_hand():
    # query a: gts {1, 2}, target 1 at rank 2, gt 2 at rank 3 -> AP@10 = (1/2 + 2/3) / 2; aspects cardinality, addition
    # query b: gts {5}, target 5 at rank 1 -> AP@10 = 1; aspect addition
    rankings = [[9, 1, 2, 8], [5, 7]]
    out = score_circo(
        rankings,
        [[1, 2], [5]],
        ks=(1, 5),
        targets=[1, 5],
        semantic_aspects=[["addition", "cardinality"], ["addition"]],
    )
    ap_a = (1 / 2 + 2 / 3) / 2
    assert out == pytest.approx(
        {
            "mAP@1": 50.0,
            "mAP@5": 100 * (ap_a + 1) / 2,
            "Recall@1": 50.0,
            "Recall@5": 100.0,
            "mAP@10_cardinality": 100 * ap_a,  # the official order: cardinality before addition
            "mAP@10_addition": 100 * (ap_a + 1) / 2,
        }
    )
    assert list(out)[-2:] == ["mAP@10_cardinality", "mAP@10_addition"]
    # the reference excluded first (not the official protocol, but then every number uses the same rankings)
    dropped = score_circo(rankings, [[1, 2], [5]], [9, 7], True, ks=(1,), targets=[1, 5])
    assert dropped["Recall@1"] == 100.0 and dropped["mAP@1"] == 100.0
    with pytest.raises(ValueError, match="target_img_id"):
        score_circo(rankings, [[1, 2], [5]], targets=[1])
    with pytest.raises(ValueError, match="semantic_aspects"):
        score_circo(rankings, [[1, 2], [5]], semantic_aspects=[["addition"]])


def test_test_split_records_have_no_extras(benchmarks_dir):
    test = json.loads((benchmarks_dir / "circo/annotations/test.json").read_text())
    assert official_extras(test) == {}
    assert official_extras([]) == {}


def test_evaluate_rankings_reports_the_extras(benchmarks_dir, val_records, tmp_path, capsys):
    predictions = _hand_built(val_records, seed=1)
    path = tmp_path / "circo_val_rankings.json"
    path.write_text(json.dumps(predictions))
    code = evaluate_rankings.main(
        ["--benchmark", "circo", "--annotations", str(benchmarks_dir / "circo"), "--rankings", str(path)]
    )
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[0])
    assert out == pytest.approx(_official_reading(predictions, val_records), abs=1e-9)
    assert "Recall@10" in out and "mAP@10_viewpoint" in out


def test_evaluator_reports_the_extras(benchmarks_dir, tmp_path, tiny_model, tiny_processor, val_records):
    n = 6
    root = circo_images(benchmarks_dir, tmp_path, n, n_extra=4)
    evaluator = CircoEvaluator(
        root, annotations_dir=benchmarks_dir / "circo", max_queries=n, cache_dir="", show_progress=False
    )
    torch.manual_seed(0)
    metrics = evaluator(tiny_model, tiny_processor)
    predictions = {q: [int(x) for x in r] for q, r in evaluator.rankings["circo"].items()}
    expected = _official_reading(predictions, val_records[:n])
    assert metrics == pytest.approx(expected, abs=1e-9)
    aspects = {a for r in val_records[:n] for a in r["semantic_aspects"]}
    assert {k for k in metrics if k.startswith("mAP@10_")} == {f"mAP@10_{a}" for a in aspects}
