"""`mra-cir build-triplets` on inputs and events that used to end badly: a folder where nothing decodes, a pool too small
for the mining window, an unreadable sub-folder, control characters in the agent's answers, an unreachable agent
(the message's line and time), and the building process killed while its workers ask the agent.

The agent is `FakeAgentServer` (tests/fixtures/agent_servers.py, a real HTTP server on 127.0.0.1); the embedding model
a tiny random `MraCirModel`. The process tests run the command as a user does (`python -m mra_cir.cli`).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_test_fixture

from mra_cir.cli import main

servers = load_test_fixture("agent_servers")
launcher = load_test_fixture("build_launcher")
NUM_IMAGES = 12
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return launcher.save_tiny_model(tmp_path_factory.mktemp("model") / "m")


@pytest.fixture
def images(tmp_path) -> Path:
    return launcher.write_images(tmp_path / "images", NUM_IMAGES)


def _argv(images: Path, model: Path, output: Path, url: str, *extra: str) -> list[str]:
    return ["build-triplets", "--images", str(images), "--model", str(model), "--output", str(output),
            "--agent", "openai", "--agent-url", url, "--agent-model", "fake", "--agent-concurrency", "2",
            "--max-new-tokens", "8", "--num-proc", "1", *extra]  # fmt: skip


def _one_line(err: str) -> str:
    (line,) = [line for line in err.split("\n") if "build-triplets:" in line]
    assert "Traceback" not in err
    return line


def test_folder_where_no_image_decodes_is_one_line(tmp_path, model, capsys):
    folder = tmp_path / "z"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"")
    (folder / "b.jpg").write_text("x\n")
    with servers.FakeAgentServer() as server:
        assert main(_argv(folder, model, tmp_path / "out", server.url)) == 2
        assert server.count() == 0
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"build-triplets: error: {folder}: 0 distinct image(s) could be read and decoded out of 2")
    assert "skipped: a.png (undecodable" in line and "b.jpg (undecodable" in line


def test_pool_too_small_for_the_window_says_so_and_suggests_one_that_fits(tmp_path, model, images, capsys):
    with servers.FakeAgentServer() as server:
        # 12 images, the default window 51..60: no reference has 60 candidates
        assert main(_argv(images, model, tmp_path / "out", server.url)) == 2
        line = _one_line(capsys.readouterr().err)
        assert "every pair was rejected" not in line and server.count() == 0
        assert line == (
            f"build-triplets: error: {images}: no pair could be mined: 12 distinct images give each reference 11 "
            "candidate(s), fewer than the window's last rank q2=60 (ranks 51..60 need at least 61 images); use a "
            "window that fits the pool, e.g. --q1 2 --q2 11, or add images"
        )
        # the suggested window builds
        assert main(_argv(images, model, tmp_path / "out", server.url, "--q1", "2", "--q2", "11")) == 0
        assert json.loads((tmp_path / "out" / "build_summary.json").read_text())["triplets"] == NUM_IMAGES
        server.reset()

        two = launcher.write_images(tmp_path / "two", 2)
        assert main(_argv(two, model, tmp_path / "out2", server.url, "--q1", "3", "--q2", "5")) == 2
        assert "e.g. --q1 1 --q2 1" in _one_line(capsys.readouterr().err)

        one = launcher.write_images(tmp_path / "one", 1)
        (one / "broken.png").write_bytes(b"\x89PNG\r\n")
        assert main(_argv(one, model, tmp_path / "out3", server.url)) == 2
        line = _one_line(capsys.readouterr().err)
        assert "1 distinct image(s) could be read and decoded out of 2 found; a pair needs 2" in line
        assert "skipped: broken.png (undecodable" in line and server.count() == 0


def test_control_characters_in_answers_are_rejected_and_counted(tmp_path, model, images):
    from mra_cir.dataset_builders.agents.base import file_sha256
    from mra_cir.dataset_builders.agents.filters import has_control_characters
    from mra_cir.dataset_builders.mra_triplets import MraTriplets

    sha = {p.name: file_sha256(p) for p in images.iterdir()}
    bad_caption = sha["img_00.bmp"]
    texts = iter(["make it red\x00", "\x1b[31mmake it red\x1b[0m", "make it \u202eder"])
    sent: dict = {}

    def policy(step, imgs, attempt):
        if step == "caption" and imgs == (bad_caption,):
            return "text:a \x1b[2Jsquare"
        if step == "modify" and bad_caption not in imgs and (imgs in sent or len(sent) < 3):
            sent.setdefault(imgs, next(texts))
            return "text:" + sent[imgs]
        return "ok"

    with servers.FakeAgentServer(policy=policy) as server:
        builder = MraTriplets(
            cache_dir=str(tmp_path / "cache"), show_progress=False, images=str(images), embedding_model=str(model),
            agent="openai", agent_model="fake", agent_options={"base_urls": [server.url]}, q1=1, q2=3,
            max_new_tokens=8,
        )  # fmt: skip
        builder.download_and_prepare()
    summary = builder.build_summary()
    assert len(sent) == 3 and summary["complete"]
    assert summary["rejected"]["control_characters"] == 3 and summary["rejected"]["caption_control_characters"] == 1
    rows = builder.as_dataset(split="train")
    assert len(rows) == NUM_IMAGES - 3 - summary["rejected"]["caption_failed"] == summary["triplets"]
    for column in ("modification_text", "reference_caption", "target_caption"):
        assert not any(has_control_characters(text) for text in rows[column])


def test_unreachable_agent_message_starts_its_own_line_and_says_how_long(tmp_path, model, images, capsys):
    server = servers.FakeAgentServer().start()
    url = server.url
    server.stop()  # nothing listens on the port any more
    argv = _argv(images, model, tmp_path / "out", url, "--q1", "1", "--q2", "3", "--agent-retries", "2")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "captions:" in err  # the progress bar was drawn (the line must not be glued to it)
    line = _one_line(err)
    assert line.startswith(f"build-triplets: agent failed: no server of ['{url}'] answered anything for ")
    # three attempts, 0.5 s and 1 s apart, then a probe: about 1.5 s, not the 120 s time-out
    seconds = float(re.search(r"answered anything for (\d+\.\d) s \(3 attempt", line).group(1))
    assert 1.4 <= seconds < 10 and "120" not in line


def _without_file_permission_override() -> None:
    """For a test run as root: drop CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH from the capability bounding set before
    the command starts, so file permissions apply to it as to any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


