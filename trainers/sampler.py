"""A sampler that keeps duplicate targets out of one (global) batch.

With in-batch negatives, a target id that appears twice in one batch makes the same image both the positive of a
query and one of its negatives: a false negative that pulls the loss the wrong way. [`NoDuplicateTargetSampler`]
orders the dataset so that each run of `global_batch_size` consecutive indices holds distinct target ids.

How it fits Trainer and accelerate: Trainer batches the sampler's flat order into per-device batches, and under DDP
accelerate hands batch `k * world + r` to rank `r` (`BatchSamplerShard`, `split_batches=False`), so global step `k`
(all ranks together, one micro-batch each) covers indices `[k * G, (k + 1) * G)` with
`G = per_device_batch_size * world_size`: exactly the groups built here. Every rank builds the same order (same
seed, same epoch), and `set_epoch` (called by Trainer/accelerate) reshuffles per epoch, deterministically.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


def no_duplicate_order(
    target_ids: Sequence, group_size: int, seed: int = 0, reference_ids: Sequence | None = None
) -> tuple[list[int], int]:
    """A random permutation of `range(len(target_ids))` whose consecutive groups of `group_size` have distinct ids.

    Greedy, then repaired: indices are taken in a seeded random order; one whose target is already in the group being
    filled waits in a queue and goes into a later group. Repeats left at the end (when only a few targets remain)
    are swapped with items of other groups; a repeat stays only when no swap removes it (a target that occurs more
    often than there are groups).

    Args:
        reference_ids (`Sequence`, *optional*): the reference id of each row; when given, the seeded random order
            moves whole references (the rows of one reference stay consecutive), so a reference's triplets share a
            batch unless a repeated target or the batch's end splits them.

    Returns:
        `(order, duplicates)`: the order (every index exactly once) and the number of unavoidable duplicates placed.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    n = len(target_ids)
    generator = torch.Generator().manual_seed(seed)
    if reference_ids is None:
        fresh = torch.randperm(n, generator=generator).tolist()
    else:
        rows: dict = {}
        for i, reference in enumerate(reference_ids):
            rows.setdefault(reference, []).append(i)
        units = list(rows.values())
        fresh = [i for u in torch.randperm(len(units), generator=generator).tolist() for i in units[u]]
    waiting: list[int] = []
    groups: list[list[int]] = []
    pos = 0
    while pos < len(fresh) or waiting:
        group: list[int] = []
        seen: set = set()
        still_waiting = []
        for i in waiting:  # waiting indices first, so that none waits for long
            if len(group) < group_size and target_ids[i] not in seen:
                group.append(i)
                seen.add(target_ids[i])
            else:
                still_waiting.append(i)
        waiting = still_waiting
        while len(group) < group_size and pos < len(fresh):
            i = fresh[pos]
            pos += 1
            if target_ids[i] in seen:
                waiting.append(i)
            else:
                group.append(i)
                seen.add(target_ids[i])
        if len(group) < group_size and pos >= len(fresh) and waiting:
            # nothing left can complete this group without a repeat: fill it, keeping the groups aligned
            need = group_size - len(group)
            group.extend(waiting[:need])
            waiting = waiting[need:]
        groups.append(group)
    duplicates = _repair(groups, target_ids)
    order = [i for group in groups for i in group]
    return order, duplicates


def _repair(groups: list[list[int]], target_ids: Sequence) -> int:
    """Swap repeated items with items of other groups until no swap helps; returns the repeats left."""
    counts = [Counter(target_ids[i] for i in group) for group in groups]
    for gi, group in enumerate(groups):
        for pos in range(len(group)):
            t = target_ids[group[pos]]
            if counts[gi][t] <= 1:
                continue
            swapped = False
            for gj, other in enumerate(groups):
                if gj == gi or counts[gj][t]:
                    continue
                for qpos, j in enumerate(other):
                    u = target_ids[j]
                    if counts[gi][u]:
                        continue
                    group[pos], other[qpos] = j, group[pos]
                    counts[gi][t] -= 1
                    counts[gi][u] += 1
                    counts[gj][u] -= 1
                    counts[gj][t] += 1
                    swapped = True
                    break
                if swapped:
                    break
    return sum(len(group) - len(+count) for group, count in zip(groups, counts))


class NoDuplicateTargetSampler(Sampler[int]):
    r"""
    Sampler (flat index order) whose consecutive groups of `per_device_batch_size * world_size` indices have
    distinct target ids. Deterministic given `seed` and the epoch; identical on every rank.

    Args:
        target_ids (`Sequence`): the target id of each row (e.g. `dataset["target_id"]`).
        per_device_batch_size (`int`): Trainer's `per_device_train_batch_size`.
        world_size (`int`, defaults to 1): number of data-parallel processes (negatives are gathered across them).
        seed (`int`, defaults to 0): base seed; epoch `e` uses `seed + e`.
        reference_ids (`Sequence`, *optional*): keep each reference's rows together (see [`no_duplicate_order`]).

    Attributes:
        duplicates (`int`): unavoidable duplicates placed in the last built order (0 unless one target occurs more
            often than there are global batches).
    """

    def __init__(
        self,
        target_ids: Sequence,
        per_device_batch_size: int,
        world_size: int = 1,
        seed: int = 0,
        reference_ids: Sequence | None = None,
    ):
        self.target_ids = [str(t) for t in target_ids]
        self.reference_ids = None if reference_ids is None else [str(r) for r in reference_ids]
        self.group_size = per_device_batch_size * max(1, world_size)
        self.seed = seed
        self.epoch = 0
        self.duplicates = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.target_ids)

    def __iter__(self) -> Iterator[int]:
        order, self.duplicates = no_duplicate_order(
            self.target_ids, self.group_size, self.seed + self.epoch, self.reference_ids
        )
        return iter(order)


__all__ = ["NoDuplicateTargetSampler", "no_duplicate_order"]
