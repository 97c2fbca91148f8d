"""Randomized fault injection: whatever fails along the way, a finished `mra-cir build-triplets` writes the dataset a
build that never failed writes, and asks no answered request again beyond the stated bound.

For each seed, a `ChaosPlan` drawn from the seed drives `FakeAgentServer` (a real OpenAI-compatible HTTP server on
127.0.0.1) and the build's processes:

- every request (step + image hashes + attempt number) gets, from a hash of the seed and the request, an answer or a
  fault: 500, 502, 503 or 429, a time-out, the connection dropped mid-body, a body that is not JSON, an empty body,
  an empty `choices` list. Every fault is something the client must retry, never an answer; a request faults at
  most `MAX_FAULTY_ATTEMPTS` times, so every build can finish;
- up to two outages, each starting at a drawn request number: the server answers 503 to everything, or stops
  listening (connection refused, open connections closed), for a drawn duration, then recovers;
- up to three runs are stopped, at a drawn request number or a drawn time after the run started: SIGKILL of the
  command's process alone (its `--num-proc` workers must end by themselves) or SIGINT to its process group (Ctrl-C);
- each run uses `--num-proc` 1 or 2, drawn per run.

The build (the real command, `mra_cir.cli.main`, in a process of its own forked by `BuildLauncher`) is run again
with the same arguments until it exits 0. Then:

- the dataset equals the fault-free build's byte for byte: the same Parquet files, the same dataset card and
  `build_summary.json` apart from the counters of agent calls, failures and their reasons;
- answers asked again (the server's count of answered requests beyond one per request) are at most
  `max_concurrency x processes` for each run that was stopped before it ended (killed, interrupted, or stopped by an
  unreachable server): the requests in flight at the stop; a run that ends normally loses nothing;
- 5 s after each run ends (or is killed), no process of its session is alive;
- a run that exits 1 said why in one line with the command to resume; no run printed a traceback.

The same holds for a build with the verification step (`--verify`, a third request per pair): `VERIFY_SEEDS`.

Seeds: `CI_SEEDS` by default, plus the schedules in `REGRESSION_PLANS` (which failed once); `MRA_CIR_CHAOS_SEEDS=100`
runs seeds 0-99 (the ones past the CI seeds are marked `slow`), `=500-599` a range, `=7,42` a list. `MRA_CIR_CHAOS_REPORT=path.json` writes the figures
(runs, kills, requests, repeats, faults) of the seeds run.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import load_test_fixture

servers = load_test_fixture("agent_servers")
launcher = load_test_fixture("build_launcher")

NUM_IMAGES = 14
CONCURRENCY = 2
TIMEOUT = 3.0  # the client's time-out; a "timeout" fault hangs longer
MAX_FAULTY_ATTEMPTS = 3  # with --agent-retries 2 (3 attempts a run), a request can fail a whole run, never two
FAULTS = ("status:500", "status:502", "status:503", "status:429", "drop", "malformed", "empty_body", "empty_choices")
MAX_RUNS = 25
RUN_LIMIT = 120.0  # seconds one run may take before the test gives up on it
CI_SEEDS = range(10)
VERIFY_SEEDS = range(100, 104)  # plans drawn for the build with --verify


def _seeds() -> list:
    spec = os.environ.get("MRA_CIR_CHAOS_SEEDS", "").strip()
    if not spec:
        chosen = list(CI_SEEDS)
    elif "-" in spec:
        first, last = (int(x) for x in spec.split("-"))
        chosen = list(range(first, last + 1))
    elif "," in spec:
        chosen = [int(x) for x in spec.split(",") if x.strip()]
    else:
        chosen = list(range(int(spec)))
    params = [pytest.param(s, marks=() if s in CI_SEEDS else pytest.mark.slow, id=str(s)) for s in chosen]
    return params + [pytest.param(plan, id=name) for name, plan in REGRESSION_PLANS.items()]


@dataclass
class ChaosPlan:
    """Everything a seed decides: fault rate, outages, stops, processes per run."""

    seed: int
    fault_rate: float = 0.0
    timeout_share: float = 0.0
    outages: list = field(default_factory=list)  # (request number, "status:503" or "down", seconds)
    stops: list = field(default_factory=list)  # per run: (signal name, "requests" or "seconds", value)
    num_proc: list = field(default_factory=list)  # per run

    @classmethod
    def draw(cls, seed: int) -> ChaosPlan:
        rng = random.Random(seed)
        plan = cls(seed, fault_rate=rng.uniform(0.05, 0.35), timeout_share=rng.choice([0.0, 0.1]))
        for _ in range(rng.choice([0, 0, 1, 1, 2])):
            plan.outages.append((rng.randint(1, 40), rng.choice(["status:503", "down"]), rng.uniform(0.3, 3.0)))
        for _ in range(rng.choice([0, 1, 1, 2, 2, 3])):
            if rng.random() < 0.6:
                trigger = ("requests", rng.randint(1, 36))
            else:
                trigger = ("seconds", round(rng.uniform(0.05, 1.5), 2))
            plan.stops.append((rng.choice(["SIGKILL", "SIGINT"]), *trigger))
        plan.num_proc = [rng.choice([1, 2]) for _ in range(MAX_RUNS)]
        return plan

    def action(self, step: str, images: tuple, attempt: int) -> str:
        if attempt >= MAX_FAULTY_ATTEMPTS:
            return "ok"
        digest = hashlib.sha256(f"{self.seed}:{step}:{images}:{attempt}".encode()).digest()
        rng = random.Random(digest)
        if rng.random() >= self.fault_rate:
            return "ok"
        return "timeout" if rng.random() < self.timeout_share else rng.choice(FAULTS)


def _plan(seed: int, fault_rate: float, outages: list, stops: list, num_proc: list) -> ChaosPlan:
    return ChaosPlan(seed, fault_rate, 0.0, outages, stops, num_proc + [1] * (MAX_RUNS - len(num_proc)))


#: schedules that failed once, kept as they were drawn then (the draw has changed since), always run
REGRESSION_PLANS = {
    # Ctrl-C of a run with two workers ended in a `TimeoutError` traceback from `datasets`' pool
    "ctrl-c-two-workers": _plan(1, 0.0903, [(8, "down", 1.21)], [("SIGKILL", "seconds", 1.19), ("SIGINT", "requests", 25)],
                                [1, 2, 2, 1, 1, 2, 1, 1]),
    # the server going down closed a connection while it wrote an answer: counted as delivered, then asked again
    "down-mid-answer": _plan(28, 0.0839, [(39, "status:503", 0.91), (30, "down", 0.87)], [("SIGKILL", "requests", 9)],
                             [1, 1, 2, 1, 1, 1, 2, 2]),
}  # fmt: skip


class ChaosRunner:
    """Runs one seed's build to its end under its plan (see the module docstring)."""

    def __init__(self, plan: ChaosPlan, build: launcher.BuildLauncher, root: Path, argv: list[str]):
        self.plan, self.build, self.root, self.argv = plan, build, root, argv
        self.server = servers.FakeAgentServer(policy=self._action, hang=TIMEOUT + 0.5, lifetime=600)
        self.server.on_request = self._on_request
        self.lock = threading.Lock()
        self.total = 0  # requests over every run
        self.pid: int | None = None
        self.run_requests = 0
        self.stop: tuple | None = None
        self.stopped_with: str | None = None
        self.outages = list(plan.outages)
        self.timers: list[threading.Timer] = []
        self.faults: Counter = Counter()
        self.outages_started: Counter = Counter()
        self.runs: list[dict] = []

    def _action(self, step, images, attempt) -> str:
        action = self.plan.action(step, images, attempt)
        if action != "ok":
            self.faults[action.split(":")[0] if action.startswith("status") else action] += 1
        return action

    def _signal(self) -> None:  # under self.lock, the run's process not yet waited for
        name = self.stop[0]
        self.stopped_with = name
        if name == "SIGKILL":
            os.kill(self.pid, signal.SIGKILL)  # the command's process alone: its workers must end by themselves
        else:
            os.killpg(self.pid, signal.SIGINT)  # Ctrl-C: the whole foreground process group

    def _on_request(self, step, images) -> None:
        with self.lock:
            self.total += 1
            self.run_requests += 1
            if self.pid and self.stop and not self.stopped_with and self.stop[1] == "requests":
                if self.run_requests >= self.stop[2]:
                    self._signal()
            starting = [o for o in self.outages if o[0] <= self.total]
            self.outages = [o for o in self.outages if o[0] > self.total]
        for _, kind, seconds in starting:
            self.outages_started[kind] += 1
            if kind == "down":
                self.server.down()
                timer = threading.Timer(seconds, self.server.up)
            else:
                self.server.outage = kind
                timer = threading.Timer(seconds, lambda: setattr(self.server, "outage", None))
            timer.daemon = True
            timer.start()
            self.timers.append(timer)

    def run_to_the_end(self) -> list[dict]:
        with self.server:
            self.argv[self.argv.index("--agent-url") + 1] = self.server.url
            for index in range(MAX_RUNS):
                num_proc = self.plan.num_proc[index]
                argv = [*self.argv, "--num-proc", str(num_proc)]
                log = self.root / f"run-{index:02d}.log"
                with self.lock:
                    self.run_requests, self.stopped_with = 0, None
                    self.stop = self.plan.stops[index] if index < len(self.plan.stops) else None
                    self.pid = self.build.run(argv, log)
                    pid = self.pid
                started = time.monotonic()
                while not self.build.finished(pid):
                    elapsed = time.monotonic() - started
                    with self.lock:
                        if (
                            self.stop
                            and not self.stopped_with
                            and self.stop[1] == "seconds"
                            and elapsed >= self.stop[2]
                        ):
                            self._signal()
                    if elapsed > RUN_LIMIT:
                        os.killpg(pid, signal.SIGKILL)
                        pytest.fail(f"seed {self.plan.seed}: run {index} took over {RUN_LIMIT} s (log: {log})")
                    time.sleep(0.01)
                with self.lock:
                    self.pid = None
                code = self.build.wait(pid)
                alive = launcher.outlivers(pid)
                assert alive == [], f"seed {self.plan.seed} run {index}: processes {alive} outlived the build"
                text = log.read_text(errors="replace")
                run = {"num_proc": num_proc, "returncode": code, "stopped_with": self.stopped_with, "log": str(log)}
                run["unavailable"] = "build-triplets: agent failed" in text
                self.runs.append(run)
                _check_run_output(self.plan.seed, index, run, text)
                if code == 0:
                    break
            else:
                pytest.fail(f"seed {self.plan.seed}: not finished after {MAX_RUNS} runs: {self.runs}")
            for timer in self.timers:
                timer.cancel()
            self.server.up()
        return self.runs


