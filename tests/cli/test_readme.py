"""Every ```python block of the README and of docs/*.md runs (```py marks the few that need real weights, a hub or a
GPU), and the README starts with the two set-up commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO_ROOT

PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
BLOCKS = [
    (f"{page.relative_to(REPO_ROOT)}[{i}]", block)
    for page in PAGES
    for i, block in enumerate(re.findall(r"^```python\n(.*?)^```", page.read_text(), flags=re.S | re.M))
]


def test_readme_starts_with_the_two_commands():
    text = (REPO_ROOT / "README.md").read_text()
    first_block = re.search(r"^```bash\n(.*?)^```", text, flags=re.S | re.M).group(1)
    assert [line.split()[:2] for line in first_block.splitlines()] == [["make", "quickstart"], ["make", "test"]]
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


def test_readme_first_screen_says_how_to_run_anything_after_the_set_up():
    """After the two set-up commands: the venv (activated, or its bin/ path), the next command, an install line for
    one's own environment, and where next (the runbook, one's own photos, the app, the API)."""
    text = (REPO_ROOT / "README.md").read_text()
    first_screen = text[: text.index("\n## ", text.index("## Set-up"))]
    blocks = re.findall(r"^```bash\n(.*?)^```", first_screen, flags=re.S | re.M)
    assert blocks[1].splitlines()[0].startswith("source .venv/bin/activate") and ".venv/bin/mra-cir" in blocks[1]
    assert blocks[1].splitlines()[1].startswith("mra-cir app")
    assert blocks[2].startswith('pip install -e ".[app]"')
    for page in ("docs/reproduce.md", "docs/own-images.md", "docs/app.md", "#usage-stage-by-stage"):
        assert f"]({page})" in first_screen, page
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^VENV \?= \.venv$", makefile, flags=re.M)  # the folder the README activates
    assert '-e ".[dev,serving,app]"' in makefile and "mra-cir[dev,serving,app]" in blocks[0]
    assert (Path(sys.executable).parent / "mra-cir").is_file()  # the console script next to the venv's python


def test_docs_have_runnable_snippets():
    assert any(name.startswith("README") for name, _ in BLOCKS), "the README documents the API with runnable snippets"


@pytest.mark.parametrize("name, block", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_snippet_runs(name, block, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{name} failed:\n{block}\n{result.stderr[-3000:]}"


#: README command lines the suite runs elsewhere (the line's first words -> the test that runs it)
RUN_ELSEWHERE = {
    "make quickstart": "tests/cli/test_quickstart.py (mra-cir quickstart --fast; the Makefile target is that command)",
    "make test": ".ci/run (CI runs make test)",
    "make lint": ".ci/run (make test runs the same ruff commands)",
    "source .venv/bin/activate": "test_readme_first_screen_says_how_to_run_anything_after_the_set_up",
    "mra-cir app": "tests/app/ (the quickstart default, in a real browser)",
    'pip install -e ".[app]"': "the Makefile's install (pip install -e .[dev,serving,app])",
}
#: what marks a block that the tests do not run (it needs data, weights or GPUs)
NOT_RUN = re.compile(r"not run by the tests|needs \d+ GPUs")


def _readme_command_lines() -> list[tuple[str, str]]:
    """(line, the text just before its block) for every command line of the README's bash blocks."""
    text = (REPO_ROOT / "README.md").read_text()
    out = []
    for match in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        before = text[: match.start()].rstrip().splitlines()[-1]
        for line in match.group(1).replace("\\\n", " ").splitlines():
            if line.strip():
                out.append((line, before))
    return out


def test_every_readme_command_runs_in_the_tests_or_says_what_it_needs(tmp_path):
    """Each command line of the README's bash blocks is run here, run by a named test, or marked as needing data,
    weights or GPUs; the tiny CPU training line runs here exactly as printed."""
    lines = _readme_command_lines()
    ran = 0
    for line, before in lines:
        command = line.split("#")[0].strip()
        if any(command.startswith(known) for known in RUN_ELSEWHERE):
            continue
        if NOT_RUN.search(before) or NOT_RUN.search(line):
            continue
        assert command == "mra-cir train examples/configs/train_synthetic_cpu.yaml", f"not run, not marked: {line}"
        env = {**os.environ, "HF_HUB_OFFLINE": "1"}
        argv = [str(Path(sys.executable).parent / "mra-cir"), "train", str(REPO_ROOT / command.split()[-1])]
        result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-3000:]
        assert (tmp_path / "out" / "mra-cir-synthetic-cpu" / "model.safetensors").is_file()
        ran += 1
    assert ran == 1 and len(lines) >= 10