def test_unreadable_sub_folder_is_counted_and_named(tmp_path, model, images):
    locked = launcher.write_images(images / "locked", 3, start=20)
    locked.chmod(0)
    command = [sys.executable, "-m", "mra_cir.cli", *_argv(images, model, tmp_path / "out", "", "--q1", "1")]
    try:
        with servers.FakeAgentServer() as server:
            command[command.index("--agent-url") + 1] = server.url
            done = subprocess.run(
                [*command, "--q2", "3"], env=ENV, capture_output=True, text=True, timeout=300,
                preexec_fn=_without_file_permission_override if os.geteuid() == 0 else None,
            )  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"images: {NUM_IMAGES} found, 0 skipped, 0 duplicates; 1 unreadable folder(s) left out: locked " in (
        done.stdout
    )
    summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
    assert summary["unreadable_folders"] == [["locked", "Permission denied"]]
    assert summary["images_found"] == summary["triplets"] == NUM_IMAGES


def test_unreachable_agent_in_a_worker_is_an_agent_error_not_a_dataset_error(tmp_path, model, images):
    """The server stops listening while two worker processes ask for modification texts: the build raises
    `AgentUnavailableError` (the command's one line and resume command), as with one process; the next run finishes."""
    from mra_cir.dataset_builders.agents.base import AgentUnavailableError
    from mra_cir.dataset_builders.mra_triplets import MraTriplets

    def builder(url: str) -> MraTriplets:
        return MraTriplets(
            cache_dir=str(tmp_path / "cache"), show_progress=False, images=str(images), embedding_model=str(model),
            agent="openai", agent_model="fake", q1=1, q2=3, max_new_tokens=8, pairs_per_shard=3,
            agent_options={"base_urls": [url], "max_concurrency": 2, "max_retries": 1, "backoff": 0.05, "timeout": 5.0},
        )  # fmt: skip

    with servers.FakeAgentServer() as server:
        asked = []
        server.on_request = lambda step, imgs: asked.append(step) or (len(asked) == NUM_IMAGES + 2 and server.down())
        with pytest.raises(AgentUnavailableError, match="a probe of every URL got no answer"):
            builder(server.url).download_and_prepare(num_proc=2)
        assert asked.count("caption") == NUM_IMAGES and "modify" in asked
        server.on_request = None
        server.up()
        again = builder(server.url)
        again.download_and_prepare(num_proc=2)
        assert again.build_summary()["complete"] and len(again.as_dataset(split="train")) == NUM_IMAGES


