"""`mra-cir evaluate-rankings` (against a separate, loop-by-loop reading of the protocols) and `mra-cir evaluate`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mra_cir.commands import evaluate_rankings

CATS = ("dress", "shirt", "toptee")


def _load(path: Path):
    return json.loads(path.read_text())


def _run(capsys, argv) -> tuple[int, dict | None, str]:
    code = evaluate_rankings.main(argv)
    captured = capsys.readouterr()
    lines = [line for line in captured.out.splitlines() if line.strip()]
    return code, (json.loads(lines[0]) if code == 0 else None), captured.err


# ----------------------------------------------------------------------------------------------------------------------
# Random rankings scored twice: the command vs. a direct reading of benchmarks/README.md
# ----------------------------------------------------------------------------------------------------------------------
def _random_ranking(rng, pool: list, must: list, length: int) -> list:
    """`length` unique names from `pool`, with some of `must` mixed in at random ranks."""
    picks = list(rng.choice(len(pool), size=length + len(must), replace=False))
    names = [pool[i] for i in picks if pool[i] not in must]
    for m in must:
        if rng.random() < 0.6:
            names.insert(int(rng.integers(0, 60)), m)
    return list(dict.fromkeys(names))[:length]


def test_fashioniq_rankings_match_protocol(benchmarks_dir, tmp_path, capsys):
    rng = np.random.default_rng(0)
    ann = benchmarks_dir / "fashioniq"
    data, expected = {}, {}
    for cat in CATS:
        caps = _load(ann / f"captions/cap.{cat}.val.json")
        gallery = _load(ann / f"image_splits/split.{cat}.val.json")
        data[cat] = [_random_ranking(rng, gallery, [c["target"], c["candidate"]], 50) for c in caps]
        for k in (10, 50):
            hits = [c["target"] in r[:k] for c, r in zip(caps, data[cat])]
            expected[f"{cat}_R@{k}"] = 100.0 * sum(hits) / len(hits)
    for k in (10, 50):
        expected[f"average_R@{k}"] = sum(expected[f"{c}_R@{k}"] for c in CATS) / 3
    path = tmp_path / "fiq.json"
    path.write_text(json.dumps(data))
    code, out, _ = _run(capsys, ["--benchmark", "fashioniq", "--annotations", str(ann), "--rankings", str(path)])
    assert code == 0
    assert list(out) == [f"{c}_R@{k}" for c in CATS for k in (10, 50)] + ["average_R@10", "average_R@50"]
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < out["average_R@50"] < 100


def test_cirr_rankings_match_protocol(benchmarks_dir, tmp_path, capsys):
    rng = np.random.default_rng(1)
    ann = benchmarks_dir / "cirr"
    caps = _load(ann / "captions/cap.rc2.val.json")
    gallery = list(_load(ann / "image_splits/split.rc2.val.json"))
    recall = {"version": "rc2", "metric": "recall"}
    subset = {"version": "rc2", "metric": "recall_subset"}
    for c in caps:
        # the reference is sometimes left in: the scorer must delete it
        recall[str(c["pairid"])] = _random_ranking(rng, gallery, [c["target_hard"], c["reference"]], 50)
        others = [m for m in c["img_set"]["members"] if m != c["reference"]]
        subset[str(c["pairid"])] = [others[i] for i in rng.permutation(len(others))[:3]]
    (tmp_path / "r.json").write_text(json.dumps(recall))
    (tmp_path / "s.json").write_text(json.dumps(subset))

    def expected_for(use_subset_file: bool) -> dict:
        exp = {}
        clean = {q: [x for x in r if x != c["reference"]] for (q, r), c in zip(list(recall.items())[2:], caps)}
        for k in (1, 5, 10, 50):
            exp[f"R@{k}"] = 100.0 * np.mean([c["target_hard"] in clean[str(c["pairid"])][:k] for c in caps])
        for k in (1, 2, 3):
            hits = []
            for c in caps:
                allowed = set(c["img_set"]["members"]) - {c["reference"]}
                source = subset if use_subset_file else clean
                ranked = [x for x in source[str(c["pairid"])] if x in allowed]
                hits.append(c["target_hard"] in ranked[:k])
            exp[f"R_subset@{k}"] = 100.0 * np.mean(hits)
        return exp

    base = ["--benchmark", "cirr", "--annotations", str(ann), "--rankings", str(tmp_path / "r.json")]
    code, out, _ = _run(capsys, base + ["--subset-rankings", str(tmp_path / "s.json")])
    assert code == 0
    assert list(out) == ["R@1", "R@5", "R@10", "R@50", "R_subset@1", "R_subset@2", "R_subset@3"]
    for key, value in expected_for(True).items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    code, out, _ = _run(capsys, base)
    for key, value in expected_for(False).items():
        assert out[key] == pytest.approx(value, abs=1e-9), key


def test_circo_rankings_match_protocol(benchmarks_dir, tmp_path, capsys):
    rng = np.random.default_rng(2)
    ann = benchmarks_dir / "circo"
    queries = _load(ann / "annotations/val.json")
    pool = list(range(1, 5000))
    data = {str(q["id"]): [int(x) for x in _random_ranking(rng, pool, q["gt_img_ids"], 50)] for q in queries}
    path = tmp_path / "circo.json"
    path.write_text(json.dumps(data))
    expected = {}
    for k in (5, 10, 25, 50):
        aps = []
        for q in queries:
            ranked, gts = data[str(q["id"])][:k], set(q["gt_img_ids"])
            score, found = 0.0, 0
            for i, x in enumerate(ranked):
                if x in gts:
                    found += 1
                    score += found / (i + 1)
            aps.append(score / min(len(gts), k))
        expected[f"mAP@{k}"] = 100.0 * sum(aps) / len(aps)
    code, out, _ = _run(capsys, ["--benchmark", "circo", "--annotations", str(ann), "--rankings", str(path)])
    assert code == 0 and list(out)[:4] == ["mAP@5", "mAP@10", "mAP@25", "mAP@50"]
    assert list(out)[4:8] == ["Recall@5", "Recall@10", "Recall@25", "Recall@50"]  # tests/evaluation/test_circo_extras
    for key, value in expected.items():
        assert out[key] == pytest.approx(value, abs=1e-9), key
    assert 0 < out["mAP@50"] < 100


def test_cli_prints_one_json_object(benchmarks_dir, tmp_path):
    queries = _load(benchmarks_dir / "circo/annotations/val.json")
    path = tmp_path / "oracle.json"
    path.write_text(json.dumps({str(q["id"]): q["gt_img_ids"] for q in queries}))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mra_cir.cli",
            "evaluate-rankings",
            "--benchmark",
            "circo",
            "--annotations",
            str(benchmarks_dir),
            "--rankings",
            str(path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert {k: out[k] for k in list(out)[:4]} == {"mAP@5": 100.0, "mAP@10": 100.0, "mAP@25": 100.0, "mAP@50": 100.0}
    assert set(out.values()) == {100.0}  # the oracle also scores 100 on Recall@K and on every semantic aspect


# ----------------------------------------------------------------------------------------------------------------------
# Clear errors
# ----------------------------------------------------------------------------------------------------------------------
def test_errors_name_the_problem(benchmarks_dir, tmp_path, capsys):
    cirr = benchmarks_dir / "cirr"
    caps = _load(cirr / "captions/cap.rc2.val.json")
    recall = {"version": "rc2", "metric": "recall"}
    recall.update({str(c["pairid"]): [c["target_hard"]] for c in caps})

    missing = dict(recall)
    del missing[str(caps[3]["pairid"])]
    (tmp_path / "missing.json").write_text(json.dumps(missing))
    code, _, err = _run(
        capsys, ["--benchmark", "cirr", "--annotations", str(cirr), "--rankings", str(tmp_path / "missing.json")]
    )
    assert code == 2 and "1 query id(s) missing" in err and str(caps[3]["pairid"]) in err

    dup = dict(recall)
    dup[str(caps[5]["pairid"])] = ["a", "b", "a"]
    (tmp_path / "dup.json").write_text(json.dumps(dup))
    code, _, err = _run(
        capsys, ["--benchmark", "cirr", "--annotations", str(cirr), "--rankings", str(tmp_path / "dup.json")]
    )
    assert code == 2 and f"query '{caps[5]['pairid']}'" in err and "duplicate prediction 'a'" in err

    # the server's demo submission is a test1 recall_subset file: wrong metric, wrong split
    demo = cirr / "submission_examples/test1_pred_ranks_recall_subset.json"
    code, _, err = _run(capsys, ["--benchmark", "cirr", "--annotations", str(cirr), "--rankings", str(demo)])
    assert code == 2 and "recall_subset" in err
    code, _, err = _run(
        capsys, ["--benchmark", "cirr", "--annotations", str(cirr), "--rankings", str(demo), "--split", "test1"]
    )
    assert code == 2 and "no ground truth" in err

    # a FashionIQ file given as CIRR rankings, and a non-JSON file
    (tmp_path / "fiq.json").write_text(json.dumps({"dress": [["x"]]}))
    code, _, err = _run(
        capsys, ["--benchmark", "cirr", "--annotations", str(cirr), "--rankings", str(tmp_path / "fiq.json")]
    )
    assert code == 2 and "wrong file, split or benchmark" in err
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = _run(
        capsys,
        [
            "--benchmark",
            "circo",
            "--annotations",
            str(benchmarks_dir / "circo"),
            "--rankings",
            str(tmp_path / "bad.json"),
        ],
    )
    assert code == 2 and "not valid JSON" in err

    code, _, err = _run(
        capsys,
        [
            "--benchmark",
            "fashioniq",
            "--annotations",
            str(benchmarks_dir / "fashioniq"),
            "--rankings",
            str(tmp_path / "fiq.json"),
        ],
    )
    assert code == 2 and "cap.dress has 2017 caption records" in err


# ----------------------------------------------------------------------------------------------------------------------
# mra-cir evaluate (tiny saved model, placeholder images)
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture
def saved_tiny_model(tmp_path, tiny_model, tiny_processor):
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: threads only add wake-up costs on a shared machine
    path = tmp_path / "tiny-model"
    tiny_model.save_pretrained(path)
    tiny_processor.save_pretrained(path)
    yield path
    torch.set_num_threads(threads)


def test_evaluate_command_val_and_test(benchmarks_dir, tmp_path, saved_tiny_model, capsys):
    from cir_placeholders import circo_images, cirr_images

    from mra_cir.commands import evaluate

    root = cirr_images(benchmarks_dir, tmp_path / "cirr", n_queries=3, n_extra=4)
    out = tmp_path / "eval"
    argv = [
        "--model",
        str(saved_tiny_model),
        "--benchmark",
        "cirr",
        "--data-root",
        str(root),
        "--annotations-dir",
        str(benchmarks_dir / "cirr"),
        "--allow-missing",
        "--max-queries",
        "3",
        "--output",
        str(out),
        "--cache-dir",
        "",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert evaluate.main(argv) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    saved = json.loads((out / "cirr_val_results.json").read_text())
    assert printed == saved and saved["complete"] is False and "note" in saved
    assert list(saved["metrics"]) == ["R@1", "R@5", "R@10", "R@50", "R_subset@1", "R_subset@2", "R_subset@3"]
    assert saved["report"]["cirr"]["num_queries"] == 3
    recall = json.loads((out / "cirr_val_recall.json").read_text())
    assert recall["version"] == "rc2" and len(recall) == 3 + 2

    # without --allow-missing: one clear error with the count
    assert evaluate.main(argv[:8] + ["--max-queries", "3", "--cache-dir", "", "--no-progress"]) == 2
    assert "image(s) named by the annotations are missing" in capsys.readouterr().err

    # the test split of a subset cannot become a server file: clear error, no file
    root = circo_images(benchmarks_dir, tmp_path / "circo", n_queries=2, n_extra=3, split="test")
    argv = [
        "--model",
        str(saved_tiny_model),
        "--benchmark",
        "circo",
        "--data-root",
        str(root),
        "--annotations-dir",
        str(benchmarks_dir / "circo"),
        "--split",
        "test",
        "--max-queries",
        "2",
        "--output",
        str(tmp_path / "sub"),
        "--cache-dir",
        "",
        "--no-progress",
        "--device",
        "cpu",
    ]
    assert evaluate.main(argv) == 2
    assert "798 query id(s) missing" in capsys.readouterr().err
