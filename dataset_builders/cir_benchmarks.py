"""Loaders for the zero-shot CIR benchmarks FashionIQ, CIRR and CIRCO (official annotation files + a user's images).

One base class, [`CirBenchmarkLoader`], reads a split into `datasets.Dataset`s of queries and of the gallery with one
schema for all three benchmarks; each subclass only knows where its files are and how its records read:

queries: `query_id` (str: FashionIQ the record's index in the caption file, CIRR the `pairid`, CIRCO the `id`),
`reference_id`, `reference_image` (`datasets.Image`, decoded on access), `text` (the modification text; FashionIQ's
two captions joined as the peers do), `captions` (the raw captions), `target_ids` (ground truths; `[]` on test
splits), `members` (CIRR's `img_set.members`, `[]` elsewhere).
gallery: `image_id`, `image` (`datasets.Image`, decoded on access).

Official layouts (the defaults; `annotations_dir` and `image_root` override them):

- FashionIQ: `<root>/captions/cap.<cat>.<split>.json`, `<root>/image_splits/split.<cat>.<split>.json`,
  `<root>/images/<name>.png|jpg` (`<root>` or `<root>/fashioniq`).
- CIRR: `<root>/captions/cap.rc2.<split>.json`, `<root>/image_splits/split.rc2.<split>.json`, whose values are image
  paths relative to the image root (`./dev/dev-244-0-img0.png`); annotations in `<root>` or `<root>/cirr`, images
  under `<root>` (or its parent when `<root>` is the `cirr/` annotation folder).
- CIRCO: `<root>/annotations/{val,test}.json`; the gallery is COCO 2017 unlabeled: `image_info_unlabeled2017.json`
  (in `<root>/COCO2017_unlabeled/annotations/`, `<root>/annotations/` or `<root>`) and the images in
  `<root>/COCO2017_unlabeled/unlabeled2017/` or `<root>/unlabeled2017/`. Without the info file the gallery is every
  image in the image folder (a warning says so).

Example:

```python
>>> from dataset_builders.cir_benchmarks import load_cir_benchmark
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

logger = logging.getLogger(__name__)

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


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


def join_fashioniq_captions(captions: list[str], reverse: bool = False) -> str:
    """FashionIQ's two relative captions as one text, as the peers do.

    `c1.strip('.?, ').capitalize() + " and " + c2.strip('.?, ')`; `reverse=True` joins them in the other order.
    """
    if len(captions) != 2:
        raise ValueError(f"a FashionIQ record has two captions, got {len(captions)}: {captions!r}")
    c1, c2 = (captions[1], captions[0]) if reverse else (captions[0], captions[1])
    return f"{c1.strip('.?, ').capitalize()} and {c2.strip('.?, ')}"


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


def _index_folder(folder: Path) -> dict[str, Path]:
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


class FashionIQLoader(CirBenchmarkLoader):
    """FashionIQ (Wu et al., 2021): per category, queries = every record of `cap.<cat>.<split>.json` in file order,
    gallery = `split.<cat>.<split>.json`. The reference stays in the gallery when ranking."""

    name = "fashioniq"
    subsets = FASHIONIQ_CATEGORIES
    annotation_probe = "captions/cap.dress.val.json"
    annotation_subdirs = ("fashioniq", "fashionIQ_dataset")

    @property
    def image_root(self) -> Path:
        if self._image_root is not None:
            return self._image_root
        for cand in (self.data_root / "images", self.annotations_dir / "images"):
            if cand.is_dir():
                return cand
        return self.data_root / "images"

    def read_queries(self, split, subset=None):
        path = self.annotations_dir / "captions" / f"cap.{subset}.{split}.json"
        records = read_json(path, f"FashionIQ {subset} {split} captions")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of caption records")
        rows = []
        for i, rec in enumerate(records):
            if "candidate" not in rec or "captions" not in rec:
                raise ValueError(f"{path}: record {i} lacks 'candidate' or 'captions'")
            rows.append(
                {
                    "query_id": str(i),
                    "reference_id": rec["candidate"],
                    "text": join_fashioniq_captions(rec["captions"]),
                    "captions": list(rec["captions"]),
                    "target_ids": [rec["target"]] if "target" in rec else [],
                    "members": [],
                }
            )
        return records, rows

    def read_gallery_ids(self, split, subset=None):
        path = self.annotations_dir / "image_splits" / f"split.{subset}.{split}.json"
        names = read_json(path, f"FashionIQ {subset} {split} image split")
        if not isinstance(names, list):
            raise ValueError(f"{path}: expected a list of image names")
        return [str(n) for n in names]

    def image_paths(self, ids, split):
        index = _index_folder(self.image_root)
        return {i: index.get(i) for i in ids}


class CirrLoader(CirBenchmarkLoader):
    """CIRR (Liu et al., 2021), release rc2: queries `cap.rc2.<split>.json`, gallery `split.rc2.<split>.json` (image
    name -> path relative to the image root). The reference is deleted from each ranking when scoring."""

    name = "cirr"
    splits = ("val", "test1")
    split_aliases = {"test": "test1", "dev": "val"}
    annotation_probe = "captions/cap.rc2.val.json"
    annotation_subdirs = ("cirr",)

    @property
    def image_root(self) -> Path:
        if self._image_root is not None:
            return self._image_root
        for cand in (self.data_root, self.annotations_dir.parent, self.annotations_dir):
            if (cand / "dev").is_dir() or (cand / "test1").is_dir():
                return cand
        return self.data_root

    def _split_file(self, split: str) -> dict[str, str]:
        path = self.annotations_dir / "image_splits" / f"split.rc2.{split}.json"
        mapping = read_json(path, f"CIRR {split} image split")
        if not isinstance(mapping, dict):
            raise ValueError(f"{path}: expected an object image name -> relative path")
        return mapping

    def read_queries(self, split, subset=None):
        path = self.annotations_dir / "captions" / f"cap.rc2.{split}.json"
        records = read_json(path, f"CIRR {split} captions")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of caption records")
        rows = []
        for i, rec in enumerate(records):
            for key in ("pairid", "reference", "caption", "img_set"):
                if key not in rec:
                    raise ValueError(f"{path}: record {i} lacks {key!r}")
            rows.append(
                {
                    "query_id": str(rec["pairid"]),
                    "reference_id": rec["reference"],
                    "text": rec["caption"],
                    "captions": [rec["caption"]],
                    "target_ids": [rec["target_hard"]] if "target_hard" in rec else [],
                    "members": list(rec["img_set"]["members"]),
                }
            )
        return records, rows

    def read_gallery_ids(self, split, subset=None):
        return list(self._split_file(split))

    def image_paths(self, ids, split):
        mapping = self._split_file(split)
        root = self.image_root
        out: dict[str, Path | None] = {}
        for i in ids:
            rel = mapping.get(i)
            path = root / rel if rel is not None else None
            out[i] = path if path is not None and path.is_file() else None
        return out


class CircoLoader(CirBenchmarkLoader):
    """CIRCO (Baldrati et al., 2023): queries `annotations/<split>.json`, several ground truths per query
    (`gt_img_ids`), gallery = COCO 2017 unlabeled (123,403 images). The official scorer keeps the reference."""

    name = "circo"
    annotation_probe = "annotations/val.json"
    annotation_subdirs = ("circo", "CIRCO")

    def _coco_dirs(self) -> tuple[Path | None, Path]:
        root = self.data_root
        info_candidates = [
            root / "COCO2017_unlabeled" / "annotations",
            root / "annotations",
            root / "COCO2017_unlabeled",
            root,
        ]
        info = next(
            (
                c / "image_info_unlabeled2017.json"
                for c in info_candidates
                if (c / "image_info_unlabeled2017.json").is_file()
            ),
            None,
        )
        if self._image_root is not None:
            return info, self._image_root
        image_candidates = [root / "COCO2017_unlabeled" / "unlabeled2017", root / "unlabeled2017"]
        images = next((c for c in image_candidates if c.is_dir()), image_candidates[0])
        return info, images

    @property
    def image_root(self) -> Path:
        return self._coco_dirs()[1]

    def read_queries(self, split, subset=None):
        path = self.annotations_dir / "annotations" / f"{split}.json"
        records = read_json(path, f"CIRCO {split} annotations")
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a list of query records")
        rows = []
        for i, rec in enumerate(records):
            for key in ("id", "reference_img_id", "relative_caption"):
                if key not in rec:
                    raise ValueError(f"{path}: record {i} lacks {key!r}")
            rows.append(
                {
                    "query_id": str(rec["id"]),
                    "reference_id": str(rec["reference_img_id"]),
                    "text": rec["relative_caption"],
                    "captions": [rec["relative_caption"]],
                    "target_ids": [str(g) for g in rec.get("gt_img_ids", [])],
                    "members": [],
                }
            )
        return records, rows

    def _gallery(self) -> dict[str, str]:
        info, images = self._coco_dirs()
        if info is not None:
            data = read_json(info, "COCO image_info_unlabeled2017.json")
            if not isinstance(data, dict) or "images" not in data:
                raise ValueError(f"{info}: expected a COCO image info file with an 'images' list")
            return {str(im["id"]): im.get("file_name", f"{int(im['id']):012d}.jpg") for im in data["images"]}
        logger.warning(
            "circo: image_info_unlabeled2017.json not found under %s; the gallery is every image in %s",
            self.data_root,
            images,
        )
        return {str(int(stem)): path.name for stem, path in sorted(_index_folder(images).items()) if stem.isdigit()}

    def read_gallery_ids(self, split, subset=None):
        return list(self._gallery())

    def image_paths(self, ids, split):
        files = self._gallery()
        folder = self.image_root
        index = {p.name: p for p in _index_folder(folder).values()}
        out: dict[str, Path | None] = {}
        for i in ids:
            name = files.get(i, f"{int(i):012d}.jpg" if i.isdigit() else i)
            out[i] = index.get(name)
        return out


LOADERS: dict[str, type[CirBenchmarkLoader]] = {"fashioniq": FashionIQLoader, "cirr": CirrLoader, "circo": CircoLoader}


def get_loader(benchmark: str, data_root=None, annotations_dir=None, image_root=None) -> CirBenchmarkLoader:
    """The loader of `benchmark` (`"fashioniq"`, `"cirr"` or `"circo"`)."""
    if benchmark not in LOADERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; choose from {list(LOADERS)}")
    return LOADERS[benchmark](data_root=data_root, annotations_dir=annotations_dir, image_root=image_root)


def load_cir_benchmark(
    benchmark: str,
    data_root: str | os.PathLike,
    split: str = "val",
    subset: str | None = None,
    allow_missing: bool = False,
    max_queries: int | None = None,
    annotations_dir: str | os.PathLike | None = None,
    image_root: str | os.PathLike | None = None,
) -> CirSplit:
    """Load one benchmark split (see [`CirBenchmarkLoader.load`])."""
    loader = get_loader(benchmark, data_root, annotations_dir, image_root)
    return loader.load(split, subset=subset, allow_missing=allow_missing, max_queries=max_queries)


__all__ = [
    "FASHIONIQ_CATEGORIES",
    "LOADERS",
    "CirBenchmarkLoader",
    "CirSplit",
    "CircoLoader",
    "CirrLoader",
    "FashionIQLoader",
    "MissingImagesError",
    "get_loader",
    "join_fashioniq_captions",
    "load_cir_benchmark",
    "read_json",
]
