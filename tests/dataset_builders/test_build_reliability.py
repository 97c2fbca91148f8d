"""Triplet building against a flaky agent and changing inputs (docs/reliability.md lists each fault and its test).

The agent is `FakeAgentServer` (tests/fixtures/agent_servers.py): a real OpenAI-compatible HTTP server on 127.0.0.1,
in a thread, with a bounded lifetime, that counts every request by (step, image hashes) and fails the ones a test
scripts. The embedding model is a tiny random `MraCirModel`; the builder and its caches are the real ones.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import load_test_fixture
from PIL import Image

from mra_cir.dataset_builders.agents.base import AgentUnavailableError, file_sha256
from mra_cir.dataset_builders.mra_triplets import MraTriplets
from mra_cir.dataset_builders.mra_triplets.summary import IncompleteBuildError

servers = load_test_fixture("agent_servers")

NUM_IMAGES = 14
WINDOW = {"q1": 2, "q2": 4, "targets_per_reference": 1, "pairs_per_shard": 4, "max_new_tokens": 8}
OPTIONS = {"max_concurrency": 2, "batch_size": 4, "max_retries": 1, "backoff": 0.01, "timeout": 5.0}


def _save_model(folder: Path, seed: int) -> Path:
    import torch

    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import offline_processor, tiny_config

    torch.manual_seed(seed)
    MraCirModel(tiny_config()).save_pretrained(folder)
    offline_processor(image_size=32).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> tuple[Path, Path]:
    """Two embedding models with different random weights."""
    root = tmp_path_factory.mktemp("models")
    return _save_model(root / "m1", seed=0), _save_model(root / "m2", seed=1)


def _write_image(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)  # BMP: same size for any pixels


@pytest.fixture
def images(tmp_path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(NUM_IMAGES):
        _write_image(folder / f"img_{i:02d}.bmp", seed=i)
    return folder


def _builder(root: Path, images: Path, model: Path, url: str, **kwargs) -> MraTriplets:
    options = {**OPTIONS, "base_urls": [url], **kwargs.pop("options", {})}
    return MraTriplets(
        cache_dir=str(root / "cache"), agent_cache=str(root / "agent.sqlite"), show_progress=False,
        images=str(images), embedding_model=str(model), agent="openai", agent_model="fake", agent_options=options,
        feature_shard_size=4, **{**WINDOW, **kwargs},
    )  # fmt: skip


def _sha(images: Path) -> dict[str, str]:
    return {p.name: file_sha256(p) for p in sorted(images.iterdir())}


def _mined(builder: MraTriplets) -> list[dict]:
    """The pairs the last preparation of `builder` mined (its `mined-*.json`, newest first)."""
    newest = max(glob.glob(str(builder.work_dir / "mined-*.json")), key=os.path.getmtime)
    return json.loads(Path(newest).read_text())["pairs"]


def _pair_keys(pairs: list[dict], sha: dict[str, str]) -> list[tuple]:
    return [("modify", (sha[p["reference_id"]], sha[p["target_id"]])) for p in pairs]


def _dataset_written(builder: MraTriplets) -> bool:
    return bool(glob.glob(os.path.join(builder._cache_dir_root, "**", "dataset_info.json"), recursive=True))


def test_full_outage_then_recovery_asks_exactly_the_failed_requests(tmp_path, images, models):
    sha = _sha(images)
    with servers.FakeAgentServer() as server:
        server.outage = "status:503"
        builder = _builder(tmp_path, images, models[0], server.url)
        with pytest.raises(IncompleteBuildError, match=rf"{NUM_IMAGES} of {NUM_IMAGES} pairs have no answer") as err:
            builder.download_and_prepare()
        summary = err.value.summary
        assert summary["captions_failed"] == NUM_IMAGES and summary["failed_by_step"] == {"caption": NUM_IMAGES}
        assert summary["failure_reasons"] == {"status_503": NUM_IMAGES} and not summary["complete"]
        # every caption tried twice (max_retries=1), no pair asked (its captions are missing), nothing written
        assert server.requests == Counter({("caption", (h,)): 2 for h in sha.values()})
        assert not _dataset_written(builder)

        server.outage = None
        server.reset()
        again = _builder(tmp_path, images, models[0], server.url)
        again.download_and_prepare()
        summary = again.build_summary()
        assert summary["complete"] and summary["pairs_failed"] == 0 and summary["pairs_mined"] == NUM_IMAGES
        expected = Counter({("caption", (h,)): 1 for h in sha.values()})
        expected.update(_pair_keys(_mined(again), sha))
        assert server.requests == expected  # each failed request once, nothing else
        assert len(again.as_dataset(split="train")) == summary["triplets"] == NUM_IMAGES

        server.reset()
        third = _builder(tmp_path, images, models[0], server.url)
        third.download_and_prepare()  # complete: the datasets cache is reused, nothing is asked
        assert server.count() == 0 and not third.prepared_in_this_run


def test_partial_failures_are_asked_again_rejections_are_final(tmp_path, images, models):
    sha = _sha(images)
    script: dict[tuple, str] = {}
    with servers.FakeAgentServer(policy=lambda step, imgs, attempt: script.get((step, imgs), "ok")) as server:
        probe = _builder(tmp_path / "probe", images, models[0], server.url)
        probe.download_and_prepare()
        keys = _pair_keys(_mined(probe), sha)
        failing = {keys[0]: "status:503", keys[1]: "malformed", keys[2]: "status:500", keys[3]: "status:429"}
        final = {keys[4]: "empty", keys[5]: "refusal"}
        script.update({**failing, **final})
        server.reset()

        builder = _builder(tmp_path, images, models[0], server.url)
        with pytest.raises(IncompleteBuildError, match=r"4 of 14 pairs have no answer yet \(modify: 4") as err:
            builder.download_and_prepare()
        summary = err.value.summary
        assert summary["failure_reasons"] == {"bad_response": 1, "status_429": 1, "status_500": 1, "status_503": 1}
        assert summary["rejected"] == {"empty": 1, "refusal": 1}  # answered and filtered: final, cached
        assert all(server.requests[key] == 2 for key in failing)  # one retry each

        script.clear()
        server.reset()
        again = _builder(tmp_path, images, models[0], server.url)
        again.download_and_prepare()
        assert server.requests == Counter(dict.fromkeys(failing, 1))  # only the 4 failures, once each
        summary = again.build_summary()
        assert summary["complete"] and summary["rejected"] == {"empty": 1, "refusal": 1}
        assert summary["triplets"] == len(again.as_dataset(split="train")) == NUM_IMAGES - 2


def test_one_request_always_timing_out_is_one_failed_pair(tmp_path, images, models):
    sha = _sha(images)
    poison: set = set()
    policy = lambda step, imgs, attempt: "timeout" if (step, imgs) in poison else "ok"  # noqa: E731
    with servers.FakeAgentServer(policy=policy, hang=4.0) as server:
        probe = _builder(tmp_path / "probe", images, models[0], server.url)
        probe.download_and_prepare()
        keys = _pair_keys(_mined(probe), sha)
        poison.add(keys[5])
        server.reset()

        fast = {"options": {"timeout": 1.0}}  # healthy answers take ~1 ms
        builder = _builder(tmp_path, images, models[0], server.url, **fast)
        with pytest.raises(IncompleteBuildError, match=r"1 of 14 pairs .*reasons: timeout=1") as err:
            builder.download_and_prepare()  # not AgentUnavailableError: the server answers everything else
        assert err.value.summary["failed_by_step"] == {"modify": 1}
        assert server.requests[keys[5]] == 2 and server.probes >= 1  # the probe found the server alive
        assert server.count("modify", server.answered) == NUM_IMAGES - 1  # the build went on to the end

        # --allow-failures finishes without the pair; a later normal run asks only that pair
        server.reset()
        partial = _builder(tmp_path, images, models[0], server.url, allow_failures=True, **fast)
        partial.download_and_prepare()
        assert len(partial.as_dataset(split="train")) == NUM_IMAGES - 1 and partial.build_summary()["pairs_failed"]
        assert set(server.requests) == {keys[5]}

        poison.clear()
        server.reset()
        healed = _builder(tmp_path, images, models[0], server.url, **fast)
        healed.download_and_prepare()  # the cached dataset counts a failed pair: prepared again
        assert server.requests == Counter({keys[5]: 1})
        assert healed.build_summary()["complete"] and len(healed.as_dataset(split="train")) == NUM_IMAGES


def test_unreachable_fleet_stops_the_build_and_resumes(tmp_path, images, models):
    server = servers.FakeAgentServer().start()
    url = server.url
    server.stop()  # nothing listens on the port any more
    with pytest.raises(AgentUnavailableError, match="a probe of every URL got no answer"):
        _builder(tmp_path, images, models[0], url).download_and_prepare()


KILL_SCRIPT = """
import sys
from mra_cir.dataset_builders.mra_triplets import MraTriplets
root, images, model, url = sys.argv[1:]
MraTriplets(cache_dir=root + "/cache", agent_cache=root + "/agent.sqlite", show_progress=False, images=images,
            embedding_model=model, agent="openai", agent_model="fake", feature_shard_size=4,
            agent_options={"base_urls": [url], "max_concurrency": 2}, **WINDOW).download_and_prepare()
