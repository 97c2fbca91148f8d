"""`mra-cir pretrain-stand-in`: pretrain the offline stand-in for BLIP-2 (see `mra_cir.quickstart.pretraining`)."""

from __future__ import annotations

from transformers import HfArgumentParser

from mra_cir.quickstart.pretraining import PretrainArguments, pretrain_stand_in


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(PretrainArguments, prog="mra-cir pretrain-stand-in", description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    summary = pretrain_stand_in(args)
    print(f"pretrained {summary['steps']} steps in {summary['seconds']:.0f} s -> {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
