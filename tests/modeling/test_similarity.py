"""Exact and approximate token-level top-k against brute force; ties, self-exclusion, bounded memory, bf16."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from conftest import REPO_ROOT
from reference_similarity import brute_force_token_similarity
from torch.utils._python_dispatch import TorchDispatchMode

from mra_cir.retrieval.approximate_search import ApproximateTokenIndex, approximate_topk_token_similarity
from mra_cir.retrieval.similarity import topk_token_similarity
from mra_cir.tiny import synthetic_clustered_tokens


def _tokens(*shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=gen), dim=-1)


def _reference_topk(full: torch.Tensor, k: int):
    scores, indices = full.sort(dim=1, descending=True, stable=True)  # stable: ties keep the lower index first
    return scores[:, :k], indices[:, :k]


SHAPES = [  # (queries shape, keys shape)
    ((9, 5, 8), (37, 5, 8)),  # N != M
    ((1, 4, 16), (50, 4, 16)),  # one query
    ((12, 16), (40, 3, 16)),  # (N, D) composed queries against multi-token keys
    ((20, 16), (33, 16)),  # Q = 1 on both sides
    ((30, 2, 8), (300, 6, 8)),  # different Q on each side, several key blocks
]


@pytest.mark.parametrize("reduce", ["max", "mean_max"])
@pytest.mark.parametrize("q_shape,k_shape", SHAPES)
@pytest.mark.parametrize("blocks", [(None, None), (3, 7), (1, 1)])
def test_exact_matches_brute_force(q_shape, k_shape, reduce, blocks):
    queries, keys = _tokens(*q_shape, seed=1), _tokens(*k_shape, seed=2)
    k = min(7, k_shape[0])
    qbs, kbs = blocks
    scores, indices = topk_token_similarity(queries, keys, k, reduce=reduce, block_size=kbs, query_block_size=qbs)
    ref_scores, ref_indices = _reference_topk(brute_force_token_similarity(queries, keys, reduce), k)
    assert scores.dtype == torch.float32 and indices.dtype == torch.int64
    assert scores.shape == (q_shape[0], k)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)
    assert torch.equal(indices, ref_indices)


@pytest.mark.parametrize("reduce", ["max", "mean_max"])
def test_exclude_self(reduce):
    feats = _tokens(25, 4, 8, seed=3)
    scores, indices = topk_token_similarity(feats, feats, 24, reduce=reduce, exclude_self=True, block_size=4)
    full = brute_force_token_similarity(feats, feats, reduce)
    full.fill_diagonal_(float("-inf"))
    ref_scores, ref_indices = _reference_topk(full, 24)
    assert torch.equal(indices, ref_indices)
    assert not (indices == torch.arange(25)[:, None]).any()
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)
    # without exclusion every item finds itself first (score 1 for L2-normalised tokens)
    _, with_self = topk_token_similarity(feats, feats, 1, reduce=reduce)
    assert torch.equal(with_self[:, 0], torch.arange(25))


def test_exclude_self_subset_with_query_indices():
    feats = _tokens(30, 3, 8, seed=4)
    rows = torch.arange(10, 20)
    _, sub = topk_token_similarity(feats[rows], feats, 5, exclude_self=True, query_indices=rows, block_size=6)
    _, full = topk_token_similarity(feats, feats, 5, exclude_self=True)
    assert torch.equal(sub, full[rows])
    with pytest.raises(ValueError, match="same collection"):
        topk_token_similarity(feats[:5], feats, 3, exclude_self=True)


def test_ties_lower_index_first_across_blocks():
    base = _tokens(6, 3, 8, seed=5)
    # keys: 40 items, many exact copies of the same items at scattered positions -> equal scores
    order = torch.tensor([i % 6 for i in range(40)])
    keys = base[order]
    query = base[:2]
    for block in (1, 3, 7, None):
        scores, indices = topk_token_similarity(query, keys, 12, block_size=block)
        for row in range(2):
            s, i = scores[row].tolist(), indices[row].tolist()
            for a in range(len(s) - 1):
                assert s[a] > s[a + 1] or (s[a] == s[a + 1] and i[a] < i[a + 1]), (block, s, i)
        # the query equals every copy of itself: the first 7 results are its copies in index order
        assert indices[0, :7].tolist() == [j for j in range(40) if j % 6 == 0]


def test_fp32_scores_and_bf16_inputs():
    queries, keys = _tokens(10, 4, 32, seed=6), _tokens(80, 4, 32, seed=7)
    scores, indices = topk_token_similarity(queries.bfloat16(), keys.bfloat16(), 5)
    assert scores.dtype == torch.float32
    exact = brute_force_token_similarity(queries, keys)
    # the bf16 score of each returned key is its fp32 score up to bf16 rounding
    torch.testing.assert_close(scores, exact.gather(1, indices), atol=2e-2, rtol=0)
    # and the returned keys are (near-)best: the k-th bf16 score is within rounding of the exact k-th score
    kth_exact = exact.topk(5, dim=1).values[:, -1]
    assert (scores[:, -1] >= kth_exact - 2e-2).all()


@pytest.mark.parametrize("bad", ["k0", "kbig", "dim", "reduce"])
def test_input_errors(bad):
    queries, keys = _tokens(3, 2, 8), _tokens(5, 2, 8)
    with pytest.raises(ValueError):
        if bad == "k0":
            topk_token_similarity(queries, keys, 0)
        elif bad == "kbig":
            topk_token_similarity(keys, keys, 5, exclude_self=True)
        elif bad == "dim":
            topk_token_similarity(queries, _tokens(5, 2, 4), 2)
        else:
            topk_token_similarity(queries, keys, 2, reduce="mean")


class _LargestTensor(TorchDispatchMode):
    """Records the largest tensor any aten op produces (an honest allocation probe for CPU torch)."""

    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out


def test_memory_bounded_by_block_not_by_n_times_m():
    n, q, d = 400, 16, 8
    feats = _tokens(n, q, d, seed=8)
    full_bytes = n * n * q * q * 4  # the (N, M, Q, Q) fp32 score tensor: 164 MB
    budget = 1 << 20
    with _LargestTensor() as probe:
        scores, indices = topk_token_similarity(feats, feats, 10, exclude_self=True, max_block_bytes=budget)
    inputs = feats.numel() * 4
    assert probe.largest <= max(budget, inputs), probe.largest
    assert probe.largest * 100 < full_bytes
    ref = brute_force_token_similarity(feats[:20], feats)
    ref[torch.arange(20), torch.arange(20)] = float("-inf")
    assert torch.equal(indices[:20], _reference_topk(ref, 10)[1])


def test_run_whose_full_score_tensor_does_not_fit():
    """Under an address-space limit of (current + 1 GiB), the (N, M, Q, Q) = 4.1 GB fp32 score tensor of N=M=2000,
    Q=16 cannot be allocated (the brute force fails there), yet the blocked search completes and matches it."""
    code = textwrap.dedent(
        """
        import json, resource, torch
        from mra_cir.retrieval.similarity import topk_token_similarity
        from reference_similarity import brute_force_token_similarity
        torch.manual_seed(0)
        x = torch.nn.functional.normalize(torch.randn(2000, 16, 16), dim=-1)
        topk_token_similarity(x[:64], x, 5)  # warm up threads and allocator before the limit
        with open("/proc/self/statm") as f:
            vm_bytes = int(f.read().split()[0]) * resource.getpagesize()
        resource.setrlimit(resource.RLIMIT_AS, (vm_bytes + (1 << 30), resource.RLIM_INFINITY))
        try:
            brute_force_token_similarity(x, x)
            brute = "fits"
        except (MemoryError, RuntimeError) as err:
            brute = "out of memory"
        s, i = topk_token_similarity(x, x, 5, exclude_self=True)
        ref = brute_force_token_similarity(x[:50], x)
        ref[torch.arange(50), torch.arange(50)] = float("-inf")
        same = torch.equal(i[:50], ref.sort(dim=1, descending=True, stable=True).indices[:, :5])
        print(json.dumps({"brute": brute, "same": same, "finite": bool(s.isfinite().all())}))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO_ROOT / "tests"
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result == {"brute": "out of memory", "same": True, "finite": True}


