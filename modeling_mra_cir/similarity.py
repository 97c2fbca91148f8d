"""Token-level similarity search: exact blocked top-k and an approximate two-stage (faiss + exact re-rank) mode.

Items are sets of L2-normalised token vectors, `(Q, D)` each (`get_image_features` returns `(N, Q, D)`; a composed
query `(D,)` is an item with one token). The similarity of a query `a` with a key `b` is a reduction of their token
cosine matrix `a @ b.T` of shape `(Q_a, Q_b)`:

- `"max"` (default, the paper): the maximum over all token pairs;
- `"mean_max"` (ColBERT-style): the mean over the query tokens of the maximum over the key tokens.

Exact search (`topk_token_similarity`) is one code path for mining (N = M images) and for gallery retrieval (B
composed queries). Because `max_{q,k} <a_q, b_k>` is the maximum of one matrix product, each (query block, key block)
pair is a single GEMM `(Nb*Q_a, D) @ (D, Mb*Q_b)` followed by a max over the `Q_a x Q_b` groups (first over the query
tokens, a strided row-wise max that vectorises, then over the contiguous key tokens). The GEMM does exactly the
`2 * N * M * Q_a * Q_b * D` FLOP of the definition, so the search runs at the machine's matmul speed. Blocks are
sized so that the temporary score tile stays small (at most `max_block_bytes`, 256 MiB by default), whatever N and M: memory is
bounded by one tile plus a running top-k of `(Nb, k)` per query block; the `N x M x Q x Q` tensor never exists.

The running top-k is exact and deterministic: scores are packed with their key index into one int64
(`sortable(score) * 2**32 + (2**32 - 1 - index)`), so `torch.topk` on the packed key orders by score and breaks ties
by the lower index, on CPU and CUDA alike.

Approximate search (`ApproximateTokenIndex`) generates candidates with faiss, either on pooled item vectors (mean of
the tokens, renormalised; IVF above `ivf_threshold` items) or on all key tokens (each query token's nearest tokens,
mapped to their items), then re-ranks the candidates exactly with the same reductions. It reports the recall of the
exact top-k on a sample of queries.

Cost and scaling (Q = 32, D = 256: one query-key pair is `2 * Q^2 * D = 524,288` FLOP; `C` candidates re-ranked):

- Exact, one query against M keys: `5.2e5 * M` FLOP, linear in M. M = 200k: 1.05e11 FLOP (measured 0.75-1.2 s per
  query in bf16 on the shared 2-core CPU of `benchmarks/bench_similarity.py`); 1M: 5.2e11 (~4-6 s); 10M: 5.2e12
  (~40-60 s). All-pairs mining (N = M) is quadratic: 1M images 5.2e17 FLOP (weeks on 2 CPU cores; about 17 minutes on
  one H200 at an effective 500 TFLOP/s bf16), 10M images 5.2e19 FLOP (about 29 hours on one H200).
- Approximate, one query: the IVF probe visits `nprobe * M / nlist` pooled vectors (`2 D` FLOP each) and the re-rank
  costs `5.2e5 * C` (C = 600: 3.1e8 FLOP) whatever M. Defaults `nlist = 4 sqrt(M)`, `nprobe = max(16, nlist / 16)`
  visit M / 16 vectors: 200k: 6.4e6 FLOP, 1M: 3.2e7, 10M: 3.2e8 (a fixed `nprobe=64` keeps it at 2.6e7 for 10M).
  Measured at 200k (three runs on a shared CPU): 6-21 ms per query, 29-175x faster than exact, recall@60 = 1.0. Since exact grows as M and the
  approximate query stays ~3.1e8-6.3e8 FLOP, the speed-up grows about linearly: ~600-900x at 1M, ~3,000-9,000x at
  10M (the lower figure with the default nprobe). All-pairs approximate mining: 1M x ~7-20 ms ~ 2-6 hours on 2 CPU cores,
  10M x ~10 ms ~ 28 hours (split across processes with `mra-cir mine` under `accelerate launch`).
- Memory: the tokens take `M * Q * D * 2` bytes in bf16: 3.3 GB at 200k, 16 GB at 1M, 164 GB at 10M (beyond one
  machine's RAM: memory-map the safetensors shards or shard the keys across processes). The pooled flat IVF index
  takes `M * D * 4` bytes (1 GB at 1M, 10 GB at 10M; IVF-PQ ~64 B per item: 640 MB). IVF training wants
  >= 39 * nlist points (490k at 10M). The exact search's own memory is one tile (<= `max_block_bytes`) plus (N, k).
- Recall depends on C covering the neighbourhood: the synthetic clusters (~100 items) fit in C = 600; data with
  looser neighbourhoods needs a larger C or `mode="tokens"` (all tokens indexed: Q times the index memory).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

REDUCTIONS = ("max", "mean_max")
_LOW32 = (1 << 32) - 1
_SHIFT = 1 << 32


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def _as_tokens(x: torch.Tensor, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (N, Q, D) or (N, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {x.dtype}")
    return x


def _pack(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Pack fp32 scores and int64 indices (< 2**32) into int64 keys: larger score first, then lower index."""
    bits = (scores.float() + 0.0).contiguous().view(torch.int32)  # + 0.0 maps -0.0 to +0.0
    sortable = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # monotone map float -> int32 (for non-NaN values)
    return sortable.long() * _SHIFT + (_LOW32 - indices)


