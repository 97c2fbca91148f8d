"""A tiny BLIP-2 image-text retrieval checkpoint in the layout of `Salesforce/blip2-itm-vit-g`: transformers'
`Blip2ForImageTextRetrieval` weights (`config.json` with `model_type: blip-2`) and a `Blip2Processor` (BLIP image
processor, BERT-style tokenizer, `num_query_tokens`), written offline."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import Blip2Config, Blip2ForImageTextRetrieval, Blip2Processor, BlipImageProcessorPil

from mra_cir.tiny import offline_tokenizer, tiny_config

WORDS = "make the square red green blue yellow purple a it more less photo dress shirt and with is".split()


def save_blip2_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Save a random tiny `Blip2ForImageTextRetrieval` (32 px, 4 query tokens, D = 16) and its processor."""
    config = tiny_config()
    torch.manual_seed(seed)
    model = Blip2ForImageTextRetrieval(
        Blip2Config(
            vision_config=config.vision_config.to_dict(),
            qformer_config=config.qformer_config.to_dict(),
            num_query_tokens=config.num_query_tokens,
            image_text_hidden_size=config.image_text_hidden_size,
        )
    )
    with torch.no_grad():  # transformers zero-initialises the query tokens: make the features depend on the image
        model.query_tokens.normal_(std=0.5)
    model.save_pretrained(folder)
    Blip2Processor(
        image_processor=BlipImageProcessorPil(size={"height": 32, "width": 32}),
        tokenizer=offline_tokenizer([" ".join(WORDS)]),
        num_query_tokens=config.num_query_tokens,
    ).save_pretrained(folder)
    return folder
