"""Image files: which file names are images, and the image files of a folder, optionally a seeded sample of them.

`list_images(folder, max_images, per_class, seed)` lists `(id, path)` pairs sorted by id (the posix path relative to
the folder). `per_class` keeps K images of each first-level sub-folder (the ImageNet-1k subset the paper mines from),
`max_images` a random sample of N; both are drawn from the sorted listing with a generator seeded by the seed, so the
same seed gives the same pool on any machine, whatever the order the file system lists files in. A sub-folder that
cannot be listed (no permission, an I/O error) is reported in `unreadable`, never silently left out.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

#: the image file extensions every stage reads (a triplet pool, a search gallery, a benchmark folder), in order of
#: preference where one name has several (a benchmark folder holding `x.png` and `x.jpg` reads `x.png`)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def list_images(
    folder: str | Path,
    max_images: int | None = None,
    per_class: int | None = None,
    seed: int = 0,
    broken_links: bool = False,
    unreadable: list | None = None,
) -> list[tuple[str, str]]:
    """`(id, path)` of the image files under `folder` (recursive, sorted by id = posix path relative to folder).

    Args:
        folder (`str` or `Path`): the images (searched recursively).
        max_images (`int`, *optional*): at most this many images, a random sample drawn with `seed` (not the first ones
            in sorted order: on a class-folder layout such as ImageNet's those would be the first classes).
        per_class (`int`, *optional*): at most this many images of each first-level sub-folder (a class of an
            ImageNet-style layout; the images directly in `folder` form one group), each class sampled with `seed`
            and its name, so adding a class does not change the others' samples. Applied before `max_images`.
        seed (`int`, defaults to 0): the sampling seed. The files are sorted before sampling, so the sample depends on
            the seed and the file names only, never on the order the file system lists them in.
        broken_links (`bool`, defaults to False): list broken symbolic links with an image extension too (feature
            extraction and the triplet builder: reading them fails, so they are counted with the other skipped files
            instead of vanishing).
        unreadable (`list`, *optional*): receives `(folder, reason)` for every folder that could not be listed (its
            images are missing from the pool; `folder` is relative, "." for `folder` itself).

    Example:
        ```python
        >>> list_images("imagenet/train", per_class=100, seed=0)  # 100 images of each class folder, sorted by id
        ```
    """
    folder = Path(folder)
    errors: list[OSError] = []
    found = []
    for root, dirs, files in os.walk(folder, onerror=errors.append):  # symbolic links to folders are not followed
        for name in (*files, *dirs):
            path = Path(root, name)
            if path.suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            try:
                listed = path.is_file() or (broken_links and path.is_symlink())
            except OSError as error:  # a folder that can be listed but not entered
                errors.append(OSError(error.errno, error.strerror, root))
                break
            if listed:
                found.append((path.relative_to(folder).as_posix(), str(path)))
    found.sort()
    if unreadable is not None:
        for error in errors:
            name = Path(error.filename).relative_to(folder).as_posix() if error.filename else "?"
            unreadable.append((name, error.strerror or type(error).__name__))
    if per_class:
        classes: dict[str, list[tuple[str, str]]] = {}
        for item in found:
            classes.setdefault(item[0].split("/")[0] if "/" in item[0] else "", []).append(item)
        found = sorted(x for name, items in classes.items() for x in _sample(items, per_class, seed, f"class:{name}"))
    if max_images and len(found) > max_images:
        found = sorted(_sample(found, max_images, seed, "max_images"))
    return found


def _sample(items: list, k: int, seed: int, salt: str) -> list:
    """`k` of the (sorted) `items`, drawn by a generator seeded with the seed and `salt` (all of them when fewer)."""
    if len(items) <= k:
        return items
    digest = hashlib.sha256(f"{seed}:{salt}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).sample(items, k)


__all__ = ["IMAGE_EXTENSIONS", "list_images"]
