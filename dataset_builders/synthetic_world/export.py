"""The world's benchmarks written in the real benchmarks' official file layouts, for the real loaders and evaluators.

The world keeps no metric or ranking code of its own: a benchmark of the world is exported here and scored by
`mra_cir.evaluation` exactly as FashionIQ, CIRR and CIRCO are (`mra-cir evaluate` and `evaluate-rankings` read the
exported folders too).

- **CIRR layout** ([`export_cirr_layout`]): `captions/cap.rc2.val.json` (records `pairid`, `reference`,
  `target_hard`, `target_soft`, `caption`, `img_set` with its `id` and 6 `members`), `image_splits/split.rc2.val.json`
  (image name -> `./dev/<name>.png`) and the images in `dev/`. Image names are `dev-<row>` (CIRR's are
  `dev-<set>-<member>-img<k>`).
- **CIRCO layout** ([`export_circo_layout`]): `annotations/val.json` (records `id`, `reference_img_id`,
  `target_img_id`, `relative_caption`, `shared_concept`, `gt_img_ids`, `semantic_aspects`), the gallery's images in
  `unlabeled2017/<id:012d>.png` and `image_info_unlabeled2017.json` listing them in gallery order (as COCO's file
  does). Gallery ids are the gallery's row numbers, as CIRCO's are COCO integer ids.

Every file is written with sorted keys and the images' stored PNG bytes, so the same world gives the same files, byte
for byte.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import datasets


def _write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _write_images(gallery: datasets.Dataset, folder: Path, names: Sequence[str]) -> None:
    """The gallery's stored image bytes (PNG), one file per row, named `names[row]` (unchanged files are kept)."""
    folder.mkdir(parents=True, exist_ok=True)
    raw = gallery.cast_column("image", datasets.Image(decode=False))["image"]
    for name, image in zip(names, raw):
        path = folder / name
        data = image["bytes"] if image.get("bytes") else Path(image["path"]).read_bytes()
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)


def export_circo_layout(
    gallery: datasets.Dataset,
    queries: Sequence[dict],
    folder: str | os.PathLike,
    split: str = "val",
) -> Path:
    """Write a benchmark of the world in CIRCO's layout (see the module docstring).

    Args:
        gallery (`datasets.Dataset`): rows with `id` and `image` (the world's gallery, in order).
        queries (`Sequence[dict]`): one record per query with `reference_id`, `target_ids` (every ground truth, the
            main target first), `modification_text` and optionally `shared_concept` and `semantic_aspects`; ids are
            the gallery's `id` values.
        folder (`str` or `os.PathLike`): the benchmark's root (`data_root` of `CircoLoader` / `CircoEvaluator`).
        split (`str`, defaults to `"val"`): the annotation file's name.

    Returns:
        `Path`: the folder.
    """
    folder = Path(folder)
    world_ids = list(gallery["id"])
    number = {world_id: row for row, world_id in enumerate(world_ids)}
    missing = sorted({q["reference_id"] for q in queries} - set(number)) + sorted(
        {t for q in queries for t in q["target_ids"]} - set(number)
    )
    if missing:
        raise ValueError(
            f"export_circo_layout: {len(missing)} query image(s) not in the gallery (first: {missing[:5]})"
        )
    names = [f"{row:012d}.png" for row in range(len(world_ids))]
    _write_images(gallery, folder / "unlabeled2017", names)
    _write_json(
        folder / "image_info_unlabeled2017.json",
        {"images": [{"id": row, "file_name": name} for row, name in enumerate(names)]},
    )
    records = []
    for index, query in enumerate(queries):
        ground_truths = [number[t] for t in query["target_ids"]]
        records.append(
            {
                "id": index,
                "reference_img_id": number[query["reference_id"]],
                "target_img_id": ground_truths[0],
                "gt_img_ids": ground_truths,
                "relative_caption": query["modification_text"],
                "shared_concept": query.get("shared_concept", ""),
                "semantic_aspects": list(query.get("semantic_aspects", [])),
            }
        )
    _write_json(folder / "annotations" / f"{split}.json", records)
    return folder


def export_cirr_layout(
    gallery: datasets.Dataset,
    queries: Sequence[dict],
    folder: str | os.PathLike,
    split: str = "val",
) -> Path:
    """Write a benchmark of the world in CIRR's layout (see the module docstring).

    Args:
        gallery (`datasets.Dataset`): rows with `id` and `image` (the world's gallery, in order).
        queries (`Sequence[dict]`): one record per query with `reference_id`, `target_id`, `members` (the ids of the
            query's image set, reference and target included), `set_id` (`int`) and `modification_text`; ids are the
            gallery's `id` values.
        folder (`str` or `os.PathLike`): the benchmark's root (`data_root` of `CirrLoader` / `CirrEvaluator`).
        split (`str`, defaults to `"val"`): the annotation files' split name.

    Returns:
        `Path`: the folder.
    """
    folder = Path(folder)
    world_ids = list(gallery["id"])
    names = {world_id: f"dev-{row:05d}" for row, world_id in enumerate(world_ids)}
    needed = {i for q in queries for i in (q["reference_id"], q["target_id"], *q["members"])}
    missing = sorted(needed - set(names))
    if missing:
        raise ValueError(
            f"export_cirr_layout: {len(missing)} query image(s) not in the gallery (first: {missing[:5]})"
        )
    for query in queries:
        if query["reference_id"] not in query["members"] or query["target_id"] not in query["members"]:
            raise ValueError(f"export_cirr_layout: query {query!r}: the image set must hold its reference and target")
    _write_images(gallery, folder / "dev", [f"{names[i]}.png" for i in world_ids])
    _write_json(
        folder / "image_splits" / f"split.rc2.{split}.json",
        {names[i]: f"./dev/{names[i]}.png" for i in world_ids},
    )
    records = [
        {
            "pairid": index,
            "reference": names[query["reference_id"]],
            "target_hard": names[query["target_id"]],
            "target_soft": {names[query["target_id"]]: 1.0},
            "caption": query["modification_text"],
            "img_set": {"id": int(query["set_id"]), "members": [names[m] for m in query["members"]]},
        }
        for index, query in enumerate(queries)
    ]
    _write_json(folder / "captions" / f"cap.rc2.{split}.json", records)
    return folder


def cirr_names(gallery: datasets.Dataset) -> dict[str, str]:
    """Exported CIRR image name -> the world's gallery id."""
    return {f"dev-{row:05d}": world_id for row, world_id in enumerate(gallery["id"])}


def gallery_numbers(gallery: datasets.Dataset) -> dict[str, str]:
    """Exported id (the gallery row number, as a string) -> the world's gallery id."""
    return {str(row): world_id for row, world_id in enumerate(gallery["id"])}


__all__ = ["cirr_names", "export_circo_layout", "export_cirr_layout", "gallery_numbers"]
