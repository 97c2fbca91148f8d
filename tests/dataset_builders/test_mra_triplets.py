"""The MRA triplet builder end to end on tiny real models: the tiny VLM (in-process and behind `transformers serve`),
a tiny random MraCirModel for embedding; determinism, caching, resume, faults, publishing and the command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import datasets
import numpy as np
import pytest
import yaml
from conftest import load_test_fixture
from PIL import Image

from mra_cir.dataset_builders.agents.base import AgentUnavailableError
from mra_cir.dataset_builders.agents.cache import ResponseCache
from mra_cir.dataset_builders.mra_triplets import MraTriplets
from mra_cir.dataset_builders.mra_triplets.publishing import export_triplets

NUM_IMAGES = 14
WINDOW = {"q1": 2, "q2": 4, "targets_per_reference": 1, "pairs_per_shard": 4, "max_new_tokens": 8}


servers = load_test_fixture("agent_servers")


@pytest.fixture(scope="module")
def embedding_model(tmp_path_factory, tiny_model, tiny_processor) -> Path:
    folder = tmp_path_factory.mktemp("embedding_model")
    tiny_model.save_pretrained(folder)
    tiny_processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """14 random 32 px images and one corrupt file."""
    folder = tmp_path_factory.mktemp("triplet_images")
    for i in range(NUM_IMAGES):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(folder / f"img_{i:02d}.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    return folder


def _builder(
    root: Path, images, embedding_model, agent_model, agent="transformers", agent_cache=None, options=None, **kwargs
):
    return MraTriplets(
        cache_dir=str(root / "cache"),
        agent_cache=str(agent_cache or root / "agent.sqlite"),
        agent_options=options,
        show_progress=False,
        images=str(images),
        embedding_model=str(embedding_model),
        agent=agent,
        agent_model=str(agent_model),
        **{**WINDOW, **kwargs},
    )


def _rows(dataset: datasets.Dataset) -> list[dict]:
    return (
        dataset.cast_column("reference_image", datasets.Image(decode=False))
        .cast_column("target_image", datasets.Image(decode=False))
        .to_list()
    )


@pytest.fixture(scope="module")
def first_build(tmp_path_factory, images, embedding_model, tiny_vlm):
    root = tmp_path_factory.mktemp("build_a")
    builder = _builder(root, images, embedding_model, tiny_vlm)
    builder.download_and_prepare(num_proc=1)
    return root, builder, builder.as_dataset(split="train"), builder.build_summary()


def test_build_counts_and_corrupt_image(first_build):
    _, _, dataset, summary = first_build
    assert summary["images_found"] == NUM_IMAGES + 1
    assert summary["images_skipped"] == 1 and summary["skipped"][0][0] == "broken.png"
    assert summary["pairs_mined"] == NUM_IMAGES  # one target per embedded reference
    pair_rejections = sum(v for k, v in summary["rejected"].items() if not k.startswith("caption_"))
    assert summary["triplets"] == len(dataset) == summary["pairs_generated"] - pair_rejections
    assert len(dataset) > 0
    # captions are asked once per image, modifications once per pair
    assert summary["agent_calls_by_step"] == {"caption": NUM_IMAGES, "modify": summary["pairs_mined"]}
    row = dataset[0]
    assert isinstance(row["reference_image"], Image.Image) and row["reference_image"].size == (32, 32)
    assert 2 <= row["rank"] <= 4 and row["reference_id"] != row["target_id"]
    assert row["modification_text"] and "\n" not in row["modification_text"]


def test_same_config_same_triplets_across_num_proc_and_cache_reuse(
    first_build, tmp_path, images, embedding_model, tiny_vlm
):
    root_a, _, dataset_a, _ = first_build
    # a fresh build (new datasets cache, new response cache) with 2 processes gives the same triplets
    parallel = _builder(tmp_path / "b", images, embedding_model, tiny_vlm)
    parallel.download_and_prepare(num_proc=2)
    assert _rows(parallel.as_dataset(split="train")) == _rows(dataset_a)
    assert parallel.build_summary()["agent_calls"] > 0
    # same config with the first build's response cache: zero agent calls, same triplets
    reused = _builder(tmp_path / "c", images, embedding_model, tiny_vlm, agent_cache=root_a / "agent.sqlite")
    reused.download_and_prepare(num_proc=1)
    summary = reused.build_summary()
    assert summary["agent_calls"] == 0 and summary["agent_cached"] == NUM_IMAGES + summary["pairs_mined"]
    assert _rows(reused.as_dataset(split="train")) == _rows(dataset_a)
    # a different window is a different config (another cache folder)
    assert _builder(tmp_path / "c", images, embedding_model, tiny_vlm, q2=5).config_id != reused.config_id


def test_publish_round_trip_and_card(first_build, tmp_path):
    _, builder, dataset, summary = first_build
    folder = export_triplets(dataset, tmp_path / "out", config=builder.config_dict(), summary=summary, save_arrow=True)
    from_parquet = datasets.load_dataset("parquet", data_files=str(folder / "data" / "*.parquet"), split="train")
    from_folder = datasets.load_dataset(str(folder), split="train")
    from_disk = datasets.load_from_disk(str(folder / "arrow"))
    for loaded in (from_parquet, from_folder, from_disk):
        assert isinstance(loaded.features["target_image"], datasets.Image)
        assert _rows(loaded) == _rows(dataset)
        assert np.array_equal(np.asarray(loaded[0]["target_image"]), np.asarray(dataset[0]["target_image"]))
    card = (folder / "README.md").read_text()
    metadata = yaml.safe_load(card.split("---")[1])
    counts = metadata["mra_cir"]["counts"]
    assert counts["triplets"] == len(from_folder) and counts["rejected"] == summary["rejected"]
    assert counts["pairs_mined"] == summary["pairs_mined"] and counts["images_skipped"] == 1
    assert metadata["mra_cir"]["builder_config"]["q2"] == WINDOW["q2"]
    assert f"| triplets | {len(from_folder)} |" in card


@pytest.fixture(scope="module")
def server(tiny_vlm, tmp_path_factory):
    process = servers.ServeProcess(tiny_vlm, log_path=tmp_path_factory.mktemp("serve") / "serve.log").start()
    yield process
    process.stop()


def _openai_builder(root, images, embedding_model, tiny_vlm, url, agent_cache):
    options = {"base_urls": [url], "max_concurrency": 2, "batch_size": 2, "max_retries": 1, "backoff": 0.05}
    return _builder(root, images, embedding_model, tiny_vlm, agent="openai", agent_cache=agent_cache, options=options)


def _wait_for_rows(cache_path: Path, step: str, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cache_path.exists() and ResponseCache(cache_path).count_by_step().get(step, 0) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"{cache_path}: fewer than {count} {step} answers after {timeout} s")


def test_openai_build_server_stopped_mid_run_then_resume(
    server, tmp_path, images, embedding_model, tiny_vlm, first_build
):
    from mra_cir.dataset_builders.agents.openai_backend import OpenAIAgent

    class StoppingAgent(OpenAIAgent):
        """Stops `transformers serve` right after the second modification text came back: mid-run whatever the
        machine's load (a thread polling the cache could miss a build this fast)."""

        modify_answers = 0

        def complete_stream(self, requests):
            for index, answer in super().complete_stream(requests):
                yield index, answer
                if len(requests[index].images) == 2:
                    StoppingAgent.modify_answers += 1
                    if StoppingAgent.modify_answers == 2:
                        server.stop()

    cache_path = tmp_path / "agent.sqlite"
    agent = StoppingAgent(
        str(tiny_vlm), [server.url], max_concurrency=2, batch_size=2, max_retries=1, backoff=0.05, max_new_tokens=8
    )
    try:
        with pytest.raises(AgentUnavailableError, match="re-run to resume"):
            _builder(
                tmp_path / "x", images, embedding_model, tiny_vlm, agent="openai", agent_cache=cache_path,
                agent_backend=agent,
            ).download_and_prepare()  # fmt: skip
    finally:
        if server.process is None:
            server.start()  # the next tests use the server
    done = ResponseCache(cache_path).count_by_step()
    assert done["caption"] == NUM_IMAGES and 2 <= done.get("modify", 0) < first_build[3]["pairs_mined"]

    builder = _openai_builder(tmp_path / "y", images, embedding_model, tiny_vlm, server.url, cache_path)
    builder.download_and_prepare()
    summary = builder.build_summary()
    assert summary["agent_calls"] == summary["pairs_mined"] - done["modify"]  # only what was missing
    assert summary["agent_cached"] == NUM_IMAGES + done["modify"]
    # the server's greedy answers are the local model's: same triplets as the transformers build
    assert _rows(builder.as_dataset(split="train")) == _rows(first_build[2])


