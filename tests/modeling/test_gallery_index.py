"""GalleryIndex: search against brute force, exclusion, save/load; `mra-cir search` end to end on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from reference_similarity import brute_force_token_similarity

from mra_cir.retrieval.gallery_index import GalleryIndex


def _gallery(m=30, q=4, d=16, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(m, q, d, generator=gen), dim=-1), [f"img{i:02d}.jpg" for i in range(m)]


def test_search_matches_brute_force_and_excludes():
    feats, ids = _gallery()
    index = GalleryIndex(feats, ids)
    queries = F.normalize(torch.randn(5, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    scores, found = index.search(queries, k=6)
    full = brute_force_token_similarity(queries, feats)
    ref = full.sort(dim=1, descending=True, stable=True)
    assert found == [[ids[j] for j in row] for row in ref.indices[:, :6].tolist()]
    torch.testing.assert_close(scores, ref.values[:, :6], atol=1e-5, rtol=0)

    exclude = [found[0][0], None, found[2][3], "not-in-gallery", ids[-1]]
    ex_scores, ex_found = index.search(queries, k=6, exclude=exclude)
    assert ex_scores.shape == (5, 6)
    for row, (e, res) in enumerate(zip(exclude, ex_found)):
        expected = [ids[j] for j in ref.indices[row].tolist() if ids[j] != e][:6]
        assert res == expected, row
    # k larger than the gallery is capped (one less when a row excludes an id)
    assert index.search(queries[:1], k=100)[0].shape == (1, 30)
    assert len(index.search(queries[:1], k=100, exclude=[ids[0]])[1][0]) == 29


def test_save_load_roundtrip(tmp_path):
    feats, ids = _gallery()
    index = GalleryIndex(feats.bfloat16(), ids, reduce="mean_max", model_path="some/model")
    index.save(tmp_path / "gi")
    loaded = GalleryIndex.load(tmp_path / "gi")
    assert len(loaded) == 30 and loaded.ids == ids and loaded.reduce == "mean_max"
    assert loaded.model_path == "some/model" and loaded.features.dtype == torch.bfloat16
    assert torch.equal(loaded.features, index.features)
    q = feats[:3]
    a, b = index.search(q, 5), loaded.search(q, 5)
    assert torch.equal(a[0], b[0]) and a[1] == b[1]
    assert json.loads((tmp_path / "gi" / "gallery_index.json").read_text())["num_images"] == 30


def test_errors(tmp_path):
    feats, ids = _gallery(m=3)
    with pytest.raises(ValueError, match="unique"):
        GalleryIndex(feats, ["a", "b", "a"])
    with pytest.raises(ValueError, match="3 feature rows but 2 ids"):
        GalleryIndex(feats, ["a", "b"])
    with pytest.raises(FileNotFoundError, match="features.safetensors"):
        GalleryIndex.load(tmp_path)
    with pytest.raises(ValueError, match="one entry per query"):
        GalleryIndex(feats, ids).search(feats[:2, 0], 1, exclude=[None])


def test_search_command_end_to_end(tiny_model, tiny_processor, image_folder, tmp_path, capsys):
    from mra_cir.commands.search import main

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    tiny_processor.save_pretrained(model_dir)
    index_dir = tmp_path / "index"
    args = [
        "--index",
        str(index_dir),
        "--model",
        str(model_dir),
        "--image",
        str(image_folder / "img_004.png"),
        "--text",
        "make it red",
        "--k",
        "3",
    ]
    assert main(args + ["--images", str(image_folder)]) == 0
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert len(first["results"]) == 3 and all(r["id"].endswith(".png") for r in first["results"])
    loaded = GalleryIndex.load(index_dir)
    assert len(loaded) == 12 and loaded.model_path == str(model_dir.resolve())
    # second call: the index is reused and the model path comes from it
    args_no_model = [a for a in args if a not in ("--model", str(model_dir))]
    assert main(args_no_model + ["--exclude_reference"]) == 0
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert "img_004.png" not in [r["id"] for r in second["results"]]
    scores = [r["score"] for r in second["results"]]
    assert scores == sorted(scores, reverse=True)
    assert main(["--index", str(tmp_path / "none"), "--image", "x.png", "--text", "t"]) == 2
