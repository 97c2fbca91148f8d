"""Image feature extraction: batched, resumable (safetensors shards), corrupt images skipped, duplicates detected.

`extract_image_features(model, processor, images, output_dir)` embeds a folder of images, a list of paths or a
`datasets.Dataset` with an `image` column into `(N, Q, D)` token features (`model.get_image_features`).

- **Duplicates.** Files with the same bytes (SHA-256) are embedded once: the later ones are listed in
  `ImageFeatures.duplicates` (duplicate id -> first id) and are not in `ids` / `features`.
- **Corrupt images.** Unreadable (a broken symbolic link included) or undecodable images are skipped, counted and
  listed (`skipped`: (id, reason)).
- **Resumable.** With `output_dir`, the unique images are cut into shards of `shard_size` and each finished shard is
  written atomically as `features-XXXXX-of-YYYYY.safetensors` (tensor `features`, metadata `ids` and `skipped` as
  JSON) next to `manifest.json` (the ordered ids, their hashes, the duplicates). A re-run with the same inputs
  skips finished shards; different inputs in the same directory are refused unless `overwrite=True` (start afresh)
  or `reuse_shards=True` (keep every shard whose ids and bytes are unchanged, embed the others: an image edited in
  place costs one shard).
- **Hashed once.** With `content_hashes` (a [`ContentHashes`] memo), files are hashed once and then recognised by
  `(path, size, mtime, ctime, inode)`.
- **Multi-process.** Launched with `accelerate launch`, each process (`accelerate.PartialState`) embeds a contiguous
  slice of the shards on its device; the main process writes the manifest, every process waits, then reads back the
  merged result. This needs `output_dir` (the shards are the exchange medium).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .content_hashes import ContentHashes
from .distributed import distributed_state
from .encoding import encode_images
from .feature_shards import MANIFEST, _read_shard, _shard_name, _write_manifest, _write_shard, keep_unchanged_shards
from .image_files import IMAGE_EXTENSIONS, list_images


@dataclass
class ImageFeatures:
    """Token features of a collection of images.

    Args:
        features (`torch.Tensor` of shape `(N, Q, D)`): L2-normalised image tokens, one row per id.
        ids (`list[str]`): the N image ids (relative paths for a folder), in input order.
        skipped (`list[tuple[str, str]]`): `(id, reason)` of images that could not be read or decoded.
        duplicates (`dict[str, str]`): duplicate id -> id of the first image with the same bytes (not embedded).
    """

    features: torch.Tensor
    ids: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates: dict[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.ids)

    def save(self, output_dir: str | os.PathLike) -> None:
        """Write in the [`extract_image_features`] directory format (one shard); read back with
        [`load_image_features`]."""
        output_dir = Path(output_dir)
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_manifest(output_dir, self.ids + [s[0] for s in self.skipped], None, self.duplicates, 1, None)
        _write_shard(output_dir / _shard_name(0, 1), self.features, self.ids, self.skipped)


# ----------------------------------------------------------------------------------------------------------------------
# Sources
# ----------------------------------------------------------------------------------------------------------------------
@dataclass
class _Item:
    id: str
    read_bytes: Callable[[], bytes]
    path: Path | None = None


def _read_file(path: Path) -> bytes:
    if path.is_symlink() and not path.exists():
        raise FileNotFoundError(f"broken symbolic link (to {os.readlink(path)})")
    return path.read_bytes()


def _file_reader(path: Path) -> Callable[[], bytes]:
    return lambda: _read_file(path)


def _dataset_reader(dataset, row: int, column: str) -> Callable[[], bytes]:
    def read() -> bytes:
        value = dataset[row][column]
        if value is None:
            raise ValueError("empty image")
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            return Path(value["path"]).read_bytes()
        raise ValueError("image has neither bytes nor path")

    return read


def _collect_items(images, ids: Sequence[str] | None) -> list[_Item]:
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist")
        listed = list_images(folder, broken_links=True)
        if not listed:
            raise ValueError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) found under {folder}")
        default_ids = [image_id for image_id, _ in listed]
        paths = [Path(path) for _, path in listed]
        readers = [_file_reader(path) for path in paths]
    elif hasattr(images, "column_names") and hasattr(images, "cast_column"):  # datasets.Dataset
        from datasets import Image as ImageFeature

        if "image" not in images.column_names:
            raise ValueError(f"the dataset has no 'image' column (columns: {images.column_names})")
        raw = images.cast_column("image", ImageFeature(decode=False))
        if "id" in images.column_names:
            default_ids = [str(i) for i in images["id"]]
        else:
            default_ids = [str(i) for i in range(len(images))]
        readers = [_dataset_reader(raw, i, "image") for i in range(len(images))]
        paths = [None] * len(readers)
    else:
        paths = [Path(p) for p in images]
        default_ids = [str(p) for p in paths]
        readers = [_file_reader(p) for p in paths]
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != len(readers):
            raise ValueError(f"got {len(ids)} ids for {len(readers)} images")
    else:
        ids = default_ids
    if len(set(ids)) != len(ids):
        raise ValueError("image ids must be unique")
    return [_Item(i, r, p) for i, r, p in zip(ids, readers, paths)]


def _hash_items(items: list[_Item], show_progress: bool, content_hashes: ContentHashes | None = None):
    """SHA-256 of each item's bytes -> (unique items, their hashes, duplicates, unreadable (id, reason))."""
    from tqdm.auto import tqdm

    first_by_hash: dict[str, str] = {}
    unique, hashes, duplicates, unreadable = [], [], {}, []
    for item in tqdm(items, desc="hashing images", unit="img", disable=not show_progress):
        try:
            if content_hashes is not None and item.path is not None:
                if item.path.is_symlink() and not item.path.exists():
                    _read_file(item.path)  # raises, naming the broken link
                digest = content_hashes.sha256(item.path)
            else:
                digest = hashlib.sha256(item.read_bytes()).hexdigest()
        except Exception as err:  # unreadable file: listed, not fatal
            unreadable.append((item.id, _reason("unreadable", err)))
            continue
        if digest in first_by_hash:
            duplicates[item.id] = first_by_hash[digest]
            continue
        first_by_hash[digest] = item.id
        unique.append(item)
        hashes.append(digest)
    return unique, hashes, duplicates, unreadable


