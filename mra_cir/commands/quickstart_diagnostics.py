"""`mra-cir quickstart-diagnostics`: input ablations and top-1 kinds of a finished quickstart run (see
`mra_cir.quickstart.diagnostics`)."""

from __future__ import annotations

import os

from transformers import HfArgumentParser

from mra_cir.quickstart.diagnostics import DiagnosticsArguments, diagnose_run, format_report


def main(argv: list[str] | None = None) -> int:
    parser = HfArgumentParser(DiagnosticsArguments, prog="mra-cir quickstart-diagnostics", description=__doc__)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    report = diagnose_run(args.output_dir, seed=args.seed, num_threads=args.num_threads)
    print(format_report(report))
    print(f"\nwritten: {os.path.join(args.output_dir, 'diagnostics.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
