"""MraCirCollator, the duplicate-free batch sampler and the ViT-output cache."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from mra_cir.tiny import TOY_WORDS, random_triplet_dataset
from mra_cir.trainers.collator import MraCirCollator
from mra_cir.trainers.sampler import NoDuplicateTargetSampler, no_duplicate_order
from mra_cir.trainers.vit_cache import VitOutputCache


@pytest.fixture(scope="module")
def processor():
    from mra_cir.tiny import offline_processor

    return offline_processor(32, [" ".join(TOY_WORDS)])


@pytest.fixture(scope="module")
def dataset():
    return random_triplet_dataset(12, num_images=10, image_size=40, seed=0)


def test_collator_matches_processor(processor, dataset, tiny_model):
    rows = [dataset[i] for i in range(4)]
    batch = MraCirCollator(processor)(rows)
    expected = processor(
        images=[r["reference_image"] for r in rows],
        text=[r["modification_text"] for r in rows],
        target_images=[r["target_image"] for r in rows],
    )
    assert set(batch) == {"reference_pixel_values", "input_ids", "attention_mask", "target_pixel_values"}
    for key in batch:
        torch.testing.assert_close(batch[key], expected[key])
    assert batch["reference_pixel_values"].shape == (4, 3, 32, 32)  # 40 px images resized to the model's 32
    out = tiny_model(**batch)
    assert out.loss.ndim == 0 and out.logits_per_query.shape == (4, 4)


def test_collator_errors_name_the_field(processor, dataset):
    row = dict(dataset[0])
    del row["modification_text"]
    with pytest.raises(ValueError, match="modification_text"):
        MraCirCollator(processor)([row])
    row = dict(dataset[0], modification_text="  ")
    with pytest.raises(ValueError, match="row 0 .*modification_text"):
        MraCirCollator(processor)([row])


def test_no_duplicate_order_groups_are_distinct():
    # 40 rows over 12 targets (popular targets repeat up to 8 times), groups of 4
    targets = [f"t{i % 12 if i % 3 else 0}" for i in range(40)]
    order, duplicates = no_duplicate_order(targets, group_size=4, seed=0)
    assert sorted(order) == list(range(40))  # a permutation: nothing dropped or repeated
    groups = [order[i : i + 4] for i in range(0, 40, 4)]
    bad = sum(len(g) - len({targets[i] for i in g}) for g in groups)
    assert bad == duplicates
    # "t0" occurs 14 times in 10 groups: at least 4 unavoidable repeats, and the greedy order places no more
    assert duplicates == Counter(targets)["t0"] - len(groups)
    # a plain random order of the same data has repeats in its groups (what the sampler prevents)
    plain = torch.randperm(40, generator=torch.Generator().manual_seed(0)).tolist()
    plain_bad = sum(4 - len({targets[i] for i in plain[j : j + 4]}) for j in range(0, 40, 4))
    assert plain_bad > duplicates


def test_reference_grouping_keeps_a_references_triplets_in_one_batch():
    # 30 references with 3 distinct targets each (target ids unique): groups of 6 hold two whole references each
    references = [f"r{i // 3}" for i in range(90)]
    targets = [f"t{i}" for i in range(90)]
    order, duplicates = no_duplicate_order(targets, group_size=6, seed=1, reference_ids=references)
    assert sorted(order) == list(range(90)) and duplicates == 0
    batches = [order[i : i + 6] for i in range(0, 90, 6)]
    assert all(len({references[i] for i in batch}) == 2 for batch in batches)
    plain, _ = no_duplicate_order(targets, group_size=6, seed=1)
    assert sum(len({references[i] for i in plain[j : j + 6]}) for j in range(0, 90, 6)) > 2 * len(batches)
    # a repeated target still never shares a batch: the greedy fill defers it
    repeated = [f"t{i % 45}" for i in range(90)]
    order, duplicates = no_duplicate_order(repeated, group_size=6, seed=1, reference_ids=references)
    assert duplicates == 0 and all(len({repeated[i] for i in order[j : j + 6]}) == 6 for j in range(0, 90, 6))
    sampler = NoDuplicateTargetSampler(targets, per_device_batch_size=6, seed=1, reference_ids=references)
    assert list(sampler) == no_duplicate_order(targets, 6, 1, references)[0]


def test_sampler_is_deterministic_per_epoch_and_ddp_sized():
    targets = [f"t{i % 7}" for i in range(28)]
    a = NoDuplicateTargetSampler(targets, per_device_batch_size=2, world_size=2, seed=5)
    b = NoDuplicateTargetSampler(targets, per_device_batch_size=2, world_size=2, seed=5)
    assert list(a) == list(b)  # every rank builds the same order
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == list(range(28))
    assert a.group_size == 4 and len(a) == 28
    order = list(a)
    for j in range(0, 28, 4):  # each global batch (both ranks) is duplicate-free
        assert len({targets[i] for i in order[j : j + 4]}) == 4
    assert a.duplicates == 0


def test_vit_cache_feeds_the_same_loss(processor, dataset, tiny_model, tmp_path):
    cache = VitOutputCache().fill(tiny_model, processor, dataset, batch_size=4, show_progress=False)
    ids = set(dataset["reference_id"]) | set(dataset["target_id"])
    assert len(cache) == len(ids)
    rows = [dataset[i] for i in range(5)]
    plain = MraCirCollator(processor)(rows)
    cached = MraCirCollator(processor, vit_cache=cache)(rows)
    assert "reference_vision_embeds" in cached and "reference_pixel_values" not in cached
    assert "target_vision_embeds" in cached and "target_pixel_values" not in cached
    with torch.no_grad():
        torch.testing.assert_close(tiny_model(**cached).loss, tiny_model(**plain).loss)
    # persistence, and refusal of a cache made with other vision weights
    cache.save(tmp_path / "cache")
    loaded = VitOutputCache.load(tmp_path / "cache", model=tiny_model)
    torch.testing.assert_close(loaded.get([rows[0]["target_id"]]), cache.get([rows[0]["target_id"]]))
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import tiny_config

    torch.manual_seed(1)
    other = MraCirModel(tiny_config())
    with pytest.raises(ValueError, match="other vision weights"):
        VitOutputCache.load(tmp_path / "cache", model=other)
    with pytest.raises(KeyError, match="nope"):
        cache.get(["nope"])
