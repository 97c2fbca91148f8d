"""The scene agent's MLLM-like error model (rates, kinds, the truth it records), its fallible self-check, and the
cycle-consistency verifier, each on hand-built cases it must reject and keep."""

from __future__ import annotations

import json
import math
from collections import Counter

import pytest
import torch

from mra_cir.dataset_builders.agents import AgentImage, ModificationRequest
from mra_cir.dataset_builders.mra_triplets.verification import CycleCheck, verifier_scores
from mra_cir.dataset_builders.synthetic_world import generate_pool
from mra_cir.dataset_builders.synthetic_world.agent_errors import ERROR_KINDS, parse_error_kinds
from mra_cir.dataset_builders.synthetic_world.scene_agent import SceneGraphAgent

RED_CIRCLE = {"shape": "circle", "color": "red", "size": "large", "position": "left"}
BLUE_SQUARE = {"shape": "square", "color": "blue", "size": "small", "position": "right"}
DRAWS = 1000


def _graph(*objects, background="gray"):
    return {"background": background, "objects": [dict(o) for o in objects]}


def _image(id_):
    return AgentImage(id=id_, path="", sha256="")


@pytest.fixture(scope="module")
def pairs():
    """1,000 pairs of the world's pool with their (error-prone) step-1 captions, as the builder sends them."""
    rows = [row for _, row in generate_pool(3, DRAWS + 1)]
    return {r["id"]: r["scene_graph"] for r in rows}, [r["id"] for r in rows]


def _requests(agent, ids):
    captions = dict(zip(ids, agent.caption([_image(i) for i in ids])))
    return [ModificationRequest(_image(a), _image(b), captions[a], captions[b]) for a, b in zip(ids, ids[1:])]


@pytest.mark.parametrize("rate", [0.15, 0.3])
def test_error_rate_and_kinds_are_what_was_asked(pairs, rate):
    graphs, ids = pairs
    agent = SceneGraphAgent(graphs, error_rate=rate, seed=0, error_kinds="all")
    requests = _requests(agent, ids)
    drawn = [agent._answer(r)[1] for r in requests]
    share = sum(k is not None for k in drawn) / DRAWS
    assert abs(share - rate) <= 3 * math.sqrt(rate * (1 - rate) / DRAWS), share  # within sampling error
    recorded = Counter(agent.known_error(r, t) for r, t in zip(requests, agent.modify(requests)))
    assert set(recorded) == {"", *ERROR_KINDS}, recorded  # every kind occurs and is recorded
    # the record is the truth: a drawn error whose text happens to be right (a misreading that changes nothing
    # said) is recorded as "" (true); no true text is recorded as wrong, none as "unknown"
    assert sum(recorded.values()) - recorded[""] <= sum(k is not None for k in drawn)
    assert recorded[""] >= DRAWS - sum(k is not None for k in drawn)
    # a kind that always applies (refusal) gets about its uniform share of the errors
    refusals = sum(k == "refusal" for k in drawn) / max(1, sum(k is not None for k in drawn))
    assert 0.1 <= refusals <= 0.3, refusals


def test_one_kind_only_and_the_original_model(pairs):
    graphs, ids = pairs

    def recorded(agent):
        requests = _requests(agent, ids)
        return Counter(agent.known_error(r, t) for r, t in zip(requests, agent.modify(requests)))

    assert set(recorded(SceneGraphAgent(graphs, error_rate=0.3, seed=1, error_kinds="wrong_object"))) == {
        "",
        "wrong_object",
    }
    recorded = recorded(SceneGraphAgent(graphs, error_rate=0.3, seed=1))
    assert set(recorded) <= {"", "wrong_value", "missed_change"} and 0.22 <= 1 - recorded[""] / DRAWS <= 0.38
    with pytest.raises(ValueError, match="hallucination"):
        parse_error_kinds("hallucination")


def test_caption_repeat_repeats_the_captions_misreading():
    graphs = {f"r{i}": _graph(RED_CIRCLE, BLUE_SQUARE, background=("gray", "black")[i % 2]) for i in range(400)}
    graphs["t"] = _graph({**RED_CIRCLE, "color": "yellow"}, BLUE_SQUARE)
    agent = SceneGraphAgent(graphs, error_rate=1.0, seed=0, error_kinds="caption_repeat")
    seen = 0
    for i in range(400):
        (caption,) = agent.caption([_image(f"r{i}")])
        request = ModificationRequest(_image(f"r{i}"), _image("t"), caption, "")
        text = agent.modify([request])[0]
        if agent.known_error(request, text) == "caption_repeat":
            seen += 1  # the text is what an error-free agent says of the caption's (wrong) scene
            misread = agent._misread(f"r{i}", graphs[f"r{i}"])
            assert SceneGraphAgent.true_text(text, misread, graphs["t"])
    assert seen > 100
    # without captions (agent_mode="direct") the kind cannot apply: the answer stays right
    request = ModificationRequest(_image("r0"), _image("t"), "", "")
    assert agent.known_error(request, agent.modify([request])[0]) == ""


