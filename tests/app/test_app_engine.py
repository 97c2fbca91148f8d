"""The app without a web page: reading uploads, validating queries, loading models and indexes (mismatches refused
with a message), the faiss path for large galleries, and the quickstart default."""

from __future__ import annotations

import io
import json
import shutil
import struct
import zlib

import numpy as np
import pytest
import torch
from app_helpers import QUERY_TEXT, make_app_files, save_tiny_model
from PIL import Image

from mra_cir.app import AppArguments, InputError, load_engine, prepare_reference
from mra_cir.app.engine import check_index
from mra_cir.app.gallery import STAMP_FILE, ApproximateGallery, GalleryImages
from mra_cir.app.quickstart_default import NoQuickstartError, benchmark_examples
from mra_cir.retrieval.encoding import encode_images, rank_gallery
from mra_cir.retrieval.gallery_index import GalleryIndex
from mra_cir.tiny import random_image

app_files = pytest.fixture(scope="session", name="app_files")(make_app_files)


# ----------------------------------------------------------------------------------------------------------------------
# Uploads
# ----------------------------------------------------------------------------------------------------------------------
def test_odd_modes_become_the_rgb_the_gallery_side_makes(tmp_path):
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 30, 3), dtype=np.uint8))
    cases = {
        "cmyk.jpg": rgb.convert("CMYK"),
        "palette.png": rgb.convert("P"),
        "rgba.png": rgb.convert("RGBA"),
        "grey.png": rgb.convert("L"),
        "bilevel.png": rgb.convert("1"),
    }
    for name, image in cases.items():
        image.save(tmp_path / name)
        out = prepare_reference(tmp_path / name)
        assert out.mode == "RGB" and out.size == (30, 20), name
        # the same decoding as the gallery side (extract_image_features / mra-cir search: convert("RGB"))
        assert np.array_equal(np.asarray(out), np.asarray(Image.open(tmp_path / name).convert("RGB"))), name


def test_sixteen_bit_and_float_greys_are_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    assert np.asarray(Image.open(tmp_path / "deep.png").convert("RGB")).mean() > 250  # what a plain convert does
    out = np.asarray(prepare_reference(tmp_path / "deep.png"))
    assert out.shape == (64, 64, 3) and out.min() == 0 and out.max() == 255 and 120 < out.mean() < 135
    floats = Image.fromarray(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))
    out = np.asarray(prepare_reference(floats))
    assert out.min() == 0 and out.max() == 255