def test_approximate_recall_and_exact_rerank():
    keys = synthetic_clustered_tokens(3000, 8, 64, num_clusters=30, item_noise=0.4, token_noise=0.4, seed=9)
    queries = keys[:60]
    for mode in ("pooled", "tokens"):
        result = approximate_topk_token_similarity(
            queries, keys, 10, exclude_self=False, mode=mode, n_candidates=300, recall_sample=30
        )
        assert result.stats["mode"] == mode and result.stats["recall_sample"] == 30
        assert 0.9 <= result.stats["recall_at_k"] <= 1.0, result.stats
        # the returned scores are exact scores of the returned keys (exact re-rank)
        exact = brute_force_token_similarity(queries, keys)
        torch.testing.assert_close(result.scores, exact.gather(1, result.indices), atol=1e-5, rtol=0)
        assert (result.scores[:, :-1] >= result.scores[:, 1:]).all()


def test_approximate_self_exclusion_and_ivf():
    keys = synthetic_clustered_tokens(2000, 4, 32, num_clusters=20, item_noise=0.3, token_noise=0.3, seed=10)
    index = ApproximateTokenIndex(keys, index_factory="IVF16,Flat", nprobe=4)
    assert index.nprobe == 4
    rows = torch.arange(0, 2000, 50)
    result = index.search(keys[rows], 5, query_indices=rows, recall_sample=40)
    assert not (result.indices == rows[:, None]).any()
    assert result.stats["recall_at_k"] >= 0.9
    assert math.isfinite(result.scores.sum().item())


def test_benchmark_script_quick():
    proc = subprocess.run(
        [sys.executable, str(REPO_ROOT / "benchmarks" / "bench_similarity.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    keys = [
        "exact_fp32_ratio_to_matmul",
        "exact_bf16_ratio_to_matmul",
        "exact_peak_extra_mib",
        "approx_speedup",
        "approx_window_agreement",
    ]
    for key in keys:
        assert math.isfinite(report[key]) and report[key] >= 0, (key, report[key])
    assert 0 <= report["approx_window_agreement"] <= 1
    assert report["detail"]["exact"]["fp32"]["scores_finite"]
