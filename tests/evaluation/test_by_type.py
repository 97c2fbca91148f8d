"""Scores per transformation type on the real annotation files: the primary-type groups partition the queries, so
their query-weighted mean is the overall figure; CIRCO's per-type figures sit beside its per-aspect ones."""

from __future__ import annotations

import json
import random

import pytest

from mra_cir.dataset_builders.mra_triplets.transformation_types import TYPES, tag_types
from mra_cir.evaluation import score_rankings_file
from mra_cir.evaluation.by_type import group_queries, query_weighted_mean, scores_by_type


def _shuffled(pool: list[str], keep: list[str], rng: random.Random, length: int = 50) -> list[str]:
    """A ranking of `length` ids: the ids of `keep` at random places among random others of `pool`."""
    others = [x for x in rng.sample(pool, min(len(pool), length + len(keep))) if x not in keep][: length - len(keep)]
    ranking = others[:]
    for item in keep:
        ranking.insert(rng.randrange(len(ranking) + 1), item)
    return ranking[:length]


def test_group_queries_partition_and_overlap():
    labels = [["color", "size"], ["size"], [], ["shape", "color"]]
    primary = group_queries(labels)
    assert primary == {"color": [0], "size": [1], "other": [2], "shape": [3]}
    assert sorted(i for group in primary.values() for i in group) == [0, 1, 2, 3]
    anywhere = group_queries(labels, primary=False)
    assert anywhere["color"] == [0, 3] and anywhere["size"] == [0, 1]


def test_scores_by_type_weighted_mean_is_overall():
    hits = [1.0, 0.0, 1.0, 1.0, 0.0]
    labels = [["color"], ["color", "size"], ["size"], ["added"], ["added"]]

    def score(indices):
        return {"R@1": 100.0 * sum(hits[i] for i in indices) / len(indices)}

    table = scores_by_type(score, labels, TYPES)
    assert list(table["types"]) == ["color", "added", "size"]  # TYPES order
    assert table["types"]["color"] == {"queries": 2, "R@1": 50.0}
    assert query_weighted_mean(table["types"], "R@1") == pytest.approx(score(range(5))["R@1"])
    assert table["any"]["size"]["queries"] == 2


def _check_identity(metrics: dict, keys: list[str]) -> None:
    types = metrics["by_type"]["types"]
    assert sum(g["queries"] for g in types.values()) > 0
    assert len(types) >= 3  # real texts spread over several types
    for key in keys:
        assert query_weighted_mean(types, key) == pytest.approx(metrics[key], abs=1e-9), key


def test_cirr_rankings_by_type_on_real_annotations(benchmarks_dir, tmp_path):
    rng = random.Random(0)
    gallery = list(json.loads((benchmarks_dir / "cirr" / "image_splits" / "split.rc2.val.json").read_text()))
    data = {"version": "rc2", "metric": "recall"}
    for rec in json.loads((benchmarks_dir / "cirr" / "captions" / "cap.rc2.val.json").read_text()):
        keep = [rec["target_hard"]] if rng.random() < 0.5 else []
        data[str(rec["pairid"])] = [x for x in _shuffled(gallery, keep, rng) if x != rec["reference"]]
    path = tmp_path / "recall.json"
    path.write_text(json.dumps(data))
    metrics = score_rankings_file("cirr", benchmarks_dir / "cirr", path, tagger=tag_types)
    _check_identity(metrics, ["R@1", "R@5", "R@10", "R@50", "R_subset@1", "R_subset@3"])
    assert 0 < metrics["R@50"] < 100


def test_circo_rankings_by_type_beside_aspects(benchmarks_dir, tmp_path):
    rng = random.Random(1)
    records = json.loads((benchmarks_dir / "circo" / "annotations" / "val.json").read_text())
    pool = sorted({str(g) for rec in records for g in rec["gt_img_ids"]})
    data = {
        str(rec["id"]): [int(x) for x in _shuffled(pool, [str(g) for g in rec["gt_img_ids"][:2]], rng)]
        for rec in records
    }
    path = tmp_path / "circo.json"
    path.write_text(json.dumps(data))
    metrics = score_rankings_file("circo", benchmarks_dir / "circo", path, tagger=tag_types)
    _check_identity(metrics, ["mAP@5", "mAP@10", "mAP@25", "mAP@50"])
    keys = list(metrics)
    aspects = [k for k in keys if k.startswith("mAP@10_") and "_type_" not in k]
    types = [k for k in keys if k.startswith("mAP@10_type_")]
    assert aspects and types
    assert keys.index(types[0]) == keys.index(aspects[-1]) + 1  # per type right after per aspect
    assert metrics["by_type"]["types"][types[0].split("_type_")[1]]["mAP@10"] == metrics[types[0]]
    plain = score_rankings_file("circo", benchmarks_dir / "circo", path)
    assert "by_type" not in plain and not any("_type_" in k for k in plain)


