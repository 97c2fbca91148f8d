"""`mra-cir train` (and `examples/train.py`): fine-tune the Q-Former on MRA triplets with max-sim InfoNCE.

The options are the fields of `ModelArguments`, `DataArguments` (`mra_cir.pipelines.training`) and
`MraCirTrainingArguments`; a single `.yaml` / `.json` argument is read as a config file, a `.yaml` followed by options
overrides it. Runs under `python`, `accelerate launch` or `torchrun`. The job itself: `mra_cir.pipelines.train`.

Example:

```bash
mra-cir train examples/configs/train_synthetic_cpu.yaml
accelerate launch --num_processes 8 examples/train.py examples/configs/train_paper_blip2_vitg.yaml
python examples/train.py --model_name_or_path Salesforce/blip2-itm-vit-g --train_dataset triplets/ \\
    --output_dir out/mra-cir --per_device_train_batch_size 64 --learning_rate 1e-5 --bf16
```
"""

from __future__ import annotations

import json

from mra_cir.pipelines.training import parse_train_args, train


def main(argv: list[str] | None = None) -> int:
    model_args, data_args, training_args = parse_train_args(argv)
    metrics = train(model_args, data_args, training_args)
    if training_args.process_index == 0:
        print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, sort_keys=True))
    return 0


__all__ = ["main"]
