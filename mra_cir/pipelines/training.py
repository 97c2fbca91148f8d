"""The `train` job: fine-tune the Q-Former on MRA triplets with max-sim InfoNCE (what `mra-cir train` runs).

Three `HfArgumentParser` dataclasses: [`ModelArguments`], [`DataArguments`] and [`MraCirTrainingArguments`];
[`parse_train_args`] reads them from a command line, a `.yaml` / `.json` config file, or a config file followed by
overrides. Runs under `python`, `accelerate launch` or `torchrun`.

Example:

```python
>>> from mra_cir.pipelines import parse_train_args, train
>>> metrics = train(*parse_train_args(["examples/configs/train_synthetic_cpu.yaml", "--output_dir", "out/run"]))
```
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from mra_cir.trainers.training_args import MraCirTrainingArguments

TINY = "tiny"


@dataclass
class ModelArguments:
    model_name_or_path: str = field(
        default=TINY,
        metadata={
            "help": "An MRA-CIR or BLIP-2 image-text retrieval checkpoint (folder or Hub id, e.g. "
            "Salesforce/blip2-itm-vit-g), or 'tiny' for a small random model (CPU smoke runs)."
        },
    )
    processor_name_or_path: str | None = field(
        default=None,
        metadata={"help": "The processor (default: the model's; with 'tiny', an offline processor)."},
    )
    tiny_image_size: int = field(default=32, metadata={"help": "Image size of the 'tiny' model."})
    torch_dtype: str | None = field(
        default=None,
        metadata={"help": "Load the weights in this dtype (float32, bfloat16); use --bf16 for autocast instead."},
    )


@dataclass
class DataArguments:
    train_dataset: str = field(
        metadata={
            "help": "Triplets: a `save_to_disk` folder, a builder cache / parquet file(s) (glob ok), a Hub dataset id"
            " (load_dataset), or 'toy:N' for N random triplets (smoke runs)."
        },
    )
    train_split: str = field(default="train", metadata={"help": "Split of a Hub / parquet dataset."})
    eval_dataset: str | None = field(
        default=None, metadata={"help": "Optional triplets for an InfoNCE eval loss (same forms as --train_dataset)."}
    )
    eval_split: str = field(default="validation", metadata={"help": "Split of the eval dataset."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N triplets."})
    dataset_name: str | None = field(
        default=None, metadata={"help": "How the model card names the training data (default: --train_dataset)."}
    )
    benchmark_roots: str | None = field(
        default=None,
        metadata={
            "help": "Benchmark folders for --eval_benchmarks, as 'fashioniq=/data/fashionIQ,cirr=/data/cirr' "
            "(official layouts, see mra_cir.evaluation)."
        },
    )
    eval_max_queries: int | None = field(
        default=None, metadata={"help": "Evaluate only the first N queries per benchmark during training."}
    )


def parse_train_args(argv: list[str] | None = None):
    """`(model_args, data_args, training_args)` from the command line, from one `.yaml`/`.json` file, or from a
    `.yaml` file followed by command-line overrides (`config.yaml --output_dir out --learning_rate 1e-4`)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, MraCirTrainingArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith((".yaml", ".yml")):
        return parser.parse_yaml_file(os.path.abspath(argv[0]))
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(os.path.abspath(argv[0]))
    if argv and argv[0].endswith((".yaml", ".yml")) and not argv[0].startswith("-"):
        # a config file followed by command-line overrides: the file's values become the parser's defaults
        import yaml

        config = yaml.safe_load(Path(argv[0]).read_text(encoding="utf-8")) or {}
        known = {action.dest for action in parser._actions}
        unknown = sorted(set(config) - known)
        if unknown:
            raise ValueError(f"{argv[0]}: unknown option(s) {unknown}")
        for action in parser._actions:
            if action.dest in config:
                action.required = False
        parser.set_defaults(**config)
        return parser.parse_args_into_dataclasses(args=argv[1:])
    return parser.parse_args_into_dataclasses(args=argv)


def _triplets(spec: str, split: str):
    """`toy:N` (N random triplets, smoke runs) or anything `load_triplets` reads."""
    if spec.startswith("toy:"):
        from mra_cir.tiny import random_triplet_dataset

        return random_triplet_dataset(int(spec.split(":", 1)[1]))
    from mra_cir.dataset_builders.mra_triplets.publishing import load_triplets

    return load_triplets(spec, split)


