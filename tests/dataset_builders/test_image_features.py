"""Image feature extraction: batching, duplicates, corrupt images, resumable shards after a crash, datasets input."""

from __future__ import annotations

import shutil

import pytest
import torch
from conftest import random_image

from mra_cir.retrieval.image_features import extract_image_features, load_image_features


class _Wrapped:
    """Delegates to the tiny model, counting `get_image_features` calls and optionally crashing after some."""

    def __init__(self, model, crash_after: int | None = None):
        self.model, self.crash_after, self.calls, self.images = model, crash_after, 0, 0

    def parameters(self):
        return self.model.parameters()

    def get_image_features(self, pixel_values):
        if self.crash_after is not None and self.calls >= self.crash_after:
            raise RuntimeError("simulated crash (power cut)")
        self.calls += 1
        self.images += pixel_values.shape[0]
        return self.model.get_image_features(pixel_values=pixel_values)


@pytest.fixture
def messy_folder(image_folder):
    """12 images + a corrupt PNG + a byte-identical copy of img_003 in a sub-folder."""
    (image_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    (image_folder / "sub").mkdir()
    shutil.copy(image_folder / "img_003.png", image_folder / "sub" / "copy_of_3.png")
    return image_folder


def test_folder_duplicates_and_corrupt(tiny_model, tiny_processor, messy_folder):
    out = extract_image_features(tiny_model, tiny_processor, messy_folder, batch_size=5, show_progress=False)
    expected_ids = [f"img_{i:03d}.png" for i in range(12)]
    assert out.ids == expected_ids
    q, d = tiny_model.config.num_query_tokens, tiny_model.config.image_text_hidden_size
    assert out.features.shape == (12, q, d)
    assert [s[0] for s in out.skipped] == ["broken.png"] and "undecodable" in out.skipped[0][1]
    assert out.duplicates == {"sub/copy_of_3.png": "img_003.png"}
    # the features are the model's own for these images
    pixels = tiny_processor(images=[random_image(i) for i in (0, 7)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        direct = tiny_model.get_image_features(pixel_values=pixels)
    torch.testing.assert_close(out.features[[0, 7]], direct, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.features.norm(dim=-1), torch.ones(12, q), atol=1e-5, rtol=0)


def test_resume_after_crash(tiny_model, tiny_processor, messy_folder, tmp_path):
    out_dir = tmp_path / "features"
    crashing = _Wrapped(tiny_model, crash_after=5)  # shard_size 4, batch 2: shards 0 and 1 done, crash in shard 2
    with pytest.raises(RuntimeError, match="simulated crash"):
        extract_image_features(
            crashing, tiny_processor, messy_folder, out_dir, batch_size=2, shard_size=4, show_progress=False
        )
    finished = sorted(p.name for p in out_dir.glob("features-*.safetensors"))
    assert finished == ["features-00000-of-00004.safetensors", "features-00001-of-00004.safetensors"]
    assert not list(out_dir.glob("*.tmp"))
    with pytest.raises(ValueError, match="not finished"):
        load_image_features(out_dir)

    resumed = _Wrapped(tiny_model)
    result = extract_image_features(
        resumed, tiny_processor, messy_folder, out_dir, batch_size=2, shard_size=4, show_progress=False
    )
    # 13 unique files in sorted order (broken.png first): shards 0-1 (broken + img_000..img_006) were finished, only
    # shards 2-3 (img_007..img_011) are embedded again
    assert resumed.images == 5
    fresh = extract_image_features(tiny_model, tiny_processor, messy_folder, batch_size=3, show_progress=False)
    assert result.ids == fresh.ids and result.duplicates == fresh.duplicates
    assert result.skipped == fresh.skipped
    torch.testing.assert_close(result.features, fresh.features, atol=1e-5, rtol=1e-4)

    again = _Wrapped(tiny_model)
    reloaded = extract_image_features(
        again, tiny_processor, messy_folder, out_dir, batch_size=2, shard_size=4, show_progress=False
    )
    assert again.calls == 0 and torch.equal(reloaded.features, result.features)
    assert torch.equal(load_image_features(out_dir).features, result.features)


def test_other_inputs_refused_in_same_dir(tiny_model, tiny_processor, image_folder, tmp_path):
    out_dir = tmp_path / "f"
    paths = sorted(image_folder.glob("*.png"))
    extract_image_features(tiny_model, tiny_processor, paths[:4], out_dir, show_progress=False)
    with pytest.raises(ValueError, match="other inputs"):
        extract_image_features(tiny_model, tiny_processor, paths[:5], out_dir, show_progress=False)
    out = extract_image_features(tiny_model, tiny_processor, paths[:5], out_dir, show_progress=False, overwrite=True)
    assert out.ids == [str(p) for p in paths[:5]]


def test_dataset_input_with_corrupt_row(tiny_model, tiny_processor, image_folder):
    import datasets

    paths = sorted(str(p) for p in image_folder.glob("*.png"))[:5]
    ds = datasets.Dataset.from_dict({"image": paths, "id": [f"row{i}" for i in range(5)]})
    ds = ds.cast_column("image", datasets.Image())
    broken = datasets.Dataset.from_dict({"image": [{"bytes": b"garbage", "path": None}], "id": ["bad"]})
    ds = datasets.concatenate_datasets([ds, broken.cast(ds.features)])
    out = extract_image_features(tiny_model, tiny_processor, ds, batch_size=4, show_progress=False)
    assert out.ids == [f"row{i}" for i in range(5)]
    assert [s[0] for s in out.skipped] == ["bad"]
    with pytest.raises(ValueError, match="'image' column"):
        extract_image_features(tiny_model, tiny_processor, ds.rename_column("image", "img"), show_progress=False)
    with pytest.raises(ValueError, match="ids"):
        extract_image_features(tiny_model, tiny_processor, paths, ids=["a"], show_progress=False)


def test_reuse_shards_embeds_only_changed_shards_and_broken_links_are_skipped(
    tiny_model, tiny_processor, image_folder, tmp_path
):
    from mra_cir.retrieval.content_hashes import ContentHashes

    (image_folder / "zz_gone.png").symlink_to(tmp_path / "deleted.png")
    out_dir, memo = tmp_path / "f", ContentHashes(tmp_path / "memo.sqlite")
    kwargs = dict(batch_size=2, shard_size=4, show_progress=False, reuse_shards=True, content_hashes=memo)
    first = extract_image_features(tiny_model, tiny_processor, image_folder, out_dir, **kwargs)
    assert first.skipped == [("zz_gone.png", first.skipped[0][1])] and "broken symbolic link" in first.skipped[0][1]
    random_image(100).save(image_folder / "img_005.png")  # shard 1 of 3 changes
    counting = _Wrapped(tiny_model)
    second = extract_image_features(counting, tiny_processor, image_folder, out_dir, **kwargs)
    assert counting.images == 4  # one shard of 4 images, not 12
    fresh = extract_image_features(tiny_model, tiny_processor, image_folder, batch_size=3, show_progress=False)
    assert second.ids == fresh.ids and second.skipped == fresh.skipped
    torch.testing.assert_close(second.features, fresh.features, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(second.features[5], first.features[5])
    with pytest.raises(ValueError, match="reuse_shards=True"):  # without it, other inputs are still refused
        random_image(101).save(image_folder / "img_000.png")
        extract_image_features(
            tiny_model, tiny_processor, image_folder, out_dir, batch_size=2, shard_size=4, show_progress=False
        )


def test_truncated_zero_byte_and_non_image_files_are_skipped_with_reasons(tiny_model, tiny_processor, image_folder):
    data = (image_folder / "img_000.png").read_bytes()
    (image_folder / "truncated.png").write_bytes(data[: len(data) // 2])
    (image_folder / "empty.png").write_bytes(b"")
    (image_folder / "notes.jpg").write_text("not an image at all")
    out = extract_image_features(tiny_model, tiny_processor, image_folder, batch_size=4, show_progress=False)
    skipped = dict(out.skipped)
    assert sorted(skipped) == ["empty.png", "notes.jpg", "truncated.png"] and len(out.ids) == 12
    assert all(reason.startswith("undecodable: ") for reason in skipped.values())
    assert "truncated" in skipped["truncated.png"].lower() or "broken" in skipped["truncated.png"].lower()
