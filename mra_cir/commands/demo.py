"""`mra-cir demo`: the smoke demo. A tiny random MRA-CIR model is saved, reloaded through `AutoModel`, and answers a
composed query over a few generated images. Random weights: the ranking shows the plumbing, not retrieval quality
(`mra-cir quickstart` trains a model that does retrieve)."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field

import torch
from PIL import Image, ImageDraw
from transformers import AutoModel, AutoProcessor, HfArgumentParser

COLORS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (40, 80, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square")


@dataclass
class DemoArguments:
    text: str = field(default="make it blue", metadata={"help": "Modification text of the composed query."})
    output_dir: str | None = field(
        default=None, metadata={"help": "Where to save the tiny model (default: a temp dir)."}
    )
    seed: int = field(default=0, metadata={"help": "Seed of the random weights."})
    top_k: int = field(default=5, metadata={"help": "How many gallery images to print."})


def draw(shape: str, color: str, size: int = 64) -> Image.Image:
    image = Image.new("RGB", (size, size), (245, 245, 245))
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    painter = ImageDraw.Draw(image)
    (painter.ellipse if shape == "circle" else painter.rectangle)(box, fill=COLORS[color])
    return image


def main(argv: list[str] | None = None) -> int:
    (args,) = HfArgumentParser(DemoArguments).parse_args_into_dataclasses(args=argv)
    import mra_cir.modeling_mra_cir  # noqa: F401  (registers mra_cir with the Auto classes)
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import offline_processor, tiny_config

    gallery = {f"{color}_{shape}": draw(shape, color) for shape in SHAPES for color in COLORS}
    torch.manual_seed(args.seed)
    model = MraCirModel(tiny_config())
    processor = offline_processor(32, texts=[args.text, *(" ".join(name.split("_")) for name in gallery)])
    with tempfile.TemporaryDirectory() as tmp:
        path = args.output_dir or tmp
        model.save_pretrained(path)
        processor.save_pretrained(path)
        loaded = AutoModel.from_pretrained(path).eval()
        processor = AutoProcessor.from_pretrained(path)
        print(f"saved and reloaded {type(loaded).__name__} from {path} through AutoModel")
        ids = list(gallery)
        with torch.no_grad():
            keys = loaded.get_image_features(processor(images=list(gallery.values()))["pixel_values"])
            query_inputs = processor(images=[gallery["red_circle"]], text=[args.text])
            query = loaded.get_composed_features(
                query_inputs["pixel_values"], query_inputs["input_ids"], query_inputs["attention_mask"]
            )
            scores = (keys @ query[0]).amax(dim=-1)  # token-level max cosine
        order = torch.argsort(scores, descending=True, stable=True)[: args.top_k]
        ranking = [{"rank": r + 1, "id": ids[i], "score": round(float(scores[i]), 4)} for r, i in enumerate(order)]
        print(f"query: reference=red_circle, text={args.text!r}  (random weights: plumbing only)")
        print(json.dumps({"ranking": ranking}, indent=2))
    return 0
