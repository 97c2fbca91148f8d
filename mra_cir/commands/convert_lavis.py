"""`mra-cir convert-lavis`: a LAVIS BLIP-2 checkpoint (the format SPRC and CoVR-2 release) -> an `MraCirModel` folder.

The checkpoint is read with `torch.load(weights_only=True)`; every key must map (`Qformer.cls.*`, the captioning head,
is dropped) or the command stops and names the unmatched keys. Prints the conversion report as one JSON object.

Example:

```bash
mra-cir convert-lavis sprc_cirr.pt sprc-mra-cir/ --base-model Salesforce/blip2-itm-vit-g --ignore-keys prompt_tokens
mra-cir convert-lavis covr2_blip2.ckpt covr2-mra-cir/ --processor Salesforce/blip2-itm-vit-g
mra-cir evaluate --model sprc-mra-cir/ --benchmark cirr --data-root /data/cirr_dataset
```
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field

from transformers import HfArgumentParser


@dataclass
class ConvertLavisArguments:
    checkpoint: str = field(
        metadata={"help": "The LAVIS checkpoint file (.pth / .pt / .ckpt); also the 1st positional."}
    )
    output: str = field(metadata={"help": "Output folder of the MraCirModel; also the 2nd positional argument."})
    base_model: str | None = field(
        default=None,
        metadata={
            "help": "An MraCirModel folder or BLIP-2 ITM checkpoint (e.g. Salesforce/blip2-itm-vit-g) giving the config "
            "and the weights the checkpoint lacks (a checkpoint saved without its frozen ViT)."
        },
    )
    processor: str | None = field(
        default=None, metadata={"help": "Where the processor comes from (default: --base-model; none without it)."}
    )
    ignore_keys: list[str] = field(
        default_factory=list,
        metadata={"help": "More LAVIS keys to drop on purpose (regular expressions), e.g. prompt_tokens for SPRC."},
    )
    vision_num_heads: int | None = field(
        default=None, metadata={"help": "ViT heads when no base model gives them (default: 16 at width 1408)."}
    )
    qformer_num_heads: int | None = field(
        default=None, metadata={"help": "Q-Former heads when no base model gives them (default: width / 64 = 12)."}
    )


def _with_flags(argv: list[str]) -> list[str]:
    """`CHECKPOINT OUT [options]` -> `--checkpoint CHECKPOINT --output OUT [options]`."""
    names, rest = [], list(argv)
    while rest and not rest[0].startswith("-") and len(names) < 2:
        names.append(rest.pop(0))
    return [x for flag, value in zip(("--checkpoint", "--output"), names) for x in (flag, value)] + rest


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(
        ConvertLavisArguments, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    argv = list(sys.argv[1:] if argv is None else argv)
    (args,) = parser.parse_args_into_dataclasses(args=_with_flags(argv))
    from mra_cir.modeling_mra_cir.lavis_conversion import convert_lavis_checkpoint

    try:
        report = convert_lavis_checkpoint(
            args.checkpoint,
            args.output,
            base_model=args.base_model,
            processor=args.processor,
            ignore_keys=args.ignore_keys,
            vision_num_heads=args.vision_num_heads,
            qformer_num_heads=args.qformer_num_heads,
        )
    except (ValueError, FileNotFoundError) as error:
        print(f"mra-cir convert-lavis: error: {error}", file=sys.stderr)
        return 2
    if not report["processor"]:
        print(
            "mra-cir convert-lavis: note: no processor saved; pass --processor Salesforce/blip2-itm-vit-g (the "
            "bert-base-uncased tokenizer with [DEC] and 224 px CLIP-normalised images LAVIS BLIP-2 uses)",
            file=sys.stderr,
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
