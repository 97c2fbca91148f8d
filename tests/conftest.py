"""Shared fixtures: tiny random models and an offline processor (nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # tiny models: threads only add overhead (and contention on a shared 2-core machine)

REPO_ROOT = Path(__file__).resolve().parents[1]
TESTS_DIR = Path(__file__).resolve().parent
BENCHMARKS_DIR = Path(os.environ.get("MRA_CIR_BENCHMARKS_DIR", REPO_ROOT.parent / "shared" / "benchmarks"))

WORDS = (
    "a an the photo of image picture make it change to with without add remove red green blue yellow black white "
    "small large big circle square triangle left right top bottom more less and is in on"
).split()


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The official annotation files (env MRA_CIR_BENCHMARKS_DIR, default ../shared/benchmarks)."""
    if not BENCHMARKS_DIR.is_dir():
        pytest.skip(f"benchmark annotation files not found at {BENCHMARKS_DIR} (set MRA_CIR_BENCHMARKS_DIR)")
    return BENCHMARKS_DIR


@pytest.fixture(scope="session")
def tiny_model():
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import tiny_config

    torch.manual_seed(0)
    return MraCirModel(tiny_config()).eval()


@pytest.fixture(scope="session")
def tiny_processor():
    from mra_cir.tiny import offline_processor

    return offline_processor(image_size=32, texts=[" ".join(WORDS)])


from mra_cir.tiny import random_image  # noqa: E402,F401  (re-exported for the tests)


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """A folder of 12 small random PNG images."""
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(12):
        random_image(i).save(folder / f"img_{i:03d}.png")
    return folder


def load_test_fixture(name: str):
    """Import `tests/fixtures/<name>.py` (scripts that also run standalone) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"_mra_{name}", Path(__file__).parent / "fixtures" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def tiny_vlm(tmp_path_factory) -> Path:
    """A tiny random image-text-to-text model (Llava) written offline by tests/fixtures/make_tiny_vlm.py."""
    return load_test_fixture("make_tiny_vlm").make_tiny_vlm(tmp_path_factory.mktemp("tiny_vlm"))


@pytest.fixture(scope="session")
def processor():
    """An offline processor whose vocabulary covers the toy triplets' words."""
    from mra_cir.tiny import TOY_WORDS, offline_processor

    return offline_processor(32, [" ".join(TOY_WORDS)])


@pytest.fixture(scope="session")
def dataset():
    """16 random triplets over 12 random images, with the MRA triplet builder's features."""
    from mra_cir.tiny import random_triplet_dataset

    return random_triplet_dataset(16, num_images=12, seed=0)
