"""Training step time: `MraCirTrainer` against a plain PyTorch loop, and the speed-up of the performance options.

Prints ONE JSON object. Every figure is the median step time over the measured steps (after warm-up steps), from
data loading to the optimizer step, on the same model, data and optimizer (AdamW, gradient clipping at 1.0):

- `trainer_over_plain_ratio`: `MraCirTrainer` step / plain loop step (DataLoader + collator + forward + backward +
  clip + AdamW); goal <= 1.10.
- `vit_cache_speedup`: Trainer step without / with the frozen-ViT-output cache (`cache_vit_outputs`); the one-off
  cost of filling the cache is reported as `vit_cache_fill_s`.
- `activation_checkpointing_over_trainer` and `bf16_over_trainer`: step time with Q-Former gradient checkpointing /
  bf16 autocast over the default Trainer step (on CPU, bf16 autocast is usually slower; on a GPU it is the point).

Model: a small realistic configuration (ViT 256 wide, 4 layers, 224 px, patch 16; Q-Former 256 wide, 4 layers,
32 query tokens), random weights, synthetic images.

```bash
python benchmarks/bench_train.py                       # CPU
python benchmarks/bench_train.py --device cuda --batch_size 64 --steps 20
```
"""

from __future__ import annotations

import copy
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from transformers import HfArgumentParser, TrainerCallback  # noqa: E402


