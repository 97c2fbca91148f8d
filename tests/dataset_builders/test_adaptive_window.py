"""The adaptive rank window: a band of each reference's own similarity scale, which moves past near-duplicates in a
dense pool and closer in a diverse one."""

from __future__ import annotations

import pytest
import torch

from mra_cir.dataset_builders.mra_triplets.adaptive_window import (
    AdaptiveWindowMiner,
    band_candidates,
    parse_band,
    sample_adaptive_window,
)


def test_band_candidates_normalise_to_the_reference_scale():
    inside, u = band_candidates([1.0, 0.9, 0.5, 0.2, 0.0], (0.4, 0.6))
    assert inside == [2] and u[0] == 1.0 and u[-1] == 0.0
    assert band_candidates([0.3, 0.3, 0.3], (0.4, 0.6))[0] == [0, 1, 2]  # flat: everything is "halfway"


def _pool(near_duplicates: int, n: int = 60, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """Unit vectors: reference 0, `near_duplicates` near-copies of it (similarity ~0.99), the rest spread evenly."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.normalize(torch.randn(16, generator=g), dim=0)
    rows = [base]
    for _ in range(near_duplicates):
        rows.append(torch.nn.functional.normalize(base + 0.05 * torch.randn(16, generator=g), dim=0))
    while len(rows) < n:
        mix = torch.rand(1, generator=g).item()
        rows.append(torch.nn.functional.normalize(mix * base + torch.randn(16, generator=g), dim=0))
    return torch.stack(rows), [f"img{i}" for i in range(n)]


def test_band_moves_past_near_duplicates():
    sparse = sample_adaptive_window(*_pool(0), targets_per_reference=2, seed=0, depth=40)
    dense = sample_adaptive_window(*_pool(12), targets_per_reference=2, seed=0, depth=40)
    ranks = {name: [p["rank"] for p in mined.pairs if p["reference_id"] == "img0"] for name, mined in
             (("sparse", sparse), ("dense", dense))}  # fmt: skip
    assert min(ranks["dense"]) > 12  # past the 12 near-copies of img0
    assert dense.stats["pairs"] == 2 * 60 and dense.stats["band"] == [0.4, 0.6, 40]
    assert 1 <= dense.stats["mean_rank"] <= 40


def test_draws_are_seeded_and_in_band():
    features, ids = _pool(5)
    first = sample_adaptive_window(features, ids, targets_per_reference=3, seed=4, depth=30)
    again = sample_adaptive_window(features, ids, targets_per_reference=3, seed=4, depth=30)
    assert first.pairs == again.pairs
    other = sample_adaptive_window(features, ids, targets_per_reference=3, seed=5, depth=30)
    assert first.pairs != other.pairs
    assert all(p["reference_id"] != p["target_id"] for p in first.pairs)


def test_slices_concatenate_to_the_whole():
    features, ids = _pool(4, n=30)
    whole = sample_adaptive_window(features, ids, targets_per_reference=2, seed=1, depth=12)
    parts = [sample_adaptive_window(features, ids, targets_per_reference=2, seed=1, depth=12, start=a, stop=b)
             for a, b in ((0, 11), (11, 30))]  # fmt: skip
    assert [p for part in parts for p in part.pairs] == whole.pairs
    assert sum(part.stats["rank_sum"] for part in parts) == whole.stats["rank_sum"]


def test_short_band_takes_the_closest_to_its_middle():
    features, ids = _pool(0, n=12)
    mined = sample_adaptive_window(features, ids, targets_per_reference=3, seed=0, depth=5, band=(0.5, 0.5))
    assert mined.stats["band_short"] > 0 and mined.stats["pairs"] == 3 * 12


@pytest.mark.parametrize("kwargs, message", [({"band": (0.7, 0.2)}, "band"), ({"depth": 1}, "depth"),
                                             ({"targets_per_reference": 0}, "targets_per_reference")])  # fmt: skip
def test_bad_settings(kwargs, message):
    features, ids = _pool(0, n=10)
    with pytest.raises(ValueError, match=message):
        sample_adaptive_window(features, ids, **kwargs)


def test_parse_band_and_miner_key():
    assert parse_band("0.3,0.5") == (0.3, 0.5)
    with pytest.raises(ValueError, match="low,high"):
        parse_band("wide")
    with pytest.raises(ValueError, match="0 <= low <= high <= 1"):
        parse_band("0.5,1.5")
    assert AdaptiveWindowMiner().cache_key != AdaptiveWindowMiner(band=(0.3, 0.5)).cache_key
    assert AdaptiveWindowMiner(depth=50).cache_key != AdaptiveWindowMiner().cache_key


def test_miner_runs_inside_the_triplet_builder(image_folder, tmp_path, tiny_model, tiny_processor):
    """`MraTriplets(pair_miner=AdaptiveWindowMiner(...))`: the builder mines with the adaptive band."""
    import numpy as np

    from mra_cir.dataset_builders.mra_triplets import MraTriplets
    from mra_cir.dataset_builders.mra_triplets.config import MraTripletsConfig
    from mra_cir.dataset_builders.synthetic_world import sample_scene
    from mra_cir.dataset_builders.synthetic_world.scene_agent import SceneGraphAgent

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_processor.save_pretrained(model_dir)
    seen = {}

    class Recording(AdaptiveWindowMiner):
        def __call__(self, features, config: MraTripletsConfig):
            seen["mined"] = super().__call__(features, config)
            return seen["mined"]

    rng = np.random.default_rng(0)
    agent = SceneGraphAgent({p.name: sample_scene(rng) for p in sorted(image_folder.iterdir())})
    builder = MraTriplets(
        images=str(image_folder), embedding_model=str(model_dir), q1=1, q2=4, targets_per_reference=1, agent="scene",
        agent_backend=agent, cache_dir=str(tmp_path / "cache"), pair_miner=Recording(depth=4), show_progress=False,
    )  # fmt: skip
    builder.download_and_prepare()
    triplets = builder.as_dataset(split="train")
    assert len(triplets) == len(seen["mined"].pairs) > 0
    assert set(triplets["rank"]) <= {1, 2, 3, 4}


def test_mine_command_with_the_adaptive_window(image_folder, tmp_path, tiny_model, tiny_processor, capsys):
    import json

    import datasets

    from mra_cir.cli import main
    from mra_cir.retrieval.image_features import extract_image_features

    paths = sorted(image_folder.iterdir())
    extract_image_features(tiny_model, tiny_processor, [str(p) for p in paths], output_dir=str(tmp_path / "feats"),
                           ids=[p.name for p in paths], show_progress=False)  # fmt: skip
    argv = ["mine", "--features", str(tmp_path / "feats"), "--output", str(tmp_path / "pairs"), "--window",
            "adaptive", "--adaptive-depth", "6", "--targets-per-reference", "2", "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    pairs = datasets.load_from_disk(str(tmp_path / "pairs"))
    assert len(pairs) == summary["stats"]["pairs"] == 2 * len(paths) and max(pairs["rank"]) <= 6
    assert summary["stats"]["mean_rank"] == sum(pairs["rank"]) / len(pairs)
    assert main([*argv[:-1], "--window", "wide"]) == 1
