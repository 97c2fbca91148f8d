"""`mra-cir quickstart`: the offline synthetic world, end to end (see `mra_cir.quickstart.pipeline`)."""

from __future__ import annotations

from transformers import HfArgumentParser

from mra_cir.quickstart import QuickstartArguments, run_quickstart
from mra_cir.quickstart.seeds import run_seeds


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(QuickstartArguments, prog="mra-cir quickstart", description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    if args.seeds:
        run_seeds(args)
    else:
        run_quickstart(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