def _check_run_output(seed: int, index: int, run: dict, text: str) -> None:
    where = f"seed {seed} run {index} ({run['log']})"
    assert "Traceback" not in text, f"{where}: a traceback"
    code = run["returncode"]
    if run["stopped_with"] == "SIGKILL":
        assert code in (-signal.SIGKILL, 0), where  # 0: the kill came after the build had finished
    elif run["stopped_with"] == "SIGINT":
        assert code in (130, 0, 1), where
    else:
        assert code in (0, 1), f"{where}: exit status {code}"
    if code == 1:
        lines = [line for line in text.split("\n") if line.startswith("build-triplets:")]
        assert len(lines) == 1 and "resume with: mra-cir build-triplets" in lines[0], f"{where}: {lines}"
    if code == 130:
        assert "build-triplets: interrupted; the answers received are cached" in text, where


COUNTERS = ("agent_calls", "agent_cached", "agent_failed", "agent_calls_by_step", "failure_reasons")


def _dataset(output: Path) -> dict:
    """What must not depend on the faults: the Parquet bytes, the card and the summary without their counters."""
    summary = json.loads((output / "build_summary.json").read_text())
    for key in (*COUNTERS, "prepared_in_this_run"):
        summary.pop(key)
    card = (output / "README.md").read_text()
    card = re.sub(r"(agent_calls|agent_cached|agent_failed): \d+", r"\1: N", card)
    card = re.sub(r"\| (agent calls \(this run\) / answered from cache|failed requests) \|[^\n]*", r"| \1 | N", card)
    data = {path.name: path.read_bytes() for path in sorted((output / "data").glob("*.parquet"))}
    return {"data": data, "card": card, "summary": summary}


