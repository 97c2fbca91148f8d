"""Placeholder images for the benchmark tests: one small distinct PNG/JPEG per file name, in each official layout."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image


def placeholder(name: str, size: int = 16) -> Image.Image:
    """A small random RGB image seeded by `name` (distinct names give distinct images)."""
    seed = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "little")
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8))


def first_queries(records: list[dict], n: int) -> list[dict]:
    return records[:n]


def fashioniq_images(benchmarks_dir: Path, root: Path, n_queries: int, n_extra: int, split: str = "val") -> Path:
    """`root/images/<name>.png` for the first queries' candidates/targets and `n_extra` more gallery names."""
    images = root / "images"
    images.mkdir(parents=True, exist_ok=True)
    for cat in ("dress", "shirt", "toptee"):
        caps = json.loads((benchmarks_dir / f"fashioniq/captions/cap.{cat}.{split}.json").read_text())[:n_queries]
        gallery = json.loads((benchmarks_dir / f"fashioniq/image_splits/split.{cat}.{split}.json").read_text())
        names = {c["candidate"] for c in caps} | {c["target"] for c in caps if "target" in c} | set(gallery[:n_extra])
        for name in names:
            placeholder(name).save(images / f"{name}.png")
    return images


def cirr_images(benchmarks_dir: Path, root: Path, n_queries: int, n_extra: int, split: str = "val") -> Path:
    """`root/<relative path of split.rc2.<split>.json>` for the first queries' set members and more gallery names."""
    caps = json.loads((benchmarks_dir / f"cirr/captions/cap.rc2.{split}.json").read_text())[:n_queries]
    mapping = json.loads((benchmarks_dir / f"cirr/image_splits/split.rc2.{split}.json").read_text())
    names = {m for c in caps for m in c["img_set"]["members"]} | {c["reference"] for c in caps}
    names |= set(list(mapping)[:n_extra])
    for name in names:
        path = root / mapping[name]
        path.parent.mkdir(parents=True, exist_ok=True)
        placeholder(name).save(path)
    return root


def circo_images(benchmarks_dir: Path, root: Path, n_queries: int, n_extra: int, split: str = "val") -> Path:
    """COCO layout `root/COCO2017_unlabeled/{annotations/image_info_unlabeled2017.json, unlabeled2017/*.jpg}` holding
    the first queries' references and ground truths plus `n_extra` distractor ids."""
    queries = json.loads((benchmarks_dir / f"circo/annotations/{split}.json").read_text())[:n_queries]
    ids = {q["reference_img_id"] for q in queries} | {g for q in queries for g in q.get("gt_img_ids", [])}
    ids |= set(range(900_000_000, 900_000_000 + n_extra))
    coco = root / "COCO2017_unlabeled"
    (coco / "annotations").mkdir(parents=True, exist_ok=True)
    (coco / "unlabeled2017").mkdir(parents=True, exist_ok=True)
    info = {"images": [{"id": i, "file_name": f"{i:012d}.jpg"} for i in sorted(ids)]}
    (coco / "annotations" / "image_info_unlabeled2017.json").write_text(json.dumps(info))
    for i in ids:
        placeholder(str(i)).save(coco / "unlabeled2017" / f"{i:012d}.jpg")
    return root
