"""The repository's own files: the licence setup.cfg declares, the citation file (the project and the paper it
implements), and a Makefile that keeps an installed torch."""

from __future__ import annotations

import configparser
import shutil
import subprocess

import pytest
import yaml
from conftest import REPO_ROOT


def test_license_is_the_one_setup_cfg_declares():
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    assert config["metadata"]["license"] == "Apache-2.0"
    text = (REPO_ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text and "END OF TERMS AND CONDITIONS" in text


def test_citation_file_names_the_project_and_the_paper():
    citation = yaml.safe_load((REPO_ROOT / "CITATION.cff").read_text())
    assert (
        citation["cff-version"] == "1.2.0" and citation["type"] == "software" and citation["license"] == "Apache-2.0"
    )
    config = configparser.ConfigParser()
    config.read(REPO_ROOT / "setup.cfg")
    assert citation["version"] == config["metadata"]["version"]
    paper = citation["preferred-citation"]
    assert paper["title"] == "Multimodal Reasoning Agent for Zero-Shot Composed Image Retrieval"
    assert paper["url"] == "https://arxiv.org/abs/2505.19952" and paper["year"] == 2025
    assert {"type": "doi", "value": "10.48550/arXiv.2505.19952"} in paper["identifiers"]
    assert all(author.get("family-names") for author in paper["authors"])


def _install_recipe(tmp_path, python_has_torch: bool, **variables) -> str:
    """What `make install` would run for a Python that has (or lacks) torch (`make -n`: nothing is run)."""
    python = tmp_path / ("python-with-torch" if python_has_torch else "python-without-torch")
    python.write_text(f"#!/bin/sh\nexit {0 if python_has_torch else 1}\n")  # answers `python -c "import torch"`
    python.chmod(0o755)
    args = [f"{name}={value}" for name, value in {"PYTHON": python, "VENV": tmp_path / "venv", **variables}.items()]
    result = subprocess.run(
        ["make", "-n", "-B", "install", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_makefile_keeps_an_installed_torch(tmp_path):
    with_torch = _install_recipe(tmp_path, python_has_torch=True)
    assert "-m venv --system-site-packages" in with_torch  # the venv sees the torch the Python already has
    without = _install_recipe(tmp_path, python_has_torch=False)
    assert "--system-site-packages" not in without
    for recipe in (with_torch, without):  # torch is installed only where the venv has none
        install = next(line for line in recipe.splitlines() if '"torch==' in line)
        assert install.split("||")[0].strip().endswith('-c "import torch" 2>/dev/null')
    index = _install_recipe(tmp_path, False, TORCH_INDEX_URL="https://download.pytorch.org/whl/cpu")
    assert '--index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"' in index