""".replace("WINDOW", repr(WINDOW))


def _command(tmp_path: Path, images: Path, model: Path, url: str) -> list[str]:
    """`mra-cir build-triplets` with the same build as `_builder(...)` (the default commit settings)."""
    return [sys.executable, "-m", "mra_cir.cli", "build-triplets", "--images", str(images), "--model", str(model),
            "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), "--agent-cache",
            str(tmp_path / "agent.sqlite"), "--agent", "openai", "--agent-url", url, "--agent-model", "fake",
            "--agent-concurrency", "2", "--q1", "2", "--q2", "4",
            "--pairs-per-shard", "4", "--max-new-tokens", "8"]  # fmt: skip


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL-library", "SIGINT-command"])
def test_kill_mid_build_then_resume(tmp_path, images, models, sig):
    """A kill of a library build (or Ctrl-C in the command) while modification texts are being asked, then the same
    build, at the default settings: nothing that looks like a finished dataset is left, the re-run finishes, and no
    answer the server gave is asked again except the requests in flight at the kill (every answer is committed before
    the next request goes out): at most `max_concurrency` = 2 requests asked twice."""
    with servers.FakeAgentServer(delay=0.05) as server:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
        args = [str(tmp_path), str(images), str(models[0]), server.url]
        command = (
            [sys.executable, "-c", KILL_SCRIPT, *args]
            if sig == signal.SIGKILL
            else _command(tmp_path, images, models[0], server.url)
        )
        process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 120
            while server.count("modify", server.answered) < 5 and time.monotonic() < deadline:
                assert process.poll() is None, "the build finished before it could be killed"
                time.sleep(0.02)
        finally:
            process.send_signal(sig)
            stdout, _ = process.communicate(timeout=30)  # Ctrl-C stops promptly: nothing waits for the requests
        if sig == signal.SIGINT:
            assert process.returncode == 130
            assert b"build-triplets: interrupted; the answers received are cached" in stdout
        else:
            assert process.returncode == -signal.SIGKILL
        answered_before = server.count("modify", server.answered)
        assert 5 <= answered_before < NUM_IMAGES
        assert not glob.glob(str(tmp_path / "cache" / "**" / "dataset_info.json"), recursive=True)  # nothing final

        resumed = _builder(tmp_path, images, models[0], server.url, options={"batch_size": None})
        resumed.download_and_prepare()
        summary = resumed.build_summary()
        assert summary["complete"] and summary["triplets"] == NUM_IMAGES
        asked_twice = sum(n - 1 for n in server.answered.values() if n > 1)
        assert asked_twice <= 2, server.answered
        assert server.count("caption", server.answered) == NUM_IMAGES  # captions were all committed before
        assert len(server.answered) == NUM_IMAGES + NUM_IMAGES  # every distinct request answered


def test_changed_model_recomputes_features_and_pairs_only(tmp_path, images, models):
    sha = _sha(images)
    with servers.FakeAgentServer() as server:
        first = _builder(tmp_path, images, models[0], server.url)
        first.download_and_prepare()
        first_pairs = set(_pair_keys(_mined(first), sha))
        server.reset()

        second = _builder(tmp_path, images, models[1], server.url)
        assert second.hash != first.hash
        second.download_and_prepare()
        second_pairs = set(_pair_keys(_mined(second), sha))
        assert second_pairs != first_pairs  # other weights, other neighbours: the old pairs are not reused
        assert len(glob.glob(str(tmp_path / "cache" / "mra_triplets_work" / "features-*"))) == 2
        # captions depend on the images only: all cached; only the new pairs are asked
        assert server.count("caption") == 0
        assert set(server.requests) == second_pairs - first_pairs and max(server.requests.values()) == 1

        # new weights saved under the first model's folder name: a new model too
        server.reset()
        _save_model(models[0], seed=2)
        third = _builder(tmp_path, images, models[0], server.url)
        assert third.hash not in (first.hash, second.hash)
        third.download_and_prepare()
        assert len(glob.glob(str(tmp_path / "cache" / "mra_triplets_work" / "features-*"))) == 3
        assert server.count("caption") == 0


def test_same_size_edit_recomputes_only_what_depends_on_the_image(tmp_path, images, models):
    with servers.FakeAgentServer() as server:
        first = _builder(tmp_path, images, models[0], server.url)
        first.download_and_prepare()
        old_sha = _sha(images)
        old_pairs = set(_pair_keys(_mined(first), old_sha))
        (features_dir,) = glob.glob(str(tmp_path / "cache" / "mra_triplets_work" / "features-*"))
        shards = {p: os.stat(p) for p in sorted(glob.glob(features_dir + "/features-*.safetensors"))}
        assert len(shards) == 4  # 14 images, 4 per shard

        edited = images / "img_05.bmp"  # in shard 1 (img_04 .. img_07)
        size = edited.stat().st_size
        _write_image(edited, seed=99)
        assert edited.stat().st_size == size and file_sha256(edited) != old_sha["img_05.bmp"]
        server.reset()

        second = _builder(tmp_path, images, models[0], server.url)
        second.download_and_prepare()  # the extractor does not refuse: unchanged shards are kept
        new_sha = _sha(images)
        after = {p: os.stat(p) for p in sorted(glob.glob(features_dir + "/features-*.safetensors"))}
        rewritten = [
            p for p in after if (after[p].st_ino, after[p].st_mtime_ns) != (shards[p].st_ino, shards[p].st_mtime_ns)
        ]
        assert [os.path.basename(p) for p in rewritten] == ["features-00001-of-00004.safetensors"]
        # one new caption (the edited image), and exactly the pairs not answered before
        assert server.requests == Counter(
            {
                ("caption", (new_sha["img_05.bmp"],)): 1,
                **dict.fromkeys(set(_pair_keys(_mined(second), new_sha)) - old_pairs, 1),
            }
        )
        rows = second.as_dataset(split="train")
        assert second.build_summary()["complete"] and len(rows) == NUM_IMAGES


def test_broken_symlink_is_counted_as_skipped(tmp_path, images, models):
    (images / "gone.png").symlink_to(tmp_path / "deleted.png")
    with servers.FakeAgentServer() as server:
        builder = _builder(tmp_path, images, models[0], server.url)
        builder.download_and_prepare()
    summary = builder.build_summary()
    assert summary["images_found"] == NUM_IMAGES + 1 and summary["images_skipped"] == 1
    assert summary["skipped"][0][0] == "gone.png" and "broken symbolic link" in summary["skipped"][0][1]


def test_overwrite_recomputes_features_pairs_and_dataset_but_not_answers(tmp_path, images, models):
    with servers.FakeAgentServer() as server:
        first = _builder(tmp_path, images, models[0], server.url)
        first.download_and_prepare()
        (features_dir,) = glob.glob(str(tmp_path / "cache" / "mra_triplets_work" / "features-*"))
        before = {p: os.stat(p).st_mtime_ns for p in glob.glob(features_dir + "/features-*.safetensors")}
        mined_before = os.stat(glob.glob(str(first.work_dir / "mined-*.json"))[0]).st_mtime_ns
        server.reset()
        again = _builder(tmp_path, images, models[0], server.url, overwrite=True)
        again.download_and_prepare()
        assert again.prepared_in_this_run and server.count() == 0  # answers come from the response cache
        after = {p: os.stat(p).st_mtime_ns for p in glob.glob(features_dir + "/features-*.safetensors")}
        assert set(after) == set(before) and all(after[p] != before[p] for p in before)  # every shard re-embedded
        assert os.stat(glob.glob(str(first.work_dir / "mined-*.json"))[0]).st_mtime_ns != mined_before
        assert len(again.as_dataset(split="train")) == NUM_IMAGES