def _unpack(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    low = keys & _LOW32
    sortable = ((keys - low) // _SHIFT).to(torch.int32)
    bits = sortable ^ ((sortable >> 31) & 0x7FFFFFFF)
    return bits.view(torch.float32), _LOW32 - low


def _reduce_tile(
    queries: torch.Tensor, keys: torch.Tensor, reduce: str, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Scores of a query block `(Nb, Qa, D)` against a key block `(Mb, Qb, D)` -> fp32 `(Nb, Mb)` (one GEMM)."""
    nb, qa, d = queries.shape
    mb, qb, _ = keys.shape
    if reduce == "max":
        # (Nb*Qa, D) @ (D, Mb*Qb): max over query tokens (rows, strided: vectorised), then over key tokens
        tile = torch.matmul(queries.reshape(nb * qa, d), keys.reshape(mb * qb, d).T, out=out)
        if qa > 1:
            tile = tile.view(nb, qa, mb * qb).amax(dim=1)
        tile = tile.view(nb, mb, qb)
        return (tile.amax(dim=2) if qb > 1 else tile.squeeze(2)).float()
    # mean_max: transposed GEMM (Mb*Qb, D) @ (D, Nb*Qa): max over key tokens (rows), mean over query tokens
    tile = torch.matmul(keys.reshape(mb * qb, d), queries.reshape(nb * qa, d).T, out=out)
    if qb > 1:
        tile = tile.view(mb, qb, nb * qa).amax(dim=1)
    return tile.view(mb, nb, qa).float().mean(dim=2).T


def default_block_sizes(
    num_query_tokens: int,
    num_key_tokens: int,
    device: torch.device,
    dtype: torch.dtype,
    max_block_bytes: int = 256 << 20,
) -> tuple[int, int]:
    """Query and key block sizes (in items) for the tiled GEMM.

    The tile is `~2048 x ~16384` query x key token rows on CPU (128 MiB in fp32; Q=32: 64 queries x 512 keys) and
    `~8192 x ~16384` on CUDA; it never exceeds `max_block_bytes`. Large tiles mean few parallel regions: on a shared
    2-core CPU, 2048 x 16384 ran 3-8x faster than 512 x 4096 (each GEMM, and each reduction, ends in a thread barrier
    that a descheduled thread stalls), at the same single-thread efficiency.
    """
    rows, cols = (8192, 16384) if device.type == "cuda" else (2048, 16384)
    nb = max(1, rows // num_query_tokens)
    mb = max(1, cols // num_key_tokens)
    itemsize = torch.empty((), dtype=dtype).element_size()
    while nb * num_query_tokens * mb * num_key_tokens * itemsize > max_block_bytes and (nb > 1 or mb > 1):
        if nb >= mb and nb > 1:
            nb = max(1, nb // 2)
        else:
            mb = max(1, mb // 2)
    return nb, mb


# ----------------------------------------------------------------------------------------------------------------------
# Exact search
# ----------------------------------------------------------------------------------------------------------------------
def topk_token_similarity(
    queries: torch.Tensor,
    keys: torch.Tensor,
    k: int,
    reduce: str = "max",
    exclude_self: bool = False,
    block_size: int | None = None,
    *,
    query_block_size: int | None = None,
    query_indices: torch.Tensor | None = None,
    max_block_bytes: int = 256 << 20,
    show_progress: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k of token-level similarity, streamed over key blocks with a running top-k (bounded memory).

    Args:
        queries (`torch.Tensor` of shape `(N, Q, D)` or `(N, D)`): L2-normalised query tokens (`(N, D)` means Q=1).
        keys (`torch.Tensor` of shape `(M, Q', D)` or `(M, D)`): L2-normalised key tokens. Key blocks are moved to
            the queries' device, so keys may stay on CPU while the search runs on CUDA.
        k (`int`): number of results per query; at most M (M - 1 with `exclude_self`).
        reduce (`str`, defaults to `"max"`): `"max"` (maximum cosine over all token pairs) or `"mean_max"` (mean over
            query tokens of the maximum over key tokens).
        exclude_self (`bool`, defaults to `False`): queries and keys are the same collection; drop key i from row i.
            With `query_indices`, the queries may be a subset (a slice) of the keys.
        block_size (`int`, *optional*): keys per block (default: a tile of ~4096 key tokens on CPU).
        query_block_size (`int`, *optional*): queries per block (default: ~512 query tokens on CPU).
        query_indices (`torch.Tensor` of shape `(N,)`, *optional*): position of each query in `keys`, for
            `exclude_self` when the queries are a subset of the keys (e.g. one process's slice when mining).
        max_block_bytes (`int`, defaults to 256 MiB): upper bound of the score tile in bytes.
        show_progress (`bool`, defaults to `False`): a tqdm bar over query blocks.

    Returns:
        `(scores, indices)`: `torch.Tensor` of shape `(N, k)` in fp32, descending, and `torch.LongTensor` of shape
        `(N, k)`; equal scores are ordered by the lower key index first. Both on the queries' device.

    Example:

    ```python
    >>> feats = torch.nn.functional.normalize(torch.randn(100, 32, 256), dim=-1)
    >>> scores, idx = topk_token_similarity(feats, feats, k=10, exclude_self=True)
    >>> scores.shape, idx.shape
    (torch.Size([100, 10]), torch.Size([100, 10]))
    ```
    """
    queries = _as_tokens(queries, "queries")
    keys = _as_tokens(keys, "keys")
    if reduce not in REDUCTIONS:
        raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")
    n, qa, d = queries.shape
    m, qb, dk = keys.shape
    if d != dk:
        raise ValueError(f"queries and keys must have the same feature size D, got {d} and {dk}")
    if m >= _SHIFT:
        raise ValueError(f"at most 2**32 keys are supported, got {m}")
    device = queries.device
    if exclude_self:
        if query_indices is None:
            if n != m:
                raise ValueError(
                    f"exclude_self=True requires queries and keys to be the same collection (N == M), got N={n}, "
                    f"M={m}; pass query_indices for a subset of the keys"
                )
            query_indices = torch.arange(n, device=device)
        query_indices = torch.as_tensor(query_indices, dtype=torch.long, device=device)
        if query_indices.shape != (n,):
            raise ValueError(f"query_indices must have shape ({n},), got {tuple(query_indices.shape)}")
    available = m - 1 if exclude_self else m
    if not 1 <= k <= available:
        raise ValueError(f"k must be in [1, {available}] (M={m}, exclude_self={exclude_self}), got {k}")
    dtype = torch.promote_types(queries.dtype, keys.dtype)
    queries = queries.to(dtype)
    if n == 0:
        return torch.empty(0, k, device=device), torch.empty(0, k, dtype=torch.long, device=device)
    nb, mb = default_block_sizes(qa, qb, device, dtype, max_block_bytes)
    nb = min(query_block_size or nb, n)
    mb = min(block_size or mb, m)
    if nb * qa * mb * qb * torch.empty((), dtype=dtype).element_size() > max_block_bytes and (nb > 1 or mb > 1):
        raise ValueError(f"block sizes {nb} x {mb} exceed max_block_bytes={max_block_bytes}")

    out_scores = torch.empty(n, k, dtype=torch.float32, device=device)
    out_indices = torch.empty(n, k, dtype=torch.long, device=device)
    tile_buf = torch.empty(nb * qa * mb * qb, dtype=dtype, device=device)
    key_offsets = torch.arange(mb, device=device)
    starts = range(0, n, nb)
    if show_progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="top-k similarity", unit="block")
    with torch.no_grad():
        for n0 in starts:
            n1 = min(n0 + nb, n)
            q_block = queries[n0:n1]
            best: torch.Tensor | None = None  # packed (n1-n0, <=k) keys
            for m0 in range(0, m, mb):
                m1 = min(m0 + mb, m)
                k_block = keys[m0:m1].to(device=device, dtype=dtype, non_blocking=True)
                rows, cols = (n1 - n0) * qa, (m1 - m0) * qb
                shape = (rows, cols) if reduce == "max" else (cols, rows)
                tile = _reduce_tile(q_block, k_block, reduce, out=tile_buf[: rows * cols].view(shape))
                idx = (key_offsets[: m1 - m0] + m0).expand(n1 - n0, -1)
                if exclude_self:
                    own = query_indices[n0:n1, None] == idx
                    tile = tile.masked_fill(own, float("-inf"))
                packed = _pack(tile, idx)
                if best is not None:
                    packed = torch.cat([best, packed], dim=1)
                best = packed.topk(k, dim=1, sorted=False).values if packed.shape[1] > k else packed
            best = best.sort(dim=1, descending=True).values
            out_scores[n0:n1], out_indices[n0:n1] = _unpack(best)
    return out_scores, out_indices


def brute_force_token_similarity(queries: torch.Tensor, keys: torch.Tensor, reduce: str = "max") -> torch.Tensor:
    """The full `(N, M)` fp32 similarity matrix, computed naively (`einsum` over all token pairs). For tests only."""
    queries = _as_tokens(queries, "queries").float()
    keys = _as_tokens(keys, "keys").float()
    sims = torch.einsum("nqd,mkd->nmqk", queries, keys)
    if reduce == "max":
        return sims.amax(dim=(2, 3))
    if reduce == "mean_max":
        return sims.amax(dim=3).mean(dim=2)
    raise ValueError(f"reduce must be one of {REDUCTIONS}, got {reduce!r}")


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
    queries = _as_tokens(queries, "queries")
    keys = _as_tokens(keys, "keys")
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
            packed = _pack(scores, cand.clamp_min(0))
            kk = min(k, c)
            top = packed.topk(kk, dim=1, sorted=True).values
            s, i = _unpack(top)
            i = i.masked_fill(torch.isinf(s) & (s < 0), -1)
            out_scores[n0:n1, :kk], out_indices[n0:n1, :kk] = s, i
    return out_scores, out_indices


# ----------------------------------------------------------------------------------------------------------------------
# Approximate search
# ----------------------------------------------------------------------------------------------------------------------
def pooled_vectors(features: torch.Tensor) -> torch.Tensor:
    """Mean of the tokens, L2-normalised: `(N, Q, D)` or `(N, D)` -> fp32 `(N, D)` (the candidate-generation space)."""
    features = _as_tokens(features, "features")
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
        self.keys = _as_tokens(keys, "keys")
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
        queries = _as_tokens(queries, "queries")
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
        queries = _as_tokens(queries, "queries")
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
            stats["recall_at_k"] = recall_at_k(indices[sample].cpu(), exact.cpu())
            stats["recall_sample"] = int(sample.numel())
        return ApproximateSearchResult(scores, indices, stats)


def recall_at_k(approx_indices: torch.Tensor, exact_indices: torch.Tensor) -> float:
    """Mean over rows of `|approx ∩ exact| / k` for two `(N, k)` index tensors."""
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
    queries = _as_tokens(queries, "queries")
    if exclude_self and query_indices is None:
        if queries.shape[0] != _as_tokens(keys, "keys").shape[0]:
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


def synthetic_clustered_tokens(
    num_items: int,
    num_tokens: int = 32,
    dim: int = 256,
    num_clusters: int | None = None,
    aspect_scale: float = 0.5,
    item_noise: float = 0.5,
    token_noise: float = 0.3,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    chunk_size: int = 8192,
) -> torch.Tensor:
    """Clustered synthetic image features (benchmarks and tests): `(num_items, num_tokens, dim)`, L2-normalised.

    Token t of an item of cluster c is `centre_c + aspect_scale * aspect_{c,t} + item_noise * e_item + token_noise *
    e_token` (standard normal vectors, then normalised): the tokens of an image share its cluster's content and its
    own variation (`e_item`) and differ by aspect, so both the pooled vectors and the token-level maxima have
    neighbourhoods, as photos of one product would. (Uniform noise has no neighbours for any index to find.)
    `num_clusters` defaults to `num_items // 100` (about 100 items per cluster).
    """
    gen = torch.Generator().manual_seed(seed)
    num_clusters = num_clusters or max(1, num_items // 100)
    centres = torch.randn(num_clusters, 1, dim, generator=gen)
    aspects = aspect_scale * torch.randn(num_clusters, num_tokens, dim, generator=gen)
    assign = torch.randint(0, num_clusters, (num_items,), generator=gen)
    out = torch.empty(num_items, num_tokens, dim, dtype=dtype)
    for start in range(0, num_items, chunk_size):
        stop = min(start + chunk_size, num_items)
        b = stop - start
        x = centres[assign[start:stop]] + aspects[assign[start:stop]]
        x += item_noise * torch.randn(b, 1, dim, generator=gen)
        x += token_noise * torch.randn(b, num_tokens, dim, generator=gen)
        out[start:stop] = torch.nn.functional.normalize(x, dim=-1).to(dtype)
    return out