KILL_SCRIPT = """
import sys
from mra_cir.dataset_builders.mra_triplets import MraTriplets
root, images, model, vlm, url, cache = sys.argv[1:]
builder = MraTriplets(cache_dir=root, agent_cache=cache, show_progress=False, images=images, embedding_model=model,
                      agent="openai", agent_model=vlm, agent_options={"base_urls": [url], "max_concurrency": 1,
                      "batch_size": 1}, **WINDOW)
builder.download_and_prepare()
""".replace("WINDOW", repr(WINDOW))


def test_resume_after_kill(server, tmp_path, images, embedding_model, tiny_vlm):
    cache_path = tmp_path / "agent.sqlite"
    args = [str(tmp_path / "k"), str(images), str(embedding_model), str(tiny_vlm), server.url, str(cache_path)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args], env=env, stderr=subprocess.PIPE)
    try:
        _wait_for_rows(cache_path, "modify", 3, timeout=90)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    done = ResponseCache(cache_path).count_by_step()
    builder = _openai_builder(tmp_path / "r", images, embedding_model, tiny_vlm, server.url, cache_path)
    builder.download_and_prepare()
    summary = builder.build_summary()
    assert summary["agent_calls"] == NUM_IMAGES + summary["pairs_mined"] - sum(done.values())
    # nothing duplicated: one row per distinct request
    assert len(ResponseCache(cache_path)) == NUM_IMAGES + summary["pairs_mined"]


