"""Metric functions: known answers by construction, on toy rankings and on the real annotation files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mra_cir.evaluation.circo import score_circo
from mra_cir.evaluation.cirr import score_cirr
from mra_cir.evaluation.fashioniq import score_fashioniq
from mra_cir.evaluation.metrics import (
    average_precision_at_k,
    check_unique,
    map_at_k,
    recall_at_k,
    recall_subset_at_k,
    remove_from_rankings,
    restrict_rankings,
)


def test_recall_at_k_toy():
    rankings = [["a", "b", "c"], ["c", "b", "a"], ["x", "y", "z"]]
    assert recall_at_k(rankings, ["a", "b", "q"], ks=(1, 2, 3)) == {1: 1 / 3, 2: 2 / 3, 3: 2 / 3}
    # several acceptable targets per query: any counts
    assert recall_at_k(rankings, [("z", "c"), ("a",), ("y",)], ks=(1, 2)) == {1: 0.0, 2: 1 / 3}
    # a ranking shorter than K is padded with misses
    assert recall_at_k([["a"]], ["b"], ks=(50,)) == {50: 0.0}
    with pytest.raises(ValueError, match="no queries"):
        recall_at_k([], [], ks=(1,))


def test_remove_and_restrict_are_idempotent():
    rankings = [["r", "a", "b"], ["a", "b"]]
    once = remove_from_rankings(rankings, ["r", "r"])
    assert once == [["a", "b"], ["a", "b"]]
    assert remove_from_rankings(once, ["r", "r"]) == once
    assert remove_from_rankings(rankings, [None, "a"]) == [["r", "a", "b"], ["b"]]
    assert restrict_rankings([["a", "b", "c", "d"]], [{"d", "b"}]) == [["b", "d"]]


def test_check_unique_names_the_query():
    check_unique([["a", "b"]], ["q0"])
    with pytest.raises(ValueError, match=r"query 'q7'.*duplicate prediction 'b'"):
        check_unique([["a", "b"], ["b", "c", "b"]], ["q0", "q7"])


def test_average_precision_hand_computed():
    # 3 ground truths at ranks 1, 3, 6 of the ranking
    ranking = [10, 11, 12, 13, 14, 15, 16]
    gts = [10, 12, 15]
    assert average_precision_at_k(ranking, gts, 5) == pytest.approx((1 / 1 + 2 / 3) / 3)
    assert average_precision_at_k(ranking, gts, 10) == pytest.approx((1 / 1 + 2 / 3 + 3 / 6) / 3)
    # denominator min(#gt, K): K=2 with 3 ground truths -> /2
    assert average_precision_at_k(ranking, gts, 2) == pytest.approx(1 / 2)
    # a ground truth outside the ranking still counts in the denominator
    assert average_precision_at_k([1, 2], [2, 99], 5) == pytest.approx((1 / 2) / 2)
    out = map_at_k([ranking, [99, 10]], [gts, [10]], ks=(5,))
    assert out[5] == pytest.approx(((1 + 2 / 3) / 3 + (1 / 2) / 1) / 2)
    with pytest.raises(ValueError, match="duplicate"):
        map_at_k([[1, 1]], [[1]], ks=(5,))


def test_score_cirr_removes_reference_before_scoring():
    # query 0: reference at rank 1, target at rank 2 -> after removal the target is rank 1
    rankings = [["ref0", "t0", "m1", "m2"], ["m3", "m4", "t1", "ref1"]]
    members = [["ref0", "t0", "m1", "m2", "x1", "x2"], ["ref1", "t1", "m3", "m4", "x3", "x4"]]
    out = score_cirr(rankings, ["ref0", "ref1"], ["t0", "t1"], members, ks=(1, 2, 3))
    assert out["R@1"] == 50.0 and out["R@2"] == 50.0 and out["R@3"] == 100.0
    # subset: query 1 restricted to members -> [m3, m4, t1] -> rank 3
    assert (out["R_subset@1"], out["R_subset@2"], out["R_subset@3"]) == (50.0, 50.0, 100.0)
    # a separate subset ranking is used when given (reference in it is removed too)
    out = score_cirr(rankings, ["ref0", "ref1"], ["t0", "t1"], members, [["ref0", "m1", "t0"], ["ref1", "t1"]])
    assert (out["R_subset@1"], out["R_subset@2"]) == (50.0, 100.0)


def test_score_circo_exclude_reference_option():
    rankings = [["ref", "g1", "x", "g2"]]
    kept = score_circo(rankings, [["g1", "g2"]], references=["ref"], ks=(5,))
    dropped = score_circo(rankings, [["g1", "g2"]], references=["ref"], exclude_reference=True, ks=(5,))
    assert kept["mAP@5"] == pytest.approx(100 * (1 / 2 + 2 / 4) / 2)
    assert dropped["mAP@5"] == pytest.approx(100 * (1 / 1 + 2 / 3) / 2)


# ----------------------------------------------------------------------------------------------------------------------
# On the real annotation files
# ----------------------------------------------------------------------------------------------------------------------
def _rank_target_at(target: str, pool: list[str], exclude: set[str], rank: int, length: int = 50) -> list[str]:
    """A ranking of `length` names with `target` at 1-based `rank` and fillers from `pool` (never in `exclude`)."""
    fillers = [x for x in pool[: length + len(exclude) + 2] if x not in exclude and x != target][: length - 1]
    return fillers[: rank - 1] + [target] + fillers[rank - 1 :]


@pytest.mark.parametrize("rank", [1, 7, 10, 11, 50, 51])
def test_fashioniq_target_at_rank_r(benchmarks_dir, rank):
    rankings, targets = {}, {}
    for cat in ("dress", "shirt", "toptee"):
        caps = json.loads((benchmarks_dir / f"fashioniq/captions/cap.{cat}.val.json").read_text())
        gallery = json.loads((benchmarks_dir / f"fashioniq/image_splits/split.{cat}.val.json").read_text())
        targets[cat] = [c["target"] for c in caps]
        rankings[cat] = [_rank_target_at(c["target"], gallery, set(), rank, 60) for c in caps]
    out = score_fashioniq(rankings, targets)
    expected = {10: 100.0 * (rank <= 10), 50: 100.0 * (rank <= 50)}
    for key in ("dress", "shirt", "toptee", "average"):
        assert out[f"{key}_R@10"] == expected[10] and out[f"{key}_R@50"] == expected[50]


def test_fashioniq_partial_hits_average_of_categories(benchmarks_dir):
    rankings, targets, per_cat = {}, {}, {}
    for cat in ("dress", "shirt", "toptee"):
        caps = json.loads((benchmarks_dir / f"fashioniq/captions/cap.{cat}.val.json").read_text())
        gallery = json.loads((benchmarks_dir / f"fashioniq/image_splits/split.{cat}.val.json").read_text())
        targets[cat] = [c["target"] for c in caps]
        # every third query has its target at rank 5, the rest never retrieve it
        rankings[cat] = [
            _rank_target_at(c["target"], gallery, set(), 5, 50)
            if i % 3 == 0
            else [g for g in gallery[:60] if g != c["target"]][:50]
            for i, c in enumerate(caps)
        ]
        per_cat[cat] = 100.0 * len(range(0, len(caps), 3)) / len(caps)
    out = score_fashioniq(rankings, targets)
    for cat in per_cat:
        assert out[f"{cat}_R@10"] == pytest.approx(per_cat[cat], abs=1e-9)
    assert out["average_R@10"] == pytest.approx(np.mean(list(per_cat.values())), abs=1e-9)


@pytest.mark.parametrize("rank", [1, 2, 5, 6, 50])
def test_cirr_target_at_rank_r_after_reference_removal(benchmarks_dir, rank):
    caps = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text())
    gallery = list(json.loads((benchmarks_dir / "cirr/image_splits/split.rc2.val.json").read_text()))
    # the reference is put first: it must not count, so the target ends at `rank`
    rankings = [
        [c["reference"]] + _rank_target_at(c["target_hard"], gallery, {c["reference"]}, rank, 50) for c in caps
    ]
    out = score_cirr(
        rankings,
        [c["reference"] for c in caps],
        [c["target_hard"] for c in caps],
        [c["img_set"]["members"] for c in caps],
    )
    for k in (1, 5, 10, 50):
        assert out[f"R@{k}"] == 100.0 * (rank <= k)


def test_cirr_oracle_gives_100(benchmarks_dir):
    caps = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text())
    rankings = [[c["target_hard"]] + [m for m in c["img_set"]["members"] if m != c["target_hard"]] for c in caps]
    out = score_cirr(
        rankings,
        [c["reference"] for c in caps],
        [c["target_hard"] for c in caps],
        [c["img_set"]["members"] for c in caps],
    )
    assert all(v == 100.0 for v in out.values()), out
    assert len(caps) == 4181


def test_cirr_subset_rank_counts_only_other_members(benchmarks_dir):
    caps = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text())
    gallery = list(json.loads((benchmarks_dir / "cirr/image_splits/split.rc2.val.json").read_text()))
    rankings = []
    for c in caps:
        others = [m for m in c["img_set"]["members"] if m not in (c["reference"], c["target_hard"])]
        non_members = [g for g in gallery[:20] if g not in c["img_set"]["members"]][:10]
        # non-members and the reference before everything; then two other members, then the target
        rankings.append(non_members + [c["reference"]] + others[:2] + [c["target_hard"]] + others[2:])
    out = recall_subset_at_k(
        rankings,
        [c["target_hard"] for c in caps],
        [c["img_set"]["members"] for c in caps],
        [c["reference"] for c in caps],
    )
    assert out == {1: 0.0, 2: 0.0, 3: 1.0}


def test_circo_ap_on_real_query_with_several_ground_truths(benchmarks_dir):
    queries = json.loads((benchmarks_dir / "circo/annotations/val.json").read_text())
    query = next(q for q in queries if len(q["gt_img_ids"]) >= 4)
    gts = query["gt_img_ids"]
    fillers = iter(range(10_000_000, 10_000_100))
    # ground truths at ranks 2, 4 and 30; the others are not retrieved
    ranking = [next(fillers) for _ in range(50)]
    ranking[1], ranking[3], ranking[29] = gts[0], gts[1], gts[2]
    n = len(gts)
    expected = {
        5: (1 / 2 + 2 / 4) / min(n, 5),
        10: (1 / 2 + 2 / 4) / min(n, 10),
        25: (1 / 2 + 2 / 4) / min(n, 25),
        50: (1 / 2 + 2 / 4 + 3 / 30) / min(n, 50),
    }
    out = score_circo([ranking], [gts])
    for k, v in expected.items():
        assert out[f"mAP@{k}"] == pytest.approx(100 * v, abs=1e-9)


def test_circo_oracle_and_reference_at_top(benchmarks_dir):
    queries = json.loads((benchmarks_dir / "circo/annotations/val.json").read_text())
    oracle = [q["gt_img_ids"] + [1, 2, 3] for q in queries]
    out = score_circo(oracle, [q["gt_img_ids"] for q in queries])
    assert all(v == pytest.approx(100.0) for v in out.values())
    # the reference at rank 1: kept by the official protocol (lowers AP), removed with exclude_reference
    with_ref = [[q["reference_img_id"]] + r for q, r in zip(queries, oracle)]
    refs = [q["reference_img_id"] for q in queries]
    assert score_circo(with_ref, [q["gt_img_ids"] for q in queries])["mAP@5"] < 100.0
    assert score_circo(with_ref, [q["gt_img_ids"] for q in queries], refs, exclude_reference=True)["mAP@5"] == (
        pytest.approx(100.0)
    )


def test_evaluate_module_loads_offline_and_agrees(benchmarks_dir):
    import evaluate

    from mra_cir.evaluation.cir_metric import MODULE_DIR

    queries = json.loads((benchmarks_dir / "circo/annotations/val.json").read_text())[:30]
    rng = np.random.default_rng(3)
    preds = [
        [str(x) for x in dict.fromkeys(list(q["gt_img_ids"][:2]) + list(rng.integers(1, 99, 60)))][:50]
        for q in queries
    ]
    refs = [[str(g) for g in q["gt_img_ids"]] for q in queries]
    rng.shuffle(preds[0])
    out = evaluate.load(MODULE_DIR, "map").compute(predictions=preds, references=refs)
    assert out == pytest.approx(score_circo(preds, refs), abs=1e-12)

    caps = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text())[:40]
    preds = [[c["reference"]] + [m for m in reversed(c["img_set"]["members"]) if m != c["reference"]] for c in caps]
    kwargs = dict(reference_ids=[c["reference"] for c in caps], members=[c["img_set"]["members"] for c in caps])
    out = evaluate.load(MODULE_DIR, "cirr").compute(
        predictions=preds, references=[[c["target_hard"]] for c in caps], **kwargs
    )
    expected = score_cirr(preds, kwargs["reference_ids"], [c["target_hard"] for c in caps], kwargs["members"])
    assert out == pytest.approx(expected) and 0 < out["R@1"] < 100
    recall = evaluate.load(MODULE_DIR)
    assert recall.compute(predictions=[["r", "t"]], references=[["t"]], ks=[1], exclude=["r"]) == {"R@1": 100.0}
