"""The `mra-cir` console script: a thin dispatcher to one module per subcommand.

Each subcommand lives in `mra_cir/commands/<name>.py`, parses its own `HfArgumentParser` dataclasses and is only
imported when it is called, so `mra-cir --help` stays fast.
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "quickstart": ("mra_cir.commands.quickstart", "The offline synthetic world, end to end (the README's main job)."),
    "pretrain-stand-in": (
        "mra_cir.commands.pretrain_stand_in",
        "Pretrain the offline stand-in for BLIP-2 that the quickstart ships and loads.",
    ),
    "quickstart-diagnostics": (
        "mra_cir.commands.quickstart_diagnostics",
        "Input ablations and top-1 kinds of a finished quickstart run.",
    ),
    "mine": ("mra_cir.commands.mine", "Mine (reference, target) pairs from image features with a rank window."),
    "search": ("mra_cir.commands.search", "Search a gallery index with a composed query (image + text)."),
    "app": (
        "mra_cir.commands.app",
        "Composed-search web app (Gradio); the quickstart's model and gallery by default.",
    ),
    "build-triplets": ("mra_cir.commands.build_triplets", "Build MRA training triplets from a folder of images."),
    "audit-triplets": (
        "mra_cir.commands.audit_triplets",
        "Audit a sample of a triplet dataset in the browser; --report: error rates, verifier vs the audit.",
    ),
    "train": ("mra_cir.commands.train", "Fine-tune the Q-Former on triplets with max-sim InfoNCE."),
    "evaluate": ("mra_cir.commands.evaluate", "Zero-shot evaluation on FashionIQ, CIRR or CIRCO."),
    "evaluate-rankings": ("mra_cir.commands.evaluate_rankings", "Score a rankings file with the official protocols."),
    "convert-lavis": (
        "mra_cir.commands.convert_lavis",
        "Convert a LAVIS BLIP-2 checkpoint (SPRC, CoVR-2) to MraCirModel.",
    ),
    "window-sweep": (
        "mra_cir.commands.window_sweep",
        "The paper's mining-window ablation: build, train, evaluate, plot.",
    ),
}


def _usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = ["usage: mra-cir <command> [options]   (mra-cir <command> --help for the options)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in COMMANDS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mra-cir: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    sys.argv[0] = f"mra-cir {name}"  # argparse's `prog`: usage lines read "usage: mra-cir <command> ..."
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
