"""`mra-cir window-sweep --adaptive`: the adaptive window is swept beside the fixed ones (its own triplets, drawn by
`AdaptiveWindowMiner`), named `adaptive` in results and tables."""

from __future__ import annotations

import json

from test_window_sweep import ColourAgent, _photos, blip2_checkpoint  # noqa: F401  (the fixture)

from mra_cir.commands import window_sweep as command
from mra_cir.dataset_builders.agents import register_agent_backend
from mra_cir.pipelines.sweep import WindowSweepArguments
from mra_cir.pipelines.sweep_report import ADAPTIVE, window_label, window_name


def test_adaptive_is_a_window_of_its_own():
    args = WindowSweepArguments(images=".", model="m", output="o", windows="1-1,3-4", adaptive=True)
    assert args.window_list == [(1, 1), (3, 4), ADAPTIVE]
    assert window_name(ADAPTIVE) == window_label(ADAPTIVE) == "adaptive" and window_name((3, 4)) == "3-4"


def test_build_stage_with_the_adaptive_window(tmp_path, blip2_checkpoint, capsys):  # noqa: F811
    register_agent_backend("sweep-colour", ColourAgent)
    photos = _photos(tmp_path / "photos", 16)
    out = tmp_path / "sweep"
    argv = [
        "--images", str(photos), "--model", str(blip2_checkpoint), "--output", str(out), "--windows", "1-1,3-4",
        "--adaptive", "--adaptive_depth", "6", "--agent", "sweep-colour", "--stages", "build", "--no_progress",
    ]  # fmt: skip
    assert command.main(argv) == 0, capsys.readouterr().err[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert list(results["windows"]) == ["1-1", "3-4", "adaptive"]
    import datasets

    rows = datasets.load_dataset(
        "parquet", data_files=str(out / "windows" / "adaptive" / "triplets" / "data" / "*.parquet"), split="train"
    )
    assert len(rows) == results["windows"]["adaptive"]["triplets_used"] > 0 and max(rows["rank"]) <= 6
    assert results["ranking_passes"] == 1  # the fixed windows still share one ranking