@pytest.fixture(scope="module")
def chaos(tmp_path_factory):
    """The launcher, a tiny model, 14 images, the command's arguments and the fault-free build's dataset."""
    yield from _fault_free(tmp_path_factory, [])


@pytest.fixture(scope="module")
def chaos_verified(tmp_path_factory):
    """The same with the verification step: a third request (yes/no) per pair."""
    yield from _fault_free(tmp_path_factory, ["--verify"])


def _fault_free(tmp_path_factory, extra: list[str]):
    root = tmp_path_factory.mktemp("chaos")
    build = launcher.BuildLauncher()
    model = launcher.save_tiny_model(root / "model")
    images = launcher.write_images(root / "images", NUM_IMAGES)
    window = ["--q1", "2", "--q2", "4", "--pairs-per-shard", "4", "--max-new-tokens", "8"]
    agent = ["--agent", "openai", "--agent-url", "", "--agent-model", "fake", "--agent-concurrency", str(CONCURRENCY),
             "--agent-retries", "2", "--agent-timeout", str(TIMEOUT)]  # fmt: skip
    base = ["--images", str(images), "--model", str(model), *window, *agent, *extra]
    reference = root / "reference"
    reference.mkdir()
    runner = ChaosRunner(
        ChaosPlan(-1, num_proc=[1] * MAX_RUNS), build, reference, [*base, "--output", str(reference / "out")]
    )
    runs = runner.run_to_the_end()
    steps = 3 if extra else 2  # caption, modification (, verification): one request each per image / pair
    assert [run["returncode"] for run in runs] == [0] and runner.server.count() == steps * NUM_IMAGES
    figures: list[dict] = []
    expected = _dataset(reference / "out")
    yield {"build": build, "root": root, "base": base, "expected": expected, "figures": figures, "steps": steps}
    build.close()
    report = os.environ.get("MRA_CIR_CHAOS_REPORT")
    if report and figures:
        keys = ("runs", "sigkill", "sigint", "unavailable", "incomplete", "requests", "repeats", "bound")
        totals = {key: sum(f[key] for f in figures) for key in keys}
        for key in ("faults", "outages"):
            totals[key] = dict(sum((Counter(f[key]) for f in figures), Counter()))
        totals["seeds"] = len(figures)
        Path(report).write_text(json.dumps({"totals": totals, "seeds": figures}, indent=1))


