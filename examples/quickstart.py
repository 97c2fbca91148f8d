"""The README's first command: the whole MRA-CIR pipeline on a synthetic world, offline, on a CPU.

    python examples/quickstart.py                 # the default run: seeds 0, 1, 2 and their mean ± spread table
    python examples/quickstart.py --fast          # one seed (what CI runs)
    python examples/quickstart.py --seed 1 --output_dir runs/seed1

Same as `mra-cir quickstart`; options: `--help`.
"""

from __future__ import annotations

import sys

from mra_cir.commands.quickstart import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
