"""The paper's mining-window ablation on real data, end to end: build triplets for each rank window from ONE embedding
and ONE ranking pass, train one model per window with the same settings, evaluate every model (and the untrained base)
on the benchmarks, and write one table and one plot.

Stages (`--stages`, in order; each reads what the previous wrote under `--output`, so they can run separately):

- `build`: `MraTriplets` per window with one shared work folder: the images are embedded once (the builder's feature
  cache), ranked once to the deepest window's last rank ([`SharedWindowDraws`]: every window draws its targets from
  that one ranking exactly as `sample_rank_window` would), and captioned once (the agent's response cache: an image
  used by several windows is captioned one time). Each window's triplets are then cut to the same number (the
  smallest window's, shuffled with the seed: only the window differs) and exported to `windows/<q1>-<q2>/triplets/`.
- `train`: `mra-cir train` for each window (`--train_config` YAML + `--train_args`), into `windows/<q1>-<q2>/model/`.
  Under `accelerate launch` this stage runs distributed.
- `evaluate`: each model (and the base `--model` unless `--no_base`) on `--benchmarks`, the galleries' frozen-ViT
  outputs cached once for all models (`eval_cache/`).
- `report`: `results.json`, `window_sweep.md` (the table) and `window_sweep.png` (primary metric vs window).

Example:

```bash
mra-cir window-sweep --images imagenet/train --per_class 100 --model Salesforce/blip2-itm-vit-g --output sweep/ \\
    --agent openai --agent_url http://gpu1:8000/v1 --agent_model openbmb/MiniCPM-V-2_6 \\
    --train_config examples/configs/train_paper_blip2_vitg.yaml \\
    --benchmarks fashioniq --benchmark_roots fashioniq=/data/fashionIQ_dataset
```
"""

from __future__ import annotations

import json
import shlex
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mra_cir.dataset_builders.mra_triplets.mining import parse_windows
from mra_cir.dataset_builders.mra_triplets.shared_windows import SharedWindowDraws

from .agent_arguments import AgentArguments
from .sweep_report import ADAPTIVE, window_name, write_report

#: the paper's ablation windows
PAPER_WINDOWS = ((1, 1), (11, 20), (31, 40), (51, 60), (91, 100))
STAGES = ("build", "train", "evaluate", "report")


@dataclass
class SweepAgentArguments(AgentArguments):
    """[`AgentArguments`] whose default backend is a served model (`openai`): a sweep captions a whole pool."""

    agent: str = field(
        default="openai", metadata={"help": "Agent backend: openai, transformers, or a registered name (e.g. scene)."}
    )


