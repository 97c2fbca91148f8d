"""Rank-window mining: bounds against brute force, determinism, duplicates, too-few, slices, approximate, command."""

from __future__ import annotations

import json

import pytest
import torch
from reference_similarity import brute_force_token_similarity

from mra_cir.dataset_builders.mra_triplets.mining import mining_query_block_size, sample_rank_window
from mra_cir.retrieval.distributed import shard_bounds
from mra_cir.tiny import synthetic_clustered_tokens


@pytest.fixture(scope="module")
def collection():
    feats = synthetic_clustered_tokens(300, 4, 16, num_clusters=5, item_noise=0.3, token_noise=0.3, seed=0)
    feats[17] = feats[3]  # identical features (not listed as a byte duplicate)
    ids = [f"im{i:03d}" for i in range(300)]
    return feats, ids


def _exact_order(feats, ids, ref, dropped, reduce="max"):
    """Brute-force ranking of `ref`'s candidates: self, listed duplicates and identical features removed."""
    scores = brute_force_token_similarity(feats[ref : ref + 1], feats, reduce)[0]
    order = scores.sort(descending=True, stable=True).indices.tolist()
    return [j for j in order if j != ref and ids[j] not in dropped and not torch.equal(feats[j], feats[ref])], scores


@pytest.mark.parametrize("reduce", ["max", "mean_max"])
def test_window_bounds_against_brute_force(collection, reduce):
    feats, ids = collection
    duplicates = {"im050": "im049", "im051": "im049"}
    mined = sample_rank_window(
        feats, ids, q1=5, q2=9, targets_per_reference=3, seed=1, reduce=reduce, duplicates=duplicates
    )
    assert mined.too_few == []
    assert len(mined.pairs) == 3 * 298 and mined.stats["references"] == 298
    assert mined.stats["feature_duplicates"] == 2  # im003 <-> im017, both directions
    by_ref: dict[str, list] = {}
    for pair in mined.pairs:
        by_ref.setdefault(pair["reference_id"], []).append(pair)
    assert not set(duplicates) & (set(by_ref) | {p["target_id"] for p in mined.pairs})
    for ref_id in ["im000", "im003", "im017", "im049", "im299"]:
        ref = ids.index(ref_id)
        order, scores = _exact_order(feats, ids, ref, duplicates, reduce)
        pairs = by_ref[ref_id]
        assert len({p["target_id"] for p in pairs}) == 3
        for p in pairs:
            assert 5 <= p["rank"] <= 9
            assert ids[order[p["rank"] - 1]] == p["target_id"]
            assert p["score"] == pytest.approx(scores[ids.index(p["target_id"])].item(), abs=1e-5)


def test_deterministic_and_seeded(collection):
    feats, ids = collection
    a = sample_rank_window(feats, ids, q1=3, q2=12, seed=7)
    b = sample_rank_window(feats, ids, q1=3, q2=12, seed=7)
    c = sample_rank_window(feats, ids, q1=3, q2=12, seed=8)
    assert a.pairs == b.pairs
    assert [p["target_id"] for p in a.pairs] != [p["target_id"] for p in c.pairs]
    ranks = {p["rank"] for p in a.pairs}
    assert ranks <= set(range(3, 13)) and len(ranks) > 5  # the whole window is used


def test_slices_merge_to_the_same_result(collection):
    feats, ids = collection
    whole = sample_rank_window(feats, ids, q1=4, q2=8, targets_per_reference=2, seed=3)
    align = mining_query_block_size(feats)
    for processes in (2, 3, 7):
        merged = []
        for rank in range(processes):
            start, stop = shard_bounds(len(ids), processes, rank, align=align)
            assert start % align == 0 or start == len(ids)
            merged += sample_rank_window(
                feats, ids, q1=4, q2=8, targets_per_reference=2, seed=3, start=start, stop=stop
            ).pairs
        assert merged == whole.pairs


def test_too_few_are_reported(collection):
    feats, ids = collection
    small_feats, small_ids = feats[:8], ids[:8]
    mined = sample_rank_window(small_feats, small_ids, q1=2, q2=7)
    assert mined.pairs and mined.too_few == []  # 7 candidates each: exactly enough
    mined = sample_rank_window(small_feats, small_ids, q1=2, q2=7, duplicates={"im007": "im000"})
    assert mined.pairs == [] and mined.too_few == small_ids[:7]
    with pytest.raises(ValueError, match="targets_per_reference"):
        sample_rank_window(small_feats, small_ids, q1=2, q2=3, targets_per_reference=3)
    with pytest.raises(ValueError, match="q1"):
        sample_rank_window(small_feats, small_ids, q1=0, q2=3)


