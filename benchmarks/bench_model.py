"""Throughput of MraCirModel's feature functions against transformers' own BLIP-2 modules on the same weights.

Prints one JSON object. `image_features_ratio` / `composed_features_ratio` are ours over transformers (throughput;
>= 0.95 means no overhead). References, measured in the same run, alternating with ours:
- image features: `Blip2VisionModelWithProjection` (+ L2 normalisation, as `Blip2ForImageTextRetrieval` does);
- composed features: `Blip2ForImageTextRetrieval(..., use_image_text_matching_head=True)`, the transformers path
  that runs query tokens and text through the Q-Former together over the image (same work; its head differs).

    python benchmarks/bench_model.py [--batch-size 8] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2VisionModelWithProjection  # noqa: E402

from mra_cir.modeling_mra_cir import MraCirModel  # noqa: E402
from mra_cir.tiny import tiny_config  # noqa: E402


def realistic_config(queries: int = 32):
    """ViT 256 wide, 4 layers, 224 px (patch 14); Q-Former 256 wide, 4 layers, 32 queries; D=256."""
    return tiny_config(
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=8,
        image_size=224,
        patch_size=14,
        num_query_tokens=queries,
        embed_dim=256,
        vocab_size=30522,
    )


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--text-length", type=int, default=16)
    parser.add_argument("--small", action="store_true", help="tiny config (smoke test of the script)")
    args = parser.parse_args()

    torch.manual_seed(0)
    config = tiny_config() if args.small else realistic_config()
    ours = MraCirModel(config).eval()
    blip2 = Blip2Config(
        vision_config=config.vision_config.to_dict(),
        qformer_config=config.qformer_config.to_dict(),
        num_query_tokens=config.num_query_tokens,
        image_text_hidden_size=config.image_text_hidden_size,
    )
    state = ours.state_dict()
    retrieval = Blip2ForImageTextRetrieval(blip2).eval()
    retrieval.load_state_dict(state, strict=False)
    vision_proj = Blip2VisionModelWithProjection(blip2).eval()
    vision_proj.load_state_dict(state, strict=False)

    size = config.vision_config.image_size
    pixel_values = torch.randn(args.batch_size, 3, size, size)
    vocab = config.qformer_config.vocab_size
    input_ids = torch.randint(vocab // 2, vocab, (args.batch_size, args.text_length))
    attention_mask = torch.ones_like(input_ids)

    def ours_image():
        return ours.get_image_features(pixel_values)

    def ref_image():
        return torch.nn.functional.normalize(vision_proj(pixel_values=pixel_values).image_embeds, dim=-1)

    def ours_composed():
        return ours.get_composed_features(pixel_values, input_ids, attention_mask)

    def ref_composed():
        return retrieval(
            pixel_values=pixel_values,
            input_ids=input_ids,
            attention_mask=attention_mask,
            use_image_text_matching_head=True,
        ).logits_per_image

    results = {}
    with torch.inference_mode():
        # same weights -> same image features (sanity)
        max_diff = (ours_image() - ref_image()).abs().max().item()
        for name, mine, ref in (
            ("image_features", ours_image, ref_image),
            ("composed_features", ours_composed, ref_composed),
        ):
            mine(), ref()  # warm-up
            ours_t, ref_t = [], []
            for _ in range(args.repeats):  # alternate to share the machine's noise
                ours_t += timed(mine, 1)
                ref_t += timed(ref, 1)
            ours_med, ref_med = statistics.median(ours_t), statistics.median(ref_t)
            results[name] = {
                "ours_images_per_s": args.batch_size / ours_med,
                "transformers_images_per_s": args.batch_size / ref_med,
                "ours_median_s": ours_med,
                "transformers_median_s": ref_med,
            }
    print(
        json.dumps(
            {
                "image_features_ratio": results["image_features"]["ours_images_per_s"]
                / results["image_features"]["transformers_images_per_s"],
                "composed_features_ratio": results["composed_features"]["ours_images_per_s"]
                / results["composed_features"]["transformers_images_per_s"],
                "max_abs_diff_image_features": max_diff,
                "batch_size": args.batch_size,
                "repeats": args.repeats,
                "torch_threads": torch.get_num_threads(),
                "config": "tiny" if args.small else "ViT 256x4 @224px/14, Q-Former 256x4, 32 queries, D=256",
                "detail": results,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
