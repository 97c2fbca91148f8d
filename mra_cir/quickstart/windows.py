"""Stage 2 and its evaluation for each mining window, side by side in worker processes.

Every window starts from the same saved stage-1 model with the same seed and the same number of triplets and steps,
so a window's result does not depend on which process runs it, or in which order.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from .arguments import QuickstartArguments
from .benchmarks import evaluate_methods
from .stages import train_mra


def train_and_evaluate_window(job: dict) -> dict:
    """Stage 2 and its evaluation for one mining window, from the saved stage-1 model (a worker's unit of work).

    `job`: `args` ([`QuickstartArguments`]), `window`, `triplets` (the window's budgeted `datasets.Dataset`),
    `stage1_dir`, `benchmarks` (benchmark -> exported folder, those to score the trained model on), `save_dir` (where
    the trained model goes, or None).

    Returns:
        `dict`: `window`, `metrics` (benchmark -> the `mra_trained` metrics, see [`evaluate_methods`]), `train` (loss
        and steps), `seconds`.
    """
    from mra_cir.modeling_mra_cir import MraCirModel, MraCirProcessor

    started = time.perf_counter()
    args: QuickstartArguments = job["args"]
    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    model = MraCirModel.from_pretrained(job["stage1_dir"]).to(args.device)
    processor = MraCirProcessor.from_pretrained(job["stage1_dir"])
    trained, train_metrics = train_mra(args, model, processor, job["triplets"], out / "train" / job["window"])
    cache = out / "cache" / "gallery_features"
    scores = evaluate_methods(trained, processor, job["benchmarks"], cache, ("mra_trained",), args.by_type)
    metrics = {benchmark: by_method["mra_trained"] for benchmark, by_method in scores.items()}
    if job["save_dir"] is not None:
        trained.save_pretrained(job["save_dir"])
        processor.save_pretrained(job["save_dir"])
    return {
        "window": job["window"],
        "metrics": metrics,
        "train": train_metrics,
        "seconds": round(time.perf_counter() - started, 2),
    }


def run_windows(args: QuickstartArguments, jobs: list[dict]) -> list[dict]:
    """[`train_and_evaluate_window`] for every job: in this process, or in `args.window_workers` spawned processes
    (progress bars off there; each window's time is reported when it ends)."""
    workers = min(args.window_workers, len(jobs))
    if workers <= 1:
        return [train_and_evaluate_window(job) for job in jobs]
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    quiet = [{**job, "args": dataclasses.replace(job["args"], show_progress=False)} for job in jobs]
    results = {}
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_evaluate_window, job): job["window"] for job in quiet}
        for future in as_completed(futures):
            result = future.result()
            results[result["window"]] = result
            print(
                f"[quickstart] window {result['window']}: trained and evaluated in {result['seconds']:.1f} s",
                flush=True,
            )
    return [results[job["window"]] for job in jobs]


__all__ = ["run_windows", "train_and_evaluate_window"]