def test_approximate_window_agreement():
    feats = synthetic_clustered_tokens(3000, 8, 64, num_clusters=30, item_noise=0.4, token_noise=0.4, seed=4)
    ids = [str(i) for i in range(3000)]
    mined = sample_rank_window(
        feats[:3000], ids, q1=11, q2=20, approximate=True, check_window=True, check_sample=60, n_candidates=300
    )
    stats = mined.stats
    assert stats["approximate"] and stats["window_check_sample"] == 60
    assert stats["window_agreement"] >= 0.9 and stats["recall_at_q2"] >= 0.9, stats
    assert all(11 <= p["rank"] <= 20 for p in mined.pairs) and len(mined.pairs) == 3000


def test_mine_command_end_to_end(tiny_model, tiny_processor, image_folder, tmp_path, capsys):
    import shutil

    import datasets

    from mra_cir.commands.mine import REPORT_FILE, main
    from mra_cir.retrieval.image_features import extract_image_features

    shutil.copy(image_folder / "img_000.png", image_folder / "img_000_copy.png")
    feats_dir = tmp_path / "features"
    feats = extract_image_features(tiny_model, tiny_processor, image_folder, feats_dir, show_progress=False)
    assert feats.duplicates == {"img_000_copy.png": "img_000.png"}
    out = tmp_path / "pairs"
    assert (
        main(
            [
                "--features",
                str(feats_dir),
                "--output",
                str(out),
                "--q1",
                "2",
                "--q2",
                "4",
                "--targets_per_reference",
                "2",
                "--seed",
                "5",
                "--no_progress",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pairs = datasets.load_from_disk(str(out))
    assert pairs.column_names == ["reference_id", "target_id", "rank", "score"]
    assert len(pairs) == 24 and summary["stats"]["pairs"] == 24 and summary["duplicates"] == 1
    expected = sample_rank_window(
        feats.features, feats.ids, q1=2, q2=4, targets_per_reference=2, seed=5, duplicates=feats.duplicates
    )
    assert pairs["target_id"] == [p["target_id"] for p in expected.pairs]
    assert pairs["rank"] == [p["rank"] for p in expected.pairs]
    report = json.loads((out / REPORT_FILE).read_text())
    assert report["too_few"] == [] and report["num_images"] == 12


WORKER = """
import sys, torch
from mra_cir.retrieval.image_features import extract_image_features
from mra_cir.modeling_mra_cir import MraCirModel
from mra_cir.tiny import offline_processor, tiny_config
from mra_cir.commands.mine import main

images, features_dir, pairs_dir = sys.argv[1:4]
torch.manual_seed(0)
model = MraCirModel(tiny_config()).eval()
extract_image_features(model, offline_processor(32), images, features_dir, batch_size=2, shard_size=3,
                       show_progress=False)
sys.exit(main(["--features", features_dir, "--output", pairs_dir, "--q1", "2", "--q2", "5", "--no_progress"]))
"""


def test_two_processes_give_the_single_process_result(tiny_model, tiny_processor, image_folder, tmp_path):
    """`torchrun` with 2 CPU processes (gloo): sharded extraction, then sliced mining merged in order; the result is
    the single-process one computed here from the same features."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import datasets

    from mra_cir.retrieval.image_features import extract_image_features, load_image_features

    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip(f"torchrun not found next to {sys.executable}")
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [
        str(torchrun),
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(image_folder),
        str(tmp_path / "features"),
        str(tmp_path / "pairs"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert '"num_processes": 2' in proc.stdout
    assert sorted(p.name for p in (tmp_path / "features").glob("features-*")) == [
        f"features-{i:05d}-of-00004.safetensors" for i in range(4)
    ]
    merged = load_image_features(tmp_path / "features")
    single = extract_image_features(tiny_model, tiny_processor, image_folder, show_progress=False)
    assert merged.ids == single.ids
    torch.testing.assert_close(merged.features, single.features, atol=1e-5, rtol=1e-4)
    expected = sample_rank_window(merged.features, merged.ids, q1=2, q2=5).pairs
    pairs = datasets.load_from_disk(str(tmp_path / "pairs")).to_list()
    assert len(pairs) == 12
    assert [(p["reference_id"], p["target_id"], p["rank"]) for p in pairs] == [
        (p["reference_id"], p["target_id"], p["rank"]) for p in expected
    ]
