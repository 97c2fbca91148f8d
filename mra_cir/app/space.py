"""The app on a Hugging Face Space: a model id and a dataset as the gallery, read from environment variables (a Space's
"variables" settings), by the repository's root `app.py`.

| variable | meaning | default |
|---|---|---|
| `MRA_CIR_MODEL` | a model id (`user/mra-cir-model`) or folder | unset: the quickstart default (`mra-cir app`) |
| `MRA_CIR_GALLERY` | a dataset id, image folder or `save_to_disk` folder (`image` column, `id` optional) | required |
| `MRA_CIR_GALLERY_SPLIT` | the split | `train` |
| `MRA_CIR_GALLERY_CONFIG` | the dataset's configuration | none |
| `MRA_CIR_GALLERY_MAX` | use the first N rows only | all |
| `MRA_CIR_COMPARE_MODEL` | a second model, ranked side by side | none |
| `MRA_CIR_INDEX_DIR` | where the gallery indexes are cached | `gallery_index` |
| `MRA_CIR_DEVICE` | `cpu`, `cuda` | `cpu` |

The index of each model is built on first start with a progress bar and cached with a stamp of the model and the
dataset ([`cached_index`]).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from .arguments import APPROXIMATE_ABOVE, AppArguments
from .engine import RankingModel, SearchEngine, load_engine, load_model
from .gallery import GalleryImages, cached_index, searchable
from .images import InputError


def load_gallery_dataset(name: str, split: str = "train", config: str | None = None, max_images: int | None = None):
    """A gallery dataset: a `save_to_disk` folder (`load_from_disk`), else `load_dataset(name, config, split=split)`
    (a Hub dataset id, or a local image folder, read by the `imagefolder` builder)."""
    import datasets

    path = Path(name)
    try:
        if path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file()):
            dataset = datasets.load_from_disk(str(path))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(name, config, split=split)
    except (OSError, ValueError, KeyError, FileNotFoundError) as err:
        raise InputError(f"The gallery dataset {name!r} (split {split!r}) cannot be loaded: {err}") from None
    if "image" not in dataset.column_names:
        raise InputError(f"The gallery dataset {name!r} has no 'image' column (columns: {dataset.column_names}).")
    return dataset.select(range(min(max_images, len(dataset)))) if max_images else dataset


def dataset_engine(
    model: str,
    dataset,
    index_dir: str | os.PathLike,
    compare_model: str | None = None,
    device: str = "cpu",
    name: str = "dataset",
    approximate_above: int = APPROXIMATE_ABOVE,
) -> SearchEngine:
    """A [`SearchEngine`] over a `datasets.Dataset` gallery: each model's index built on first use and cached under
    `index_dir` (one sub-folder per model)."""
    gallery = GalleryImages.from_dataset(dataset, name)
    models = []
    for i, path in enumerate([model, compare_model] if compare_model else [model]):
        loaded, processor = load_model(path, device)
        index = cached_index(loaded, processor, dataset, gallery, Path(index_dir) / f"model_{i}", path)
        label = path.rstrip("/").split("/")[-1]
        models.append(RankingModel(label, path, loaded, processor, searchable(index, approximate_above)))
    return SearchEngine(models, gallery, notes=[f"Gallery: `{name}`."])


def engine_from_env(environ: Mapping[str, str] = os.environ) -> SearchEngine:
    """The engine the environment describes (see the module docstring); the quickstart default without
    `MRA_CIR_MODEL`."""
    model = environ.get("MRA_CIR_MODEL")
    device = environ.get("MRA_CIR_DEVICE", "cpu")
    if not model:
        return load_engine(AppArguments(device=device))
    gallery = environ.get("MRA_CIR_GALLERY")
    if not gallery:
        raise InputError("MRA_CIR_MODEL is set but MRA_CIR_GALLERY is not: name a dataset with an 'image' column.")
    max_images = environ.get("MRA_CIR_GALLERY_MAX")
    if max_images is not None and not max_images.isdigit():
        raise InputError(f"MRA_CIR_GALLERY_MAX must be a whole number, got {max_images!r}")
    dataset = load_gallery_dataset(
        gallery,
        environ.get("MRA_CIR_GALLERY_SPLIT", "train"),
        environ.get("MRA_CIR_GALLERY_CONFIG") or None,
        int(max_images) if max_images else None,
    )
    return dataset_engine(
        model,
        dataset,
        environ.get("MRA_CIR_INDEX_DIR", "gallery_index"),
        environ.get("MRA_CIR_COMPARE_MODEL") or None,
        device,
        name=gallery,
    )


def demo_from_env(environ: Mapping[str, str] = os.environ):
    """The Gradio page of [`engine_from_env`] (errors are shown in the page, which keeps serving)."""
    from .ui import EngineHolder, build_app

    quickstart = None if environ.get("MRA_CIR_MODEL") else AppArguments().quickstart_dir
    holder = EngineHolder(lambda: engine_from_env(environ), quickstart_dir=quickstart)
    holder.load()
    return build_app(holder)


__all__ = ["dataset_engine", "demo_from_env", "engine_from_env", "load_gallery_dataset"]
