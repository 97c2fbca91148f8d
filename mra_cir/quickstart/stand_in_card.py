"""The model card of a pretrained stand-in (`mra-cir pretrain-stand-in`): what it is, how it was made (the command
that reproduces it, seeds, steps, device, time), what it saw and never saw, and the weights' sha256."""

from __future__ import annotations

import math
from pathlib import Path


def stand_in_command(arguments: dict, defaults: dict) -> str:
    """The `mra-cir pretrain-stand-in` command line that reproduces a run: the options that differ from `defaults`."""
    skip = {"output_dir", "show_progress", "checkpoint_every", "stop_after", "num_threads"}
    options = [f"--{k} {v}" for k, v in arguments.items() if k not in skip and v != defaults.get(k)]
    return " ".join(["mra-cir pretrain-stand-in", f"--output_dir {Path(arguments['output_dir']).name}", *options])


def stand_in_card(summary: dict, parameters: int, defaults: dict) -> str:
    """The stand-in's model card: what it is, how it was made (command, seeds, steps, device, time), what it saw and
    never saw, and the weights' sha256."""
    args = summary["arguments"]
    chunks = math.ceil(args["num_pairs"] / args["chunk_size"])
    return f"""---
library_name: transformers
tags: [mra-cir, blip-2, composed-image-retrieval, synthetic]
---

# The offline stand-in for BLIP-2 (mra-cir quickstart)

A small BLIP-2-shaped `MraCirModel` ({parameters:,} parameters: ViT {args["vision_layers"]} x {args["vision_hidden_size"]},
patch {args["patch_size"]} on {args["image_size"]} px; Q-Former {args["qformer_layers"]} x {args["hidden_size"]},
{args["num_query_tokens"]} query tokens; D = {args["embed_dim"]}), pretrained once on the synthetic world's
pretraining corpus. The quickstart starts from it as a user starts from `Salesforce/blip2-itm-vit-g`; it is not a model
of natural images.

```python
import mra_cir.modeling_mra_cir  # registers "mra_cir" with AutoModel
from mra_cir.modeling_mra_cir import MraCirModel
from mra_cir.quickstart import STAND_IN

model = MraCirModel.from_pretrained(STAND_IN)
```

## How it was made

- Command: `{stand_in_command(args, defaults)}`
- Seeds: corpus chunks {args["seed"]} to {args["seed"] + chunks - 1} ({args["num_pairs"]:,} image-caption pairs and as
  many paraphrase pairs, in chunks of {args["chunk_size"]:,}); initialisation seed {args["seed"]}.
- Steps: {summary["steps"]:,} of {args["batch_size"]} image-caption pairs and {args["paraphrase_batch_size"]} paraphrase
  pairs; AdamW, peak learning rate {args["learning_rate"]}, {args["warmup_steps"]} warm-up steps, cosine decay.
- Objectives: BLIP-2's image-text contrast (ITC), the fused image-text contrast (weight {args["fused_weight"]}),
  image-grounded captioning (ITG, weight {args["itg_weight"]}; 0 is off) and a paraphrase contrast of the text side
  (weight {args["paraphrase_weight"]}).
- Device: {summary["device"]}, torch {summary["torch"]}; {summary["seconds"] / 60:.0f} minutes.
- Final losses (mean of the last 200 steps): {summary["final_losses"]}.
- `model.safetensors` sha256: `{summary["model_sha256"]}`

## What it saw and never saw

It saw rendered scenes of the world drawn from seeds reserved for pretraining, with alt texts in many phrasings, and
pairs of phrasings of the same changes of a scene. It never saw a benchmark image, a pool image of a quickstart seed,
or the benchmarks' held-out phrasings (`mra_cir.dataset_builders.synthetic_world.pretraining_corpus` says how this is
checked).
"""


__all__ = ["stand_in_card", "stand_in_command"]