@dataclass
class WindowSweepArguments:
    """Options of `mra-cir window-sweep` (the agent: [`SweepAgentArguments`])."""

    images: str = field(metadata={"help": "Folder of unlabeled images (the pool every window mines from)."})
    model: str = field(
        metadata={
            "help": "The base model: a BLIP-2 ITM checkpoint (Salesforce/blip2-itm-vit-g) or an MraCirModel folder."
        }
    )
    output: str = field(metadata={"help": "Output folder (triplets, models, evaluations, results, table, plot)."})
    windows: str = field(
        default="1-1,11-20,31-40,51-60,91-100", metadata={"help": "Rank windows q1-q2, comma-separated (the paper's)."}
    )
    adaptive: bool = field(
        default=False,
        metadata={
            "help": "Also sweep the adaptive window (named 'adaptive': each reference's targets from a band of its own "
            "similarity scale, mra_triplets.adaptive_window; --adaptive_depth, --adaptive_band)."
        },
    )
    adaptive_depth: int = field(default=100, metadata={"help": "--adaptive: the rank whose similarity is 0."})
    adaptive_band: str = field(default="0.4,0.6", metadata={"help": "--adaptive: the normalised similarity band."})
    stages: str = field(default="build,train,evaluate,report", metadata={"help": f"Stages to run, of {STAGES}."})
    targets_per_reference: int = field(default=1, metadata={"help": "Targets drawn per reference in each window."})
    reduce: str = field(default="max", metadata={"help": "Token similarity reduction: max or mean_max."})
    max_images: int | None = field(default=None, metadata={"help": "Use N images of the folder (seeded sample)."})
    per_class: int | None = field(default=None, metadata={"help": "Use K images per class folder (seeded sample)."})
    sample_seed: int = field(default=0, metadata={"help": "Seed of the --per_class / --max_images sample."})
    seed: int = field(default=0, metadata={"help": "Seed of the draws, the equal-size cut and the training."})
    triplets_per_window: int | None = field(
        default=None,
        metadata={"help": "Triplets per window (default: the smallest window's count, so all are equal)."},
    )
    embedding_batch_size: int = field(default=32, metadata={"help": "Images per forward pass when embedding."})
    train_config: str | None = field(default=None, metadata={"help": "A training YAML (e.g. the paper recipe)."})
    train_args: str = field(default="", metadata={"help": "More training options, e.g. '--max_steps 2000 --bf16'."})
    benchmarks: str = field(default="fashioniq", metadata={"help": "Benchmarks to evaluate (the paper: FashionIQ)."})
    benchmark_roots: str = field(default="", metadata={"help": "'fashioniq=/data/fiq,cirr=/data/cirr' (layouts)."})
    annotations_dirs: str = field(default="", metadata={"help": "Optional 'benchmark=dir' annotation overrides."})
    categories: str = field(default="dress,shirt,toptee", metadata={"help": "FashionIQ categories."})
    eval_max_queries: int | None = field(default=None, metadata={"help": "Only N queries per benchmark (smoke)."})
    eval_batch_size: int = field(default=64, metadata={"help": "Images per forward pass in evaluation."})
    eval_num_workers: int = field(default=4, metadata={"help": "DataLoader workers in evaluation."})
    allow_missing: bool = field(default=False, metadata={"help": "Evaluate on the images present (not comparable)."})
    vision_cache_dtype: str = field(default="bfloat16", metadata={"help": "dtype of the cached gallery ViT outputs."})
    no_base: bool = field(default=False, metadata={"help": "Do not evaluate the untrained base model."})
    device: str | None = field(default=None, metadata={"help": "Evaluation device (default: cuda if available)."})
    no_progress: bool = field(default=False, metadata={"help": "Hide progress bars."})

    def __post_init__(self):
        try:
            self.window_list = parse_windows(self.windows)
        except ValueError as error:
            raise ValueError(f"--windows: {error}") from None
        if self.adaptive:
            from mra_cir.dataset_builders.mra_triplets.adaptive_window import parse_band

            parse_band(self.adaptive_band)
            self.window_list.append(ADAPTIVE)
        self.stage_list = [s.strip() for s in self.stages.split(",") if s.strip()]
        unknown = [s for s in self.stage_list if s not in STAGES]
        if unknown or not self.stage_list:
            raise ValueError(f"--stages: unknown {unknown}; choose from {STAGES}")


def _window_builder(args: WindowSweepArguments, agent_args: AgentArguments, window, draws, agent_backend=None):
    """An `MraTriplets` for one window whose mining step reads the shared draws (its public `pair_miner` hook; the same
    work folder for every window)."""
    from mra_cir.dataset_builders.mra_triplets import MraTriplets

    out = Path(args.output)
    if tuple(window) == ADAPTIVE:
        from mra_cir.dataset_builders.mra_triplets.adaptive_window import AdaptiveWindowMiner, parse_band

        draws = AdaptiveWindowMiner(depth=args.adaptive_depth, band=parse_band(args.adaptive_band))
        window = (1, max(args.adaptive_depth, args.targets_per_reference))  # the ranks it can draw from
    return MraTriplets(
        pair_miner=draws,
        cache_dir=str(out / "hf_cache"),
        work_dir=str(out / "work"),
        agent_cache=str(out / "work" / "agent_cache.sqlite"),
        agent_backend=agent_backend,
        embedding_batch_size=args.embedding_batch_size,
        show_progress=not args.no_progress,
        images=args.images,
        embedding_model=args.model,
        reduce=args.reduce,
        q1=window[0],
        q2=window[1],
        targets_per_reference=args.targets_per_reference,
        seed=args.seed,
        max_images=args.max_images,
        per_class=args.per_class,
        sample_seed=args.sample_seed,
        **agent_args.builder_kwargs(),
    )


