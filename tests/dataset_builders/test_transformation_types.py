"""The lexical transformation-type tagger: its accuracy on the world's held-out phrasings and on real val texts
labelled by a person, its naming rules, and the helpers that count types."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from mra_cir.dataset_builders.mra_triplets.transformation_types import (
    TYPES,
    micro_f1,
    primary_type,
    tag_types,
    type_mix,
)
from mra_cir.dataset_builders.synthetic_world.true_types import edit_types, held_out_texts, pair_types

LABELLED = Path(__file__).parents[1] / "fixtures" / "transformation_types" / "labelled.jsonl"


def _labelled() -> list[dict]:
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_world_held_out_phrasings_accuracy():
    data = held_out_texts(seed=5, count=400)
    scores = micro_f1([tag_types(text) for text, _ in data], [types for _, types in data])
    assert scores["exact_match"] >= 0.9
    assert {t for _, types in data for t in types} >= {"color", "shape", "size", "added", "removed", "position"}


def test_labelled_real_texts_fixture():
    rows = _labelled()
    assert len(rows) >= 150
    counts = Counter((row["split"], row["benchmark"]) for row in rows)
    for benchmark in ("cirr", "fashioniq", "circo"):
        assert counts[("test", benchmark)] >= 50 and counts[("dev", benchmark)] >= 20
    for row in rows:
        assert row["types"] and set(row["types"]) <= set(TYPES), row
        assert len(set(row["types"])) == len(row["types"]), row
    assert len({(row["file"], row["record"]) for row in rows}) == len(rows)  # no text labelled twice


def test_labelled_texts_are_the_benchmarks_own(benchmarks_dir):
    """Every labelled text is the text of its record in the official file (FashionIQ: the evaluators' join)."""
    from mra_cir.evaluation.fashioniq import join_fashioniq_captions

    cache: dict[str, list] = {}
    for row in _labelled():
        records = cache.setdefault(row["file"], json.loads((benchmarks_dir / row["file"]).read_text()))
        record = records[row["record"]]
        text = {
            "cirr": lambda r: r["caption"],
            "circo": lambda r: r["relative_caption"],
            "fashioniq": lambda r: join_fashioniq_captions(r["captions"]),
        }[row["benchmark"]](record)
        assert text == row["text"], row


def test_labelled_real_texts_micro_f1():
    test = [row for row in _labelled() if row["split"] == "test"]
    scores = micro_f1([tag_types(row["text"]) for row in test], [row["types"] for row in test])
    assert scores["micro_f1"] >= 0.75, scores


@pytest.mark.parametrize(
    "text, expected",
    [
        ("the red circle becomes large", ["size"]),  # "the red circle" names the object
        ("the red circle is blue now and the background becomes black", ["color", "background"]),
        ("a small green cross appears on the left", ["added"]),  # its colour and size describe it
        ("the circle and the square swap sides", ["position"]),
        ("replace the yellow cross with a white circle", ["shape"]),
        ("change the object on the left to a triangle", ["shape"]),  # named by its place, not moved
        ("has the same color and is seen from a farther distance", ["position"]),  # "same color": no change
        ("Is darker and has a floral print", ["color", "material"]),
        ("shows no phone", ["removed"]),
        ("Two pandas have become one.", ["count"]),
        ("is shot in greyscale", ["style"]),
        ("hello", ["other"]),
    ],
)
def test_tagger_examples(text, expected):
    assert tag_types(text) == expected


def test_types_in_order_of_appearance_and_primary():
    assert tag_types("the background is white and the dog is bigger") == ["background", "size"]
    assert primary_type("the dog is bigger and the background is white") == "size"


def test_type_mix_counts_primary_and_any():
    mix = type_mix(["make it red and bigger", "add a dog", "bigger", ""])
    assert mix["texts"] == 4
    assert mix["primary"] == {"color": 1, "added": 1, "size": 1, "other": 1}
    assert mix["any"]["size"] == 2


def test_micro_f1_arithmetic():
    scores = micro_f1([["color", "size"], ["added"]], [["color"], ["removed"]])
    assert scores["micro_precision"] == pytest.approx(1 / 3)
    assert scores["micro_recall"] == pytest.approx(1 / 2)
    assert scores["exact_match"] == 0.0
    assert scores["errors"]["size"] == {"false_positive": 1, "false_negative": 0}
    with pytest.raises(ValueError, match="2 predictions but 1 gold"):
        micro_f1([[], []], [[]])


def test_world_true_types():
    assert edit_types('[{"kind": "color"}, {"kind": "add"}, {"kind": "color"}]') == ["color", "added"]
    reference = {
        "background": "gray",
        "objects": [{"shape": "circle", "color": "red", "size": "small", "position": "left"}],
    }
    replaced = {
        "background": "black",
        "objects": [{"shape": "square", "color": "blue", "size": "small", "position": "left"}],
    }
    assert pair_types(reference, replaced) == ["shape", "background"]
    recoloured = {**reference, "objects": [{**reference["objects"][0], "color": "blue", "size": "large"}]}
    assert pair_types(reference, recoloured) == ["color", "size"]
    assert pair_types(reference, reference) == []


def test_agent_tagger_is_cached_and_falls_back(tmp_path):
    from mra_cir.dataset_builders.agents.base import AgentBackend
    from mra_cir.dataset_builders.mra_triplets.transformation_types_agent import AgentTypeTagger, parse_types

    class Scripted(AgentBackend):
        backend_name, model_name = "scripted", "scripted-v1"

        def __init__(self):
            super().__init__()
            self.asked = []

        def complete(self, requests):
            self.asked += [r.prompt for r in requests]
            return ["Colour, added." if "red" in r.prompt else "I cannot tell" for r in requests]

    backend = Scripted()
    tagger = AgentTypeTagger(backend, cache=tmp_path / "cache.sqlite")
    assert tagger.tag_many(["make it red", "make it bigger", "make it red"]) == [
        ["color", "added"],
        ["size"],
        ["color", "added"],
    ]
    assert len(backend.asked) == 2 and tagger.fallbacks == 1  # one call per distinct text; "bigger": lexical
    again = AgentTypeTagger(backend, cache=tmp_path / "cache.sqlite")
    assert again("make it red") == ["color", "added"] and len(backend.asked) == 2  # from the cache
    assert parse_types("pose; Scene, colour, nonsense, colour") == ["position", "background", "color"]
