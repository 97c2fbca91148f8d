"""The app's gallery: where its images come from (a folder or a `datasets.Dataset`), its index (loaded, or built and
cached with the same code as `mra-cir search --images`), and the faiss path for large galleries.

- [`GalleryImages`]: id -> the original image (for a query picked from the gallery) or its display version.
- [`build_index`] / [`cached_index`]: `GalleryIndex.from_images` (as `mra-cir search` builds an index), the latter
  cached in a folder with a stamp of the model and the images, rebuilt when either changes.
- [`ApproximateGallery`]: a [`GalleryIndex`] searched through [`ApproximateTokenIndex`] (faiss candidates, exact
  re-rank) with the same `search` signature, so [`rank_gallery`] ranks it unchanged.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from mra_cir.retrieval.encoding import model_fingerprint
from mra_cir.retrieval.gallery_index import FEATURES_FILE, GalleryIndex

from .images import display_image, placeholder_image

logger = logging.getLogger(__name__)

#: written next to an index the app built: what it was built from (model fingerprint, images)
STAMP_FILE = "app_gallery.json"


class GalleryImages:
    """The gallery's images by id, opened on demand.

    Args:
        ids (`list[str]`): the ids that can be opened.
        opener (`Callable[[str], bytes]`): the stored bytes of an id's image.
        description (`str`): where the images are (for the cache stamp and the page).
    """

    def __init__(self, ids: list[str], opener: Callable[[str], bytes], description: str) -> None:
        self.ids = ids
        self._opener = opener
        self.description = description

    @classmethod
    def from_folder(cls, folder: str | os.PathLike) -> GalleryImages:
        """A folder of images; ids are posix paths relative to it (as `mra-cir search --images` makes them)."""
        from mra_cir.retrieval.image_features import list_images

        root = Path(folder).resolve()
        if not root.is_dir():
            raise FileNotFoundError(f"image folder {folder} does not exist")
        listed = list_images(root)
        stamp = max((os.stat(path).st_mtime_ns for _, path in listed), default=0)

        def opener(id_: str) -> bytes:
            path = (root / id_).resolve()
            if not path.is_relative_to(root):
                raise KeyError(f"id {id_!r} points outside {root}")
            return path.read_bytes()

        return cls([i for i, _ in listed], opener, f"folder {root} ({len(listed)} files, mtime {stamp})")

    @classmethod
    def from_dataset(cls, dataset, name: str = "dataset") -> GalleryImages:
        """A `datasets.Dataset` with an `image` column; ids are its `id` column, else the row numbers (as
        `extract_image_features` names them)."""
        import datasets

        if "image" not in dataset.column_names:
            raise ValueError(f"the gallery dataset {name} has no 'image' column (columns: {dataset.column_names})")
        raw = dataset.cast_column("image", datasets.Image(decode=False))
        ids = [str(i) for i in dataset["id"]] if "id" in dataset.column_names else [str(i) for i in range(len(raw))]
        row = {id_: i for i, id_ in enumerate(ids)}

        def opener(id_: str) -> bytes:
            cell = raw[row[id_]]["image"]
            return cell["bytes"] if cell.get("bytes") else Path(cell["path"]).read_bytes()

        return cls(ids, opener, f"dataset {name} ({len(ids)} rows, fingerprint {dataset._fingerprint})")

    def __len__(self) -> int:
        return len(self.ids)

    def original(self, id_: str) -> Image.Image:
        """The id's image as stored, decoded to RGB like the gallery side (`KeyError` / `OSError` if unreadable)."""
        image = Image.open(io.BytesIO(self._opener(id_)))
        image.load()
        return image.convert("RGB")

    def display(self, id_: str) -> Image.Image:
        """The id's image for display (small images enlarged), or a grey tile naming the id if it cannot be read."""
        try:
            return display_image(self.original(id_))
        except (KeyError, OSError, ValueError):
            return placeholder_image(id_)


def build_index(model, processor, images, model_path: str | None, batch_size: int = 32) -> GalleryIndex:
    """A [`GalleryIndex`] of `images` (a folder or a `datasets.Dataset`): [`GalleryIndex.from_images`], the builder
    `mra-cir search --images` uses, with a progress bar."""
    return GalleryIndex.from_images(model, processor, images, model_path=model_path, batch_size=batch_size)


