"""SceneGraphAgent: captions and modification texts from scene graphs, lookup by id or hash, and its error rate."""

from __future__ import annotations

import hashlib
import io

import pytest

from mra_cir.dataset_builders.agents import AgentImage, ModificationRequest, make_agent
from mra_cir.dataset_builders.synthetic_world import canonical, generate_pool
from mra_cir.dataset_builders.synthetic_world.scene_agent import (
    NO_CHANGE,
    SceneGraphAgent,
    agent_caption,
    scene_changes,
)

RED_CIRCLE = {"shape": "circle", "color": "red", "size": "large", "position": "left"}
BLUE_SQUARE = {"shape": "square", "color": "blue", "size": "small", "position": "right"}


def _graph(*objects, background="gray"):
    return {"background": background, "objects": [dict(o) for o in objects]}


def _image(id_):
    return AgentImage(id=id_, path="", sha256="")


def _request(a, b):
    return ModificationRequest(_image(a), _image(b), "", "")


def test_caption_and_single_changes():
    graphs = {
        "ref": _graph(RED_CIRCLE, BLUE_SQUARE),
        "color": _graph({**RED_CIRCLE, "color": "yellow"}, BLUE_SQUARE),
        "size": _graph(RED_CIRCLE, {**BLUE_SQUARE, "size": "large"}),
        "remove": _graph(RED_CIRCLE),
        "bg": _graph(RED_CIRCLE, BLUE_SQUARE, background="black"),
    }
    agent = SceneGraphAgent(graphs)
    assert agent.caption([_image("ref")]) == [
        "a large red circle on the left and a small blue square on the right on a gray background"
    ]
    color, size, remove, bg, same = agent.modify(
        [_request("ref", "color"), _request("ref", "size"), _request("ref", "remove"), _request("ref", "bg"),
         _request("ref", "ref")]
    )  # fmt: skip
    # the object is named in one of the agent's namings (colour and shape, with size, shape, or slot)
    assert ("circle" in color or "on the left" in color) and "yellow" in color and "square" not in color
    assert ("square" in size or "on the right" in size) and ("bigger" in size or "large" in size)
    assert ("square" in remove or "on the right" in remove) and "circle" not in remove
    assert "background" in bg and "black" in bg and "gray" not in bg
    assert same == NO_CHANGE


def test_the_agents_wording_varies_and_never_uses_a_held_out_phrasing():
    from mra_cir.dataset_builders.synthetic_world.pretraining_corpus import held_out_phrasing_in

    rows = [row for _, row in generate_pool(3, 400)]
    agent = SceneGraphAgent({r["id"]: r["scene_graph"] for r in rows}, seed=2)
    texts = agent.modify([_request(rows[i]["id"], rows[i + 1]["id"]) for i in range(399)])
    assert [t for t in texts if held_out_phrasing_in(t)] == []
    assert len(set(texts)) == len(texts)
    assert any("; " in t for t in texts) and any(" then " in t for t in texts)  # several joins
    assert any(t.startswith("the ") for t in texts) and any(t.startswith("make ") for t in texts)  # several forms


def test_move_and_add_and_replace():
    lone_left = _graph(RED_CIRCLE)
    lone_right = _graph({**RED_CIRCLE, "position": "right"})
    assert [c["kind"] for c in scene_changes(lone_left, lone_right)] == ["move"]
    assert [c["kind"] for c in scene_changes(lone_left, _graph(RED_CIRCLE, BLUE_SQUARE))] == ["add"]
    other = _graph({**RED_CIRCLE, "shape": "cross", "color": "green"})
    (change,) = scene_changes(lone_left, other)
    assert change["kind"] == "replace" and change["new"] == "green cross"


def test_error_free_answers_verify_and_are_deterministic():
    rows = [row for _, row in generate_pool(0, 120)]
    agent = SceneGraphAgent({r["id"]: r["scene_graph"] for r in rows}, seed=1)
    requests = [_request(rows[i]["id"], rows[i + 1]["id"]) for i in range(100)]
    texts = agent.modify(requests)
    assert texts == SceneGraphAgent({r["id"]: r["scene_graph"] for r in rows}, seed=1).modify(requests)
    assert agent.verify(requests, texts) == ["yes"] * len(texts)
    captions = agent.caption([_image(r["id"]) for r in rows])
    import json

    assert captions == [agent_caption(json.loads(r["scene_graph"])) for r in rows]


def test_error_rate_is_respected():
    rows = [row for _, row in generate_pool(1, 401)]
    graphs = {r["id"]: r["scene_graph"] for r in rows}
    requests = [_request(rows[i]["id"], rows[i + 1]["id"]) for i in range(400)]
    noisy = SceneGraphAgent(graphs, error_rate=0.3, seed=0)
    verdicts = SceneGraphAgent(graphs).verify(requests, noisy.modify(requests))
    wrong = verdicts.count("no") / len(verdicts)
    assert 0.22 <= wrong <= 0.38, wrong
    captions = noisy.caption([_image(r["id"]) for r in rows])
    import json

    wrong_captions = sum(c != agent_caption(json.loads(r["scene_graph"])) for c, r in zip(captions, rows)) / len(rows)
    assert 0.22 <= wrong_captions <= 0.38, wrong_captions
    assert SceneGraphAgent(graphs, error_rate=0.0).model_name != noisy.model_name  # cache keys differ


def test_lookup_by_sha256_and_unknown_images():
    buffer = io.BytesIO()
    rows = [row for _, row in generate_pool(2, 3)]
    rows[0]["image"].save(buffer, format="PNG")
    sha = hashlib.sha256(buffer.getvalue()).hexdigest()
    agent = SceneGraphAgent({rows[0]["id"]: rows[0]["scene_graph"]}, sha256_to_id={sha: rows[0]["id"]})
    renamed = AgentImage(id="copy.png", path="", sha256=sha)
    assert agent.caption([renamed, _image("missing")])[0] is not None
    assert agent.caption([_image("missing")]) == [None]
    assert agent.modify([_request(rows[0]["id"], "missing")]) == [None]


def test_from_dataset_and_registry(tmp_path):
    from mra_cir.dataset_builders.synthetic_world import build_world

    world = build_world(seed=0, pool_size=6, num_queries=1, cache_dir=tmp_path)
    agent = SceneGraphAgent.from_dataset(world.pool, error_rate=0.0)
    assert len(agent.sha256_to_id) == 6
    assert canonical(agent.scene_of(_image(world.pool[0]["id"]))) == world.pool[0]["scene_graph"]
    made = make_agent("scene", scene_graphs={"a": world.pool[0]["scene_graph"]})
    assert isinstance(made, SceneGraphAgent) and made.backend_name == "scene"
    with pytest.raises(ValueError, match="error_rate"):
        SceneGraphAgent({}, error_rate=1.5)
