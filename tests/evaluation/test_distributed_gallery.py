"""Distributed evaluation on two CPU processes (gloo, `accelerate launch --multi_gpu --num_processes 2`): each process
encodes its shard of the gallery and the queries, the rows are gathered once, the metrics and rankings equal a
single-process run; the gallery's frozen-ViT outputs are cached on disk and reused after the Q-Former changes; the
trainer runs distributed evaluators on every process and the others on the main one only.

The test launches this file; the `__main__` part is the worker. Single-process references are computed in the test.
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
N_QUERIES = 6
CHUNK = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _evaluators(tmp: Path, benchmarks_dir: Path, **kwargs):
    from mra_cir.evaluation import CircoEvaluator, CirrEvaluator

    common = dict(max_queries=N_QUERIES, batch_size=3, show_progress=False, **kwargs)
    cirr = CirrEvaluator(tmp / "cirr", annotations_dir=benchmarks_dir / "cirr", allow_missing=True, **common)
    circo = CircoEvaluator(tmp / "circo", annotations_dir=benchmarks_dir / "circo", **common)
    return cirr, circo


def _perturb_qformer(model) -> None:
    """What a training step does to the gallery encoder: the Q-Former changes, the frozen ViT does not."""
    import torch

    with torch.no_grad():
        model.vision_projection.weight.mul_(-1.0)
        model.qformer.encoder.layer[0].crossattention.attention.value.weight.add_(0.05)


def test_two_process_evaluation(tmp_path, benchmarks_dir):
    import torch
    from cir_placeholders import circo_images, cirr_images

    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import offline_processor, tiny_config

    accelerate = Path(sys.executable).with_name("accelerate")
    assert accelerate.exists(), f"accelerate CLI not found next to {sys.executable}"
    cirr_images(benchmarks_dir, tmp_path / "cirr", N_QUERIES, n_extra=9)
    circo_images(benchmarks_dir, tmp_path / "circo", N_QUERIES, n_extra=7)
    torch.manual_seed(0)
    model = MraCirModel(tiny_config()).eval()
    processor = offline_processor(32, ["show the same photo with two dogs and a red car instead of the cat"])
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")

    cmd = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(Path(__file__).resolve()), str(tmp_path), str(benchmarks_dir),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": str(REPO_ROOT / "tests")}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=420)
    assert proc.returncode == 0, f"accelerate launch failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    results = [json.loads((tmp_path / f"result_{r}.json").read_text()) for r in (0, 1)]

    # single-process references, no cache at all
    cirr, circo = _evaluators(tmp_path, benchmarks_dir, cache_dir="")
    reference = cirr(model, processor)
    reference_rankings = cirr.rankings["cirr"]
    reference_circo = circo(model, processor)
    gallery = len(cirr.splits["cirr"].gallery)
    _perturb_qformer(model)
    reference_after = cirr(model, processor)
    assert reference_after != reference  # the perturbation changes the gallery features

    for rank, result in enumerate(results):
        assert result["world_size"] == 2
        # 1. sharded encoding, gathered once: the same numbers and rankings as one process
        assert result["first"]["metrics"] == pytest.approx(reference)
        assert result["first"]["rankings"] == reference_rankings
        # each process ran the ViT on its own shard of the gallery only (chunk-aligned), and on its half of the
        # queries' reference images (the composed query needs them)
        queries = N_QUERIES // 2
        assert 0 < result["first"]["vit_rows"] - queries < gallery
        # 2. second evaluation: the gallery's ViT outputs come from the disk cache (only the queries' run)
        assert result["second"]["vit_rows"] == queries
        assert result["second"]["metrics"] == pytest.approx(reference)
        # 3. after a "training step" (Q-Former changed, ViT frozen): cache still used, numbers follow the new weights
        assert result["after_step"]["vit_rows"] == queries
        assert result["after_step"]["metrics"] == pytest.approx(reference_after)
        # 4. the trainer: the distributed evaluator ran on both processes, the other on the main one only
        trainer = result["trainer"]
        assert trainer["circo_ran"] and trainer["circo_vit_rows"] > N_QUERIES // 2
        assert trainer["plain_calls"] == (1 if rank == 0 else 0)
        assert trainer["metrics"]["eval_circo_mAP@5"] == pytest.approx(reference_circo["mAP@5"])
        assert trainer["metrics"]["eval_plain_answer"] == 42.0  # the main process's metrics, shared with every rank
    assert sum(r["first"]["vit_rows"] - N_QUERIES // 2 for r in results) == gallery
    expected = [[i, i] for i in range(7)] + [[100 + i, 100 + i] for i in range(3)]
    assert results[0]["gathered"] == results[1]["gathered"] == expected
    chunks = list((tmp_path / "cache" / "vision_outputs").glob("cirr-val-*/rows-*.safetensors"))
    assert len(chunks) == -(-gallery // CHUNK)  # one file per chunk, whichever process wrote it
    assert not list((tmp_path / "cache").glob("cirr-val-*.safetensors"))  # cache_features=False: no final features


def test_evaluate_command_under_two_processes(tmp_path, benchmarks_dir, tiny_model, tiny_processor, capsys):
    """`accelerate launch -m mra_cir.cli evaluate`: sharded over two processes, one result file, the same numbers."""
    from cir_placeholders import circo_images

    from mra_cir.commands import evaluate

    accelerate = Path(sys.executable).with_name("accelerate")
    root = circo_images(benchmarks_dir, tmp_path / "circo", N_QUERIES, n_extra=9)
    tiny_model.save_pretrained(tmp_path / "model")
    tiny_processor.save_pretrained(tmp_path / "model")
    common = ["evaluate", "--model", str(tmp_path / "model"), "--benchmark", "circo", "--data_root", str(root)]
    common += ["--annotations_dir", str(benchmarks_dir / "circo"), "--max_queries", str(N_QUERIES), "--cache_dir", ""]
    cmd = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        "-m", "mra_cir.cli", *common, "--output", str(tmp_path / "two"), "--no_progress",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len([line for line in proc.stdout.splitlines() if line.startswith("{")]) == 1  # rank 0 prints
    two = json.loads((tmp_path / "two" / "circo_val_results.json").read_text())
    assert evaluate.main([*common[1:], "--output", str(tmp_path / "one"), "--no_progress", "--device", "cpu"]) == 0
    one = json.loads((tmp_path / "one" / "circo_val_results.json").read_text())
    assert two["metrics"] == pytest.approx(one["metrics"]) and "Recall@5" in one["metrics"]
    rankings = [json.loads((tmp_path / d / "circo_val_rankings.json").read_text()) for d in ("one", "two")]
    assert rankings[0] == rankings[1]


def test_shard_bounds_partition_and_align():
    from mra_cir.retrieval.distributed import gather_rows, shard_bounds

    for total, world, align in [(18, 2, 4), (10, 3, 1), (5, 8, 1), (1000, 7, 64), (0, 2, 4)]:
        bounds = [shard_bounds(total, world, r, align) for r in range(world)]
        covered = [i for start, stop in bounds for i in range(start, stop)]
        assert covered == list(range(total)), (total, world, align)
        assert all(start % align == 0 for start, stop in bounds if start < stop)
    with pytest.raises(ValueError, match="rank 2 of 2"):
        shard_bounds(10, 2, 2)
    import torch

    rows = torch.randn(3, 2)
    assert torch.equal(gather_rows(rows), rows)  # no process group: the local rows


# ---------------------------------------------------------------------------------------------------------- worker
class _PlainEvaluator:
    """A callable evaluator without `supports_distributed`: the trainer runs it on the main process only."""

    benchmark = "plain"

    def __init__(self):
        self.calls = 0

    def __call__(self, model, processor=None):
        self.calls += 1
        return {"answer": 42.0}


def _counting(model) -> dict:
    counter = {"vit_rows": 0}
    original = model.get_vision_outputs

    def wrapped(pixel_values, *args, **kwargs):
        counter["vit_rows"] += pixel_values.shape[0]
        return original(pixel_values, *args, **kwargs)

    model.get_vision_outputs = wrapped
    return counter


def _worker(tmp: Path, benchmarks_dir: Path) -> None:
    import torch.distributed as dist

    from mra_cir.modeling_mra_cir.loading import load_model_and_processor
    from mra_cir.trainers import MraCirTrainer, MraCirTrainingArguments

    args = MraCirTrainingArguments(str(tmp / "trainer"), report_to=[], disable_tqdm=True, per_device_eval_batch_size=3)
    assert dist.is_initialized() and dist.get_world_size() == 2, "not a 2-process run"
    rank = dist.get_rank()
    model, processor = load_model_and_processor(str(tmp / "model"))
    counter = _counting(model)
    options = dict(cache_dir=tmp / "cache", cache_features=False, cache_vision_outputs=True, vision_chunk_rows=CHUNK)
    options["vision_cache_dtype"] = "float32"  # exact equality with the uncached reference (bfloat16 rounds)
    cirr, circo = _evaluators(tmp, benchmarks_dir, **options)
    result = {"world_size": dist.get_world_size()}
    for name in ("first", "second", "after_step"):
        if name == "after_step":
            _perturb_qformer(model)
        counter["vit_rows"] = 0
        metrics = cirr(model, processor)
        result[name] = {"metrics": metrics, "rankings": cirr.rankings["cirr"], "vit_rows": counter["vit_rows"]}

    model, processor = load_model_and_processor(str(tmp / "model"))  # fresh weights for the trainer part
    counter = _counting(model)
    plain = _PlainEvaluator()
    trainer = MraCirTrainer(model, args, processing_class=processor, cir_evaluators=[circo, plain])
    metrics = trainer.evaluate()
    result["trainer"] = {
        "metrics": {k: v for k, v in metrics.items() if k.startswith(("eval_circo", "eval_plain"))},
        "circo_ran": bool(circo.rankings),
        "circo_vit_rows": counter["vit_rows"],
        "plain_calls": plain.calls,
    }
    # uneven shards (7 and 3 rows) gathered two rows per collective
    import torch

    from mra_cir.retrieval.distributed import gather_rows

    local = torch.arange(7 if rank == 0 else 3).repeat_interleave(2).view(-1, 2) + 100 * rank
    result["gathered"] = gather_rows(local, block_rows=2).tolist()
    (tmp / f"result_{rank}.json").write_text(json.dumps(result))
    dist.barrier()


if __name__ == "__main__":
    _worker(Path(sys.argv[1]), Path(sys.argv[2]))
