"""Balanced sampling by transformation type: quotas are met, shortfalls are shared out, target mixes from a file."""

from __future__ import annotations

import json
from collections import Counter

import datasets
import pytest

from mra_cir.dataset_builders.mra_triplets.transformation_types import primary_type
from mra_cir.dataset_builders.mra_triplets.type_balance import (
    balance_indices,
    balance_triplets,
    quotas_for,
    read_target_mix,
)

#: an unbalanced pool of texts: 70 colour, 15 added, 10 size, 5 removed, 4 "no change"
TEXTS = (
    [f"make the dog {c}" for c in ["red", "blue", "green", "white", "black", "pink", "brown"] * 10]
    + ["add a hat"] * 15
    + ["make it bigger"] * 10
    + ["remove the cat"] * 5
    + ["no change"] * 4
)


def test_uniform_quotas_are_met():
    keep, record = balance_indices(TEXTS, size=20, seed=0)
    kept = Counter(primary_type(TEXTS[i]) for i in keep)
    assert len(keep) == 20 and len(set(keep)) == 20
    assert dict(kept) == {"color": 5, "added": 5, "size": 5, "removed": 5}  # every named type, equal shares
    assert record["kept"] == dict(kept) and record["quotas"] == dict(kept)
    assert record["candidates"] == {"color": 70, "added": 15, "removed": 5, "size": 10, "other": 4}
    assert record["short"] == [] and record["target"] == "uniform"


def test_short_type_gives_what_it_has_and_the_rest_is_shared():
    keep, record = balance_indices(TEXTS, size=40, seed=0)
    kept = Counter(primary_type(TEXTS[i]) for i in keep)
    assert len(keep) == 40
    assert kept["removed"] == 5  # all it has (a quarter would be 10)
    assert kept["size"] == 10  # exactly its share
    assert kept["color"] + kept["added"] == 25 and abs(kept["color"] - kept["added"]) <= 1  # the rest, shared
    assert record["short"] == ["removed"]
    assert "other" not in kept  # "no change" is not a kind to balance toward


def test_target_mix_from_file(tmp_path):
    path = tmp_path / "mix.json"
    path.write_text(json.dumps({"color": 2, "added": 1, "other": 1}))
    assert read_target_mix(str(path)) == {"color": 0.5, "added": 0.25, "other": 0.25}
    keep, record = balance_indices(TEXTS, size=16, target=read_target_mix(str(path)), seed=1)
    assert Counter(primary_type(TEXTS[i]) for i in keep) == {"color": 8, "added": 4, "other": 4}
    assert record["target"] == {"color": 0.5, "added": 0.25, "other": 0.25}


def test_draws_are_seeded():
    assert balance_indices(TEXTS, 12, seed=3)[0] == balance_indices(TEXTS, 12, seed=3)[0]
    assert balance_indices(TEXTS, 12, seed=3)[0] != balance_indices(TEXTS, 12, seed=4)[0]


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "expected an object"),
        ('{"colour": 1}', "unknown type"),
        ('{"color": -1}', ">= 0"),
        ("{", "not JSON"),
    ],
)
def test_bad_target_files(tmp_path, content, message):
    path = tmp_path / "mix.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message):
        read_target_mix(str(path))
    with pytest.raises(ValueError, match="neither 'uniform' nor an existing JSON file"):
        read_target_mix(str(tmp_path / "missing.json"))


def test_quotas_never_exceed_candidates():
    quotas = quotas_for(100, {"color": 50, "added": 3, "size": 7}, None)
    assert quotas == {"color": 50, "added": 3, "size": 7}  # fewer candidates than asked: all of them
    assert sum(quotas_for(9, {"color": 50, "added": 3, "size": 7}, None).values()) == 9


def test_balance_triplets_on_a_dataset():
    dataset = datasets.Dataset.from_dict({"modification_text": TEXTS, "rank": list(range(len(TEXTS)))})
    balanced, record = balance_triplets(dataset, 8, "uniform", seed=0)
    assert len(balanced) == 8 and record["kept"] == {"color": 2, "added": 2, "size": 2, "removed": 2}
    with pytest.raises(ValueError, match="modification_text"):
        balance_triplets(dataset.remove_columns("modification_text"), 8)
