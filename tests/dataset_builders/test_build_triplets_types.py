"""`build-triplets` and transformation types at a tiny size: the type mix in the summary and the dataset card,
`--balance-types` (quotas met, counted in the card) and `--window adaptive`."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from mra_cir.cli import main
from mra_cir.dataset_builders.mra_triplets.transformation_types import primary_type

NUM_IMAGES = 16


@pytest.fixture(scope="module")
def scenes(tmp_path_factory, tiny_model, tiny_processor) -> tuple[Path, Path]:
    """Rendered scenes with their scene graphs (metadata.jsonl) and an embedding model."""
    from mra_cir.dataset_builders.synthetic_world import canonical, render_scene, sample_scene

    root = tmp_path_factory.mktemp("typed_world")
    images, model = root / "images", root / "model"
    images.mkdir()
    rng = np.random.default_rng(3)
    lines = []
    for i in range(NUM_IMAGES):
        graph = sample_scene(rng)
        render_scene(graph, 32, rng).save(images / f"s{i:02d}.png")
        lines.append(json.dumps({"file_name": f"s{i:02d}.png", "scene_graph": canonical(graph)}))
    (images / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    tiny_model.save_pretrained(model)
    tiny_processor.save_pretrained(model)
    return images, model


def _build(scenes, output, *extra) -> int:
    images, model = scenes
    argv = ["--images", str(images), "--model", str(model), "--output", str(output), "--agent", "scene",
            "--agent-model", str(images), "--num-proc", "1", *extra]  # fmt: skip
    return main(["build-triplets", *argv])


def test_type_mix_in_summary_and_card(scenes, tmp_path, capsys):
    assert _build(scenes, tmp_path / "out", "--q1", "1", "--q2", "4", "--targets-per-reference", "2") == 0
    printed = capsys.readouterr().out
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    mix = summary["transformation_types"]
    assert mix["texts"] == summary["triplets"] == sum(mix["primary"].values())
    assert "types (primary type of each text): " in printed
    card = (tmp_path / "out" / "README.md").read_text()
    assert "## Transformation types" in card and "| shape or object replaced |" in card
    assert "Balanced by type" not in card


def test_balance_types_meets_its_quotas(scenes, tmp_path, capsys):
    extra = ["--q1", "1", "--q2", "6", "--targets-per-reference", "2", "--balance-types", "uniform",
             "--balance-oversample", "3"]  # fmt: skip
    assert _build(scenes, tmp_path / "out", *extra) == 0
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    balance = summary["type_balance"]
    assert sum(balance["candidates"].values()) == summary["transformation_types_candidates"]["texts"]
    assert summary["triplets"] == sum(balance["kept"].values()) <= NUM_IMAGES * 2
    import datasets

    rows = datasets.load_dataset(str(tmp_path / "out"), split="train")
    kept = Counter(primary_type(text) for text in rows["modification_text"])
    assert dict(kept) == balance["kept"]
    for kind, quota in balance["quotas"].items():  # every quota met: all candidates, or the share
        assert kept[kind] == quota
        assert quota == balance["candidates"][kind] or kind not in balance["short"]
    full = [k for k in balance["quotas"] if balance["quotas"][k] < balance["candidates"][k]]
    assert max(kept[k] for k in full) - min(kept[k] for k in full) <= 1  # uniform among the types not short
    card = (tmp_path / "out" / "README.md").read_text()
    assert "Balanced by type (target `uniform`)" in card and "| type | candidates | kept |" in card
    assert "balanced by type (uniform): kept" in capsys.readouterr().out


def test_adaptive_window(scenes, tmp_path):
    extra = ["--window", "adaptive", "--adaptive-depth", "8", "--adaptive-band", "0.3,0.7"]
    assert _build(scenes, tmp_path / "out", *extra) == 0
    import datasets

    rows = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert len(rows) > 0 and max(rows["rank"]) <= 8
    assert _build(scenes, tmp_path / "bad", "--window", "wide") != 0
