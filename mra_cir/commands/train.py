"""`mra-cir train`: fine-tune the Q-Former on MRA triplets with max-sim InfoNCE (same code as examples/train.py).

```bash
mra-cir train examples/configs/train_synthetic_cpu.yaml
mra-cir train --model_name_or_path Salesforce/blip2-itm-vit-g --train_dataset triplets/ --output_dir out --bf16
accelerate launch --num_processes 8 -m mra_cir.cli train examples/configs/train_paper_blip2_vitg.yaml
```
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from trainers.train_script import main as run_main

    return run_main(argv)