def build_windows(
    args: WindowSweepArguments, agent_args: AgentArguments, results: dict, agent_backend=None
) -> SharedWindowDraws:
    """Stage `build`: triplets for every window (one embedding, ranking and captioning pass), cut to one size."""
    from mra_cir.dataset_builders.mra_triplets.publishing import export_triplets

    fixed = [w for w in args.window_list if tuple(w) != ADAPTIVE]
    draws = SharedWindowDraws(fixed, args.targets_per_reference, args.seed, args.reduce)
    built = {}
    for window in args.window_list:
        started = time.perf_counter()
        builder = _window_builder(args, agent_args, window, draws, agent_backend)
        builder.download_and_prepare()
        built[window] = (builder, builder.as_dataset(split="train"), time.perf_counter() - started)
    size = args.triplets_per_window or min(len(d) for _, d, _ in built.values())
    for window, (builder, dataset, seconds) in built.items():
        if len(dataset) < size:
            raise ValueError(f"window {window_name(window)} has {len(dataset)} triplets, fewer than {size} requested")
        used = dataset.shuffle(seed=args.seed).select(range(size)) if size < len(dataset) else dataset
        summary = builder.build_summary()
        folder = Path(args.output) / "windows" / window_name(window) / "triplets"
        # the card counts the exported rows; what the window built before the equal-size cut is kept beside them
        card_summary = {**summary, "triplets": len(used), "triplets_before_equal_size_cut": len(dataset)}
        export_triplets(used, folder, config=builder.config_dict(), summary=card_summary)
        entry = _entry(results, window)
        entry.update(triplets_built=len(dataset), triplets_used=size, pairs_mined=summary.get("pairs_mined"))
        entry.update(rejected=summary.get("rejected"), too_few_candidates=summary.get("too_few_candidates"))
        entry.setdefault("seconds", {})["build"] = round(seconds, 2)
    results["ranking_passes"] = draws.ranking_passes
    return draws


def train_windows(args: WindowSweepArguments, results: dict) -> None:
    """Stage `train`: `mra-cir train` on each window's triplets with the same settings and seed."""
    from .training import parse_train_args, train

    for window in args.window_list:
        folder = Path(args.output) / "windows" / window_name(window)
        if not (folder / "triplets").is_dir():
            raise FileNotFoundError(f"{folder / 'triplets'}: run the build stage first")
        argv = [args.train_config] if args.train_config else []
        argv += ["--model_name_or_path", args.model, "--train_dataset", str(folder / "triplets")]
        argv += ["--output_dir", str(folder / "model"), "--dataset_name", f"mra-triplets-window-{window_name(window)}"]
        argv += ["--seed", str(args.seed), *shlex.split(args.train_args)]
        model_args, data_args, training_args = parse_train_args(argv)
        started = time.perf_counter()
        metrics = train(model_args, data_args, training_args)
        entry = _entry(results, window)
        entry["train"] = {k: v for k, v in metrics.items() if k in ("train_loss", "train_runtime", "epoch")}
        model_dir = folder / "model"
        entry["model"] = str(model_dir / "merged" if training_args.qformer_training == "lora" else model_dir)
        entry.setdefault("seconds", {})["train"] = round(time.perf_counter() - started, 2)


