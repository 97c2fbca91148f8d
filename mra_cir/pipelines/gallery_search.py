"""The `search` job: rank a gallery index with a composed query (reference image + modification text), what
`mra-cir search` runs.

Ranking goes through [`mra_cir.retrieval.encoding.rank_gallery`], the code evaluation and the app use. The index
directory is a [`mra_cir.retrieval.gallery_index.GalleryIndex`] (`features.safetensors`, `ids.json`,
`gallery_index.json`). The model is `model`, else the `model_path` recorded in the index, else the index directory
itself when it holds a saved model. With `images` and no index yet, the index is built from that folder
([`GalleryIndex.from_images`]) and saved with the model path.

Example:

```python
>>> from mra_cir.pipelines import SearchArguments, search
>>> search(SearchArguments(index="gallery/", image="photos/dress.jpg", text="in red", images="photos/", k=5))
{'image': 'photos/dress.jpg', 'text': 'in red', 'mode': 'composed', 'index': 'gallery', 'results': [...]}
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class SearchArguments:
    index: str = field(metadata={"help": "A gallery index directory (GalleryIndex.save)."})
    image: str = field(metadata={"help": "The reference image of the query."})
    text: str = field(metadata={"help": "The modification text of the query."})
    model: str | None = field(
        default=None,
        metadata={
            "help": "A saved MRA-CIR model or a BLIP-2 ITM checkpoint (folder or Hub id, e.g. Salesforce/blip2-itm-vit-g;"
            " default: the index's model_path, or the index dir)."
        },
    )
    k: int = field(default=10, metadata={"help": "Number of results."})
    images: str | None = field(
        default=None, metadata={"help": "Build the index from this image folder when --index does not exist yet."}
    )
    exclude_reference: bool = field(
        default=False,
        metadata={"help": "Drop the reference from the results (its id: path relative to --images, else file name)."},
    )
    mode: str = field(
        default="composed",
        metadata={
            "help": "composed (the method), image (reference only), text (text only) or image_text_fusion (late "
            "fusion): the same ranking code as evaluation.",
            "choices": ["composed", "image", "text", "image_text_fusion"],
        },
    )
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, ..."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass when building the index."})


def _is_hub_id(name: str) -> bool:
    """`user/name` that is not a local path: a Hub checkpoint such as `Salesforce/blip2-itm-vit-g`."""
    return name.count("/") == 1 and not name.startswith((".", "/", "~")) and not Path(name).exists()


def _model_path(args: SearchArguments, index_config: dict) -> str:
    for candidate in (args.model, index_config.get("model_path"), args.index):
        if candidate and ((Path(candidate) / "config.json").is_file() or _is_hub_id(candidate)):
            return candidate
    raise FileNotFoundError(
        f"no model: pass --model (a saved MRA-CIR model directory); the index {args.index} records "
        f"model_path={index_config.get('model_path')!r} and holds no config.json"
    )


def search(args: SearchArguments) -> dict:
    """The query, and its top-k gallery ids with their scores (`results`: `[{"id", "score"}, ...]`).

    Raises:
        `FileNotFoundError`: no index and no `images` to build one, or no model; `OSError` / `ValueError`: an image or
        a model that cannot be read (named).
    """
    from PIL import Image

    from mra_cir.modeling_mra_cir.loading import load_model_and_processor
    from mra_cir.retrieval.encoding import rank_gallery
    from mra_cir.retrieval.gallery_index import CONFIG_FILE, FEATURES_FILE, GalleryIndex

    index_dir = Path(args.index)
    has_index = (index_dir / FEATURES_FILE).is_file()
    if not has_index and args.images is None:
        raise FileNotFoundError(
            f"{index_dir} is not a gallery index (no {FEATURES_FILE}); pass --images DIR to build one"
        )
    index_config = json.loads((index_dir / CONFIG_FILE).read_text()) if (index_dir / CONFIG_FILE).is_file() else {}
    model_path = _model_path(args, index_config)
    model, processor = load_model_and_processor(model_path, device=args.device)
    if has_index:
        index = GalleryIndex.load(index_dir)
    else:
        recorded = model_path if _is_hub_id(model_path) else str(Path(model_path).resolve())
        index = GalleryIndex.from_images(
            model, processor, args.images, model_path=recorded, batch_size=args.batch_size
        )
        index.save(index_dir)
    try:
        reference = Image.open(args.image).convert("RGB")
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read --image {args.image}: {err}") from None
    reference_id = Path(args.image).name
    if args.images and Path(args.image).resolve().is_relative_to(Path(args.images).resolve()):
        reference_id = Path(args.image).resolve().relative_to(Path(args.images).resolve()).as_posix()
    exclude = [reference_id] if args.exclude_reference else None
    ranking = rank_gallery(
        model, processor, index, [reference], [args.text], mode=args.mode, k=min(args.k, len(index)), exclude=exclude
    )
    results = [{"id": i, "score": round(float(s), 6)} for i, s in zip(ranking.ids[0], ranking.scores[0].tolist())]
    return {"image": args.image, "text": args.text, "mode": args.mode, "index": str(index_dir), "results": results}


__all__ = ["SearchArguments", "search"]
