"""The `mra-cir` console script: every subcommand is registered and has --help."""

from __future__ import annotations

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
        "app",
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
