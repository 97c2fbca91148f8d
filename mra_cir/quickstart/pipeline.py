"""The offline quickstart: the whole MRA-CIR pipeline on the synthetic world, on a CPU, in minutes.

build the world -> load the pretrained backbone (the shipped stand-in for BLIP-2, [`~mra_cir.quickstart.STAND_IN`];
or stage 1 from scratch with `--pretrain_from_scratch`) -> zero-shot baselines on the benchmarks -> embed + mine the pool
with the rank window -> scene agent (captions, modification texts) -> triplets through the real builder
(`MraTriplets`) -> `MraCirTrainer` -> evaluate; plus, with `--ablation`, the window ablation (same number of triplets
and steps per window). Writes
`results.json`, `results.png` and prints a table. The stages are in [`.stages`], the benchmarks' scoring (the real
evaluators on the world's exported benchmarks) in [`.benchmarks`], the windows' training in [`.windows`], the report
in [`.report`].
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

import torch

from mra_cir.modeling_mra_cir import MraCirModel

from .arguments import ABLATION_WINDOWS, QuickstartArguments, scale_window
from .benchmarks import METHODS, evaluate_methods, export_benchmarks
from .phrasing import export_variants, score_variants
from .report import ABLATION_BENCHMARK, plot_results, print_report, results_dict
from .stages import build_quickstart_world, build_triplets, export_pool, load_backbone
from .windows import run_windows


class _Clock:
    """Times the stages (`timings_s` of `results.json`) and prints each as it ends."""

    def __init__(self):
        self.timings: dict[str, float] = {}
        self.started = self.last = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.last, 2)
        self.last = now
        print(f"[quickstart] {name}: {self.timings[name]:.1f} s", flush=True)

    def total(self) -> None:
        self.timings["total"] = round(time.perf_counter() - self.started, 2)


def mine_and_build(args: QuickstartArguments, world, stage1_dir: Path, out: Path) -> dict[str, dict]:
    """Embed + mine (the builder), the scene agent and the triplets for the main window and the ablation windows,
    each cut to the same budget (`args.num_triplets`): window -> `{"triplets", "summary", "window_in_pool"}`."""
    from mra_cir.dataset_builders.synthetic_world.scene_agent import SceneGraphAgent

    images = export_pool(world, out / "cache" / "pool_images")
    agent = SceneGraphAgent.from_dataset(world.pool, error_rate=args.agent_error_rate, seed=args.seed)
    windows = [args.window] + ([w for w in ABLATION_WINDOWS if w != args.window] if args.ablation else [])
    built = {}
    for window in windows:
        q1, q2 = scale_window(window, args.pool_size, args.window_reference_pool_size)
        triplets, summary = build_triplets(args, q1, q2, images, stage1_dir, agent, out / "cache" / "triplets")
        built[window] = {"triplets": triplets, "summary": summary, "window_in_pool": f"[{q1},{q2}]"}
    budget = args.num_triplets
    short = {w: len(b["triplets"]) for w, b in built.items() if len(b["triplets"]) < budget}
    if short:
        raise RuntimeError(f"windows {short} produced fewer than --num_triplets={budget} triplets; lower it")
    for b in built.values():  # same budget for every window: the same number of triplets (and of steps)
        b["triplets"] = b["triplets"].shuffle(seed=args.seed).select(range(budget))
    return built


def run_quickstart(args: QuickstartArguments) -> dict:
    """Run the whole pipeline for `args.seed`; write `results.json` and `results.png` under `args.output_dir`; return
    the results (several seeds: [`.seeds.run_seeds`])."""
    with _quiet(args.show_progress):
        return _run(args)


@contextmanager
def _quiet(show_progress: bool):
    """While the quickstart runs, loading the shipped folders prints nothing a user must act on (transformers'
    weight-loading bars and load reports), and without `show_progress` no `datasets` bar either; restored after."""
    import datasets
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    dataset_bars = datasets.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    if not show_progress:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()
        if dataset_bars:
            datasets.enable_progress_bars()


def _run(args: QuickstartArguments) -> dict:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()

    world = build_quickstart_world(args)
    folders = export_benchmarks(world, out / "benchmarks")
    features_cache = out / "cache" / "gallery_features"
    clock.lap("world")

    model, processor, stage1 = load_backbone(args, world)
    stage1_dir = out / "stage1_model"  # the model before MRA (the app compares with it)
    model.save_pretrained(stage1_dir)
    processor.save_pretrained(stage1_dir)
    clock.lap("backbone")

    baselines = tuple(m for m in METHODS if m != "mra_trained")
    evaluations = evaluate_methods(model, processor, folders, features_cache, baselines)
    variants = export_variants(world, out / "benchmarks" / "cirr_style_rephrased")
    phrasing = {"backbone": score_variants(model, processor, variants, features_cache)}
    clock.lap("baselines")

    built = mine_and_build(args, world, stage1_dir, out)
    clock.lap("mine_agent_triplets")

    jobs = [
        {
            "args": args,
            "window": window,
            "triplets": built[window]["triplets"],
            "stage1_dir": str(stage1_dir),
            "benchmarks": folders if window == args.window else {ABLATION_BENCHMARK: folders[ABLATION_BENCHMARK]},
            "save_dir": str(out / "mra_model") if window == args.window else None,
        }
        for window in built
    ]
    ablation = {}
    for result in run_windows(args, jobs):
        window, metrics = result["window"], result["metrics"]
        if window == args.window:
            for benchmark, values in metrics.items():
                evaluations[benchmark]["mra_trained"] = values
        ablation[window] = {
            **{k: v for k, v in metrics[ABLATION_BENCHMARK].items() if k != "curve"},
            "window_in_pool": built[window]["window_in_pool"],
            "triplets": args.num_triplets,
            "train_loss": round(result["train"]["train_loss"], 4),
        }
        clock.timings[f"train_eval_{window}"] = result["seconds"]
    trained = MraCirModel.from_pretrained(out / "mra_model").to(args.device).eval()
    phrasing["mra_trained"] = score_variants(trained, processor, variants, out / "cache" / "gallery_features_mra")
    clock.lap("train_eval_all_windows")
    clock.total()

    results = results_dict(args, evaluations, world, model, stage1, built[args.window], ablation, clock.timings)
    results["cirr_style_rephrased"] = phrasing
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_results(results, out / "results.png")
    print_report(results, args, out)
    return results


__all__ = ["mine_and_build", "run_quickstart"]