def evaluate_models(args: WindowSweepArguments, results: dict) -> None:
    """Stage `evaluate`: every trained model (and the base) on every benchmark; gallery ViT outputs cached once."""

    from mra_cir.evaluation import EVALUATORS
    from mra_cir.modeling_mra_cir.loading import load_model_and_processor
    from mra_cir.retrieval.distributed import distributed_state

    from .training import benchmark_paths

    roots, annotations = benchmark_paths(args.benchmark_roots), benchmark_paths(args.annotations_dirs)
    benchmarks = [b.strip().lower() for b in args.benchmarks.split(",") if b.strip()]
    for name in benchmarks:
        if name not in EVALUATORS or name not in roots:
            raise ValueError(f"--benchmarks {name}: give a known benchmark and its folder in --benchmark_roots")
    device = args.device or str(distributed_state().device)
    models = [("base", args.model)] if not args.no_base else []
    models += [(window_name(w), _entry(results, w).get("model")) for w in args.window_list]
    for key, path in models:
        if not path:
            raise FileNotFoundError(f"window {key}: no trained model recorded; run the train stage first")
        model, processor = load_model_and_processor(path, device=device)
        by_name = {window_name(w): w for w in args.window_list}
        entry = results.setdefault("base", {}) if key == "base" else _entry(results, by_name[key])
        started = time.perf_counter()
        for name in benchmarks:
            kwargs = dict(categories=args.categories.split(",")) if name == "fashioniq" else {}
            evaluator = EVALUATORS[name](
                roots[name],
                annotations_dir=annotations.get(name),
                batch_size=args.eval_batch_size,
                num_workers=args.eval_num_workers,
                max_queries=args.eval_max_queries,
                allow_missing=args.allow_missing,
                cache_dir=Path(args.output) / "eval_cache",
                cache_features=False,
                cache_vision_outputs=True,
                vision_cache_dtype=args.vision_cache_dtype,
                show_progress=not args.no_progress,
                **kwargs,
            )
            entry.setdefault("metrics", {})[name] = evaluator(model, processor)
            entry.setdefault("complete", {})[name] = evaluator.complete
            if distributed_state().is_main_process:
                evaluator.save_rankings(
                    Path(args.output) / ("base" if key == "base" else f"windows/{key}") / "eval" / name
                )
        entry.setdefault("seconds", {})["evaluate"] = round(time.perf_counter() - started, 2)
        del model


def _entry(results: dict, window) -> dict:
    return results.setdefault("windows", {}).setdefault(window_name(window), {"window": list(window)})


def window_sweep(args: WindowSweepArguments, agent_args: AgentArguments | None = None, agent_backend=None) -> dict:
    """Run the requested stages; `results.json` is read first and written after each stage (resumable).

    `agent_args` (default: [`SweepAgentArguments`]`()`) chooses the agent of the build stage; `agent_backend`, an
    `AgentBackend` object, is used instead of building one from them (tests, in-process agents)."""
    from mra_cir.retrieval.distributed import distributed_state, launched_processes

    agent_args = agent_args or SweepAgentArguments()
    if launched_processes() > 1 and "build" in args.stage_list:
        raise ValueError(
            "--stages build runs in one process (the agent servers do the parallel work): run it with `mra-cir`, "
            "then train,evaluate,report under `accelerate launch`"
        )
    state = distributed_state()  # under accelerate launch: the process group the evaluators shard over
    if "build" in args.stage_list and agent_backend is None:
        agent_args.check()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["settings"] = {k: v for k, v in asdict(args).items()}
    results["settings"].update({k: v for k, v in asdict(agent_args).items() if k != "agent_url"})
    stages = {
        "build": lambda: build_windows(args, agent_args, results, agent_backend),
        "train": lambda: train_windows(args, results),
        "evaluate": lambda: evaluate_models(args, results),
        "report": lambda: (
            state.is_main_process and results.update(report=[str(p) for p in write_report(results, args, out)])
        ),
    }
    for stage in (s for s in STAGES if s in args.stage_list):
        stages[stage]()
        if state.is_main_process:
            path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    return results


__all__ = [
    "PAPER_WINDOWS",
    "STAGES",
    "SweepAgentArguments",
    "WindowSweepArguments",
    "build_windows",
    "evaluate_models",
    "train_windows",
    "window_sweep",
]
