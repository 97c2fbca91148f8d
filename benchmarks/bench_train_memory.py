"""Training memory at the real BLIP-2 shape: what one more triplet in the batch costs, and what the model costs.

The Q-Former is the only part that trains (the ViT is frozen), so a training step's memory is the frozen ViT's
weights, the trainable parameters with their gradients and AdamW moments, and the Q-Former's activations, which grow
with the batch. This script builds `MraCirConfig()`'s Q-Former (768 wide, 12 layers, 32 queries, 186 M trainable
parameters) with random weights and a one-layer ViT-g (its outputs stand in for cached ones, as with
`--cache_vit_outputs`: the full ViT's weights are counted, not run), runs forward + backward at two batch sizes, and
reports the difference per triplet.

Prints ONE JSON object: `per_triplet_gib` (activation memory of one triplet), `trainable_params`,
`vit_weights_gib` (the full frozen ViT-g in the given dtype), `optimizer_state_gib` (fp32 weight + grad + two AdamW
moments per trainable parameter), `estimate_gib` (`vit_weights_gib + optimizer_state_gib + batch * per_triplet_gib`
for `--plan-batch`), and `per_triplet_over_optimizer_ratio`. Peak memory is the process's resident set on the CPU and
`torch.cuda.max_memory_allocated` on a GPU.

    python benchmarks/bench_train_memory.py                      # CPU: about 1.5 minutes, peak about 3.6 GiB
    python benchmarks/bench_train_memory.py --device cuda --bf16 --batches 8 32 --plan-batch 64
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from mra_cir.modeling_mra_cir import MraCirConfig, MraCirModel  # noqa: E402

GIB = 1024**3


def peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GIB
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GIB if sys.platform == "darwin" else 1024**2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true", help="bfloat16 autocast (as --bf16 true in training)")
    parser.add_argument("--batches", type=int, nargs=2, default=[2, 10], help="the two batch sizes compared")
    parser.add_argument("--text-length", type=int, default=32)
    parser.add_argument("--plan-batch", type=int, default=64, help="the batch size of estimate_gib")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)

    config = MraCirConfig()
    vision = config.vision_config
    patches = (vision.image_size // vision.patch_size) ** 2 + 1
    # the full ViT-g's parameter count, from its shape (no need to allocate it)
    with torch.device("meta"):
        full_vit_params = sum(p.numel() for p in MraCirModel(config).vision_model.parameters())
    config.vision_config.num_hidden_layers = 1
    model = MraCirModel(config).to(device).train()
    for parameter in model.vision_model.parameters():
        parameter.requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def step(batch: int) -> float:
        ids = torch.randint(0, config.qformer_config.vocab_size, (batch, args.text_length), device=device)
        reference, target = (torch.randn(batch, patches, vision.hidden_size, device=device) for _ in range(2))
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.bf16):
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                reference_vision_embeds=reference,
                target_vision_embeds=target,
            )
        out.loss.backward()
        model.zero_grad(set_to_none=False)  # gradients stay allocated, as during training
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return peak_gib(device)

    small, large = sorted(args.batches)
    step(small)  # warm-up: gradient buffers and allocator pools
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    low = step(small)
    high = step(large)
    per_triplet = (high - low) / (large - small)
    vit_weights = full_vit_params * 4 / GIB  # the ViT stays in float32 under autocast
    optimizer_state = trainable * 16 / GIB
    report = {
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "torch": torch.__version__,
        "bf16": args.bf16,
        "batches": [small, large],
        "peak_gib": [round(low, 3), round(high, 3)],
        "per_triplet_gib": round(per_triplet, 4),
        "trainable_params": trainable,
        "vit_weights_gib": round(vit_weights, 2),
        "optimizer_state_gib": round(optimizer_state, 2),
        "estimate_gib": round(vit_weights + optimizer_state + args.plan_batch * per_triplet, 1),
        "plan_batch": args.plan_batch,
        "per_triplet_over_optimizer_ratio": round(per_triplet / optimizer_state, 4),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
