"""The agent-error study: what wrong modification texts cost MRA, and how much verification wins back.

`mra-cir quickstart --fast --seed S --error_study 0,0.15,0.3` builds the world and loads the pretrained stand-in as
the quickstart does, then, for each error rate, builds the triplets with the scene agent erring like an MLLM
(`--agent_error_kinds`, default every kind of [`~mra_cir.dataset_builders.synthetic_world.agent_errors`]) and both
verifiers on (the agent's self-check and cycle consistency with `--cycle_k`,
[`~mra_cir.dataset_builders.mra_triplets.verification`]). The world's `agent_error` column is the truth each
verifier is scored against. MRA is then trained (same steps, same seed) on:

- `clean`: the error rate 0 build, every triplet the agent wrote (cut to `--num_triplets`);
- `noisy_<pct>`: every triplet the erring agent wrote (the train and dropped splits together, cut the same way),
  i.e. what a build without verification keeps;
- `verified_<pct>_<verifier>`: only the triplets that verifier kept (`--error_study_verifiers`: agent, cycle,
  either), all of them up to `--num_triplets`: verification costs data, and the comparison keeps that cost;
- with `--error_study_controls`, `clean_size_of_<set>`: the clean triplets cut to a verified set's size (what the
  smaller size alone costs).

Writes `error_study.json` (verifier precision and recall by rate, error kinds, the trained models' CIRR-style and
CIRCO-style metrics) and prints a table; `summarize_error_studies` makes the mean ± spread table over seeds.
"""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from pathlib import Path

from .arguments import QuickstartArguments, parse_rates, scale_window

#: what the study scores each trained model on
STUDY_BENCHMARKS = ("cirr_style", "circo_style")
STUDY_METRICS = (("cirr_style", "R@1"), ("cirr_style", "R@10"), ("circo_style", "mAP@10"))


def _pct(rate: float) -> str:
    return f"{round(100 * rate):d}"


def build_at_rate(args: QuickstartArguments, world, rate: float, images: Path, stage1_dir: Path, out: Path):
    """The verified build at one error rate -> `(every triplet with drop_reason and agent_error, summary)`."""
    import datasets

    from mra_cir.dataset_builders.mra_triplets import MraTriplets
    from mra_cir.dataset_builders.synthetic_world.scene_agent import SceneGraphAgent

    agent = SceneGraphAgent.from_dataset(
        world.pool, error_rate=rate, seed=args.seed, error_kinds=args.agent_error_kinds or "all",
        verify_error_rate=args.agent_verify_error_rate,
    )  # fmt: skip
    q1, q2 = scale_window(args.window, args.pool_size, args.window_reference_pool_size)
    builder = MraTriplets(
        images=str(images), embedding_model=str(stage1_dir), q1=q1, q2=q2,
        targets_per_reference=min(args.targets_per_reference, q2 - q1 + 1), reduce=args.mining_reduce,
        seed=args.seed, agent="scene", agent_backend=agent, cache_dir=str(out / "cache" / "triplets"),
        embedding_batch_size=256, show_progress=args.show_progress, verify=True, cycle_check=True,
        cycle_k=args.cycle_k,
    )  # fmt: skip
    builder.download_and_prepare()
    every = datasets.concatenate_datasets([builder.as_dataset(split="train"), builder.as_dataset(split="dropped")])
    return every, builder.build_summary()


def study_rate(every, rate: float, budget: int, seed: int, verifiers: list[str]) -> tuple[dict, dict]:
    """One rate's training sets (name -> dataset) and its verification figures."""
    from mra_cir.dataset_builders.mra_triplets.verification import VERIFIER_REASONS, verifier_scores

    errors, reasons = every["agent_error"], every["drop_reason"]
    wrong = [bool(e) for e in errors]
    figures = {
        "texts": len(errors),
        "wrong": round(sum(wrong) / max(1, len(wrong)), 4),
        "kinds": dict(Counter(e for e in errors if e)),
        "verifiers": verifier_scores(wrong, reasons),
    }
    order = every.shuffle(seed=seed)
    shuffled_reasons = order["drop_reason"]
    order = order.remove_columns(["drop_reason", "agent_error"])
    sets = {"clean" if rate == 0 else f"noisy_{_pct(rate)}": order.select(range(min(budget, len(order))))}
    for verifier in verifiers if rate > 0 else []:
        marks = set(sum(VERIFIER_REASONS.values(), ())) if verifier == "either" else set(VERIFIER_REASONS[verifier])
        keep = [i for i, r in enumerate(shuffled_reasons) if not set((r or "").split(",")) & marks]
        sets[f"verified_{_pct(rate)}_{verifier}"] = order.select(keep[:budget])
    return sets, figures