def test_fashioniq_rankings_by_type_pooled(benchmarks_dir, tmp_path):
    rng = random.Random(2)
    data = {}
    for cat in ("dress", "shirt", "toptee"):
        records = json.loads((benchmarks_dir / "fashioniq" / "captions" / f"cap.{cat}.val.json").read_text())
        gallery = json.loads((benchmarks_dir / "fashioniq" / "image_splits" / f"split.{cat}.val.json").read_text())
        data[cat] = [_shuffled(gallery, [rec["target"]] if rng.random() < 0.4 else [], rng) for rec in records]
    path = tmp_path / "fiq.json"
    path.write_text(json.dumps(data))
    metrics = score_rankings_file("fashioniq", benchmarks_dir / "fashioniq", path, tagger=tag_types)
    table = metrics["by_type"]
    for key in ("all_R@10", "all_R@50"):
        assert query_weighted_mean(table["types"], key) == pytest.approx(table["overall"][key])
    assert "color" in table["types"] and table["types"]["color"]["queries"] > 1000  # colour leads FashionIQ texts


def test_evaluate_rankings_command_by_type(benchmarks_dir, tmp_path, capsys):
    from mra_cir.cli import main

    records = json.loads((benchmarks_dir / "circo" / "annotations" / "val.json").read_text())
    data = {str(rec["id"]): [int(g) for g in rec["gt_img_ids"][:1]] + [1, 2, 3] for rec in records}
    path = tmp_path / "circo.json"
    path.write_text(json.dumps(data))
    argv = ["evaluate-rankings", "--benchmark", "circo", "--annotations", str(benchmarks_dir / "circo"),
            "--rankings", str(path)]  # fmt: skip
    assert main([*argv, "--by-type"]) == 0
    metrics = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert query_weighted_mean(metrics["by_type"]["types"], "mAP@5") == pytest.approx(metrics["mAP@5"])
    assert main(argv) == 0
    assert "by_type" not in json.loads(capsys.readouterr().out.strip().splitlines()[-1])


@pytest.mark.parametrize("benchmark", ["cirr", "circo"])
def test_evaluate_command_by_type(benchmark, benchmarks_dir, tmp_path, tiny_model, tiny_processor, capsys):
    from cir_placeholders import circo_images, cirr_images

    from mra_cir.cli import main

    model = tmp_path / "model"
    tiny_model.save_pretrained(model)
    tiny_processor.save_pretrained(model)
    make = {"cirr": cirr_images, "circo": circo_images}[benchmark]
    root = make(benchmarks_dir, tmp_path / benchmark, n_queries=6, n_extra=6)
    argv = ["evaluate", "--model", str(model), "--benchmark", benchmark, "--data-root", str(root),
            "--annotations-dir", str(benchmarks_dir / benchmark), "--allow-missing", "--max-queries", "6",
            "--output", str(tmp_path / "eval"), "--cache-dir", "", "--no-progress", "--device", "cpu", "--by-type"]  # fmt: skip
    assert main(argv) == 0
    saved = json.loads((tmp_path / "eval" / f"{benchmark}_val_results.json").read_text())
    metrics = saved["metrics"]
    key = "R@1" if benchmark == "cirr" else "mAP@10"
    assert sum(g["queries"] for g in metrics["by_type"]["types"].values()) == 6
    assert query_weighted_mean(metrics["by_type"]["types"], key) == pytest.approx(metrics[key])
    if benchmark == "cirr":
        assert query_weighted_mean(metrics["by_type"]["types"], "R_subset@1") == pytest.approx(metrics["R_subset@1"])
    else:
        assert any(k.startswith("mAP@10_type_") for k in metrics)
