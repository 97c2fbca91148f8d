"""The evaluators' on-disk caches of a benchmark gallery: cache keys, atomic writes, and the frozen ViT's outputs in
per-chunk files (see [`~mra_cir.evaluation.evaluator.CirEvaluator`] for what is cached and why).

A key covers what the cached tensors depend on: a module's fingerprint (the whole model for final features, the ViT
alone for its outputs), the image processor's settings, and every gallery image's id, path, size and mtime.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from mra_cir.retrieval.encoding import encode_vision_outputs, model_fingerprint

VISION_CACHE_DTYPES = ("float32", "bfloat16", "float16")


def processor_settings(processor) -> str:
    """The image processor's settings as a stable string (part of every cache key)."""
    image_processor = getattr(processor, "image_processor", processor)
    to_dict = getattr(image_processor, "to_dict", None)
    return json.dumps(to_dict() if to_dict else repr(image_processor), sort_keys=True, default=str)


def gallery_key(module: torch.nn.Module, processor, gallery) -> str:
    """A 20-hex-digit key of `module`'s weights, the processor's settings and the gallery's images (`image_id`, path,
    size, mtime), for a `datasets.Dataset` gallery with `image_id` and `image` columns."""
    import datasets

    h = hashlib.sha256()
    h.update(model_fingerprint(module).encode())
    h.update(processor_settings(processor).encode())
    paths = [im["path"] for im in gallery.cast_column("image", datasets.Image(decode=False))["image"]]
    for image_id, path in zip(gallery["image_id"], paths):
        stat = os.stat(path) if path and os.path.exists(path) else None
        h.update(f"{image_id}|{path}|{stat.st_size if stat else -1}|{stat.st_mtime_ns if stat else -1}\n".encode())
    return h.hexdigest()[:20]


def atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write a safetensors file under a temporary name, then rename (a reader never sees half a file)."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, path)


def vision_outputs(model, processor, images, batch_size: int, num_workers: int, dtype: str) -> torch.Tensor:
    """The frozen ViT's outputs `(N, 1 + patches, vision_hidden)` of `images` (decoded and preprocessed by
    `DataLoader` workers), stored as `dtype` on the CPU."""
    return encode_vision_outputs(model, processor, images, batch_size, num_workers, output_dtype=getattr(torch, dtype))


def features_from_vision_cache(
    model,
    processor,
    gallery,
    start: int,
    stop: int,
    folder: Path,
    batch_size: int,
    num_workers: int = 0,
    dtype: str = "bfloat16",
    chunk_rows: int = 1024,
) -> torch.Tensor:
    """`(stop - start, Q, D)` image features of gallery rows `[start, stop)`: the ViT outputs read from (or computed
    into) one file per chunk of `chunk_rows` rows under `folder`, then the Q-Former and the projection over them.

    `start` must be a multiple of `chunk_rows` (see [`~mra_cir.retrieval.distributed.shard_bounds`]), so that the
    chunk files are the same whatever the number of processes.
    """
    from safetensors.torch import load_file

    if dtype not in VISION_CACHE_DTYPES:
        raise ValueError(f"vision cache dtype must be one of {VISION_CACHE_DTYPES}, got {dtype!r}")
    if start % chunk_rows:
        raise ValueError(f"start={start} is not a multiple of chunk_rows={chunk_rows}")
    device = next(model.parameters()).device
    model_dtype = next(model.vision_model.parameters()).dtype
    out = []
    for lo in range(start, stop, chunk_rows):
        hi = min(stop, lo + chunk_rows)
        path = folder / f"rows-{lo:09d}-{hi:09d}.safetensors"
        if path.is_file():
            vision = load_file(path)["vision_outputs"]
        else:
            images = gallery.select(range(lo, hi))["image"]
            vision = vision_outputs(model, processor, images, batch_size, num_workers, dtype)
            atomic_save({"vision_outputs": vision.contiguous()}, path)
        with torch.no_grad():
            for b in range(0, vision.shape[0], batch_size):
                batch = vision[b : b + batch_size].to(device=device, dtype=model_dtype)
                out.append(model.get_image_features(vision_embeds=batch).float().cpu())
    if not out:
        return torch.empty(0, model.config.num_query_tokens, model.config.image_text_hidden_size)
    return torch.cat(out)


__all__ = [
    "VISION_CACHE_DTYPES",
    "atomic_save",
    "features_from_vision_cache",
    "gallery_key",
    "processor_settings",
    "vision_outputs",
]
