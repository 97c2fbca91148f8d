"""Benchmark loaders on the real annotation files, with placeholder images made per file name."""

from __future__ import annotations

import json

import pytest
from cir_placeholders import circo_images, cirr_images, fashioniq_images
from PIL import Image

from mra_cir.evaluation import (
    CircoLoader,
    CirrLoader,
    FashionIQLoader,
    MissingImagesError,
    get_loader,
    load_cir_benchmark,
)
from mra_cir.evaluation.fashioniq import join_fashioniq_captions


def test_join_captions_as_the_peers_do():
    assert join_fashioniq_captions(["is shiny and silver.", " fit and flare? "]) == (
        "Is shiny and silver and fit and flare"
    )
    assert join_fashioniq_captions(["a", "b"], reverse=True) == "B and a"
    with pytest.raises(ValueError, match="two captions"):
        join_fashioniq_captions(["only one"])


@pytest.mark.parametrize(
    "benchmark,split,subset,n_queries,n_gallery",
    [
        ("fashioniq", "val", "dress", 2017, 3817),
        ("fashioniq", "val", "shirt", 2038, 6346),
        ("fashioniq", "val", "toptee", 1961, 5373),
        ("cirr", "val", None, 4181, 2297),
        ("cirr", "test", None, 4148, 2315),
    ],
)
def test_annotation_counts(benchmarks_dir, benchmark, split, subset, n_queries, n_gallery):
    loader = get_loader(benchmark, data_root=benchmarks_dir)  # finds <dir>/fashioniq, <dir>/cirr
    split = loader.normalize_split(split)
    records, rows = loader.read_queries(split, subset)
    assert len(records) == len(rows) == n_queries
    assert len(loader.read_gallery_ids(split, subset)) == n_gallery
    if split == "val":
        assert all(len(r["target_ids"]) == 1 for r in rows)
    else:
        assert all(r["target_ids"] == [] for r in rows)


def test_circo_rows(benchmarks_dir):
    loader = CircoLoader(annotations_dir=benchmarks_dir / "circo")
    _, val = loader.read_queries("val")
    _, test = loader.read_queries("test")
    assert len(val) == 220 and len(test) == 800
    assert [r["query_id"] for r in val] == [str(i) for i in range(220)]
    assert all(1 <= len(r["target_ids"]) <= 14 for r in val)
    assert val[0]["target_ids"][0] == "355099" and val[0]["reference_id"] == "271520"


def test_missing_images_one_clear_error(benchmarks_dir, tmp_path):
    with pytest.raises(MissingImagesError, match=r"fashioniq: 3817 image\(s\).*missing.*first: B009PMCJLW") as err:
        load_cir_benchmark("fashioniq", tmp_path, subset="dress", annotations_dir=benchmarks_dir / "fashioniq")
    assert len(err.value.missing) == 3817 and "allow_missing" in str(err.value)


def test_fashioniq_allow_missing_uses_present_images(benchmarks_dir, tmp_path):
    fashioniq_images(benchmarks_dir, tmp_path, n_queries=5, n_extra=7)
    loader = FashionIQLoader(tmp_path, annotations_dir=benchmarks_dir / "fashioniq")
    split = loader.load("val", subset="dress", allow_missing=True, max_queries=5)
    assert len(split.queries) == 5 and not split.dropped_queries and not split.complete
    caps = json.loads((benchmarks_dir / "fashioniq/captions/cap.dress.val.json").read_text())
    row = split.queries[0]
    assert row["reference_id"] == caps[0]["candidate"] and row["target_ids"] == [caps[0]["target"]]
    assert row["text"] == join_fashioniq_captions(caps[0]["captions"])
    assert isinstance(row["reference_image"], Image.Image) and row["reference_image"].size == (16, 16)
    present = {p.stem for p in (tmp_path / "images").iterdir()}
    assert set(split.gallery["image_id"]) == present & set(loader.read_gallery_ids("val", "dress"))
    assert len(split.missing_images) == 3817 - len(split.gallery)
    assert split.report()["complete"] is False
    # .jpg works too; .png wins when both exist
    name = split.gallery["image_id"][0]
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / f"{name}.jpg")
    again = loader.load("val", subset="dress", allow_missing=True, max_queries=5)
    assert again.gallery[0]["image"].size == (16, 16)


def test_cirr_relative_paths_and_dropped_queries(benchmarks_dir, tmp_path):
    cirr_images(benchmarks_dir, tmp_path, n_queries=6, n_extra=3)
    caps = json.loads((benchmarks_dir / "cirr/captions/cap.rc2.val.json").read_text())
    # remove one query's target: that query is dropped (its ground truth is absent), the others stay
    mapping = json.loads((benchmarks_dir / "cirr/image_splits/split.rc2.val.json").read_text())
    victim = next(c for c in caps[:6] if c["target_hard"] not in {x["reference"] for x in caps[:6]})
    (tmp_path / mapping[victim["target_hard"]]).unlink()
    split = CirrLoader(tmp_path, annotations_dir=benchmarks_dir / "cirr").load(
        "val", allow_missing=True, max_queries=6
    )
    assert str(victim["pairid"]) in split.dropped_queries
    kept = list(split.queries["query_id"])
    assert str(victim["pairid"]) not in kept and len(kept) + len(split.dropped_queries) == 6
    row = split.queries[0]
    assert row["members"] and set(row["members"]) <= set(split.gallery["image_id"])
    assert (tmp_path / "dev").is_dir() and all(i.startswith("dev-") for i in split.gallery["image_id"])
    with pytest.raises(MissingImagesError, match=r"cirr: \d+ image\(s\)"):
        CirrLoader(tmp_path, annotations_dir=benchmarks_dir / "cirr").load("val", max_queries=6)


def test_circo_coco_layout(benchmarks_dir, tmp_path):
    circo_images(benchmarks_dir, tmp_path, n_queries=3, n_extra=4)
    loader = CircoLoader(tmp_path, annotations_dir=benchmarks_dir / "circo")
    split = loader.load("val", max_queries=3)  # the info file lists only the images present: nothing missing
    assert split.complete and len(split.queries) == 3
    assert split.gallery[0]["image"].size == (16, 16)
    assert set(split.queries[0]["target_ids"]) <= set(split.gallery["image_id"])
    # without the info file, the gallery is the image folder
    (tmp_path / "COCO2017_unlabeled/annotations/image_info_unlabeled2017.json").unlink()
    again = loader.load("val", max_queries=3)
    assert sorted(again.gallery["image_id"]) == sorted(split.gallery["image_id"])


def test_bad_inputs_are_named(benchmarks_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="annotation files not found"):
        get_loader("cirr", data_root=tmp_path)
    with pytest.raises(ValueError, match="unknown split 'train'"):
        get_loader("cirr", data_root=benchmarks_dir).normalize_split("train")
    with pytest.raises(ValueError, match="subset must be one of"):
        FashionIQLoader(benchmarks_dir).load("val", subset="shoes")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations/val.json").write_text("[{]")
    with pytest.raises(ValueError, match=r"val.json is not valid JSON"):
        CircoLoader(tmp_path).read_queries("val")