@pytest.mark.parametrize("seed", _seeds())
def test_build_under_chaos_equals_the_fault_free_build(chaos, seed, tmp_path):
    _build_under_chaos(chaos, seed, tmp_path)


@pytest.mark.parametrize("seed", VERIFY_SEEDS)
def test_verified_build_under_chaos_equals_the_fault_free_build(chaos_verified, seed, tmp_path):
    assert chaos_verified["expected"]["data"].keys() >= {"dropped-00000-of-00001.parquet"}  # the side split too
    _build_under_chaos(chaos_verified, seed, tmp_path)


def _build_under_chaos(chaos, seed, tmp_path):
    plan = seed if isinstance(seed, ChaosPlan) else ChaosPlan.draw(seed)
    seed = plan.seed
    root = tmp_path
    runner = ChaosRunner(plan, chaos["build"], root, [*chaos["base"], "--output", str(root / "out")])
    runs = runner.run_to_the_end()

    got = _dataset(root / "out")
    expected = chaos["expected"]
    assert got["data"].keys() == expected["data"].keys()
    assert all(got["data"][name] == expected["data"][name] for name in expected["data"]), f"seed {seed}: Parquet"
    assert got["summary"] == expected["summary"] and got["card"] == expected["card"], f"seed {seed}"

    answered = runner.server.answered
    assert len(answered) == chaos["steps"] * NUM_IMAGES  # every caption and every pair answered at least once
    repeats = sum(count - 1 for count in answered.values())
    stopped = [run for run in runs if run["returncode"] in (-signal.SIGKILL, 130) or run["unavailable"]]
    bound = sum(CONCURRENCY * run["num_proc"] for run in stopped)
    again = [(step, count) for (step, _), count in answered.items() if count > 1]
    assert repeats <= bound, f"seed {seed}: {repeats} answers asked again {again}, bound {bound}: {plan} {runs}"
    chaos["figures"].append(
        {
            "seed": seed,
            "runs": len(runs),
            "sigkill": sum(run["returncode"] == -signal.SIGKILL for run in runs),
            "sigint": sum(run["returncode"] == 130 for run in runs),
            "unavailable": sum(run["unavailable"] for run in runs),
            "incomplete": sum(run["returncode"] == 1 and not run["unavailable"] for run in runs),
            "requests": runner.server.count(),
            "repeats": repeats,
            "bound": bound,
            "faults": dict(runner.faults),
            "outages": dict(runner.outages_started),
        }
    )