def run_error_study(args: QuickstartArguments) -> dict:
    """The study for `args.seed` (see the module docstring) -> its results (also in `error_study.json`)."""
    import torch

    from .benchmarks import export_benchmarks
    from .stages import build_quickstart_world, export_pool, load_backbone
    from .windows import run_windows

    torch.set_num_threads(args.num_threads)
    started = time.perf_counter()
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    world = build_quickstart_world(args)
    folders = export_benchmarks(world, out / "benchmarks")
    model, processor, _ = load_backbone(args, world)
    stage1_dir = out / "stage1_model"
    model.save_pretrained(stage1_dir)
    processor.save_pretrained(stage1_dir)
    images = export_pool(world, out / "cache" / "pool_images")
    verifiers = [v.strip() for v in args.error_study_verifiers.split(",") if v.strip()]
    sets, verification = {}, {}
    for rate in parse_rates(args.error_study):
        every, summary = build_at_rate(args, world, rate, images, stage1_dir, out)
        rate_sets, figures = study_rate(every, rate, args.num_triplets, args.seed, verifiers)
        verification[_pct(rate)] = {**figures, "rejected": summary["rejected"]}
        sets.update(rate_sets)
    if args.error_study_controls and "clean" in sets:  # the same number of clean triplets as each verified set
        for name in [n for n in sets if n.startswith("verified_")]:
            sets[f"clean_size_of_{name}"] = sets["clean"].select(range(len(sets[name])))
    built_s = time.perf_counter() - started
    jobs = [
        {"args": args, "window": name, "triplets": triplets, "stage1_dir": str(stage1_dir), "save_dir": None,
         "benchmarks": {b: folders[b] for b in STUDY_BENCHMARKS}}
        for name, triplets in sets.items()
    ]  # fmt: skip
    trained = {}
    for result in run_windows(args, jobs):
        metrics = {
            b: {k: v for k, v in m.items() if k not in ("curve", "by_type")} for b, m in result["metrics"].items()
        }
        trained[result["window"]] = {"triplets": len(sets[result["window"]]), **metrics}
    results = {
        "seed": args.seed,
        "error_kinds": args.agent_error_kinds or "all",
        "verify_error_rate": args.agent_verify_error_rate,
        "cycle_k": args.cycle_k,
        "train_steps": args.train_steps,
        "verification": verification,
        "trained": trained,
        "timings_s": {"builds": round(built_s, 1), "total": round(time.perf_counter() - started, 1)},
    }
    (out / "error_study.json").write_text(json.dumps(results, indent=2))
    print(study_table([results]))
    return results


def _mean_spread(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{1 if max(values) > 1.5 else 2}f} ± {spread:.{1 if max(values) > 1.5 else 2}f}"


def study_table(studies: list[dict]) -> str:
    """Markdown tables, mean ± standard deviation over the studies (seeds): the verifiers against the truth per
    rate, then the trained models."""
    seeds = ", ".join(str(s["seed"]) for s in studies)
    lines = [f"Verifiers against the world's truth (seeds {seeds}; flagged = dropped)", "",
             "| error rate | texts wrong | verifier | precision | recall | dropped | wrong among kept |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for rate in studies[0]["verification"]:
        for verifier in studies[0]["verification"][rate]["verifiers"]:
            cell = [s["verification"][rate]["verifiers"][verifier] for s in studies]
            wrong = _mean_spread([s["verification"][rate]["wrong"] for s in studies])
            values = [
                _mean_spread([c[key] for c in cell]) for key in ("precision", "recall", "dropped", "residual_error")
            ]
            lines.append(f"| {rate} % | {wrong} | {verifier} | " + " | ".join(values) + " |")
    lines += ["", f"MRA trained on each set (seeds {seeds}; {studies[0]['train_steps']} steps)", "",
              "| training set | triplets | CIRR-style R@1 | CIRR-style R@10 | CIRCO-style mAP@10 |", "|---|---|---|---|---|"]  # fmt: skip
    for name in studies[0]["trained"]:
        rows = [s["trained"][name] for s in studies if name in s["trained"]]
        cells = [_mean_spread([r[b][k] for r in rows]) for b, k in STUDY_METRICS]
        lines.append(f"| {name} | {round(statistics.mean(r['triplets'] for r in rows))} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summarize_error_studies(folders: list[str | Path]) -> str:
    """The mean ± spread tables of several seeds' `error_study.json` (each folder an `--output_dir`)."""
    studies = []
    for folder in folders:
        path = Path(folder) / "error_study.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no study there (run mra-cir quickstart --error_study ... first)")
        studies.append(json.loads(path.read_text()))
    return study_table(studies)


__all__ = ["run_error_study", "study_rate", "study_table", "summarize_error_studies"]
