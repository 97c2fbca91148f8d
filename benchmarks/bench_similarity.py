"""Token-level top-k search speed, as ratios to this machine's matmul measured in the same run. Prints ONE JSON object.

Exact (`topk_token_similarity`, reduce="max"): N queries against M keys, Q tokens of D dims, fp32 then bf16; the
effective rate is `2 N M Q^2 D / time` (the FLOP of the definition), compared with `torch.matmul` of two 2048 x 2048
matrices of the same dtype. The search runs in `--chunks` query slices (aligned to query blocks, so the same tiles
as one call) and the matmul reference (median of 3) is sampled before every slice and after the last; the reference
is the mean of the samples, so it sees the same machine load as the search on a shared machine.

Peak memory beyond the inputs: on CPU, the process RSS is sampled every 2 ms by a background thread (psutil) during the
search, and the peak minus the RSS just before the search is reported (torch's CPU allocator has no counters and
tracemalloc does not see it); on CUDA, `torch.cuda.max_memory_allocated()` minus the allocation before the search.

Approximate: M clustered synthetic items (`synthetic_clustered_tokens`: cluster aspect centres + item + token noise;
uniform noise has no neighbours to find), stored in bf16. On a sample of queries (the references of a mining run),
the exact search and the approximate one (`ApproximateTokenIndex`: faiss IVF on pooled vectors, exact re-rank of the
candidates) are timed on the same queries: `approx_speedup` is the ratio of their per-query times (index build
reported separately, it is paid once). `approx_window_agreement`: one target is drawn per reference from the
approximate ranks q1..q2 exactly as `sample_rank_window` does (same per-reference seeding); the fraction whose exact rank
lies in [q1, q2].

Usage:

```bash
python benchmarks/bench_similarity.py            # N=1000, M=20000, Q=32, D=256; approx M=200000, 100 queries
python benchmarks/bench_similarity.py --quick    # a small smoke run (seconds)
```
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mra_cir.dataset_builders.mra_triplets.mining import reference_rng  # noqa: E402
from mra_cir.retrieval.approximate_search import ApproximateTokenIndex  # noqa: E402
from mra_cir.retrieval.similarity import default_block_sizes, topk_token_similarity  # noqa: E402
from mra_cir.tiny import synthetic_clustered_tokens  # noqa: E402


class MatmulReference:
    """`torch.matmul` GFLOP/s of two `size x size` matrices (buffers allocated once, so that sampling the reference
    during the search adds nothing to the search's peak memory)."""

    def __init__(self, device: torch.device, dtype: torch.dtype, size: int = 2048):
        self.device, self.size = device, size
        self.a = torch.randn(size, size, device=device).to(dtype)
        self.b = torch.randn(size, size, device=device).to(dtype)
        self.out = torch.empty(size, size, device=device, dtype=dtype)

    def gflops(self, repeats: int = 3) -> float:
        times = []
        for _ in range(repeats + 1):
            _sync(self.device)
            start = time.perf_counter()
            torch.matmul(self.a, self.b, out=self.out)
            _sync(self.device)
            times.append(time.perf_counter() - start)
        return 2 * self.size**3 / statistics.median(times[1:]) / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak extra memory of a block: CUDA allocator counters, or sampled process RSS on CPU (psutil, 2 ms)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_extra = 0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = torch.cuda.memory_allocated(self.device)
            return self
        import psutil

        self.process = psutil.Process(os.getpid())
        self.base = self.process.memory_info().rss
        self.peak = self.base
        self.running = True
        self.thread = threading.Thread(target=self._sample, daemon=True)
        self.thread.start()
        return self

    def _sample(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_extra = torch.cuda.max_memory_allocated(self.device) - self.base
        else:
            self.running = False
            self.thread.join()
            self.peak = max(self.peak, self.process.memory_info().rss)
            self.peak_extra = self.peak - self.base
        return False


def random_tokens(n: int, q: int, d: int, seed: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    out = torch.empty(n, q, d, dtype=dtype, device=device)
    for start in range(0, n, 4096):
        stop = min(start + 4096, n)
        chunk = torch.randn(stop - start, q, d, generator=gen)
        out[start:stop] = torch.nn.functional.normalize(chunk, dim=-1).to(device=device, dtype=dtype)
    return out


def bench_exact(args, device: torch.device) -> tuple[dict, dict]:
    keys32 = random_tokens(args.m, args.q, args.d, 0, torch.float32, device)
    queries32 = keys32[: args.n].clone()  # queries drawn from the collection, as in mining
    flop = 2 * args.n * args.m * args.q**2 * args.d
    top, detail = {}, {"flop": flop}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        keys = keys32 if dtype == torch.float32 else keys32.to(dtype)
        queries = queries32.to(dtype)
        nb, mb = default_block_sizes(args.q, args.q, device, dtype)
        matmul = MatmulReference(device, dtype, args.matmul_size)
        rows = torch.arange(args.n, device=device)
        # the search runs in `chunks` slices of the queries (aligned to query blocks: the same tiles as one call);
        # the matmul reference is sampled before every slice and after the last, so it sees the same machine load
        step = -(-args.n // args.chunks // nb) * nb
        reference_samples, cpu_seconds, elapsed, parts = [], 0.0, 0.0, []
        with PeakMemory(device) as mem:  # spans the warm-up: the first call allocates the tile buffers
            topk_token_similarity(queries[:nb], keys[: min(args.m, 2 * mb)], 10)  # warm-up, full-size tiles
            for start in range(0, args.n, step):
                reference_samples.append(matmul.gflops())
                chunk = slice(start, min(start + step, args.n))
                _sync(device)
                wall, cpu = time.perf_counter(), time.process_time()
                parts.append(
                    topk_token_similarity(queries[chunk], keys, args.k, exclude_self=True, query_indices=rows[chunk])
                )
                _sync(device)
                elapsed += time.perf_counter() - wall
                cpu_seconds += time.process_time() - cpu
        reference_samples.append(matmul.gflops())
        scores = torch.cat([p[0] for p in parts])
        reference = statistics.mean(reference_samples)
        gflops = flop / elapsed / 1e9
        top[f"exact_{name}_ratio_to_matmul"] = gflops / reference
        detail[name] = {
            "seconds": elapsed,
            "gflops": gflops,
            "matmul_gflops_mean": reference,
            "matmul_gflops_samples": reference_samples,
            "cpu_seconds": cpu_seconds,
            "cpu_gflops_per_thread": flop / cpu_seconds / 1e9 if device.type == "cpu" else None,
            "peak_extra_mib": mem.peak_extra / 2**20,
            "query_block": nb,
            "key_block": mb,
            "tile_mib": nb * args.q * mb * args.q * keys.element_size() / 2**20,
            "scores_finite": bool(torch.isfinite(scores).all()),
        }
        del keys, queries
    top["exact_peak_extra_mib"] = max(detail["fp32"]["peak_extra_mib"], detail["bf16"]["peak_extra_mib"])
    detail["inputs_mib"] = (keys32.numel() + queries32.numel()) * 4 / 2**20
    return top, detail


def bench_approximate(args, device: torch.device) -> tuple[dict, dict]:
    keys = synthetic_clustered_tokens(args.approx_m, args.q, args.d, seed=1, dtype=torch.bfloat16).to(device)
    gen = torch.Generator().manual_seed(2)
    sample = torch.randperm(args.approx_m, generator=gen)[: args.approx_queries].sort().values.to(device)
    queries = keys[sample]
    depth = args.q2 + 16

    start = time.perf_counter()
    index = ApproximateTokenIndex(keys, mode="pooled")
    build = time.perf_counter() - start

    _sync(device)
    start = time.perf_counter()
    result = index.search(queries, depth, n_candidates=args.n_candidates, query_indices=sample)
    _sync(device)
    approx_time = time.perf_counter() - start

    start = time.perf_counter()
    _, exact = topk_token_similarity(queries, keys, depth, exclude_self=True, query_indices=sample)
    _sync(device)
    exact_time = time.perf_counter() - start

    approx_idx, exact = result.indices.cpu(), exact.cpu()
    in_window, window_all, recall = 0, [], []
    q1, q2 = args.q1, args.q2
    for row, ref in enumerate(sample.tolist()):
        exact_rank = {j: r + 1 for r, j in enumerate(exact[row].tolist())}
        window = approx_idx[row, q1 - 1 : q2].tolist()
        pick = window[int(reference_rng(args.seed, str(ref)).integers(len(window)))]
        in_window += q1 <= exact_rank.get(pick, depth + 1) <= q2
        window_all += [q1 <= exact_rank.get(j, depth + 1) <= q2 for j in window]
        recall.append(len(set(approx_idx[row, :q2].tolist()) & set(exact[row, :q2].tolist())) / q2)
    top = {
        "approx_speedup": exact_time / approx_time,
        "approx_window_agreement": in_window / len(sample),
    }
    detail = {
        "m": args.approx_m,
        "queries": len(sample),
        "storage_dtype": "bfloat16",
        "index_factory": index.index_factory,
        "nprobe": index.nprobe,
        "n_candidates": result.stats["n_candidates"],
        "index_build_seconds": build,
        "exact_seconds_per_query": exact_time / len(sample),
        "approx_seconds_per_query": approx_time / len(sample),
        "recall_at_q2": sum(recall) / len(recall),
        "whole_window_agreement": sum(window_all) / len(window_all),
        "window": [q1, q2],
    }
    return top, detail


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small smoke sizes (seconds)")
    parser.add_argument("--n", type=int, default=1000, help="exact: queries")
    parser.add_argument("--m", type=int, default=20000, help="exact: keys")
    parser.add_argument("--q", type=int, default=32, help="tokens per item")
    parser.add_argument("--d", type=int, default=256, help="token dimension")
    parser.add_argument("--k", type=int, default=60, help="exact: results per query")
    parser.add_argument("--approx-m", type=int, default=200_000, help="approximate: collection size")
    parser.add_argument("--approx-queries", type=int, default=100, help="approximate: sampled queries")
    parser.add_argument("--n-candidates", type=int, default=600, help="approximate: candidates re-ranked per query")
    parser.add_argument("--q1", type=int, default=51)
    parser.add_argument("--q2", type=int, default=60)
    parser.add_argument("--matmul-size", type=int, default=2048, help="reference: square matmul size")
    parser.add_argument("--chunks", type=int, default=8, help="exact: query slices, reference sampled between them")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.n, args.m, args.approx_m, args.approx_queries = 32, 600, 3000, 20
        args.q, args.d, args.k, args.q1, args.q2, args.n_candidates = 8, 64, 10, 6, 10, 200
        args.matmul_size = 1024
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    exact_top, exact_detail = bench_exact(args, device)
    approx_top, approx_detail = bench_approximate(args, device)
    report = {
        **exact_top,
        **approx_top,
        "detail": {
            "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "sizes": {
                "n": args.n,
                "m": args.m,
                "q": args.q,
                "d": args.d,
                "k": args.k,
                "quick": args.quick,
                "matmul_size": args.matmul_size,
            },
            "peak_memory_method": "CUDA max_memory_allocated delta"
            if device.type == "cuda"
            else "sampled process RSS (psutil, 2 ms) peak minus RSS before the search",
            "exact": exact_detail,
            "approximate": approx_detail,
        },
    }
    for key in ("exact_fp32_ratio_to_matmul", "exact_bf16_ratio_to_matmul", "approx_speedup"):
        if not math.isfinite(report[key]):
            raise RuntimeError(f"{key} is not finite: {report[key]}")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
