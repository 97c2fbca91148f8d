"""The on-disk format of image features (see [`~.image_features.extract_image_features`]): safetensors shards
`features-XXXXX-of-YYYYY.safetensors` (tensor `features`, metadata `ids` and `skipped`) and `manifest.json` (the ordered
ids, their SHA-256, the duplicates, the shard size), each written atomically; and the reuse of unchanged shards when
the inputs change."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

MANIFEST = "manifest.json"
FORMAT_VERSION = 1


def _shard_name(index: int, total: int) -> str:
    return f"features-{index:05d}-of-{total:05d}.safetensors"


def _write_shard(path: Path, features: torch.Tensor, ids: list[str], skipped: list[tuple[str, str]]) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".tmp")
    metadata = {"ids": json.dumps(ids), "skipped": json.dumps(skipped)}
    save_file({"features": features.contiguous().cpu()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)  # atomic: a crash never leaves a half-written shard under the final name


def _read_shard(path: Path) -> tuple[torch.Tensor, list[str], list[tuple[str, str]]]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
        features = handle.get_tensor("features")
    if "ids" not in metadata:
        raise ValueError(f"{path} has no 'ids' metadata: not a feature shard")
    return features, json.loads(metadata["ids"]), [tuple(s) for s in json.loads(metadata.get("skipped", "[]"))]


def _write_manifest(output_dir, ids, hashes, duplicates, num_shards, shard_size, unreadable=()) -> None:
    manifest = {
        "format_version": FORMAT_VERSION,
        "num_shards": num_shards,
        "shard_size": shard_size,
        "ids": ids,
        "sha256": hashes,
        "duplicates": duplicates,
        "unreadable": [list(u) for u in unreadable],
    }
    tmp = output_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest))
    os.replace(tmp, output_dir / MANIFEST)


def keep_unchanged_shards(output_dir: Path, old: dict, ids: list[str], hashes: list[str], shard_size: int) -> None:
    """Rename the old shards whose (ids, hashes) are those of a new shard to the new name; delete the rest."""
    old_ids, old_hashes, old_size = old.get("ids") or [], old.get("sha256") or [], old.get("shard_size")
    old_total = old.get("num_shards") or 0
    total = max(1, -(-len(ids) // shard_size))
    by_content: dict[tuple, Path] = {}
    if old_size and old_hashes and len(old_hashes) == len(old_ids):
        for index in range(old_total):
            part = slice(index * old_size, (index + 1) * old_size)
            path = output_dir / _shard_name(index, old_total)
            if path.is_file():
                by_content[(tuple(old_ids[part]), tuple(old_hashes[part]))] = path
    staged = []
    for index in range(total):
        part = slice(index * shard_size, (index + 1) * shard_size)
        source = by_content.pop((tuple(ids[part]), tuple(hashes[part])), None)
        if source is not None:
            staged.append((source.with_name(source.name + ".keep"), output_dir / _shard_name(index, total)))
            os.replace(source, staged[-1][0])
    for stale in output_dir.glob("features-*.safetensors*"):
        if not stale.name.endswith(".keep"):
            stale.unlink()
    for kept, final in staged:
        os.replace(kept, final)
    (output_dir / MANIFEST).unlink(missing_ok=True)


__all__ = ["FORMAT_VERSION", "MANIFEST", "keep_unchanged_shards"]
