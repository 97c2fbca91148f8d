"""Throughput of the agent's OpenAI-compatible backend against local `transformers serve` processes.

Prints ONE JSON object:

- `pairs_per_s_one_server`: modification requests (one per pair, two images each) per second through the full client
  path (`CachedAgent` with a fresh sqlite cache -> `OpenAIAgent` -> HTTP) against one server, `concurrency` requests in
  flight per server (default 2: the server generates one VLM request at a time, and a second request queued behind it
  hides the client's round trip; measured on 2 idle cores: concurrency 1 gave a fleet speed-up of 1.30, 2 gave 1.58);
- `pairs_per_s_fleet`: the same against a fleet of two servers (round-robin over both URLs);
- `fleet_speedup`: their ratio (`transformers serve` generates one VLM request at a time: a fleet is where concurrency
  pays; each server is pinned to one thread, so the expected ceiling on 2 cores is ~2);
- `server_bound_pairs_per_s`: the bound set by the server's own time: the same requests sent one after another over one
  kept-alive connection with a bare `httpx.Client` (no cache, no filters, no asyncio), i.e. 1 / mean request time.
  This includes the server's HTTP handling and one loopback round trip, so it slightly flatters the bound;
- `client_efficiency`: `pairs_per_s_one_server / server_bound_pairs_per_s` (goal >= 0.9: the cache, the filters and
  the async client add little); `client_efficiency_median`: the median over the repeats of the same ratio taken
  between a bound run and the client run right after it (less sensitive to load that comes and goes).

The client keeps its requests in flight without batch boundaries (`OpenAIAgent.complete_stream`: answers are
committed to the cache as they come) over one kept-alive connection per server.

Usage: `python benchmarks/bench_agent.py [--pairs 48] [--max-new-tokens 64] [--concurrency 2] [--repeats 5]`
(each measurement is the best of `--repeats` interleaved runs: other load on a shared machine only slows runs down).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import httpx  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from mra_cir.dataset_builders.agents.base import AgentImage, ModificationRequest  # noqa: E402
from mra_cir.dataset_builders.agents.cache import CachedAgent, ResponseCache  # noqa: E402
from mra_cir.dataset_builders.agents.filters import OutputFilter  # noqa: E402
from mra_cir.dataset_builders.agents.openai_backend import OpenAIAgent  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", FIXTURES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _requests(folder: Path, pairs: int) -> list[ModificationRequest]:
    images = []
    for i in range(pairs + 1):
        path = folder / f"im{i:03d}.png"
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(path)
        images.append(AgentImage.from_path(path))
    return [ModificationRequest(images[i], images[i + 1], f"caption {i}", f"caption {i + 1}") for i in range(pairs)]


def _client_run(model: str, urls: list[str], requests, concurrency: int, max_new_tokens: int, cache_path: Path):
    agent = OpenAIAgent(model, urls, max_concurrency=concurrency, max_new_tokens=max_new_tokens)
    cached = CachedAgent(agent, ResponseCache(cache_path))
    output_filter = OutputFilter()
    start = time.perf_counter()
    texts = cached.modify(requests)
    kept = [output_filter.modification(t, r.reference_caption, r.target_caption) for r, t in zip(requests, texts)]
    elapsed = time.perf_counter() - start
    assert cached.stats.calls == len(requests) and cached.stats.failed == 0, cached.stats
    return len(requests) / elapsed, sum(k is not None for k in kept)


def _server_bound(model: str, url: str, requests, max_new_tokens: int) -> float:
    agent = OpenAIAgent(model, url, max_new_tokens=max_new_tokens)
    bodies = [agent.payload(agent.modify_request(r)) for r in requests]
    with httpx.Client(timeout=120) as client:
        start = time.perf_counter()
        for body in bodies:
            response = client.post(f"{url}/chat/completions", json=body)
            response.raise_for_status()
        elapsed = time.perf_counter() - start
    return len(bodies) / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=48)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5, help="best of N for each measurement (shared machine)")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="requests in flight per server (transformers serve runs one VLM request at a time; 2 hides the round trip)",
    )
    args = parser.parse_args()
    servers = _load("agent_servers")
    os.environ["OMP_NUM_THREADS"] = "1"  # each server process on one core (inherited by the subprocesses)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = str(_load("make_tiny_vlm").make_tiny_vlm(tmp / "vlm"))
        (tmp / "images").mkdir()
        requests = _requests(tmp / "images", args.pairs)
        first = servers.ServeProcess(model, log_path=tmp / "serve1.log")
        second = servers.ServeProcess(model, log_path=tmp / "serve2.log")
        try:
            first.start()
            second.start()
            for url in (first.url, second.url):  # warm-up: model load, first forward
                _server_bound(model, url, requests[:2], args.max_new_tokens)
            bound = one = fleet = 0.0
            ratios = []
            for repeat in range(args.repeats):  # interleaved, best of N: other load on the machine only slows down
                bound_now = _server_bound(model, first.url, requests, args.max_new_tokens)
                rate, kept = _client_run(
                    model, [first.url], requests, args.concurrency, args.max_new_tokens, tmp / f"one{repeat}.sqlite"
                )
                bound, one = max(bound, bound_now), max(one, rate)
                ratios.append(rate / bound_now)
                rate, _ = _client_run(
                    model, [first.url, second.url], requests, 2 * args.concurrency, args.max_new_tokens,
                    tmp / f"fleet{repeat}.sqlite",
                )  # fmt: skip
                fleet = max(fleet, rate)
        finally:
            first.stop()
            second.stop()
    print(
        json.dumps(
            {
                "benchmark": "agent_openai_backend",
                "pairs": args.pairs,
                "max_new_tokens": args.max_new_tokens,
                "concurrency_per_server": args.concurrency,
                "repeats": args.repeats,
                "server": "transformers serve (tiny random Llava, CPU, OMP_NUM_THREADS=1 per server)",
                "cpu_count": os.cpu_count(),
                "load_average_1min": round(os.getloadavg()[0], 2),
                "server_bound_pairs_per_s": round(bound, 3),
                "pairs_per_s_one_server": round(one, 3),
                "pairs_per_s_fleet": round(fleet, 3),
                "fleet_speedup": round(fleet / one, 3),
                "client_efficiency": round(one / bound, 3),
                "client_efficiency_median": round(float(np.median(ratios)), 3),
                "kept_after_filters": kept,
            }
        )
    )


if __name__ == "__main__":
    main()