def test_ctrl_c_with_two_workers_is_one_line(tmp_path, model):
    """SIGINT to the process group (Ctrl-C) of `mra-cir build-triplets --num-proc 2` while its workers ask the agent:
    exit 130 with the one line, no traceback, no process left."""
    images = launcher.write_images(tmp_path / "images", 16)
    argv = _argv(images, model, tmp_path / "out", "", "--q1", "1", "--q2", "3", "--pairs-per-shard", "4")
    argv[argv.index("--num-proc") + 1] = "2"
    with servers.FakeAgentServer(delay=0.2) as server:
        argv[argv.index("--agent-url") + 1] = server.url
        process = subprocess.Popen(
            [sys.executable, "-m", "mra_cir.cli", *argv], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            while server.count("modify") < 4 and time.monotonic() < deadline:
                assert process.poll() is None, "the build ended before it could be interrupted"
                time.sleep(0.02)
        finally:
            os.killpg(process.pid, signal.SIGINT)
            stdout, stderr = process.communicate(timeout=60)
            alive = launcher.outlivers(process.pid)
        assert process.returncode == 130, stderr[-3000:]
        assert "build-triplets: interrupted; the answers received are cached" in stdout
        assert alive == [] and "Traceback" not in stderr and "Error" not in stderr, stderr[-3000:]


WATCHDOG_SCRIPT = """
import importlib.util, os, sys, time
spec = importlib.util.spec_from_file_location("processes", sys.argv[1])
processes = importlib.util.module_from_spec(spec)
spec.loader.exec_module(processes)
processes._prctl = None  # the watchdog alone, as where prctl is missing
parent = os.getpid()
child = os.fork()
if child == 0:
    processes.end_with_parent(parent)
    time.sleep(60)
    os._exit(0)
print(child, flush=True)
os._exit(0)  # the parent ends at once
"""


def test_watchdog_alone_ends_a_worker_whose_parent_ended():
    """Without `prctl` (other systems), the watchdog thread ends the orphan within about its 0.5 s poll."""
    from mra_cir.dataset_builders.mra_triplets import processes

    done = subprocess.run(
        [sys.executable, "-c", WATCHDOG_SCRIPT, processes.__file__], capture_output=True, text=True, timeout=60
    )
    child = int(done.stdout.strip())
    deadline = time.monotonic() + 2.0
    while launcher.process_state(child) not in (None, "Z", "X") and time.monotonic() < deadline:
        time.sleep(0.05)
    alive = launcher.process_state(child) not in (None, "Z", "X")
    if alive:
        os.kill(child, signal.SIGKILL)
    assert not alive


def test_workers_end_within_5_s_when_the_build_is_killed(tmp_path, model):
    """SIGKILL of `mra-cir build-triplets --num-proc 2` while its two workers ask the agent: 5 s later no process of
    the build is alive and the server gets no more requests."""
    images = launcher.write_images(tmp_path / "images", 16)
    argv = _argv(images, model, tmp_path / "out", "", "--q1", "1", "--q2", "3", "--pairs-per-shard", "4")
    argv[argv.index("--num-proc") + 1] = "2"
    with servers.FakeAgentServer(delay=0.2) as server:
        argv[argv.index("--agent-url") + 1] = server.url
        process = subprocess.Popen(
            [sys.executable, "-m", "mra_cir.cli", *argv], env=ENV, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 240
            while server.count("modify") < 4 and time.monotonic() < deadline:
                assert process.poll() is None, "the build ended before it could be killed"
                time.sleep(0.02)
            workers = [pid for pid in launcher.session_processes(process.pid) if pid != process.pid]
            assert len(workers) >= 2  # the pool's two workers (and datasets' queue manager)
        finally:
            process.send_signal(signal.SIGKILL)
            process.wait()
            alive = launcher.outlivers(process.pid)
        asked = server.count()
        time.sleep(0.5)
        assert alive == [] and server.count() == asked
        assert server.count("modify", server.answered) < 16
