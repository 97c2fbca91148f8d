"""Every ```python block of the README and of docs/*.md runs (```py marks the few that need real weights, a hub or a
GPU), and the README starts with the two set-up commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys

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


def test_docs_have_runnable_snippets():
    assert any(name.startswith("README") for name, _ in BLOCKS), "the README documents the API with runnable snippets"


@pytest.mark.parametrize("name, block", BLOCKS, ids=[name for name, _ in BLOCKS])
def test_snippet_runs(name, block, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"{name} failed:\n{block}\n{result.stderr[-3000:]}"