def test_self_check_rejects_a_wrong_text_and_keeps_a_right_one():
    graphs = {"ref": _graph(RED_CIRCLE, BLUE_SQUARE), "tgt": _graph({**RED_CIRCLE, "color": "yellow"}, BLUE_SQUARE)}
    request = ModificationRequest(_image("ref"), _image("tgt"), "", "")
    checker = SceneGraphAgent(graphs, error_rate=0.3, verify_error_rate=0.0)
    assert checker.verify([request] * 4, [
        "make the red circle yellow",  # right
        "make the red circle green",  # wrong value
        "make the blue square yellow",  # wrong object
        "make the red circle yellow and make the background black",  # hallucinated change
    ]) == ["yes", "no", "no", "no"]  # fmt: skip


def test_self_check_is_fallible_not_an_oracle(pairs):
    graphs, ids = pairs
    agent = SceneGraphAgent(graphs, error_rate=0.3, seed=0, error_kinds="all")
    assert agent.verify_error_rate == 0.15  # half the writing error rate by default
    requests = _requests(agent, ids)
    texts = agent.modify(requests)
    wrong = [bool(agent.known_error(r, t)) for r, t in zip(requests, texts)]
    reasons = ["not_verified" if a == "no" else "" for a in agent.verify(requests, texts)]
    scores = verifier_scores(wrong, reasons)["agent"]
    assert 0.5 < scores["precision"] < 0.97 and 0.6 < scores["recall"] < 0.97, scores  # useful, not perfect
    assert agent.verify(requests, texts) == agent.verify(requests, texts)  # deterministic (cached answers agree)


class _Processor:
    """Tokenizes a text to its colour word's index; images are ignored."""

    def __call__(self, images, text, return_tensors):
        ids = torch.tensor([[["red", "green", "blue"].index(t.split()[-1])] for t in text])
        return {
            "pixel_values": torch.zeros(len(text), 3, 2, 2),
            "input_ids": ids,
            "attention_mask": torch.ones_like(ids),
        }


class _Model(torch.nn.Module):
    """A composed query that points at the candidate whose colour the text names."""

    def __init__(self):
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))

    def get_composed_features(self, pixel_values, input_ids, attention_mask):
        return torch.eye(3)[input_ids[:, 0]]


def test_cycle_check_rejects_a_text_that_points_elsewhere_and_keeps_one_that_finds_its_target(tmp_path):
    from PIL import Image

    Image.new("RGB", (4, 4)).save(tmp_path / "ref.png")
    tokens = torch.eye(3)[:, None, :].repeat(1, 2, 1)  # candidates red, green, blue: Q = 2 tokens each
    data = {"candidates": {"ref": ["red", "green", "blue"]}, "ids": ["red", "green", "blue"], "tokens": tokens}
    torch.save(data, tmp_path / "cycle.pt")
    check = CycleCheck(str(tmp_path / "cycle.pt"), "unused", k=1)
    check._loaded = (data, {"red": 0, "green": 1, "blue": 2}, _Model(), _Processor())
    reference = AgentImage("ref", str(tmp_path / "ref.png"), "")
    request = ModificationRequest(reference, AgentImage("green", "", ""), "", "")
    assert check.ranks([request, request], ["make it green", "make it blue"]) == [1, 2]  # kept, rejected at k=1


def test_verifier_scores_against_a_truth():
    wrong = [True, True, False, False, True]
    reasons = ["not_verified", "cycle_inconsistent", "not_verified,cycle_inconsistent", "", ""]
    scores = verifier_scores(wrong, reasons)
    assert scores["agent"] == {"precision": 0.5, "recall": 0.3333, "dropped": 0.4, "residual_error": 0.6667}
    assert scores["either"]["recall"] == 0.6667 and scores["either"]["dropped"] == 0.6
    assert json.dumps(scores)  # plain numbers (results.json)
