"""Approximate token-level search: faiss candidates, re-ranked exactly (for millions of images).

`ApproximateTokenIndex` generates candidates with faiss, either on pooled item vectors (mean of the tokens,
renormalised; IVF above `ivf_threshold` items) or on all key tokens (each query token's nearest tokens, mapped to their
items), then re-ranks the candidates exactly with the same reductions as [`.similarity.topk_token_similarity`]. It
reports the recall of the exact top-k on a sample of queries.

Cost (Q = 32, D = 256, `C` candidates re-ranked): the IVF probe visits `nprobe * M / nlist` pooled vectors (`2 D` FLOP
each) and the re-rank costs `5.2e5 * C` (C = 600: 3.1e8 FLOP) whatever M. Defaults `nlist = 4 sqrt(M)`,
`nprobe = max(16, nlist / 16)` visit M / 16 vectors: 200k: 6.4e6 FLOP, 1M: 3.2e7, 10M: 3.2e8 (a fixed `nprobe=64`
keeps it at 2.6e7 for 10M). Since exact search grows as M and the approximate query stays ~3.1e8-6.3e8 FLOP, the
speed-up grows about linearly with M (measured figures: `docs/performance.md`). Memory: the pooled flat IVF index takes
`M * D * 4` bytes (1 GB at 1M, 10 GB at 10M; IVF-PQ ~64 B per item); IVF training wants >= 39 * nlist points. Recall
depends on C covering the neighbourhood: clusters of ~100 items fit in C = 600; data with looser neighbourhoods needs
a larger C or `mode="tokens"` (all tokens indexed: Q times the index memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .similarity import REDUCTIONS, as_tokens, pack_scores, topk_token_similarity, unpack_scores


def rerank_candidates(
    queries: torch.Tensor,
    keys: torch.Tensor,
    candidates: torch.Tensor,
    k: int,
    reduce: str = "max",
    query_indices: torch.Tensor | None = None,
    query_block_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact scores of candidate keys, then the top-k among them (ties: lower index first).

    Args:
        queries (`torch.Tensor` of shape `(N, Q, D)` or `(N, D)`): query tokens.
        keys (`torch.Tensor` of shape `(M, Q', D)` or `(M, D)`): key tokens.
        candidates (`torch.LongTensor` of shape `(N, C)`): candidate key indices per query; -1 marks padding.
            Repeated candidates in a row are counted once.
        k (`int`): results per query. Rows with fewer than k valid candidates are padded with score `-inf` and
            index -1.
        query_indices (`torch.LongTensor` of shape `(N,)`, *optional*): position of each query in `keys`: that key is
            excluded from the query's results (self-exclusion).

    Returns:
        `(scores, indices)` of shape `(N, k)`: fp32 descending and int64.
    """
    queries = as_tokens(queries, "queries")
    keys = as_tokens(keys, "keys")
    n, qa, d = queries.shape
    _, qb, _ = keys.shape
    dtype = torch.promote_types(queries.dtype, keys.dtype)
    device = queries.device
    candidates = candidates.to(device)
    c = candidates.shape[1]
    # dedupe per row: sort, mark repeats as -1
    cand_sorted = candidates.sort(dim=1).values
    repeat = torch.zeros_like(cand_sorted, dtype=torch.bool)
    repeat[:, 1:] = cand_sorted[:, 1:] == cand_sorted[:, :-1]
    cand_sorted = cand_sorted.masked_fill(repeat, -1)
    if query_indices is not None:
        query_indices = torch.as_tensor(query_indices, dtype=torch.long, device=device)
        cand_sorted = cand_sorted.masked_fill(cand_sorted == query_indices[:, None], -1)
    nb = query_block_size or max(1, (64 << 20) // max(1, c * qb * d * torch.empty((), dtype=dtype).element_size()))
    out_scores = torch.full((n, k), float("-inf"), device=device)
    out_indices = torch.full((n, k), -1, dtype=torch.long, device=device)
    with torch.no_grad():
        for n0 in range(0, n, nb):
            n1 = min(n0 + nb, n)
            cand = cand_sorted[n0:n1]
            valid = cand >= 0
            gathered = keys[cand.clamp_min(0).flatten().to(keys.device)]
            gathered = gathered.to(device=device, dtype=dtype).view(n1 - n0, c * qb, d)
            q = queries[n0:n1].to(dtype)
            if reduce == "max":
                tile = torch.bmm(q, gathered.transpose(1, 2))  # (b, Qa, C*Qb)
                scores = tile.amax(dim=1).view(n1 - n0, c, qb).amax(dim=2).float()
            elif reduce == "mean_max":
                tile = torch.bmm(gathered, q.transpose(1, 2))  # (b, C*Qb, Qa)
                scores = tile.view(n1 - n0, c, qb, qa).amax(dim=2).float().mean(dim=2)
            else:
                raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
            scores = scores.masked_fill(~valid, float("-inf"))
            packed = pack_scores(scores, cand.clamp_min(0))
            kk = min(k, c)
            top = packed.topk(kk, dim=1, sorted=True).values
            s, i = unpack_scores(top)
            i = i.masked_fill(torch.isinf(s) & (s < 0), -1)
            out_scores[n0:n1, :kk], out_indices[n0:n1, :kk] = s, i
    return out_scores, out_indices


# ----------------------------------------------------------------------------------------------------------------------
# Approximate search
# ----------------------------------------------------------------------------------------------------------------------
def pooled_vectors(features: torch.Tensor) -> torch.Tensor:
    """Mean of the tokens, L2-normalised: `(N, Q, D)` or `(N, D)` -> fp32 `(N, D)` (the candidate-generation space)."""
    features = as_tokens(features, "features")
    out = torch.empty(features.shape[0], features.shape[2], device=features.device)
    for start in range(0, features.shape[0], 8192):  # chunked: never a full fp32 copy of bf16 features
        out[start : start + 8192] = features[start : start + 8192].float().mean(dim=1)
    return torch.nn.functional.normalize(out, dim=-1)


@dataclass
class ApproximateSearchResult:
    """Output of [`ApproximateTokenIndex.search`].

    Args:
        scores (`torch.Tensor` of shape `(N, k)`): exact fp32 scores of the re-ranked candidates, descending
            (`-inf` where fewer than k candidates were found).
        indices (`torch.LongTensor` of shape `(N, k)`): key indices (-1 where fewer than k candidates were found).
        stats (`dict`): `n_candidates`, `mode`, and with `recall_sample > 0`: `recall_at_k` (mean fraction of the exact
            top-k found), `recall_sample` (queries checked).
    """

    scores: torch.Tensor
    indices: torch.Tensor
    stats: dict = field(default_factory=dict)


class ApproximateTokenIndex:
    """Two-stage search over multi-token keys: faiss candidates, exact token-level re-rank.

    Args:
        keys (`torch.Tensor` of shape `(M, Q, D)` or `(M, D)`): L2-normalised key tokens (kept by reference; bf16
            storage halves the memory).
        mode (`str`, defaults to `"pooled"`): `"pooled"` indexes one mean vector per item; `"tokens"` indexes all
            `M * Q` tokens and maps a query token's neighbours to their items (better recall for `reduce="max"`,
            Q times the index size).
        index_factory (`str`, *optional*): a faiss index factory string (inner product metric). Default: `"Flat"`
            below `ivf_threshold` vectors, else `"IVF{4 sqrt(n)},Flat"`.
        nprobe (`int`, *optional*): IVF lists visited per query (default `max(16, nlist // 16)`).
        ivf_threshold (`int`, defaults to 100000): vectors above which the default index is IVF.
        train_size (`int`, defaults to 50000): vectors sampled to train an IVF index.
        seed (`int`, defaults to 0): sampling seed for training.

    Example:

    ```python
    >>> index = ApproximateTokenIndex(gallery_tokens)  # (M, Q, D)
    >>> result = index.search(query_tokens, k=10, recall_sample=100)
    >>> result.indices.shape, result.stats["recall_at_k"]
    ```
    """

    def __init__(
        self,
        keys: torch.Tensor,
        mode: str = "pooled",
        index_factory: str | None = None,
        nprobe: int | None = None,
        ivf_threshold: int = 100_000,
        train_size: int = 50_000,
        seed: int = 0,
    ):
        import faiss

        if mode not in ("pooled", "tokens"):
            raise ValueError(f"mode must be 'pooled' or 'tokens', got {mode!r}")
        self.keys = as_tokens(keys, "keys")
        self.mode = mode
        m, q, d = self.keys.shape
        if mode == "pooled":
            vectors = pooled_vectors(self.keys).cpu()
        else:  # all tokens, as a (M*Q, D) view; converted to fp32 chunk by chunk
            vectors = self.keys.reshape(m * q, d)
        n_vec = vectors.shape[0]
        if index_factory is None:
            index_factory = "Flat" if n_vec <= ivf_threshold else f"IVF{int(4 * math.sqrt(n_vec))},Flat"
        self.index_factory = index_factory
        self.index = faiss.index_factory(d, index_factory, faiss.METRIC_INNER_PRODUCT)
        if not self.index.is_trained:
            gen = torch.Generator().manual_seed(seed)
            sample = torch.randperm(n_vec, generator=gen)[:train_size] if n_vec > train_size else slice(None)
            self.index.train(np.ascontiguousarray(vectors[sample].float().cpu().numpy()))
        for start in range(0, n_vec, 262_144):
            self.index.add(np.ascontiguousarray(vectors[start : start + 262_144].float().cpu().numpy()))
        ivf = faiss.try_extract_index_ivf(self.index)
        if ivf is not None:
            ivf.nprobe = nprobe or max(16, ivf.nlist // 16)
        self.nprobe = ivf.nprobe if ivf is not None else None

    def __len__(self) -> int:
        return self.keys.shape[0]

    def candidates(self, queries: torch.Tensor, n_candidates: int) -> torch.Tensor:
        """Candidate key indices `(N, C)` (-1 padded) for queries `(N, Q, D)` or `(N, D)`."""
        queries = as_tokens(queries, "queries")
        n, qa, d = queries.shape
        if self.mode == "pooled":
            _, ids = self.index.search(pooled_vectors(queries).cpu().numpy(), n_candidates)
            return torch.from_numpy(ids).long()
        per_token = max(1, math.ceil(n_candidates / qa))
        _, ids = self.index.search(queries.reshape(n * qa, d).float().cpu().numpy(), per_token)
        items = torch.from_numpy(ids).long().view(n, qa * per_token)
        items = torch.where(items >= 0, items // self.keys.shape[1], items)
        return items

    def search(
        self,
        queries: torch.Tensor,
        k: int,
        reduce: str = "max",
        n_candidates: int | None = None,
        query_indices: torch.Tensor | None = None,
        recall_sample: int = 0,
        seed: int = 0,
    ) -> ApproximateSearchResult:
        """Approximate top-k: faiss candidates, exact re-rank.

        Args:
            queries (`torch.Tensor` of shape `(N, Q, D)` or `(N, D)`): query tokens.
            k (`int`): results per query.
            reduce (`str`, defaults to `"max"`): `"max"` or `"mean_max"`.
            n_candidates (`int`, *optional*): candidates re-ranked per query (default `max(10 * k, 256)`, capped at M).
            query_indices (`torch.LongTensor` of shape `(N,)`, *optional*): position of each query in the keys, for
                self-exclusion (mining a collection against itself).
            recall_sample (`int`, defaults to 0): queries (sampled with `seed`) checked against the exact top-k to
                report `recall_at_k`.

        Returns:
            [`ApproximateSearchResult`].
        """
        queries = as_tokens(queries, "queries")
        m = len(self)
        extra = 1 if query_indices is not None else 0
        n_candidates = min(m, n_candidates or max(10 * k, 256) + extra)
        cand = self.candidates(queries, n_candidates)
        scores, indices = rerank_candidates(queries, self.keys, cand, k, reduce, query_indices=query_indices)
        stats = {"mode": self.mode, "index_factory": self.index_factory, "nprobe": self.nprobe}
        stats["n_candidates"] = n_candidates
        if recall_sample > 0:
            n = queries.shape[0]
            gen = torch.Generator().manual_seed(seed)
            sample = torch.randperm(n, generator=gen)[: min(recall_sample, n)].sort().values
            qi = None if query_indices is None else torch.as_tensor(query_indices)[sample]
            _, exact = topk_token_similarity(
                queries[sample], self.keys, k, reduce, exclude_self=qi is not None, query_indices=qi
            )
            stats["recall_at_k"] = topk_overlap(indices[sample].cpu(), exact.cpu())
            stats["recall_sample"] = int(sample.numel())
        return ApproximateSearchResult(scores, indices, stats)


def topk_overlap(approx_indices: torch.Tensor, exact_indices: torch.Tensor) -> float:
    """Mean over rows of `|approx ∩ exact| / k` for two `(N, k)` index tensors: how much of the exact top-k the
    approximate search finds (reported as `stats["recall_at_k"]`; retrieval recall is `mra_cir.evaluation.metrics`)."""
    hits = (approx_indices[:, :, None] == exact_indices[:, None, :]).any(dim=2).sum(dim=1)
    return float(hits.float().mean().item() / exact_indices.shape[1])


def approximate_topk_token_similarity(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    reduce: str = "max",
    exclude_self: bool = False,
    *,
    mode: str = "pooled",
    n_candidates: int | None = None,
    query_indices: torch.Tensor | None = None,
    recall_sample: int = 0,
    seed: int = 0,
    **index_kwargs,
) -> ApproximateSearchResult:
    """One-shot approximate top-k (builds an [`ApproximateTokenIndex`] over `keys`, then searches).

    Same arguments as [`topk_token_similarity`] plus the index's (`mode`, `index_factory`, `nprobe`, ...) and
    `n_candidates`, `recall_sample`. Returns an [`ApproximateSearchResult`] (scores, indices, stats).
    """
    queries = as_tokens(queries, "queries")
    if exclude_self and query_indices is None:
        if queries.shape[0] != as_tokens(keys, "keys").shape[0]:
            raise ValueError("exclude_self=True requires queries and keys to be the same collection (N == M)")
        query_indices = torch.arange(queries.shape[0])
    index = ApproximateTokenIndex(keys, mode=mode, seed=seed, **index_kwargs)
    return index.search(
        queries,
        k,
        reduce=reduce,
        n_candidates=n_candidates,
        query_indices=query_indices if exclude_self else None,
        recall_sample=recall_sample,
        seed=seed,
    )
