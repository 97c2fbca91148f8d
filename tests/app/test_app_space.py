"""The Space entry (`app.py` at the repository root): a model and a dataset as the gallery, from environment variables.
The Hub is out of reach here, so a local model folder and local datasets stand for the model id and the dataset id
(the same `load_model_and_processor` / `load_dataset` calls)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest
from app_helpers import QUERY_TEXT, free_port, make_app_files
from gradio_client import Client, handle_file
from PIL import Image

from mra_cir.app import InputError
from mra_cir.app.gallery import STAMP_FILE
from mra_cir.app.space import engine_from_env
from mra_cir.modeling_mra_cir.loading import load_model_and_processor
from mra_cir.retrieval.encoding import rank_gallery
from mra_cir.retrieval.gallery_index import GalleryIndex
from mra_cir.tiny import random_image

app_files = pytest.fixture(scope="session", name="app_files")(make_app_files)


REPO_ROOT = Path(__file__).resolve().parents[2]
pytestmark = [  # pandas 3 deprecations inside Gradio's queue, not ours
    pytest.mark.filterwarnings("ignore:'future.no_silent_downcasting' is deprecated"),
    pytest.mark.filterwarnings("ignore:The copy keyword is deprecated"),
]


def test_app_py_serves_an_image_folder_dataset(app_files, tmp_path, monkeypatch):
    folder = tmp_path / "gallery"
    folder.mkdir()
    for i in range(10):
        random_image(500 + i, size=32).save(folder / f"photo_{i}.png")
    monkeypatch.setenv("MRA_CIR_MODEL", str(app_files["model"]))
    monkeypatch.setenv("MRA_CIR_GALLERY", str(folder))
    monkeypatch.setenv("MRA_CIR_INDEX_DIR", str(tmp_path / "cache"))
    demo = runpy.run_path(str(REPO_ROOT / "app.py"))["demo"]  # what a Space runs, without its launch
    demo.queue().launch(prevent_thread_lock=True, quiet=True, server_name="127.0.0.1", server_port=free_port())
    try:
        reference = folder / "photo_3.png"
        status, results, _, answer = Client(demo.local_url, verbose=False).predict(
            handle_file(str(reference)), QUERY_TEXT, "composed", 4, True, api_name="/search"
        )
    finally:
        demo.close()
    assert f"over 10 gallery images (exact search). Gallery: `{folder}`." in status and len(results) == 4
    # the same ranking as the library's, over the index the app cached (ids: the dataset's row numbers)
    index = GalleryIndex.load(tmp_path / "cache" / "model_0")
    assert index.ids == [str(i) for i in range(10)] and (tmp_path / "cache" / "model_0" / STAMP_FILE).is_file()
    model, processor = load_model_and_processor(str(app_files["model"]))
    expected = rank_gallery(model, processor, index, [Image.open(reference).convert("RGB")], [QUERY_TEXT], k=4)
    assert [r["id"] for r in answer["models"][0]["results"]] == expected.ids[0]


def test_a_saved_dataset_with_ids_and_a_compared_model(app_files, tmp_path):
    import datasets

    images = [random_image(600 + i, size=32) for i in range(6)]
    rows = {"image": images, "id": [f"item-{i}" for i in range(6)]}
    datasets.Dataset.from_dict(
        rows, features=datasets.Features({"image": datasets.Image(), "id": datasets.Value("string")})
    ).save_to_disk(tmp_path / "saved")
    environ = {
        "MRA_CIR_MODEL": str(app_files["model"]),
        "MRA_CIR_COMPARE_MODEL": str(app_files["other"]),
        "MRA_CIR_GALLERY": str(tmp_path / "saved"),
        "MRA_CIR_GALLERY_MAX": "5",
        "MRA_CIR_INDEX_DIR": str(tmp_path / "cache"),
    }
    engine = engine_from_env(environ)
    assert [m.path for m in engine.models] == [str(app_files["model"]), str(app_files["other"])]
    assert engine.models[0].index.ids == [f"item-{i}" for i in range(5)]
    found = engine.search(engine.reference_from_gallery("item-2"), "", "image", 3, exclude_id="item-2")
    assert [len(r.ids) for r in found] == [3, 3] and all("item-2" not in r.ids for r in found)
    assert engine.gallery.display("item-4").size == (160, 160)


def test_bad_space_settings_say_which_variable(app_files, tmp_path):
    cases = [
        ({"MRA_CIR_MODEL": str(app_files["model"])}, "MRA_CIR_MODEL is set but MRA_CIR_GALLERY is not"),
        (
            {"MRA_CIR_MODEL": str(app_files["model"]), "MRA_CIR_GALLERY": str(tmp_path / "none")},
            f"The gallery dataset {str(tmp_path / 'none')!r} (split 'train') cannot be loaded",
        ),
        (
            {"MRA_CIR_MODEL": str(app_files["model"]), "MRA_CIR_GALLERY": "x", "MRA_CIR_GALLERY_MAX": "ten"},
            "MRA_CIR_GALLERY_MAX must be a whole number, got 'ten'",
        ),
    ]
    for environ, message in cases:
        with pytest.raises(InputError) as caught:
            engine_from_env(environ)
        assert message in str(caught.value)