def cached_index(
    model,
    processor,
    images,
    gallery: GalleryImages,
    index_dir: str | os.PathLike,
    model_path: str,
    batch_size: int = 32,
) -> GalleryIndex:
    """The index of `gallery` under `model`, loaded from `index_dir` when its stamp (model fingerprint, images)
    matches, else built with [`build_index`] and saved there with a new stamp."""
    index_dir = Path(index_dir)
    stamp = {"model_fingerprint": model_fingerprint(model), "images": gallery.description}
    stamp_path = index_dir / STAMP_FILE
    if (index_dir / FEATURES_FILE).is_file() and stamp_path.is_file():
        try:
            if json.loads(stamp_path.read_text()) == stamp:
                return GalleryIndex.load(index_dir)
        except (OSError, ValueError) as err:
            logger.warning("rebuilding the gallery index in %s (%s)", index_dir, err)
    index = build_index(model, processor, images, model_path, batch_size)
    index.save(index_dir)
    stamp_path.write_text(json.dumps(stamp, indent=2))
    return index


def recorded_images(index_dir: str | os.PathLike) -> str | None:
    """The image folder an app-built index was made from (its stamp), if it still exists."""
    path = Path(index_dir) / STAMP_FILE
    try:
        description = json.loads(path.read_text())["images"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not description.startswith("folder "):
        return None
    folder = description.removeprefix("folder ").rsplit(" (", 1)[0]
    return folder if Path(folder).is_dir() else None


class ApproximateGallery:
    """A [`GalleryIndex`] searched with faiss candidates re-ranked exactly ([`ApproximateTokenIndex`]).

    `search` has the signature and the output of [`GalleryIndex.search`], so [`rank_gallery`] uses it unchanged.

    Args:
        index ([`GalleryIndex`]): the gallery.
        n_candidates (`int`, *optional*): candidates re-ranked per query (default: the index's `max(10 k, 256)`).
        index_kwargs: passed to [`ApproximateTokenIndex`] (`mode`, `index_factory`, `nprobe`, ...).
    """

    def __init__(self, index: GalleryIndex, n_candidates: int | None = None, **index_kwargs) -> None:
        from mra_cir.retrieval.approximate_search import ApproximateTokenIndex

        self.index = index
        self.ids = index.ids
        self.features = index.features
        self.reduce = index.reduce
        self.model_path = index.model_path
        self.n_candidates = n_candidates
        self.approximate = ApproximateTokenIndex(index.features, **index_kwargs)

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, id_: object) -> bool:
        return id_ in self.index

    def __repr__(self) -> str:
        return f"ApproximateGallery({self.index!r}, index_factory={self.approximate.index_factory!r})"

    def search(
        self, queries: torch.Tensor, k: int, exclude: list[str | None] | None = None
    ) -> tuple[torch.Tensor, list[list[str]]]:
        """Top-k gallery ids per query, as [`GalleryIndex.search`] returns them (ranks past the candidates found are
        dropped, so a row can be shorter only if faiss found fewer than k candidates)."""
        b = queries.shape[0]
        if exclude is not None and len(exclude) != b:
            raise ValueError(f"exclude must have one entry per query ({b}), got {len(exclude)}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        positions = [self.index._position.get(e, -1) if e is not None else -1 for e in (exclude or [None] * b)]
        k_out = min(k, len(self) - int(any(p >= 0 for p in positions)))
        if k_out < 1:
            raise ValueError(f"the gallery has {len(self)} images: nothing left to rank")
        result = self.approximate.search(
            queries.detach().cpu(),
            k_out,
            reduce=self.reduce,
            n_candidates=self.n_candidates,
            query_indices=torch.tensor(positions) if any(p >= 0 for p in positions) else None,
        )
        scores, indices = result.scores.cpu(), result.indices.cpu()
        valid = indices[0] >= 0 if b == 1 else (indices >= 0).all(dim=0)
        scores, indices = scores[:, valid], indices[:, valid]
        return scores, [[self.ids[i] for i in row] for row in indices.tolist()]


def searchable(index: GalleryIndex, approximate_above: int) -> GalleryIndex | ApproximateGallery:
    """`index` itself (exact search), or an [`ApproximateGallery`] over it when it holds more than
    `approximate_above` images."""
    return ApproximateGallery(index) if len(index) > approximate_above else index


__all__ = [
    "ApproximateGallery",
    "GalleryImages",
    "STAMP_FILE",
    "build_index",
    "cached_index",
    "recorded_images",
    "searchable",
]
