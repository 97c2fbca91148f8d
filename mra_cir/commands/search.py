"""`mra-cir search`: rank a gallery index with a composed query (reference image + modification text).

The index directory is a [`modeling_mra_cir.gallery_index.GalleryIndex`] (`features.safetensors`, `ids.json`,
`gallery_index.json`). The model is `--model`, else the `model_path` recorded in the index, else the index directory
itself when it holds a saved model. With `--images DIR` and no index yet, the index is built from that folder (and
saved with the model path). Prints one JSON object: the query and the top-k ids with their scores.

Example:

```bash
mra-cir search --index gallery/ --model out/mra-cir --images photos/ --image photos/dress.jpg --text "in red" --k 5
```
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser


@dataclass
class SearchArguments:
    index: str = field(metadata={"help": "A gallery index directory (GalleryIndex.save)."})
    image: str = field(metadata={"help": "The reference image of the query."})
    text: str = field(metadata={"help": "The modification text of the query."})
    model: str | None = field(
        default=None, metadata={"help": "A saved MRA-CIR model (default: the index's model_path, or the index dir)."}
    )
    k: int = field(default=10, metadata={"help": "Number of results."})
    images: str | None = field(
        default=None, metadata={"help": "Build the index from this image folder when --index does not exist yet."}
    )
    exclude_reference: bool = field(
        default=False,
        metadata={"help": "Drop the reference from the results (its id: path relative to --images, else file name)."},
    )
    device: str = field(default="cpu", metadata={"help": "cpu, cuda, ..."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass when building the index."})


def _model_path(args: SearchArguments, index_config: dict) -> str:
    for candidate in (args.model, index_config.get("model_path"), args.index):
        if candidate and (Path(candidate) / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        f"no model: pass --model (a saved MRA-CIR model directory); the index {args.index} records "
        f"model_path={index_config.get('model_path')!r} and holds no config.json"
    )


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(SearchArguments)
    (args,) = parser.parse_args_into_dataclasses(args=argv)

    import torch
    from PIL import Image
    from transformers import AutoModel, AutoProcessor

    import modeling_mra_cir  # noqa: F401  (registers mra_cir with the Auto classes)
    from modeling_mra_cir.gallery_index import CONFIG_FILE, FEATURES_FILE, GalleryIndex

    index_dir = Path(args.index)
    has_index = (index_dir / FEATURES_FILE).is_file()
    if not has_index and args.images is None:
        print(
            f"mra-cir search: {index_dir} is not a gallery index (no {FEATURES_FILE}); pass --images DIR to build one",
            file=sys.stderr,
        )
        return 2
    index_config = json.loads((index_dir / CONFIG_FILE).read_text()) if (index_dir / CONFIG_FILE).is_file() else {}
    model_path = _model_path(args, index_config)
    model = AutoModel.from_pretrained(model_path).to(args.device).eval()
    processor = AutoProcessor.from_pretrained(model_path)

    if has_index:
        index = GalleryIndex.load(index_dir)
    else:
        from dataset_builders.image_features import extract_image_features

        feats = extract_image_features(model, processor, args.images, batch_size=args.batch_size)
        index = GalleryIndex.from_image_features(feats, model_path=str(Path(model_path).resolve()))
        index.save(index_dir)

    try:
        reference = Image.open(args.image).convert("RGB")
    except (OSError, ValueError) as err:
        print(f"mra-cir search: cannot read --image {args.image}: {err}", file=sys.stderr)
        return 2
    inputs = processor(images=[reference], text=[args.text], return_tensors="pt").to(args.device)
    with torch.no_grad():
        query = model.get_composed_features(
            pixel_values=inputs["pixel_values"], input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
        )
    reference_id = Path(args.image).name
    if args.images and Path(args.image).resolve().is_relative_to(Path(args.images).resolve()):
        reference_id = Path(args.image).resolve().relative_to(Path(args.images).resolve()).as_posix()
    exclude = [reference_id] if args.exclude_reference else None
    scores, ids = index.search(query.float(), k=min(args.k, len(index)), exclude=exclude)
    results = [{"id": i, "score": round(float(s), 6)} for i, s in zip(ids[0], scores[0].tolist())]
    print(json.dumps({"image": args.image, "text": args.text, "index": str(index_dir), "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
