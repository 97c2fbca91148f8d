"""Which process this is, its share of a list, and one gather of the rows every process computed: what embedding,
mining and the evaluators need to run on every process of an `accelerate launch` / `torchrun` job.

Under `accelerate launch` / `torchrun` each process encodes a contiguous shard of the gallery (and of the queries),
then [`gather_rows`] concatenates the shards in rank order on every process, in blocks so that a 100k-image gallery
never needs two full copies on one GPU. Without an initialised process group everything is local.

Example:

```python
>>> rank, world = process_state()
>>> start, stop = shard_bounds(len(gallery), world, rank, align=1024)
>>> features = gather_rows(encode(gallery[start:stop]))  # (len(gallery), Q, D) on every process
```
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

GATHER_BLOCK_ROWS = 4096  # rows per collective: (4096, 32, 256) fp32 is 128 MiB per process


def launched_processes() -> int:
    """How many processes the launcher (`accelerate launch`, `torchrun`) started, read before any process group exists
    (`WORLD_SIZE`; 1 for a plain `python` / `mra-cir` run)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def distributed_state():
    """`accelerate.PartialState`, also for several CPU processes (`torchrun` / `accelerate launch` without GPUs: gloo):
    `process_index`, `num_processes`, `device`, `is_main_process`, `wait_for_everyone()`. Starts the process group of a
    launched job; a single process gets index 0 of 1 and no process group.

    `PartialState()` alone treats CPU processes launched by torchrun as independent single processes.
    """
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def process_state() -> tuple[int, int]:
    """`(rank, world_size)` of the initialised process group, `(0, 1)` without one (never starts one)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_bounds(num_items: int, world_size: int, rank: int, align: int = 1) -> tuple[int, int]:
    """Contiguous `[start, stop)` of process `rank`'s share of `num_items`, boundaries at multiples of `align` (so
    per-chunk caches do not depend on the number of processes); the shards of all ranks partition `range(num_items)`."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"shard_bounds: rank {rank} of {world_size} processes")
    chunks = -(-num_items // max(1, align))
    per = -(-chunks // world_size)
    return min(num_items, rank * per * align), min(num_items, (rank + 1) * per * align)


def _collective_device() -> torch.device:
    """NCCL gathers CUDA tensors; gloo (the CPU tests) gathers CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def gather_rows(local: torch.Tensor, block_rows: int = GATHER_BLOCK_ROWS) -> torch.Tensor:
    """Concatenate along dim 0, in rank order, the `local` rows of every process; returned on the CPU everywhere.

    Shards may differ in size (even be empty: an empty `local` must still have the right trailing shape and dtype).
    Without an initialised process group (or with one process) returns `local` on the CPU.

    Args:
        local (`torch.Tensor` of shape `(n_rank, ...)`): this process's rows.
        block_rows (`int`, defaults to 4096): rows per collective (bounds the memory of one gather).
    """
    rank, world = process_state()
    if world == 1:
        return local.cpu()
    device = _collective_device()
    sizes = torch.tensor([local.shape[0]], device=device)
    all_sizes = [torch.zeros_like(sizes) for _ in range(world)]
    dist.all_gather(all_sizes, sizes)
    counts = [int(s.item()) for s in all_sizes]
    parts: list[list[torch.Tensor]] = [[] for _ in range(world)]
    for offset in range(0, max(counts), block_rows):
        block = local[offset : offset + block_rows].to(device)
        if block.shape[0] < block_rows:
            pad = block.new_zeros((block_rows - block.shape[0], *local.shape[1:]))
            block = torch.cat([block, pad])
        received = [torch.empty_like(block) for _ in range(world)]
        dist.all_gather(received, block.contiguous())
        for r, tensor in enumerate(received):
            keep = max(0, min(block_rows, counts[r] - offset))
            if keep:
                parts[r].append(tensor[:keep].cpu())
    flat = [t for rank_parts in parts for t in rank_parts]
    return torch.cat(flat) if flat else local.new_zeros((0, *local.shape[1:])).cpu()


__all__ = [
    "GATHER_BLOCK_ROWS",
    "distributed_state",
    "gather_rows",
    "launched_processes",
    "process_state",
    "shard_bounds",
]