def test_command(first_build, tmp_path, images, embedding_model, tiny_vlm, capsys):
    from mra_cir.cli import main

    root_a, _, dataset_a, _ = first_build
    argv = ["build-triplets", "--images", str(images), "--model", str(embedding_model), "--agent", "transformers",
            "--agent-model", str(tiny_vlm), "--output", str(tmp_path / "out"), "--agent-cache",
            str(root_a / "agent.sqlite"), "--num-proc", "1", "--q1", "2", "--q2", "4", "--pairs-per-shard", "4",
            "--max-new-tokens", "8"]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "0 calls made" in printed and f"pairs mined: {NUM_IMAGES}" in printed
    assert f"triplets: {len(dataset_a)}" in printed
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    assert summary["triplets"] == len(datasets.load_dataset(str(tmp_path / "out"), split="train")) == len(dataset_a)
    assert main(["build-triplets", *argv[1:5], "--agent", "openai", "--agent-model", "m", "--output", "o"]) == 2


def test_verification_step(first_build, tmp_path, images, embedding_model, tiny_vlm):
    root_a, _, dataset_a, _ = first_build
    builder = _builder(tmp_path, images, embedding_model, tiny_vlm, agent_cache=root_a / "agent.sqlite", verify=True)
    builder.download_and_prepare()
    summary = builder.build_summary()
    # captions and modifications come from the cache; only the verification questions are new calls
    assert summary["agent_calls_by_step"] == {"caption": 0, "modify": 0, "verify": len(dataset_a)}
    # the random model never answers yes/no: every candidate is dropped as unclear, and counted
    assert summary["rejected"]["verify_unclear"] == len(dataset_a) and summary["triplets"] == 0
