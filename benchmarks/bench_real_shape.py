"""The real BLIP-2 ViT-g shape without its weights: `MraCirConfig()` with random weights, one small batch through image
feature extraction, the composed query and the loss (forward and backward, the ViT frozen), with time, throughput and
peak memory, and feature equality with transformers' `Blip2ForImageTextRetrieval` on the same weights.

Prints one JSON object: `seconds` per phase, `images_per_s` (gallery encoding), `queries_per_s` (composed queries),
`train_step_s` (forward + backward of one batch of triplets), `peak_rss_gib` (the process; the weights are shared with
the reference model, not copied), `peak_cuda_gib` on a GPU, `max_abs_diff` of image / text / composed features against
transformers' modules and `equal` (all within `--atol`). The reference ratio of the other benchmarks is
`features_equal`: same outputs as transformers at the shape the paper uses.

    python benchmarks/bench_real_shape.py                       # ViT-g (1.2 B parameters) on the CPU: ~6 min, ~6 GiB
    python benchmarks/bench_real_shape.py --device cuda --dtype bfloat16 --batch-size 64 --repeats 5
    python benchmarks/bench_real_shape.py --small               # a tiny config (smoke test of the script)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import Blip2Config, Blip2ForImageTextRetrieval  # noqa: E402

from mra_cir.modeling_mra_cir import MraCirConfig, MraCirModel  # noqa: E402
from mra_cir.tiny import tiny_config  # noqa: E402

GIB = 1024**3


def peak_rss_gib() -> float:
    """Peak resident memory of this process (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (GIB if sys.platform == "darwin" else 1024**2)


def real_config() -> MraCirConfig:
    """BLIP-2's ViT-g (1408 wide, 39 layers, 224 px, patch 14) and Q-Former (768 wide, 12 layers, 32 queries, D=256):
    `MraCirConfig()`'s defaults. Only `initializer_range` of the ViT changes (transformers' 1e-10 would map every
    random image to the same output, and equal features would prove nothing)."""
    config = MraCirConfig()
    config.vision_config.initializer_range = 0.02
    return config


def reference_model(ours: MraCirModel) -> Blip2ForImageTextRetrieval:
    """transformers' `Blip2ForImageTextRetrieval` holding the very tensors of `ours` (no second copy in memory)."""
    from accelerate import init_empty_weights

    config = ours.config
    blip2 = Blip2Config(
        vision_config=config.vision_config.to_dict(),
        qformer_config=config.qformer_config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_text_hidden_size=config.image_text_hidden_size,
    )
    with init_empty_weights(include_buffers=False):
        reference = Blip2ForImageTextRetrieval(blip2)
    reference.load_state_dict(ours.state_dict(), strict=False, assign=True)
    left = [name for name, p in reference.named_parameters() if p.is_meta]
    if left:
        raise RuntimeError(f"reference parameters without weights: {left[:5]}")
    return reference.eval()


def reference_composed(ref: Blip2ForImageTextRetrieval, pixel_values, input_ids, attention_mask) -> torch.Tensor:
    """The composed query written with transformers' own modules: the fused sequence's position Q, text projection."""
    image_embeds = ref.vision_model(pixel_values=pixel_values).last_hidden_state
    query_tokens = ref.query_tokens.expand(image_embeds.shape[0], -1, -1)
    q = query_tokens.shape[1]
    mask = torch.cat([torch.ones(query_tokens.shape[:-1], dtype=attention_mask.dtype), attention_mask], dim=1)
    out = ref.qformer(
        query_embeds=ref.embeddings(input_ids=input_ids, query_embeds=query_tokens),
        query_length=q,
        attention_mask=mask,
        encoder_hidden_states=image_embeds,
        encoder_attention_mask=torch.ones(image_embeds.shape[:-1], dtype=torch.long),
    )
    return torch.nn.functional.normalize(ref.text_projection(out.last_hidden_state[:, q, :]), dim=-1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, repeats: int, device: torch.device) -> tuple[float, object]:
    """Median seconds of `repeats` calls (after one warm-up call), and the last result."""
    result = fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--text-length", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per phase (after one warm-up)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument("--atol", type=float, default=1e-4, help="feature equality tolerance (fp32)")
    parser.add_argument("--no-reference", action="store_true", help="skip the transformers comparison")
    parser.add_argument("--small", action="store_true", help="tiny config (smoke test of the script)")
    args = parser.parse_args(argv)

    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    seconds: dict[str, float] = {}
    torch.manual_seed(0)
    start = time.perf_counter()
    config = tiny_config() if args.small else real_config()
    model = MraCirModel(config).eval()
    with torch.no_grad():  # transformers zero-initialises the query tokens: make them non-trivial
        model.query_tokens.normal_(std=0.5)
    seconds["init"] = time.perf_counter() - start
    parameters = sum(p.numel() for p in model.parameters())

    size, vocab = config.vision_config.image_size, config.qformer_config.vocab_size
    gen = torch.Generator().manual_seed(1)
    pixel_values = torch.randn(args.batch_size, 3, size, size, generator=gen)
    target_pixel_values = torch.randn(args.batch_size, 3, size, size, generator=gen)
    input_ids = torch.randint(1000 % vocab, vocab, (args.batch_size, args.text_length), generator=gen)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, args.text_length // 2 :] = 0

    report: dict = {}
    if not args.no_reference:  # fp32 on the CPU, before the model moves: the same weights through both code paths
        start = time.perf_counter()
        reference = reference_model(model)
        with torch.no_grad():
            ours = {
                "image": model.get_image_features(pixel_values),
                "text": model.get_text_features(input_ids, attention_mask),
                "composed": model.get_composed_features(pixel_values, input_ids, attention_mask),
            }
            itc = reference(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask)
            theirs = {
                "image": itc.image_embeds,
                "text": itc.text_embeds,
                "composed": reference_composed(reference, pixel_values, input_ids, attention_mask),
            }
        diffs = {k: float((ours[k] - theirs[k]).abs().max()) for k in ours}
        spread = float((ours["image"][0] - ours["image"][-1]).abs().max()) if args.batch_size > 1 else None
        report.update(max_abs_diff=diffs, equal=all(d <= args.atol for d in diffs.values()), image_spread=spread)
        del reference, itc, ours, theirs
        seconds["reference_check"] = time.perf_counter() - start

    model = model.to(device=device, dtype=dtype)
    for p in model.vision_model.parameters():  # the paper's setting: the ViT frozen, the Q-Former trains
        p.requires_grad_(False)
    pixel_values, target_pixel_values = pixel_values.to(device, dtype), target_pixel_values.to(device, dtype)
    input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
    with torch.no_grad():
        seconds["image_features"], _ = timed(lambda: model.get_image_features(pixel_values), args.repeats, device)
        seconds["composed_features"], _ = timed(
            lambda: model.get_composed_features(pixel_values, input_ids, attention_mask), args.repeats, device
        )

    def train_step():
        model.zero_grad(set_to_none=True)
        out = model(pixel_values, input_ids, attention_mask, target_pixel_values, return_loss=True)
        out.loss.backward()
        return float(out.loss.detach())

    model.train()
    seconds["train_step"], loss = timed(train_step, args.repeats, device)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report = {
        "config": "tiny"
        if args.small
        else "MraCirConfig() = BLIP-2 ViT-g 1408x39 @224/14 + Q-Former 768x12, Q=32, D=256",
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "dtype": args.dtype,
        "torch_threads": torch.get_num_threads(),
        "batch_size": args.batch_size,
        "parameters": parameters,
        "trainable_parameters": trainable,
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
        "images_per_s": args.batch_size / seconds["image_features"],
        "queries_per_s": args.batch_size / seconds["composed_features"],
        "train_step_s": seconds["train_step"],
        "loss": loss,
        "peak_rss_gib": round(peak_rss_gib(), 3),
        **report,
    }
    if device.type == "cuda":
        report["peak_cuda_gib"] = round(torch.cuda.max_memory_allocated(device) / GIB, 3)
    if "equal" in report:
        report["features_equal"] = report["equal"]
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