@dataclass
class BenchArguments:
    batch_size: int = field(default=4, metadata={"help": "Triplets per step."})
    steps: int = field(default=6, metadata={"help": "Measured steps per variant."})
    warmup: int = field(default=2, metadata={"help": "Unmeasured steps per variant."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (CPU runs)."})
    rounds: int = field(default=2, metadata={"help": "Alternating rounds (trainer, plain); the best median counts."})
    device: str = field(default="cpu", metadata={"help": "cpu or cuda."})
    hidden_size: int = field(default=256, metadata={"help": "Width of the ViT and the Q-Former."})
    layers: int = field(default=4, metadata={"help": "Layers of the ViT and the Q-Former."})
    image_size: int = field(default=224, metadata={"help": "Image size."})
    options: bool = field(default=True, metadata={"help": "Also measure gradient checkpointing and bf16."})


def clock() -> float:
    """Wall time on a GPU; on CPU the process's CPU time (all its threads), which other jobs sharing the machine
    do not inflate (use --threads 1 so that idle OpenMP threads do not spin)."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        return time.perf_counter()
    return time.process_time()


class StepTimer(TrainerCallback):
    def __init__(self):
        self.ends: list[float] = []

    def on_step_end(self, args, state, control, **kwargs):
        self.ends.append(clock())


def median_step(ends: list[float], warmup: int) -> float:
    diffs = [b - a for a, b in zip(ends[:-1], ends[1:])]
    return statistics.median(diffs[max(0, warmup - 1) :])


def build(bench: BenchArguments):
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import TOY_WORDS, offline_processor, random_triplet_dataset, tiny_config

    config = tiny_config(
        hidden_size=bench.hidden_size,
        num_hidden_layers=bench.layers,
        num_attention_heads=4,
        image_size=bench.image_size,
        patch_size=16,
        num_query_tokens=32,
        embed_dim=256,
    )
    torch.manual_seed(0)
    model = MraCirModel(config)
    processor = offline_processor(bench.image_size, [" ".join(TOY_WORDS)])
    n = bench.batch_size * (bench.steps + bench.warmup + 1)
    dataset = random_triplet_dataset(n, num_images=2 * n, image_size=bench.image_size + 32, seed=0)
    return model, processor, dataset


def trainer_step(bench, model, processor, dataset, out_dir, vit_cache=None, **options) -> float:
    """Median `MraCirTrainer` step time (a fresh copy of `model`)."""
    from mra_cir.trainers.trainer import MraCirTrainer

    timer = StepTimer()
    trainer = MraCirTrainer(copy.deepcopy(model), _args(bench, out_dir, **options), train_dataset=dataset,
                            processing_class=processor, vit_cache=vit_cache, callbacks=[timer])  # fmt: skip
    trainer.train()
    return median_step(timer.ends, bench.warmup)


def plain_step(bench, model, processor, dataset) -> float:
    """The same work written by hand: DataLoader + collator, forward, backward, clip, AdamW."""
    from mra_cir.trainers.collator import MraCirCollator
    from mra_cir.trainers.freezing_and_lora import prepare_model_for_training
    from mra_cir.trainers.sampler import NoDuplicateTargetSampler
    from mra_cir.trainers.training_args import MraCirTrainingArguments

    device = torch.device(bench.device)
    model = prepare_model_for_training(copy.deepcopy(model), MraCirTrainingArguments("unused", report_to=[]))
    model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    # the batches the Trainer sees: the same duplicate-free order (seed 0), the same collator
    sampler = NoDuplicateTargetSampler(dataset["target_id"], bench.batch_size, world_size=1, seed=0)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=bench.batch_size, sampler=sampler, collate_fn=MraCirCollator(processor)
    )
    ends = []
    for step, batch in enumerate(loader):
        if step >= bench.steps + bench.warmup + 1:
            break
        batch = {k: v.to(device) for k, v in batch.items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        ends.append(clock())
    return median_step(ends, bench.warmup)


def main(argv: list[str] | None = None) -> int:
    (bench,) = HfArgumentParser(BenchArguments).parse_args_into_dataclasses(args=argv)
    if bench.device == "cpu":
        torch.set_num_threads(bench.threads)
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    model, processor, dataset = build(bench)
    result: dict = {
        "device": bench.device if bench.device != "cuda" else torch.cuda.get_device_name(),
        "torch_threads": torch.get_num_threads(),
        "timer": "wall time" if bench.device == "cuda" else "process CPU time",
        "batch_size": bench.batch_size,
        "measured_steps": bench.steps,
        "model": f"ViT {bench.hidden_size}x{bench.layers} {bench.image_size}px/16, Q-Former {bench.hidden_size}x"
        f"{bench.layers}, 32 queries",
    }
    with tempfile.TemporaryDirectory() as tmp:
        trainer_times, plain_times = [], []
        for r in range(bench.rounds):
            trainer_times.append(trainer_step(bench, model, processor, dataset, f"{tmp}/t{r}"))
            plain_times.append(plain_step(bench, model, processor, dataset))
        trainer_s, plain_s = min(trainer_times), min(plain_times)
        result.update(plain_step_s=round(plain_s, 4), trainer_step_s=round(trainer_s, 4))
        result["trainer_over_plain_ratio"] = round(trainer_s / plain_s, 3)

        from mra_cir.trainers.vit_cache import VitOutputCache

        start = clock()
        cache = VitOutputCache().fill(model.to(bench.device), processor, dataset, batch_size=32, show_progress=False)
        fill_s = clock() - start
        # the trainer takes the ready cache (filled once above) through its `vit_cache` argument
        cache_times = [
            trainer_step(bench, model, processor, dataset, f"{tmp}/c{r}", vit_cache=cache) for r in range(bench.rounds)
        ]
        result["vit_cache_step_s"] = round(min(cache_times), 4)
        result["vit_cache_speedup"] = round(trainer_s / min(cache_times), 3)
        result["vit_cache_fill_s"] = round(fill_s, 3)
        result["vit_cache_images"] = len(cache)
        if bench.options:
            gc_s = trainer_step(bench, model, processor, dataset, f"{tmp}/gc", activation_checkpointing=True)
            bf16_s = trainer_step(bench, model, processor, dataset, f"{tmp}/bf16", bf16=True)
            result.update(activation_checkpointing_step_s=round(gc_s, 4), bf16_step_s=round(bf16_s, 4))
            result["activation_checkpointing_over_trainer"] = round(gc_s / trainer_s, 3)
            result["bf16_over_trainer"] = round(bf16_s / trainer_s, 3)
            if bench.device == "cuda":
                result["peak_memory_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    print(json.dumps(result))
    return 0


def _args(bench: BenchArguments, out_dir: str, **options):
    from mra_cir.trainers.training_args import MraCirTrainingArguments

    return MraCirTrainingArguments(
        out_dir,
        per_device_train_batch_size=bench.batch_size,
        max_steps=bench.steps + bench.warmup + 1,
        learning_rate=1e-5,
        optim="adamw_torch",
        lr_scheduler_type="constant",
        max_grad_norm=1.0,
        logging_steps=10_000,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        use_cpu=bench.device == "cpu",
        dataloader_num_workers=0,
        seed=0,
        **options,
    )


if __name__ == "__main__":
    sys.exit(main())
