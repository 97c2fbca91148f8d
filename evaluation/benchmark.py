"""The benchmark loaders' shared base: one schema for FashionIQ, CIRR and CIRCO, image paths resolved and checked.

[`CirBenchmarkLoader`] reads a split into `datasets.Dataset`s of queries and of the gallery with one schema for all
benchmarks; each benchmark module ([`.fashioniq`], [`.cirr`], [`.circo`]) only knows where its files are and how its
records read. Every image path stays inside the data root, resolved with symlinks followed ([`contained_path`],
[`check_inside_root`]): a `../` or absolute entry in a split file, or an image linking elsewhere, is an error naming
the file and the entry.

queries: `query_id` (str: FashionIQ the record's index in the caption file, CIRR the `pairid`, CIRCO the `id`),
`reference_id`, `reference_image` (`datasets.Image`, decoded on access), `text` (the modification text; FashionIQ's
two captions joined as the peers do), `captions` (the raw captions), `target_ids` (ground truths; `[]` on test
splits), `members` (CIRR's `img_set.members`, `[]` elsewhere).
gallery: `image_id`, `image` (`datasets.Image`, decoded on access).

Example:

```python
>>> from mra_cir.evaluation import load_cir_benchmark
>>> split = load_cir_benchmark("cirr", "/data/cirr_dataset", split="val")
>>> split.queries[0]["text"], len(split.gallery)
('show three bottles of soft drink', 2297)
```
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasets

from mra_cir.retrieval.image_files import IMAGE_EXTENSIONS

logger = logging.getLogger(__name__)


class PathOutsideRootError(ValueError):
    """A path read from a benchmark file (or an image it names) leads outside the data root."""


def contained_path(root: Path, entry: str, where: str, name: str) -> Path:
    """`root / entry` when it stays inside `root` once both are resolved (symlinks followed); otherwise
    [`PathOutsideRootError`] naming the file (`where`), the entry's `name` and its value.

    Absolute entries and entries climbing out with `..` are refused even when the file they name exists: a benchmark
    file never reads outside its data root."""
    if os.path.isabs(entry):
        raise PathOutsideRootError(
            f"{where}: entry {name!r} -> {entry!r} is an absolute path; paths must be relative to the data root {root}"
        )
    path = root / entry
    real, real_root = os.path.realpath(path), os.path.realpath(root)
    if os.path.commonpath([real, real_root]) != real_root:
        raise PathOutsideRootError(
            f"{where}: entry {name!r} -> {entry!r} resolves to {real}, outside the data root {real_root} "
            "(symbolic links are followed)"
        )
    return path


def check_inside_root(paths: dict[str, Path | None], root: Path, benchmark: str) -> None:
    """Every path of `paths` (image id -> path) resolves inside `root` (an image file that is a symbolic link to
    elsewhere is refused, naming the id); folders are resolved once each."""
    real_root = os.path.realpath(root)
    folders: dict[str, str] = {}
    for image_id, path in paths.items():
        if path is None:
            continue
        parent = str(path.parent)
        if parent not in folders:
            folders[parent] = os.path.realpath(parent)
        real = os.path.realpath(path) if os.path.islink(path) else os.path.join(folders[parent], path.name)
        if os.path.commonpath([real, real_root]) != real_root:
            raise PathOutsideRootError(
                f"{benchmark}: image {image_id!r} ({path}) resolves to {real}, outside the image root {real_root} "
                "(symbolic links are followed)"
            )


class MissingImagesError(FileNotFoundError):
    """Images named by the annotation files are not on disk (`missing` holds their ids)."""

    def __init__(self, benchmark: str, missing: list[str], where: str):
        self.missing = missing
        head = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        super().__init__(
            f"{benchmark}: {len(missing)} image(s) named by the annotations are missing under {where} (first: {head}). "
            "Point image_root / --data-root at the official image folder, or pass allow_missing=True "
            "(--allow-missing) to evaluate on the images present."
        )


def read_json(path: Path, what: str) -> Any:
    """`json.load` with an error that names the file and what it should be."""
    if not path.is_file():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({what}): {e}") from e


@dataclass
class CirSplit:
    """One loaded benchmark split.

    Args:
        benchmark (`str`): `"fashioniq"`, `"cirr"` or `"circo"`.
        split (`str`): the split (`"val"`, `"test"`; CIRR's test split is `"test1"`).
        subset (`str`, *optional*): the FashionIQ category.
        queries (`datasets.Dataset`): the query rows (schema in the module docstring).
        gallery (`datasets.Dataset`): `image_id`, `image`.
        records (`list[dict]`): the raw annotation records of the kept queries (same order as `queries`).
        missing_images (`list[str]`): ids of images absent on disk (only with `allow_missing=True`).
        dropped_queries (`list[str]`): query ids dropped because their reference or every ground truth is missing.
    """

    benchmark: str
    split: str
    subset: str | None
    queries: datasets.Dataset
    gallery: datasets.Dataset
    records: list[dict] = field(default_factory=list)
    missing_images: list[str] = field(default_factory=list)
    dropped_queries: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.benchmark}-{self.subset}" if self.subset else self.benchmark

    @property
    def complete(self) -> bool:
        """Whether every image of the official split was present (numbers comparable with published ones)."""
        return not self.missing_images and not self.dropped_queries

    def report(self) -> dict[str, Any]:
        """Counts for a result file: queries, gallery size, missing images, dropped queries."""
        return {
            "benchmark": self.name,
            "split": self.split,
            "num_queries": len(self.queries),
            "gallery_size": len(self.gallery),
            "complete": self.complete,
            "missing_images": len(self.missing_images),
            "dropped_queries": len(self.dropped_queries),
        }


class CirBenchmarkLoader:
    """Base loader: finds the annotation folder, reads query rows and gallery ids, resolves and checks image paths.

    Subclasses set `name`, `splits`, `annotation_probe` and implement `read_queries`, `read_gallery_ids` and
    `image_paths`.

    Args:
        data_root (`str` or `os.PathLike`, *optional*): the benchmark's folder in its official layout.
        annotations_dir (`str` or `os.PathLike`, *optional*): where the annotation files are (default: found under
            `data_root`).
        image_root (`str` or `os.PathLike`, *optional*): where the images are (default: from the official layout).
    """

    name: ClassVar[str] = ""
    splits: ClassVar[tuple[str, ...]] = ("val", "test")
    split_aliases: ClassVar[dict[str, str]] = {}
    subsets: ClassVar[tuple[str, ...]] = ()
    annotation_probe: ClassVar[str] = ""  # a relative path present in the annotation folder
    annotation_subdirs: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        data_root: str | os.PathLike | None = None,
        annotations_dir: str | os.PathLike | None = None,
        image_root: str | os.PathLike | None = None,
    ):
        if data_root is None and annotations_dir is None:
            raise ValueError(f"{self.name}: give data_root or annotations_dir")
        self.data_root = Path(data_root) if data_root is not None else Path(annotations_dir)
        self.annotations_dir = Path(annotations_dir) if annotations_dir is not None else self._find_annotations()
        self._image_root = Path(image_root) if image_root is not None else None

    # ------------------------------------------------------------------------------------------- to implement
    def read_queries(self, split: str, subset: str | None = None) -> tuple[list[dict], list[dict]]:
        """`(records, rows)`: the raw annotation records in file order and one query row per record."""
        raise NotImplementedError

    def read_gallery_ids(self, split: str, subset: str | None = None) -> list[str]:
        """The gallery's image ids in the annotation file's order."""
        raise NotImplementedError

    def image_paths(self, ids: list[str], split: str) -> dict[str, Path | None]:
        """Image id -> path on disk (`None` when absent)."""
        raise NotImplementedError

    @property
    def image_root(self) -> Path:
        return self._image_root if self._image_root is not None else self.data_root

    # ------------------------------------------------------------------------------------------- shared logic
    def _find_annotations(self) -> Path:
        candidates = [self.data_root] + [self.data_root / sub for sub in self.annotation_subdirs]
        for cand in candidates:
            if (cand / self.annotation_probe).is_file():
                return cand
        tried = ", ".join(str(c / self.annotation_probe) for c in candidates)
        raise FileNotFoundError(f"{self.name}: annotation files not found (looked for {tried})")

    def normalize_split(self, split: str) -> str:
        split = self.split_aliases.get(split, split)
        if split not in self.splits:
            raise ValueError(f"{self.name}: unknown split {split!r}; choose from {list(self.splits)}")
        return split

    def check_subset(self, subset: str | None) -> str | None:
        if self.subsets:
            if subset not in self.subsets:
                raise ValueError(f"{self.name}: subset must be one of {list(self.subsets)}, got {subset!r}")
        elif subset is not None:
            raise ValueError(f"{self.name} has no subsets, got {subset!r}")
        return subset

    def load(
        self,
        split: str = "val",
        subset: str | None = None,
        allow_missing: bool = False,
        max_queries: int | None = None,
    ) -> CirSplit:
        """Read one split with its images.

        Args:
            split (`str`, defaults to `"val"`).
            subset (`str`, *optional*): the FashionIQ category (`dress`, `shirt`, `toptee`).
            allow_missing (`bool`, defaults to `False`): without it, any missing image raises
                [`MissingImagesError`] (count + first names); with it, the gallery keeps the images present, ground
                truths absent on disk are dropped and queries without a reference image or without any ground
                truth left are dropped (all reported in the returned [`CirSplit`]).
            max_queries (`int`, *optional*): keep only the first N queries of the file (tests, smoke runs).
        """
        split = self.normalize_split(split)
        subset = self.check_subset(subset)
        records, rows = self.read_queries(split, subset)
        if max_queries is not None:
            records, rows = records[:max_queries], rows[:max_queries]
        gallery_ids = self.read_gallery_ids(split, subset)
        needed = list(dict.fromkeys(gallery_ids + [r["reference_id"] for r in rows]))
        paths = self.image_paths(needed, split)
        check_inside_root(paths, self.image_root, self.name)
        missing = [i for i in needed if paths.get(i) is None]
        if missing and not allow_missing:
            raise MissingImagesError(self.name, missing, str(self.image_root))
        if missing:
            logger.warning("%s: %d image(s) missing; evaluating on the images present", self.name, len(missing))
        present = {i for i in needed if paths.get(i) is not None}
        kept_records, kept_rows, dropped = [], [], []
        for record, row in zip(records, rows):
            row = dict(row)
            has_gt = bool(row["target_ids"])
            row["target_ids"] = [t for t in row["target_ids"] if t in present]
            row["members"] = [m for m in row["members"] if m in present]
            if row["reference_id"] not in present or (has_gt and not row["target_ids"]):
                dropped.append(row["query_id"])
                continue
            row["reference_image"] = str(paths[row["reference_id"]])
            kept_records.append(record)
            kept_rows.append(row)
        if not kept_rows:
            raise ValueError(f"{self.name} {split}: no query left (missing images: {len(missing)})")
        gallery_kept = [i for i in gallery_ids if i in present]
        queries = datasets.Dataset.from_list(kept_rows).cast_column("reference_image", datasets.Image())
        gallery = datasets.Dataset.from_dict(
            {"image_id": gallery_kept, "image": [str(paths[i]) for i in gallery_kept]}
        ).cast_column("image", datasets.Image())
        return CirSplit(self.name, split, subset, queries, gallery, kept_records, missing, dropped)


def index_folder(folder: Path) -> dict[str, Path]:
    """Stem -> path of the image files directly in `folder` (first extension of `IMAGE_EXTENSIONS` wins)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    rank = {ext: i for i, ext in enumerate(IMAGE_EXTENSIONS)}
    with os.scandir(folder) as it:
        for entry in it:
            stem, ext = os.path.splitext(entry.name)
            ext = ext.lower()
            if ext in rank and (stem not in found or rank[ext] < rank[found[stem].suffix.lower()]):
                found[stem] = Path(entry.path)
    return found


__all__ = [
    "IMAGE_EXTENSIONS",
    "CirBenchmarkLoader",
    "CirSplit",
    "MissingImagesError",
    "PathOutsideRootError",
    "check_inside_root",
    "contained_path",
    "index_folder",
    "read_json",
]