def load_model_to_train(model_args: ModelArguments):
    """The model and processor to train: `tiny` (a small random model, CPU smoke runs), a saved `MraCirModel` or a
    BLIP-2 image-text retrieval checkpoint (`mra_cir.modeling_mra_cir.loading`)."""
    import torch

    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.modeling_mra_cir.loading import load_model_and_processor as load
    from mra_cir.modeling_mra_cir.loading import load_processor
    from mra_cir.tiny import TOY_WORDS, offline_processor, tiny_config

    if model_args.model_name_or_path == TINY:
        torch.manual_seed(0)
        model = MraCirModel(tiny_config(image_size=model_args.tiny_image_size))
        if model_args.processor_name_or_path:
            return model, load_processor(model_args.processor_name_or_path)
        return model, offline_processor(model_args.tiny_image_size, [" ".join(TOY_WORDS)])
    model, processor = load(
        model_args.model_name_or_path, model_args.processor_name_or_path, dtype=model_args.torch_dtype
    )
    return model.train(), processor


def benchmark_paths(spec: str) -> dict[str, str]:
    """`"fashioniq=/data/fiq,cirr=/data/cirr"` -> `{"fashioniq": "/data/fiq", "cirr": "/data/cirr"}` (names lower-cased;
    the spelling of `--benchmark_roots` and `--annotations_dirs`)."""
    out = {}
    for pair in (p for p in spec.split(",") if p.strip()):
        name, sep, value = pair.partition("=")
        if not sep:
            raise ValueError(f"expected benchmark=path, got {pair!r}")
        out[name.strip().lower()] = value.strip()
    return out


def build_cir_evaluators(training_args: MraCirTrainingArguments, data_args: DataArguments) -> list:
    """One `mra_cir.evaluation` evaluator per `--eval_benchmarks` name, on its validation split (distributed under DDP,
    the gallery's frozen-ViT outputs cached across evaluations; logged, never selected on in a zero-shot run)."""
    names = training_args.eval_benchmarks_list
    if not names:
        return []
    from mra_cir.evaluation import EVALUATORS

    roots = benchmark_paths(data_args.benchmark_roots or "")
    evaluators = []
    for name in names:
        if name not in EVALUATORS:
            raise ValueError(f"--eval_benchmarks: unknown benchmark {name!r} (choose from {sorted(EVALUATORS)})")
        if name not in roots:
            raise ValueError(f"--eval_benchmarks {name}: give its folder with --benchmark_roots {name}=/path")
        evaluators.append(
            EVALUATORS[name](
                data_root=roots[name],
                split="val",
                batch_size=training_args.per_device_eval_batch_size,
                max_queries=data_args.eval_max_queries,
                show_progress=not training_args.disable_tqdm,
                num_workers=training_args.dataloader_num_workers,
                cache_dir=training_args.eval_cache_dir,
                # the Q-Former changes every step: final features are never reused; a frozen ViT's outputs are
                cache_features=False,
                cache_vision_outputs=training_args.eval_cache_vision_outputs and training_args.freeze_vision_model,
            )
        )
    return evaluators


def train(model_args: ModelArguments, data_args: DataArguments, training_args: MraCirTrainingArguments) -> dict:
    """Train, save (model or adapter, processor, model card; the merged model under `<output_dir>/merged` with
    LoRA), and return the final metrics."""
    from mra_cir.trainers.trainer import MraCirTrainer

    model, processor = load_model_to_train(model_args)
    train = _triplets(data_args.train_dataset, data_args.train_split)
    if data_args.max_train_samples:
        train = train.select(range(min(data_args.max_train_samples, len(train))))
    eval_ds = _triplets(data_args.eval_dataset, data_args.eval_split) if data_args.eval_dataset else None
    trainer = MraCirTrainer(
        model,
        training_args,
        train_dataset=train,
        eval_dataset=eval_ds,
        processing_class=processor,
        cir_evaluators=build_cir_evaluators(training_args, data_args),
        dataset_name=data_args.dataset_name or data_args.train_dataset,
    )
    result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    metrics = dict(result.metrics)
    if eval_ds is not None or trainer.cir_evaluators:
        metrics.update(trainer.evaluate())
    trainer.save_model()
    if training_args.qformer_training == "lora":
        trainer.save_merged_model(os.path.join(training_args.output_dir, "merged"))
    if trainer.is_world_process_zero():
        trainer.save_metrics("all", metrics)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset=[trainer.dataset_name] if trainer.dataset_name else None)
    return metrics


__all__ = [
    "TINY",
    "DataArguments",
    "ModelArguments",
    "benchmark_paths",
    "build_cir_evaluators",
    "load_model_to_train",
    "parse_train_args",
    "train",
]
