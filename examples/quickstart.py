"""The README's first command: the whole MRA-CIR pipeline on a synthetic world, offline, on a CPU.

    python examples/quickstart.py                 # ~10 min on 2 cores: table, results.json, results.png, ablation
    python examples/quickstart.py --fast          # ~2 min (what CI runs), no window ablation
    python examples/quickstart.py --seed 1 --output_dir runs/seed1

Same as `mra-cir quickstart`; options: `--help`.
"""

from __future__ import annotations

import sys

from mra_cir.commands.quickstart import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
