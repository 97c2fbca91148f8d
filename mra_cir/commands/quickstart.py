"""`mra-cir quickstart`: the offline synthetic world, end to end (see `mra_cir.quickstart.pipeline`)."""

from __future__ import annotations

from transformers import HfArgumentParser

from mra_cir.quickstart import QuickstartArguments, run_quickstart


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(QuickstartArguments, prog="mra-cir quickstart", description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    run_quickstart(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