def _reason(kind: str, err: Exception) -> str:
    """A stable one-line reason (object addresses removed, so re-runs compare equal)."""
    return f"{kind}: {type(err).__name__}: {re.sub(r' ?<[^>]*>', '', str(err))}".strip()


def _decode(data: bytes):
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image.convert("RGB")


# ----------------------------------------------------------------------------------------------------------------------
# Shards
# ----------------------------------------------------------------------------------------------------------------------
def load_image_features(output_dir: str | os.PathLike) -> ImageFeatures:
    """Read the result of [`extract_image_features`] (or [`ImageFeatures.save`]) from `output_dir`.

    Raises:
        `FileNotFoundError` naming the directory when the manifest is missing; `ValueError` listing unfinished shards.
    """
    output_dir = Path(output_dir)
    manifest_path = output_dir / MANIFEST
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{manifest_path} not found: {output_dir} is not an image-features directory")
    manifest = json.loads(manifest_path.read_text())
    total = manifest["num_shards"]
    paths = [output_dir / _shard_name(i, total) for i in range(total)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ValueError(f"{output_dir}: {len(missing)} of {total} shards are not finished ({missing[:3]}...): re-run")
    parts, ids = [], []
    skipped = [tuple(u) for u in manifest.get("unreadable", [])]
    for path in paths:
        feats, shard_ids, shard_skipped = _read_shard(path)
        if shard_ids:
            parts.append(feats)
        ids += shard_ids
        skipped += shard_skipped
    features = torch.cat(parts) if parts else torch.empty(0, 0, 0)
    return ImageFeatures(features, ids, skipped, dict(manifest.get("duplicates", {})))


# ----------------------------------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------------------------------
def _embed_items(model, processor, items: list[_Item], batch_size: int, progress) -> tuple:
    """Decode and embed items batch by batch -> (features (n_ok, Q, D) cpu, ok ids, skipped (id, reason))."""
    parts, ok_ids, skipped = [], [], []
    for start in range(0, len(items), batch_size):
        batch = items[start : start + batch_size]
        images, batch_ids = [], []
        for item in batch:
            try:
                images.append(_decode(item.read_bytes()))
                batch_ids.append(item.id)
            except Exception as err:  # corrupt image: listed, not fatal
                skipped.append((item.id, _reason("undecodable", err)))
        if images:
            parts.append(encode_images(model, processor, images, batch_size=len(images), output_dtype=None))
            ok_ids += batch_ids
        progress.update(len(batch))
    features = torch.cat(parts) if parts else torch.empty(0, 0, 0)
    return features, ok_ids, skipped


def extract_image_features(
    model,
    processor,
    images,
    output_dir: str | os.PathLike | None = None,
    batch_size: int = 32,
    ids: Sequence[str] | None = None,
    show_progress: bool = True,
    *,
    shard_size: int = 1024,
    overwrite: bool = False,
    reuse_shards: bool = False,
    content_hashes: ContentHashes | None = None,
) -> ImageFeatures:
    """Embed images into token features with `model.get_image_features`.

    Args:
        model ([`MraCirModel`]): any model with `get_image_features(pixel_values=...) -> (B, Q, D)`; used on its
            device, in eval mode (its training flag is restored afterwards) and `torch.no_grad()`.
        processor ([`MraCirProcessor`]): `processor(images=[PIL images])["pixel_values"]`.
        images (`str | Path | list[str | Path] | datasets.Dataset`): a folder (searched recursively for
            `IMAGE_EXTENSIONS`; ids are the relative paths), a list of paths (ids: the paths as given) or a
            dataset with an `image` column (ids: its `id` column if present, else the row numbers).
        output_dir (`str | Path`, *optional*): write resumable shards and a manifest here (required under
            `accelerate launch` with several processes).
        batch_size (`int`, defaults to 32): images per forward pass.
        ids (`list[str]`, *optional*): ids overriding the defaults (one per input image).
        show_progress (`bool`, defaults to `True`): tqdm bars (hashing, embedding).
        shard_size (`int`, defaults to 1024): images per shard (the unit of resumption and of multi-process split).
        overwrite (`bool`, defaults to `False`): discard an `output_dir` made from different inputs.
        reuse_shards (`bool`, defaults to `False`): in an `output_dir` made from different inputs, keep the shards
            whose ids and bytes are unchanged and embed only the others (the caller guarantees the same model and
            preprocessing: the triplet builder keys the folder by them).
        content_hashes ([`ContentHashes`], *optional*): a memo of file hashes (files are then hashed once).

    Returns:
        [`ImageFeatures`] with `features` `(N, Q, D)`, `ids`, `skipped`, `duplicates`.

    Example:

    ```python
    >>> feats = extract_image_features(model, processor, "photos/", output_dir="photos-features/")
    >>> feats.features.shape, len(feats.skipped), feats.duplicates
    ```
    """
    from tqdm.auto import tqdm

    if batch_size < 1 or shard_size < 1:
        raise ValueError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    state = distributed_state()
    if state.num_processes > 1 and output_dir is None:
        raise ValueError("extract_image_features needs output_dir when run with several processes (accelerate)")
    items = _collect_items(images, ids)
    unique, hashes, duplicates, unreadable = _hash_items(
        items, show_progress and state.is_main_process, content_hashes
    )
    num_shards = max(1, -(-len(unique) // shard_size))
    shards = [unique[i * shard_size : (i + 1) * shard_size] for i in range(num_shards)]
    progress_enabled = show_progress and state.is_local_main_process

    if output_dir is None:
        with tqdm(total=len(unique), desc="embedding images", unit="img", disable=not progress_enabled) as progress:
            features, ok_ids, skipped = _embed_items(model, processor, unique, batch_size, progress)
        return ImageFeatures(features, ok_ids, unreadable + skipped, duplicates)

    output_dir = Path(output_dir)
    unique_ids = [item.id for item in unique]
    if state.is_main_process:
        manifest_path = output_dir / MANIFEST
        if manifest_path.is_file():
            old = json.loads(manifest_path.read_text())
            same = old.get("ids") == unique_ids and old.get("sha256") == hashes and old.get("shard_size") == shard_size
            if not same:
                if overwrite:
                    shutil.rmtree(output_dir)
                elif reuse_shards:
                    keep_unchanged_shards(output_dir, old, unique_ids, hashes, shard_size)
                else:
                    raise ValueError(
                        f"{output_dir} holds features of other inputs (ids, bytes or shard_size differ): use another "
                        "output_dir, overwrite=True or reuse_shards=True"
                    )
        output_dir.mkdir(parents=True, exist_ok=True)
        _write_manifest(output_dir, unique_ids, hashes, duplicates, num_shards, shard_size, unreadable)
    state.wait_for_everyone()

    with state.split_between_processes(list(range(num_shards))) as my_shards:
        todo = [i for i in my_shards if not (output_dir / _shard_name(i, num_shards)).is_file()]
        total = sum(len(shards[i]) for i in my_shards)
        done = total - sum(len(shards[i]) for i in todo)
        with tqdm(
            total=total, initial=done, desc="embedding images", unit="img", disable=not progress_enabled
        ) as progress:
            for i in todo:
                features, ok_ids, skipped = _embed_items(model, processor, shards[i], batch_size, progress)
                _write_shard(output_dir / _shard_name(i, num_shards), features, ok_ids, skipped)
    state.wait_for_everyone()
    return load_image_features(output_dir)
