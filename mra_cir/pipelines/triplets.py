"""The `build_triplets` job: a folder of unlabeled images -> MRA training triplets (Parquet + dataset card), what
`mra-cir build-triplets` runs.

Example (the scene agent of the synthetic world; any `AgentArguments` backend works the same way):

```python
>>> from mra_cir.pipelines import AgentArguments, BuildTripletsArguments, build_triplets
>>> result = build_triplets(
...     BuildTripletsArguments(images="photos/", model="out/mra-cir", output="triplets/"),
...     AgentArguments(agent="openai", agent_url=["http://gpu1:8000/v1"], agent_model="openbmb/MiniCPM-V-2_6"),
... )
>>> print(format_summary(result.summary, result.output))
```

A build finishes only when every mined pair has an answer or a counted rejection: otherwise it raises
`IncompleteBuildError` (failed agent requests, every answer received cached: the same call asks only those again).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from mra_cir.dataset_builders.agents.base import AgentError
from mra_cir.dataset_builders.mra_triplets.summary import IncompleteBuildError

from .agent_arguments import AgentArguments


@dataclass
class BuildTripletsArguments:
    """What `mra-cir build-triplets` builds from which images (the agent: [`AgentArguments`])."""

    images: str = field(metadata={"help": "Folder of unlabeled images (searched recursively)."})
    model: str = field(
        metadata={
            "help": "The model that embeds the images: an MraCirModel folder or a BLIP-2 ITM checkpoint (folder or Hub "
            "id, e.g. Salesforce/blip2-itm-vit-g)."
        }
    )
    output: str = field(metadata={"help": "Output folder: data/*.parquet, README.md (dataset card), summary."})
    device: str = field(default="cpu", metadata={"help": "Where the images are embedded and mined: cpu, cuda, ..."})
    batch_size: int = field(default=32, metadata={"help": "Images per forward pass when embedding."})
    verify: bool = field(default=False, metadata={"help": "Ask the agent to verify each modification text."})
    cycle_check: bool = field(
        default=False,
        metadata={
            "help": "Keep a text only when the embedding model's composed query (reference, text) ranks the target "
            "within the top --cycle-k of the reference's window candidates (no agent call)."
        },
    )
    cycle_k: int = field(default=3, metadata={"help": "The cycle check's k."})
    q1: int = field(default=51, metadata={"help": "First rank of the mining window."})
    q2: int = field(default=60, metadata={"help": "Last rank of the mining window."})
    window: str | None = field(
        default=None,
        metadata={
            "help": "'adaptive': draw each reference's targets from a band of its own similarity scale instead of "
            "ranks --q1..--q2 (mra_triplets.adaptive_window; --adaptive-depth, --adaptive-band)."
        },
    )
    adaptive_depth: int = field(default=100, metadata={"help": "--window adaptive: the rank whose similarity is 0."})
    adaptive_band: str = field(
        default="0.4,0.6", metadata={"help": "--window adaptive: the band of normalised similarity, low,high."}
    )
    targets_per_reference: int = field(default=1, metadata={"help": "Targets sampled per reference."})
    balance_types: str | None = field(
        default=None,
        metadata={
            "help": "Keep per-type quotas of the triplets (transformation types of the texts): 'uniform' or a JSON "
            "file {type: share}. Draws --balance-oversample times the targets per reference, keeps references x "
            "--targets-per-reference triplets; counted in the dataset card."
        },
    )
    balance_oversample: int = field(default=3, metadata={"help": "--balance-types: candidates per kept triplet."})
    reduce: str = field(default="max", metadata={"help": "Token similarity reduction: max or mean_max."})
    seed: int = field(default=0, metadata={"help": "Seed of the targets drawn in the mining window."})
    max_images: int | None = field(
        default=None, metadata={"help": "Use at most N images: a random sample drawn with --sample-seed."}
    )
    per_class: int | None = field(
        default=None,
        metadata={
            "help": "Use at most K images of each class folder (first-level sub-folder), drawn with --sample-seed."
        },
    )
    sample_seed: int = field(default=0, metadata={"help": "Seed of the --per-class / --max-images sample."})
    pairs_per_shard: int = field(default=256, metadata={"help": "Pairs per generation shard."})
    num_proc: int | None = field(default=None, metadata={"help": "Processes generating shards in parallel."})
    cache_dir: str | None = field(
        default=None, metadata={"help": "datasets cache + work folder (default: <output>/.cache)."}
    )
    agent_cache: str | None = field(default=None, metadata={"help": "Response cache file (sqlite)."})
    allow_failures: bool = field(
        default=False,
        metadata={"help": "Finish even if agent requests failed (those pairs are dropped and counted)."},
    )
    overwrite: bool = field(
        default=False,
        metadata={"help": "Recompute features, mined pairs and the dataset (agent answers stay cached)."},
    )
    save_arrow: bool = field(default=False, metadata={"help": "Also save_to_disk into <output>/arrow."})
    push_to_hub: str | None = field(default=None, metadata={"help": "Also push to this Hub dataset repo id."})
    private: bool = field(default=True, metadata={"help": "Private Hub repo."})


class BuildResult(NamedTuple):
    """What a finished build returns: the dataset card's `summary`, the triplets (`datasets.Dataset`) and the output
    folder they were exported to."""

    summary: dict
    dataset: object
    output: Path


class NoTripletsError(ValueError):
    """The build finished with 0 triplets (no pair mined, or every pair rejected; the message counts why)."""


def build_triplets(args: BuildTripletsArguments, agent_args: AgentArguments) -> BuildResult:
    """Embed, mine, ask the agent, filter, and export the triplets to `args.output` (and push them with
    `args.push_to_hub`).

    Raises:
        `ValueError` / `OSError`: bad inputs (named); `IncompleteBuildError`: agent requests failed (resume by calling
        again); `AgentError`: the agent backend is down; [`NoTripletsError`]: nothing was kept.
    """
    from mra_cir.dataset_builders.mra_triplets import MraTriplets
    from mra_cir.dataset_builders.mra_triplets.publishing import export_triplets, push_triplets_to_hub

    miner, (q1, q2), targets = _window_and_targets(args)
    builder = MraTriplets(
        cache_dir=args.cache_dir or os.path.join(args.output, ".cache"), agent_cache=args.agent_cache,
        images=args.images, embedding_model=args.model, reduce=args.reduce, q1=q1, q2=q2, pair_miner=miner,
        targets_per_reference=targets, seed=args.seed, max_images=args.max_images,
        per_class=args.per_class, sample_seed=args.sample_seed, verify=args.verify, cycle_check=args.cycle_check,
        cycle_k=args.cycle_k,
        pairs_per_shard=args.pairs_per_shard, allow_failures=args.allow_failures, overwrite=args.overwrite,
        device=args.device, embedding_batch_size=args.batch_size, **agent_args.builder_kwargs(),
    )  # fmt: skip
    builder.download_and_prepare(num_proc=args.num_proc)
    summary = builder.build_summary()
    if summary["triplets"] == 0:
        why = f"every pair was rejected ({_rejections(summary)})" if summary["pairs_mined"] else "no pair was mined"
        raise NoTripletsError(f"0 triplets: {why}")
    dataset = builder.as_dataset(split="train")
    dataset, summary = _with_types(args, dataset, dict(summary))
    dropped = builder.as_dataset(split="dropped") if args.verify or args.cycle_check else None  # kept aside
    export_triplets(
        dataset, args.output, config=builder.config_dict(), summary=summary, save_arrow=args.save_arrow,
        repo_id=args.push_to_hub or "<user>/<repo>", dropped=dropped,
    )  # fmt: skip
    if args.push_to_hub:
        push_triplets_to_hub(dataset, args.push_to_hub, builder.config_dict(), summary, private=args.private)
    return BuildResult(summary, dataset, Path(args.output))


def _window_and_targets(args: BuildTripletsArguments) -> tuple[object, tuple[int, int], int]:
    """`(pair_miner or None, (q1, q2), targets per reference to draw)` for the build: the adaptive window's miner
    (ranks 1..depth bound what it can draw), and the oversampled targets of `--balance-types`."""
    if args.balance_oversample < 1:
        raise ValueError(f"--balance-oversample must be >= 1, got {args.balance_oversample}")
    targets = args.targets_per_reference * (args.balance_oversample if args.balance_types else 1)
    if args.window is None:
        return None, (args.q1, args.q2), min(targets, max(1, args.q2 - args.q1 + 1))
    if args.window != "adaptive":
        raise ValueError(f"--window: only 'adaptive' is known (fixed ranks are --q1/--q2), got {args.window!r}")
    from mra_cir.dataset_builders.mra_triplets.adaptive_window import AdaptiveWindowMiner, parse_band

    miner = AdaptiveWindowMiner(depth=args.adaptive_depth, band=parse_band(args.adaptive_band))
    return miner, (1, max(args.adaptive_depth, targets)), targets


def _with_types(args: BuildTripletsArguments, dataset, summary: dict):
    """The triplets' type mix in the summary (`transformation_types`), and with `--balance-types` the balanced
    triplets (references x `--targets-per-reference` of them) and the record of the draw (`type_balance`)."""
    from mra_cir.dataset_builders.mra_triplets.transformation_types import type_mix

    if args.balance_types:
        from mra_cir.dataset_builders.mra_triplets.type_balance import balance_triplets

        size = len(set(dataset["reference_id"])) * args.targets_per_reference
        summary["transformation_types_candidates"] = type_mix(dataset["modification_text"])
        dataset, summary["type_balance"] = balance_triplets(
            dataset, min(size, len(dataset)), args.balance_types, args.seed
        )
        summary["triplets"] = len(dataset)
    summary["transformation_types"] = type_mix(dataset["modification_text"])
    return dataset, summary


def close_progress_bars() -> None:
    """Close the progress bars an error left open, so that the one-line message starts on a line of its own."""
    from tqdm import tqdm

    for bar in list(getattr(tqdm, "_instances", ())):
        bar.close()


def _rejections(summary: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in summary["rejected"].items()) or "none"


def format_summary(summary: dict, output) -> str:
    unreadable = summary.get("unreadable_folders") or []
    lines = [
        f"images: {summary['images_found']} found, {summary['images_skipped']} skipped, "
        f"{summary['duplicates']} duplicates"
        + (f"; {len(unreadable)} unreadable folder(s) left out: " if unreadable else "")
        + ", ".join(f"{name} ({reason})" for name, reason in unreadable),
        f"pairs mined: {summary['pairs_mined']}",
        f"agent: {summary['agent_calls']} calls made, {summary['agent_cached']} cached, "
        f"{summary['agent_failed']} failed  {json.dumps(summary['agent_calls_by_step'])}",
        "rejected: " + _rejections(summary),
        f"triplets: {summary['triplets']} -> {output}",
    ]
    types = summary.get("transformation_types")
    if types:
        mix = ", ".join(f"{t} {n}" for t, n in types["primary"].items())
        lines.append(f"types (primary type of each text): {mix}")
    balance = summary.get("type_balance")
    if balance:
        target = balance["target"] if isinstance(balance["target"], str) else json.dumps(balance["target"])
        short = f"; short of candidates: {', '.join(balance['short'])}" if balance["short"] else ""
        lines.append(
            f"balanced by type ({target}): kept {sum(balance['kept'].values())} of "
            f"{sum(balance['candidates'].values())} candidates{short}"
        )
    if not summary["prepared_in_this_run"]:
        lines.insert(0, "(already prepared: statistics of the run that built it)")
    return "\n".join(lines)


__all__ = [
    "AgentError",
    "BuildResult",
    "BuildTripletsArguments",
    "IncompleteBuildError",
    "NoTripletsError",
    "build_triplets",
    "close_progress_bars",
    "format_summary",
]
