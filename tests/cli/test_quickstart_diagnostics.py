"""`mra-cir quickstart-diagnostics`: the input ablations, the top-1 bookkeeping and their consistency with the run."""

from __future__ import annotations

import json

import pytest
import torch

from mra_cir.quickstart.diagnostics import TOP1_KINDS, attribute_distance, derangement


def test_derangement_moves_every_query():
    for count in (2, 3, 17, 200):
        order = derangement(count, seed=5)
        assert sorted(order) == list(range(count))
        assert all(order[i] != i for i in range(count))
    assert derangement(50, seed=1) == derangement(50, seed=1) != derangement(50, seed=2)
    with pytest.raises(ValueError, match="at least 2 queries"):
        derangement(1, seed=0)


def test_attribute_distance_counts_attributes():
    def obj(position, shape="circle", color="red", size="small"):
        return {"position": position, "shape": shape, "color": color, "size": size}

    a = {"background": "gray", "objects": [obj("left"), obj("right", "square")]}
    assert attribute_distance(a, a) == 0
    assert attribute_distance(a, {**a, "background": "black"}) == 1
    b = {"background": "gray", "objects": [obj("left", color="blue", size="large"), obj("right", "square")]}
    assert attribute_distance(a, b) == attribute_distance(b, a) == 2
    lone = {"background": "black", "objects": [obj("left")]}
    assert attribute_distance(a, lone) == 1 + 3  # background + the missing right object


def test_diagnostics_agree_with_the_run(tmp_path):
    """A tiny quickstart run: the diagnosed image / composed rows reproduce the run's table, the top-1 kinds add up
    to the queries and count R@1's targets, and the ablations are written."""
    from mra_cir.commands.quickstart import main as quickstart
    from mra_cir.commands.quickstart_diagnostics import main as diagnostics

    torch.set_num_threads(1)
    options = ["--fast", "--pretrain_from_scratch", "--pool_size", "60", "--num_queries", "12", "--stage1_steps", "30",
               "--train_steps", "10",
               "--batch_size", "16", "--num_triplets", "32", "--ablation", "false", "--show_progress", "false",
               "--cirr_queries", "16", "--circo_queries", "6"]  # fmt: skip
    assert quickstart([*options, "--output_dir", str(tmp_path)]) == 0
    assert diagnostics(["--output-dir", str(tmp_path), "--seed", "3"]) == 0
    results = json.loads((tmp_path / "results.json").read_text())["benchmarks"]["single_edit"]["methods"]
    report = json.loads((tmp_path / "diagnostics.json").read_text())
    assert report["queries"] == 12 and list(report["models"]) == ["stage1_model", "mra_model"]
    pairs = {("stage1_model", "image"): "image_only", ("stage1_model", "composed"): "composed_untrained",
             ("mra_model", "composed"): "mra_trained"}  # fmt: skip
    for (model, row), method in pairs.items():
        for key in ("R@1", "R@10", "mAP@10"):
            assert report["models"][model][row][key] == pytest.approx(results[method][key], abs=0.01)
    for rows in report["models"].values():
        assert set(rows) == {"image", "composed", "target_caption", "composed | reference of another query",
                             "composed | text of another query"}  # fmt: skip
        for row in rows.values():
            assert set(row["top1"]) == set(TOP1_KINDS) and sum(row["top1"].values()) == 12
            assert row["top1"]["target"] == round(row["R@1"] * 12 / 100)
            assert (row["top1_attributes_off"] == 0) == (row["top1"]["target"] == 12)
            assert row["top1_within_one_attribute"] >= row["R@1"] and 0 <= row["top1_shows_edit"] <= 100


def test_diagnostics_need_a_finished_run(tmp_path):
    from mra_cir.quickstart.diagnostics import diagnose_run

    with pytest.raises(FileNotFoundError, match="results.json"):
        diagnose_run(tmp_path)
    (tmp_path / "results.json").write_text(
        json.dumps({"settings": {"seed": 0, "pool_size": 20, "num_queries": 3, "image_size": 32}})
    )
    with pytest.raises(FileNotFoundError, match="stage1_model"):
        diagnose_run(tmp_path)
