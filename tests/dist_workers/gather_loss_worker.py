"""Run with torchrun (2 CPU processes, gloo): the gathered max-sim InfoNCE equals the single-process loss."""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist

from mra_cir.modeling_mra_cir import MraCirModel
from mra_cir.tiny import tiny_config


def main(out_path: str) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    model = MraCirModel(tiny_config()).train()
    global_batch = 4
    gen = torch.Generator().manual_seed(123)
    ref = torch.randn(global_batch, 3, 32, 32, generator=gen)
    tgt = torch.randn(global_batch, 3, 32, 32, generator=gen)
    ids = torch.randint(5, 100, (global_batch, 6), generator=gen)
    mask = torch.ones_like(ids)
    per = global_batch // world
    sl = slice(rank * per, (rank + 1) * per)

    # gathered loss on the local half
    model.zero_grad()
    out = model(
        reference_pixel_values=ref[sl], input_ids=ids[sl], attention_mask=mask[sl], target_pixel_values=tgt[sl]
    )
    out.loss.backward()
    grad = model.query_tokens.grad.clone()
    dist.all_reduce(grad)
    grad /= world  # what DDP does
    losses = torch.tensor([out.loss.item()])
    dist.all_reduce(losses)

    # unequal local batches (3 + 1): the size-weighted mean of the gathered losses is the global loss
    cut = slice(0, 3) if rank == 0 else slice(3, 4)
    with torch.no_grad():
        uneven = model(
            reference_pixel_values=ref[cut], input_ids=ids[cut], attention_mask=mask[cut], target_pixel_values=tgt[cut]
        )
    weighted = torch.tensor([uneven.loss.item() * (cut.stop - cut.start)])
    dist.all_reduce(weighted)

    # local-only loss (no gathering) for contrast
    model.config.gather_negatives = False
    with torch.no_grad():
        local = model(
            reference_pixel_values=ref[sl], input_ids=ids[sl], attention_mask=mask[sl], target_pixel_values=tgt[sl]
        ).loss
    local_losses = torch.tensor([local.item()])
    dist.all_reduce(local_losses)

    # single process on the whole global batch
    model.zero_grad()
    full = model(reference_pixel_values=ref, input_ids=ids, attention_mask=mask, target_pixel_values=tgt)
    full.loss.backward()
    full_grad = model.query_tokens.grad.clone()
    if rank == 0:
        result = {
            "world_size": world,
            "mean_gathered_loss": losses.item() / world,
            "mean_local_loss": local_losses.item() / world,
            "single_process_loss": full.loss.item(),
            "max_grad_diff": (grad - full_grad).abs().max().item(),
            "logits_shape": list(out.logits_per_query.shape),
            "uneven_weighted_loss": weighted.item() / global_batch,
            "uneven_logits_shape": list(uneven.logits_per_query.shape),
        }
        with open(out_path, "w") as handle:
            json.dump(result, handle)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
