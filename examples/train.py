"""Fine-tune an MRA-CIR model on MRA triplets (max-sim InfoNCE; full Q-Former or LoRA; DDP with gathered negatives).

Every option is a field of `ModelArguments`, `DataArguments` (mra_cir/pipelines/training.py, the `train` job)
or `MraCirTrainingArguments` (trainers/training_args.py); `--help` lists them. A single `.yaml` argument is read as a
config file.

```bash
python examples/train.py examples/configs/train_synthetic_cpu.yaml
accelerate launch --num_processes 8 examples/train.py examples/configs/train_paper_blip2_vitg.yaml
# two CPU processes (gloo), e.g. to try DDP on a laptop:
accelerate launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision no --dynamo_backend no \
    examples/train.py examples/configs/train_synthetic_cpu.yaml
```
"""

from __future__ import annotations

import sys

from mra_cir.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
