"""The verification step inside a triplet build: the world's scene agent erring, its self-check and the cycle check,
the `dropped` side split, the `agent_error` column, counts by reason in the card, caching and resumption."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mra_cir.dataset_builders.mra_triplets import MraTriplets
from mra_cir.dataset_builders.mra_triplets.publishing import export_triplets
from mra_cir.dataset_builders.mra_triplets.summary import IncompleteBuildError
from mra_cir.dataset_builders.synthetic_world import generate_pool
from mra_cir.dataset_builders.synthetic_world.scene_agent import SceneGraphAgent

NUM_IMAGES = 16
WINDOW = {"q1": 2, "q2": 5, "targets_per_reference": 2, "pairs_per_shard": 8}


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model, tiny_processor):
    """16 pool images of the world written as PNGs, their scene graphs (by file name) and a tiny embedding model."""
    root = tmp_path_factory.mktemp("verified_world")
    (root / "images").mkdir()
    graphs = {}
    for image_id, row in generate_pool(5, NUM_IMAGES):
        row["image"].save(root / "images" / f"{image_id}.png")
        graphs[f"{image_id}.png"] = row["scene_graph"]
    tiny_model.save_pretrained(root / "model")
    tiny_processor.save_pretrained(root / "model")
    return root, graphs


class _FlakyVerify(SceneGraphAgent):
    """The scene agent whose self-check requests fail (no answer) for the first `fail` pairs it is asked about."""

    def __init__(self, *args, fail: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.fail, self.verify_asked = fail, 0

    def verify(self, requests, modifications):
        answers = super().verify(requests, modifications)
        out = [None if self.verify_asked + i < self.fail else a for i, a in enumerate(answers)]
        self.verify_asked += len(requests)
        return out


def _build(root: Path, graphs: dict, agent=None, **kwargs) -> MraTriplets:
    agent = agent or SceneGraphAgent(graphs, error_rate=0.5, seed=0, error_kinds="all")
    return MraTriplets(
        images=str(root / "images"), embedding_model=str(root / "model"), agent="scene", agent_backend=agent,
        cache_dir=str(root / "cache"), show_progress=False, **{**WINDOW, **kwargs},
    )  # fmt: skip


def test_verified_build_keeps_what_it_drops_in_a_side_split_with_reasons_and_the_truth(world, tmp_path):
    root, graphs = world
    builder = _build(root, graphs, verify=True, cycle_check=True, cycle_k=1)
    builder.download_and_prepare()
    train, dropped = builder.as_dataset(split="train"), builder.as_dataset(split="dropped")
    summary = builder.build_summary()
    assert summary["complete"] and summary["pairs_mined"] == NUM_IMAGES * 2
    rejected = summary["rejected"]
    # every pair is kept, dropped by a verifier, or rejected by the output filter: nothing is lost
    filtered = sum(v for k, v in rejected.items() if k not in ("not_verified", "verify_unclear", "cycle_inconsistent"))
    assert len(train) + len(dropped) + filtered == summary["pairs_mined"]
    verifier_drops = rejected.get("not_verified", 0) + rejected.get("cycle_inconsistent", 0)
    assert len(dropped) == verifier_drops > 0 and len(train) > 0
    assert set(train["drop_reason"]) == {""} and all(dropped["drop_reason"])
    assert {r.split(",")[0] for r in dropped["drop_reason"]} <= {"not_verified", "cycle_inconsistent"}
    # the world's truth: with an error rate of 0.5 some kept and some dropped texts are wrong, and it names kinds
    errors = list(train["agent_error"]) + list(dropped["agent_error"])
    assert "" in errors and any(errors)
    # the self-check was asked once per text that passed the filter, like the other steps
    assert summary["agent_calls_by_step"]["verify"] == len(train) + len(dropped)
    folder = export_triplets(train, tmp_path / "out", builder.config_dict(), summary, dropped=dropped)
    assert sorted(p.name.split("-")[0] for p in (folder / "data").glob("*.parquet")) == ["dropped", "train"]
    card = (folder / "README.md").read_text()
    assert f"`not_verified`: {rejected['not_verified']}" in card and "`cycle_inconsistent`" in card
    assert "split: dropped" in card


def test_verification_is_cached_and_a_failed_build_asks_only_the_missing_checks(world, tmp_path):
    root, graphs = world
    root2 = tmp_path / "w"
    root2.mkdir()
    for name in ("images", "model"):
        (root2 / name).symlink_to(root / name)
    flaky = _FlakyVerify(graphs, error_rate=0.5, seed=0, error_kinds="all", fail=5)
    with pytest.raises(IncompleteBuildError, match="verify: 5"):
        _build(root2, graphs, flaky, verify=True).download_and_prepare()
    asked = flaky.verify_asked
    again = _FlakyVerify(graphs, error_rate=0.5, seed=0, error_kinds="all")
    builder = _build(root2, graphs, again, verify=True)
    builder.download_and_prepare()
    summary = builder.build_summary()
    assert summary["complete"] and again.verify_asked == 5  # only the five failed checks asked again
    assert summary["agent_calls_by_step"] == {"caption": 0, "modify": 0, "verify": 5}
    assert summary["agent_cached"] == NUM_IMAGES + summary["pairs_mined"] + asked - 5  # the rest from the cache
    reference = _build(root, graphs, verify=True)  # the same build without failures: the same triplets
    reference.download_and_prepare()
    assert list(builder.as_dataset(split="train")["modification_text"]) == list(
        reference.as_dataset(split="train")["modification_text"]
    )
    stats = json.loads(next(Path(builder.stats_dir).glob("shard-*.json")).read_text())
    assert "verify" not in stats["failed"]
