"""Exact token-level similarity search: the blocked top-k that mining, evaluation and search all use.

Items are sets of L2-normalised token vectors, `(Q, D)` each (`get_image_features` returns `(N, Q, D)`; a composed
query `(D,)` is an item with one token). The similarity of a query `a` with a key `b` is a reduction of their token
cosine matrix `a @ b.T` of shape `(Q_a, Q_b)`:

- `"max"` (default, the paper): the maximum over all token pairs;
- `"mean_max"` (ColBERT-style): the mean over the query tokens of the maximum over the key tokens.

`topk_token_similarity` is one code path for mining (N = M images) and for gallery retrieval (B composed queries).
Because `max_{q,k} <a_q, b_k>` is the maximum of one matrix product, each (query block, key block) pair is a single
GEMM `(Nb*Q_a, D) @ (D, Mb*Q_b)` followed by a max over the `Q_a x Q_b` groups (first over the query tokens, a strided
row-wise max that vectorises, then over the contiguous key tokens). The GEMM does exactly the `2 * N * M * Q_a * Q_b *
D` FLOP of the definition, so the search runs at the machine's matmul speed. Blocks are sized so that the temporary
score tile stays small (at most `max_block_bytes`, 256 MiB by default), whatever N and M: memory is bounded by one tile
plus a running top-k of `(Nb, k)` per query block; the `N x M x Q x Q` tensor never exists.

The running top-k is exact and deterministic: scores are packed with their key index into one int64
(`sortable(score) * 2**32 + (2**32 - 1 - index)`), so `torch.topk` on the packed key orders by score and breaks ties
by the lower index, on CPU and CUDA alike.

Cost (Q = 32, D = 256: one query-key pair is `2 * Q^2 * D = 524,288` FLOP): one query against M keys is `5.2e5 * M`
FLOP, linear in M (M = 200k: 1.05e11; 1M: 5.2e11; 10M: 5.2e12). All-pairs mining (N = M) is quadratic: 1M images
5.2e17 FLOP, 10M images 5.2e19 FLOP. Memory: the tokens take `M * Q * D * 2` bytes in bf16 (3.3 GB at 200k, 16 GB at
1M, 164 GB at 10M); the search's own memory is one tile (<= `max_block_bytes`) plus (N, k). For millions of keys, see
[`.approximate_search`] (faiss candidates + exact re-rank). Measured speeds: `docs/performance.md`.
"""

import torch

REDUCTIONS = ("max", "mean_max")
_LOW32 = (1 << 32) - 1
_SHIFT = 1 << 32


# ----------------------------------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------------------------------
def as_tokens(x: torch.Tensor, name: str) -> torch.Tensor:
    """`x` as a `(N, T, D)` token tensor (`(N, D)` becomes one token per item); `TypeError`/`ValueError` name `name`."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        x = x.unsqueeze(1)
    if x.dim() != 3:
        raise ValueError(f"{name} must have shape (N, Q, D) or (N, D), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got {x.dtype}")
    return x


def pack_scores(scores: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """Pack fp32 scores and int64 indices (< 2**32) into int64 keys: larger score first, then lower index."""
    bits = (scores.float() + 0.0).contiguous().view(torch.int32)  # + 0.0 maps -0.0 to +0.0
    sortable = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # monotone map float -> int32 (for non-NaN values)
    return sortable.long() * _SHIFT + (_LOW32 - indices)


def unpack_scores(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of [`pack_scores`]: `(scores fp32, indices int64)`."""
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
    queries = as_tokens(queries, "queries")
    keys = as_tokens(keys, "keys")
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
                packed = pack_scores(tile, idx)
                if best is not None:
                    packed = torch.cat([best, packed], dim=1)
                best = packed.topk(k, dim=1, sorted=False).values if packed.shape[1] > k else packed
            best = best.sort(dim=1, descending=True).values
            out_scores[n0:n1], out_indices[n0:n1] = unpack_scores(best)
    return out_scores, out_indices