def test_first_frame_of_an_animation_and_exif_rotation(tmp_path):
    frames = [Image.new("RGB", (10, 6), (255, 0, 0)), Image.new("RGB", (10, 6), (0, 0, 255))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    first = np.asarray(prepare_reference(tmp_path / "anim.gif"))[0, 0]
    assert first[0] > 200 and first[2] < 50  # red, not the blue second frame
    exif = Image.Exif()
    exif[274] = 6  # rotated 90 degrees: the upright image is 6 x 10
    frames[0].save(tmp_path / "rotated.jpg", exif=exif)
    assert prepare_reference(tmp_path / "rotated.jpg").size == (6, 10)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG claiming width x height pixels with an empty pixel stream (PIL reads the size; no big file needed)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_bad_uploads_are_refused_with_a_message(tmp_path):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "drawing.svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    (tmp_path / "huge.png").write_bytes(_png_header_only(9000, 6000))
    (tmp_path / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    good = io.BytesIO()
    random_image(0, size=64).save(good, format="PNG")
    (tmp_path / "cut.png").write_bytes(good.getvalue()[:200])
    expected = {
        "notes.txt": "notes.txt is not an image",
        "drawing.svg": "drawing.svg is an SVG drawing",
        "huge.png": "huge.png is 9000 x 6000 pixels (54 megapixels); the app accepts up to 40 megapixels",
        "bomb.png": "bomb.png is far too large",
        "cut.png": "cut.png cannot be read",
    }
    for name, message in expected.items():
        with pytest.raises(InputError) as caught:
            prepare_reference(tmp_path / name)
        assert message in str(caught.value), (name, str(caught.value))


# ----------------------------------------------------------------------------------------------------------------------
# Queries and set-up
# ----------------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def engine(app_files):
    return load_engine(
        AppArguments(model=str(app_files["model"]), index=str(app_files["index"]), images=str(app_files["images"]))
    )


def test_search_validates_the_query(engine):
    reference = random_image(1)
    for mode in ("composed", "text", "image_text_fusion"):
        with pytest.raises(InputError, match="Type a modification text"):
            engine.search(reference, "   ", mode, 5)
    with pytest.raises(InputError, match="Choose a reference image"):
        engine.search(None, QUERY_TEXT, "composed", 5)
    with pytest.raises(InputError, match="between 1 and 50"):
        engine.search(reference, QUERY_TEXT, "composed", 0)
    with pytest.raises(InputError, match="unknown ranking mode 'fusion'"):
        engine.search(reference, QUERY_TEXT, "fusion", 5)
    with pytest.raises(InputError, match="under 1000"):
        engine.search(reference, "red " * 400, "composed", 5)
    # what each mode does not need may be missing
    assert len(engine.search(reference, "", "image", 5)[0].ids) == 5
    assert len(engine.search(None, QUERY_TEXT, "text", 5)[0].ids) == 5


def test_a_reference_picked_in_the_gallery_is_its_stored_image_and_can_be_hidden(engine, app_files):
    picked = engine.reference_from_gallery("sub/nested.png")
    assert np.array_equal(np.asarray(picked), np.asarray(Image.open(app_files["images"] / "sub/nested.png")))
    shown = engine.search(picked, "", "image", 3)[0]
    assert shown.ids[0] == "sub/nested.png" and shown.scores[0] == pytest.approx(1.0, abs=1e-5)
    hidden = engine.search(picked, "", "image", 3, exclude_id="sub/nested.png")[0]
    assert hidden.ids[:2] == shown.ids[1:] and "sub/nested.png" not in hidden.ids


def test_an_index_of_another_model_is_refused(app_files, tmp_path, engine):
    narrow = save_tiny_model(tmp_path / "narrow", seed=0, embed_dim=8)
    with pytest.raises(InputError) as caught:
        load_engine(AppArguments(model=str(narrow), index=str(app_files["index"])))
    message = str(caught.value)
    assert f"The gallery index {app_files['index']} does not match the model {narrow}" in message
    assert "its features are 4 tokens of dimension 16, the model makes 4 tokens of dimension 8" in message
    # same shape, but the index records the model that built it
    with pytest.raises(InputError, match=f"was built with the model {app_files['model'].resolve()}, not "):
        load_engine(AppArguments(model=str(app_files["other"]), index=str(app_files["index"])))
    # ... which is only a note when that model is no longer on this machine
    index = GalleryIndex(engine.models[0].index.features, engine.models[0].index.ids, model_path="/gone/model")
    note = check_index(index, engine.models[0].model, str(app_files["model"]), "idx")
    assert "built with /gone/model, not on this machine" in note


def test_missing_index_model_or_images_say_what_to_pass(app_files, tmp_path, engine):
    cases = {
        "is not a gallery index (no features.safetensors): pass --images DIR": dict(
            model=str(app_files["model"]), index=str(tmp_path / "nowhere")
        ),
        "model './no/such/model': no such folder": dict(model="./no/such/model", index=str(app_files["index"])),
        f"--images {tmp_path / 'none'}: image folder": dict(
            model=str(app_files["model"]), index=str(tmp_path / "x"), images=str(tmp_path / "none")
        ),
    }
    for message, kwargs in cases.items():
        with pytest.raises(InputError) as caught:
            load_engine(AppArguments(**kwargs))
        assert message in str(caught.value), str(caught.value)
    # --model alone is read from the index: its recorded model_path
    engine = load_engine(AppArguments(index=str(app_files["index"]), images=str(app_files["images"])))
    assert engine.models[0].path == str(app_files["model"].resolve())


# ----------------------------------------------------------------------------------------------------------------------
# The faiss path
# ----------------------------------------------------------------------------------------------------------------------
def test_faiss_path_gives_the_exact_top_k(tiny_model, tiny_processor):
    gallery = [random_image(300 + i) for i in range(60)]
    ids = [f"g{i}" for i in range(60)]
    exact = GalleryIndex(encode_images(tiny_model, tiny_processor, gallery), ids)
    approximate = ApproximateGallery(exact)
    assert approximate.approximate.index_factory == "Flat"
    queries = [random_image(7), gallery[3]]
    for mode in ("composed", "image", "text", "image_text_fusion"):
        for exclude in (None, ["g3", "g3"]):
            a, b = (
                rank_gallery(tiny_model, tiny_processor, index, queries, ["make it red"] * 2, mode, 10, exclude)
                for index in (exact, approximate)
            )
            assert a.ids == b.ids, (mode, exclude)
            torch.testing.assert_close(a.scores, b.scores)
            assert exclude is None or all("g3" not in row for row in b.ids)


def test_large_galleries_go_through_faiss(app_files):
    args = dict(model=str(app_files["model"]), index=str(app_files["index"]), images=str(app_files["images"]))
    assert "exact search" in load_engine(AppArguments(**args)).summary()
    engine = load_engine(AppArguments(**args, approximate_above=10))  # 16 images > 10
    assert isinstance(engine.models[0].index, ApproximateGallery)
    assert "faiss candidates + exact re-rank" in engine.summary()
    assert len(engine.search(random_image(3), QUERY_TEXT, "composed", 7)[0].ids) == 7


# ----------------------------------------------------------------------------------------------------------------------
# The quickstart default
# ----------------------------------------------------------------------------------------------------------------------
def test_without_a_quickstart_run_the_message_gives_the_command(tmp_path, monkeypatch):
    with pytest.raises(NoQuickstartError) as caught:
        load_engine(AppArguments(quickstart_dir=str(tmp_path / "qs")))
    assert f"{tmp_path / 'qs'} does not exist" in str(caught.value)
    assert f"`mra-cir quickstart --fast --output_dir {tmp_path / 'qs'}`" in str(caught.value)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart_output" / "mra_model").mkdir(parents=True)  # an interrupted run
    with pytest.raises(NoQuickstartError) as caught:
        load_engine(AppArguments())
    assert "quickstart_output/mra_model holds no trained model" in str(caught.value)
    assert "`mra-cir quickstart --fast`," in str(caught.value)


def _fake_quickstart(root, app_files):
    """A quickstart folder of tiny models and a 16-image benchmark in CIRCO's layout."""
    shutil.copytree(app_files["model"], root / "mra_model")
    shutil.copytree(app_files["other"], root / "stage1_model")
    bench = root / "benchmarks" / "single_edit"
    (bench / "unlabeled2017").mkdir(parents=True)
    (bench / "annotations").mkdir()
    names = [f"{i:012d}.png" for i in range(16)]
    for i, name in enumerate(names):
        random_image(400 + i, size=32).save(bench / "unlabeled2017" / name)
    (bench / "image_info_unlabeled2017.json").write_text(
        json.dumps({"images": [{"id": i, "file_name": n} for i, n in enumerate(names)]})
    )
    queries = [{"id": 0, "reference_img_id": 5, "relative_caption": "make it red", "target_img_id": 6}]
    (bench / "annotations" / "val.json").write_text(json.dumps(queries))
    return bench


def test_the_quickstart_run_is_served_with_its_stage1_model_and_examples(app_files, tmp_path, monkeypatch):
    bench = _fake_quickstart(tmp_path, app_files)
    assert benchmark_examples(bench) == [("000000000005.png", "make it red")]
    engine = load_engine(AppArguments(quickstart_dir=str(tmp_path)))
    assert [m.name for m in engine.models] == ["MRA-trained", "stand-in (before MRA)"]
    assert engine.examples == [("000000000005.png", "make it red")]
    assert len(engine.models[0].index) == 16 and (tmp_path / "gallery_index" / STAMP_FILE).is_file()
    assert (tmp_path / "gallery_index_stage1" / STAMP_FILE).is_file()
    results = engine.search(engine.reference_from_gallery("000000000005.png"), "make it red", "composed", 4)
    assert [len(r.ids) for r in results] == [4, 4]
    # the cached indexes are reused while the models and images are unchanged ...
    import mra_cir.app.gallery as gallery_module

    def no_build(*args, **kwargs):
        raise AssertionError("rebuilt an index whose stamp matches")

    monkeypatch.setattr(gallery_module, "build_index", no_build)
    load_engine(AppArguments(quickstart_dir=str(tmp_path), compare_model="none"))
    # ... and rebuilt when the model changes (a new quickstart run)
    monkeypatch.undo()
    shutil.rmtree(tmp_path / "mra_model")
    shutil.copytree(app_files["other"], tmp_path / "mra_model")
    before = (tmp_path / "gallery_index" / STAMP_FILE).read_text()
    load_engine(AppArguments(quickstart_dir=str(tmp_path), compare_model="none"))
    assert (tmp_path / "gallery_index" / STAMP_FILE).read_text() != before


def test_gallery_images_stay_inside_their_folder(app_files):
    gallery = GalleryImages.from_folder(app_files["images"])
    assert len(gallery) == 16 and "sub/nested.png" in gallery.ids
    with pytest.raises(KeyError, match="outside"):
        gallery.original("../model/config.json")
    tile = gallery.display("../model/config.json")  # a placeholder, not the file
    assert tile.size == (160, 160)
    assert gallery.display("img_00.png").size == (180, 180)  # 36 px enlarged 5x, without smoothing
