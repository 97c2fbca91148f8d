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
    each cut to the same budget (`args.num_triplets`; with `--balance_types`, by per-type quotas out of
    `--balance_oversample` times the targets): window -> `{"triplets", "summary", "window_in_pool", "types"}`."""
    from mra_cir.dataset_builders.synthetic_world.scene_agent import SceneGraphAgent

    images = export_pool(world, out / "cache" / "pool_images")
    agent = SceneGraphAgent.from_dataset(
        world.pool, error_rate=args.agent_error_rate, seed=args.seed, error_kinds=args.agent_error_kinds,
        verify_error_rate=args.agent_verify_error_rate,
    )  # fmt: skip
    ablation = [w for w in (args.ablation_windows or ABLATION_WINDOWS) if w != args.window] if args.ablation else []
    targets = args.targets_per_reference * (args.balance_oversample if args.balance_types else 1)
    built = {}
    for window in [args.window, *ablation]:
        miner, where = None, None
        if window == "adaptive":
            from mra_cir.dataset_builders.mra_triplets.adaptive_window import DEFAULT_DEPTH, AdaptiveWindowMiner

            q1, q2 = scale_window(f"1-{DEFAULT_DEPTH}", args.pool_size, args.window_reference_pool_size)
            miner, where = AdaptiveWindowMiner(depth=q2), f"adaptive(depth {q2})"
        else:
            q1, q2 = scale_window(window, args.pool_size, args.window_reference_pool_size)
        triplets, summary = build_triplets(
            args, q1, q2, images, stage1_dir, agent, out / "cache" / "triplets", miner, targets
        )
        built[window] = {"triplets": triplets, "summary": summary, "window_in_pool": where or f"[{q1},{q2}]"}
    budget = args.num_triplets
    short = {w: len(b["triplets"]) for w, b in built.items() if len(b["triplets"]) < budget}
    if short:
        raise RuntimeError(f"windows {short} produced fewer than --num_triplets={budget} triplets; lower it")
    for b in built.values():  # same budget for every window: the same number of triplets (and of steps)
        if args.balance_types:
            from mra_cir.dataset_builders.mra_triplets.type_balance import balance_triplets

            b["triplets"], b["balance"] = balance_triplets(b["triplets"], budget, args.balance_types, args.seed)
        else:
            b["triplets"] = b["triplets"].shuffle(seed=args.seed).select(range(budget))
        if args.by_type:
            b["types"] = triplet_types(b["triplets"], world)
    return built


def triplet_types(triplets, world) -> dict:
    """The kept triplets' type mix: tagged from their texts, and true from the pool's scene graphs; their mean rank."""
    from mra_cir.dataset_builders.mra_triplets.transformation_types import micro_f1, tag_types, type_mix
    from mra_cir.dataset_builders.synthetic_world.true_types import pair_types

    graphs = {f"{i}.png": g for i, g in zip(world.pool["id"], world.pool["scene_graph"])}  # ids: exported files
    texts = triplets["modification_text"]
    truth = [
        pair_types(graphs[r], graphs[t]) or ["other"] for r, t in zip(triplets["reference_id"], triplets["target_id"])
    ]
    tagged = [tag_types(text) for text in texts]
    ranks = triplets["rank"]
    return {
        "tagged": type_mix(texts),
        "true": type_mix(range(len(truth)), tagger=lambda i: truth[i]),
        "tagger_vs_truth": {k: v for k, v in micro_f1(tagged, truth).items() if k != "errors"},
        "mean_rank": round(sum(ranks) / max(1, len(ranks)), 2),
    }


def run_quickstart(args: QuickstartArguments) -> dict:
    """Run the whole pipeline for `args.seed`; write `results.json` and `results.png` under `args.output_dir`; return
    the results (several seeds: [`.seeds.run_seeds`])."""
    with _quiet(args.show_progress):
        if args.error_study is not None:
            from .error_study import run_error_study

            return run_error_study(args)
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
    evaluations = evaluate_methods(model, processor, folders, features_cache, baselines, args.by_type)
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
            **({"mean_rank": built[window]["types"]["mean_rank"]} if args.by_type else {}),
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
    if args.by_type:
        results["triplet_types"] = {w: {**b["types"], "balance": b.get("balance")} for w, b in built.items()}
        results["by_type"] = {  # per method, the scores per transformation type (primary type of the query's text)
            benchmark: {m: scores["by_type"] for m, scores in methods.items() if "by_type" in scores}
            for benchmark, methods in evaluations.items()
            if benchmark in ("cirr_style", "circo_style")
        }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_results(results, out / "results.png")
    print_report(results, args, out)
    return results


__all__ = ["mine_and_build", "run_quickstart", "triplet_types"]
