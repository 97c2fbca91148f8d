"""The agent backends against real models: the tiny VLM in-process and behind `transformers serve` over HTTP."""

from __future__ import annotations

import logging
import pickle
import time

import numpy as np
import pytest
from conftest import load_test_fixture
from PIL import Image

from mra_cir.dataset_builders.agents import AgentImage, AgentUnavailableError, ModificationRequest, make_agent
from mra_cir.dataset_builders.agents.openai_backend import OpenAIAgent
from mra_cir.dataset_builders.agents.transformers_backend import TransformersAgent

servers = load_test_fixture("agent_servers")


@pytest.fixture(scope="module")
def agent_images(tmp_path_factory) -> list[AgentImage]:
    folder = tmp_path_factory.mktemp("agent_images")
    images = []
    for i in range(6):
        rng = np.random.default_rng(100 + i)
        path = folder / f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        images.append(AgentImage.from_path(path))
    return images


@pytest.fixture(scope="module")
def server(tiny_vlm, tmp_path_factory):
    with servers.ServeProcess(tiny_vlm, log_path=tmp_path_factory.mktemp("serve") / "serve.log") as process:
        yield process


@pytest.fixture(scope="module")
def local_captions(tiny_vlm, agent_images) -> list[str]:
    agent = TransformersAgent(str(tiny_vlm), batch_size=1, max_new_tokens=8)
    return agent.caption(agent_images)


def test_transformers_backend_batched_equals_unbatched_and_is_picklable(tiny_vlm, agent_images, local_captions):
    agent = make_agent("transformers", model=str(tiny_vlm), batch_size=4, max_new_tokens=8)
    batched = agent.caption(agent_images)
    assert batched == local_captions
    assert all(isinstance(text, str) and text for text in batched)
    assert agent._model is not None
    clone = pickle.loads(pickle.dumps(agent))
    assert clone._model is None  # the model is not pickled, it reloads lazily
    request = ModificationRequest(agent_images[0], agent_images[1], batched[0], batched[1])
    assert clone.modify([request]) == agent.modify([request])


def test_openai_backend_against_transformers_serve(server, tiny_vlm, agent_images, local_captions):
    agent = OpenAIAgent(str(tiny_vlm), [server.url], max_concurrency=3, max_new_tokens=8)
    answers = agent.caption(agent_images)
    # greedy generation: the server's answers are the local backend's answers
    assert answers == local_captions
    assert agent.http_stats["requests"] == len(agent_images) and agent.http_stats["retries"] == 0
    requests = [ModificationRequest(a, b, "x", "y") for a, b in zip(agent_images, agent_images[1:])]
    assert all(isinstance(text, str) for text in agent.modify(requests))


def test_openai_fleet_survives_a_dead_url(server, tiny_vlm, agent_images, local_captions):
    dead = f"http://127.0.0.1:{servers.free_port()}/v1"
    agent = OpenAIAgent(str(tiny_vlm), [dead, server.url], max_concurrency=2, max_new_tokens=8, backoff=0.01)
    assert agent.caption(agent_images[:4]) == local_captions[:4]
    assert agent.http_stats["connect_error"] >= 1 and agent.http_stats["retries"] >= 1


def test_openai_backend_unreachable_raises():
    agent = OpenAIAgent("m", f"http://127.0.0.1:{servers.free_port()}/v1", max_retries=2, backoff=0.01, timeout=2)
    with pytest.raises(AgentUnavailableError, match="re-run to resume"):
        agent.complete([agent.caption_request(AgentImage("a", __file__, "0"))])
    assert agent.http_stats["connect_error"] == 3


def test_openai_errors_are_retried_then_counted(agent_images, monkeypatch, caplog):
    monkeypatch.setenv("MRA_TEST_KEY", "sk-secret-value")
    with servers.ErrorServer([500]) as failing:
        agent = OpenAIAgent("m", failing.url, max_retries=2, backoff=0.01, api_key_env="MRA_TEST_KEY")
        with caplog.at_level(logging.DEBUG):
            assert agent.caption(agent_images[:2]) == [None, None]
        assert agent.http_stats["status_500"] == 6 and agent.http_stats["failed"] == 2
        assert agent.http_stats["retries"] == 4
        # the key is sent, but never logged, shown or pickled
        assert failing.headers[0]["Authorization"] == "Bearer sk-secret-value"
        assert "sk-secret" not in caplog.text + repr(agent) + str(pickle.dumps(agent))
    with servers.ErrorServer([429, 503, 200], answer="add a red hat", retry_after="0.05") as flaky:
        agent = OpenAIAgent("m", flaky.url, max_retries=3, backoff=0.01)
        start = time.monotonic()
        assert agent.caption(agent_images[:1]) == ["add a red hat"]
        assert time.monotonic() - start >= 0.05  # Retry-After honoured
        assert agent.http_stats["status_429"] == 1 and agent.http_stats["status_503"] == 1
    with servers.ErrorServer([400]) as bad_request:  # not retryable
        agent = OpenAIAgent("m", bad_request.url, max_retries=3, backoff=0.01)
        assert agent.caption(agent_images[:1]) == [None]
        assert agent.http_stats["requests"] == 1


def test_openai_payload_has_data_urls_and_max_tokens(agent_images):
    agent = OpenAIAgent("m", "http://127.0.0.1:1/v1", max_new_tokens=17)
    body = agent.payload(agent.modify_request(ModificationRequest(agent_images[0], agent_images[1], "a", "b")))
    parts = body["messages"][0]["content"]
    assert [part["type"] for part in parts] == ["image_url", "image_url", "text"]
    assert parts[0]["image_url"]["url"].startswith("data:image/png;base64,")
    assert body["max_tokens"] == 17 and body["temperature"] == 0.0


def test_openai_one_request_timing_out_is_a_failed_item_not_an_outage(agent_images):
    keys = {servers.request_key(OpenAIAgent("m", "x").payload(OpenAIAgent("m", "x").caption_request(agent_images[2])))}
    policy = lambda step, images, attempt: "timeout" if (step, images) in keys else "ok"  # noqa: E731
    with servers.FakeAgentServer(policy=policy, hang=4.0) as server:
        agent = OpenAIAgent("m", server.url, max_retries=1, backoff=0.01, timeout=1.0, max_concurrency=2)
        answers = agent.caption(agent_images[:4])
        assert [a is None for a in answers] == [False, False, True, False]
        assert agent.failures == {"timeout": 1} and agent.http_stats["timeout"] == 2 and server.probes >= 1
        # the kept-alive client serves the next call too
        assert agent.caption(agent_images[4:]) == [
            servers.fake_answer("caption", (img.sha256,)) for img in agent_images[4:]
        ]
        agent.close()


def test_openai_malformed_answers_are_retried_then_counted(agent_images):
    with servers.FakeAgentServer(policy=lambda step, images, attempt: "malformed" if attempt == 0 else "ok") as server:
        agent = OpenAIAgent("m", server.url, max_retries=1, backoff=0.01)
        assert agent.caption(agent_images[:2]) == [
            servers.fake_answer("caption", (i.sha256,)) for i in agent_images[:2]
        ]
        assert agent.http_stats["bad_response"] == 2 and not agent.failures
    with servers.FakeAgentServer(policy=lambda step, images, attempt: "malformed") as server:
        agent = OpenAIAgent("m", server.url, max_retries=1, backoff=0.01)
        assert agent.caption(agent_images[:1]) == [None] and agent.failures == {"bad_response": 1}
