"""The `mra-cir` console script: every subcommand is registered, has --help, and the smoke demo answers a query."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mra_cir.cli import COMMANDS, main

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def run_cli(*args: str, timeout: int = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mra_cir.cli", *args], capture_output=True, text=True, env=ENV, timeout=timeout
    )


def test_top_level_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in (
        "demo",
        "quickstart",
        "quickstart-diagnostics",
        "mine",
        "search",
        "build-triplets",
        "train",
        "evaluate",
        "evaluate-rankings",
    ):
        assert name in COMMANDS and f"  {name} " in out


def test_unknown_command_is_an_error(capsys):
    assert main(["frobnicate"]) == 2
    assert "unknown command 'frobnicate'" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_subcommand_help(name):
    result = run_cli(name, "--help")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: mra-cir {name}")


def test_smoke_demo_ranks_the_generated_gallery(tmp_path):
    result = run_cli("demo", "--output_dir", str(tmp_path / "model"), "--top_k", "8")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "through AutoModel" in result.stdout
    ranking = json.loads(result.stdout[result.stdout.index("{") :])["ranking"]
    assert [r["rank"] for r in ranking] == list(range(1, 9))
    assert len({r["id"] for r in ranking}) == 8
    scores = [r["score"] for r in ranking]
    assert scores == sorted(scores, reverse=True)
    assert (tmp_path / "model" / "model.safetensors").exists()
