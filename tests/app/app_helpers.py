"""Helpers and fixtures of the app's tests: tiny saved models, a gallery folder and its index, and the app served on
127.0.0.1 in the test process. A module of its own, whose fixtures each test module declares (`app_files = pytest.fixture(
...)(make_app_files)`): a `conftest.py` here would take the module name `conftest` that other test folders import
from `tests/conftest.py`."""

from __future__ import annotations

import socket
from pathlib import Path

import torch

from mra_cir.tiny import TOY_WORDS, offline_processor, random_image, tiny_config

QUERY_TEXT = "make it red and add a circle"  # words of TOY_WORDS (the tiny tokenizer's vocabulary)


def save_tiny_model(folder: Path, seed: int, **config) -> Path:
    """A tiny random MraCirModel with an offline processor, saved to `folder`."""
    from mra_cir.modeling_mra_cir import MraCirModel

    torch.manual_seed(seed)
    MraCirModel(tiny_config(**config)).save_pretrained(folder)
    offline_processor(32, texts=[" ".join(TOY_WORDS)]).save_pretrained(folder)
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_app_files(tmp_path_factory) -> dict[str, Path]:
    """Two tiny models (`model`, `other`), a folder of 16 images (one in a sub-folder) and an empty index folder."""
    root = tmp_path_factory.mktemp("app")
    images = root / "images"
    (images / "sub").mkdir(parents=True)
    for i in range(15):
        random_image(100 + i, size=36).save(images / f"img_{i:02d}.png")
    random_image(200, size=36).save(images / "sub" / "nested.png")
    return {
        "model": save_tiny_model(root / "model", seed=0),
        "other": save_tiny_model(root / "other", seed=1),
        "images": images,
        "index": root / "index",
        "other_index": root / "other_index",
        "root": root,
    }


def serve_app(app_files: dict[str, Path]):
    """The app over `app_files` (model beside `other`), launched on 127.0.0.1: yields its URL and engine."""
    from mra_cir.app import AppArguments, load_engine
    from mra_cir.app.ui import EngineHolder, build_app, launch_options

    args = AppArguments(
        model=str(app_files["model"]),
        index=str(app_files["index"]),
        images=str(app_files["images"]),
        compare_model=str(app_files["other"]),
        compare_index=str(app_files["other_index"]),
        k=5,
    )
    holder = EngineHolder(lambda: load_engine(args))
    demo = build_app(holder, k=5)
    options = launch_options("127.0.0.1", free_port(), False)
    demo.queue().launch(prevent_thread_lock=True, quiet=True, **options)
    try:
        yield {"url": demo.local_url, "engine": holder.engine}
    finally:
        demo.close()
