"""Two CPU processes (gloo) through `accelerate launch`: gathered negatives, DDP training steps, rank-0-only saving.

The test launches this file once with `accelerate launch --multi_gpu --num_processes 2` (with `--cpu` accelerate runs
a single process); the `__main__` part is the worker. It checks:

1. the mean over ranks of each rank's loss with gathered negatives equals the single-process loss on the global
   batch, and the DDP-averaged gradients equal the single-process gradients;
2. `MraCirTrainer` runs steps under DDP, and its first logged loss (the mean over ranks) equals the single-process
   loss of the first global batch of the duplicate-free sampler (so the sampler's groups line up with accelerate's
   sharding and negatives are gathered in training);
3. only rank 0 writes checkpoints and the final model.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO_ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_training(tmp_path):
    accelerate = Path(sys.executable).with_name("accelerate")
    if not accelerate.exists():
        pytest.skip(f"accelerate CLI not found next to {sys.executable}")
    cmd = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(Path(__file__).resolve()), str(tmp_path),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"accelerate launch failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
    result = json.loads((tmp_path / "result.json").read_text())

    assert result["world_size"] == 2
    # 1. gathered negatives == one process with the whole global batch
    assert result["local_losses"][0] != pytest.approx(result["local_losses"][1], abs=1e-6)  # the ranks differ
    assert result["mean_loss"] == pytest.approx(result["reference_loss"], rel=1e-5, abs=1e-6)
    assert result["logits_width"] == 8  # each rank scored its 4 queries against all 8 targets
    assert result["max_grad_diff"] < 1e-5 * max(1.0, result["max_grad"])
    # 2. Trainer under DDP: steps ran, first logged loss == single-process loss of the first global batch
    assert result["global_step"] == 2
    assert result["trainer_first_loss"] == pytest.approx(result["trainer_reference_loss"], rel=1e-5)
    assert result["first_batch_targets_distinct"]
    # 3. only rank 0 saved (the checkpoint at step 2 and the final model)
    assert result["saves_by_rank"] == {"0": 2}
    assert (tmp_path / "out" / "model.safetensors").is_file()
    assert (tmp_path / "out" / "checkpoint-2" / "model.safetensors").is_file()


# ---------------------------------------------------------------------------------------------------------- worker
def _worker(tmp: Path) -> None:
    import copy

    import torch
    import torch.distributed as dist

    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import TOY_WORDS, offline_processor, random_triplet_dataset, tiny_config
    from mra_cir.trainers.collator import MraCirCollator
    from mra_cir.trainers.sampler import no_duplicate_order
    from mra_cir.trainers.trainer import MraCirTrainer
    from mra_cir.trainers.training_args import MraCirTrainingArguments

    per_rank = 4
    # no use_cpu: on a CPU-only machine MraCirTrainingArguments must switch it on by itself under a launcher
    args = MraCirTrainingArguments(
        str(tmp / "out"), per_device_train_batch_size=per_rank, max_steps=2, logging_steps=1, save_steps=2,
        learning_rate=1e-3, report_to=[], seed=3, dataloader_num_workers=0, disable_tqdm=True,
    )  # fmt: skip
    rank, world = args.process_index, args.world_size
    assert dist.is_initialized() and dist.get_world_size() == world == 2, "not a 2-process DDP run"
    torch.manual_seed(0)
    model = MraCirModel(tiny_config(logit_temperature_init=0.05))
    processor = offline_processor(32, [" ".join(TOY_WORDS)])
    dataset = random_triplet_dataset(16, num_images=12, seed=1)
    initial = copy.deepcopy(model)
    collator = MraCirCollator(processor)

    # 1. loss and gradients with gathered negatives vs one process holding the global batch
    batch = collator([dataset[i] for i in range(per_rank * world)])
    local = {k: v[rank * per_rank : (rank + 1) * per_rank] for k, v in batch.items()}
    model.train()
    out = model(**local)
    out.loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    for g in grads.values():  # what DDP does: average over ranks
        dist.all_reduce(g)
        g /= world
    losses = [torch.zeros(1) for _ in range(world)]
    dist.all_gather(losses, out.loss.detach().reshape(1))
    local_losses = [float(x) for x in losses]

    reference = copy.deepcopy(initial)
    reference.config.gather_negatives = False
    reference.train()
    ref_out = reference(**batch)
    ref_out.loss.backward()
    ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    max_grad_diff = max(float((grads[n] - ref_grads[n]).abs().max()) for n in ref_grads)
    assert set(grads) == set(ref_grads), "gradients reached different parameters"

    # 2-3. Trainer under DDP; record who saves
    saves: list[int] = []
    original_save = MraCirModel.save_pretrained

    def recording_save(self, *args, **kwargs):
        saves.append(rank)
        return original_save(self, *args, **kwargs)

    MraCirModel.save_pretrained = recording_save
    trainer = MraCirTrainer(copy.deepcopy(initial), args, train_dataset=dataset, processing_class=processor)
    trainer.train()
    trainer.save_model()
    first_loss = next(h["loss"] for h in trainer.state.log_history if "loss" in h)

    order, _ = no_duplicate_order([str(t) for t in dataset["target_id"]], per_rank * world, seed=3)
    first = [dataset[i] for i in order[: per_rank * world]]
    reference = copy.deepcopy(initial)
    reference.config.gather_negatives = False
    reference.train()
    with torch.no_grad():
        trainer_reference_loss = float(reference(**collator(first)).loss)

    all_saves = [None] * world
    dist.all_gather_object(all_saves, saves)
    if rank == 0:
        counts: dict[str, int] = {}
        for r_saves in all_saves:
            for r in r_saves:
                counts[str(r)] = counts.get(str(r), 0) + 1
        result = {
            "world_size": world,
            "local_losses": local_losses,
            "mean_loss": sum(local_losses) / world,
            "reference_loss": float(ref_out.loss),
            "logits_width": int(out.logits_per_query.shape[1]),
            "max_grad_diff": max_grad_diff,
            "max_grad": max(float(g.abs().max()) for g in ref_grads.values()),
            "global_step": trainer.state.global_step,
            "trainer_first_loss": first_loss,
            "trainer_reference_loss": trainer_reference_loss,
            "first_batch_targets_distinct": len({r["target_id"] for r in first}) == len(first),
            "saves_by_rank": counts,
        }
        (tmp / "result.json").write_text(json.dumps(result))
    dist.barrier()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]))
