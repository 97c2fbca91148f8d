"""Where a quickstart run's queries win and lose on the synthetic benchmark (`mra-cir quickstart-diagnostics`).

For the stage-1 model and the MRA-trained model of a finished `mra-cir quickstart` run, every query is ranked with

- `image`, `composed`, and `target_caption` (the target's exact caption through the text path: the stand-in's
  ceiling for a perfectly composed query), as in [`benchmark_rankings`];
- `composed | reference of another query` and `composed | text of another query`: input ablations. Each query keeps
  its own ground truths but takes the reference image (or the modification text) of another query (a random
  derangement, fixed by `--seed`). If the trained query ignored one input, its scores would not drop.

and each top-1 is sorted by what it is in the gallery: `target`, the query's own `reference_distractor` (another
single edit of the reference) or `text_distractor` (the changed object in another scene), or `other_query` (an image
that belongs to another query). Writes `diagnostics.json` next to `results.json` and prints a table.

Example:

```bash
mra-cir quickstart --fast --output_dir quickstart_output
mra-cir quickstart-diagnostics --output_dir quickstart_output
```
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mra_cir.quickstart_pipeline import benchmark_rankings, format_table, score_rankings

#: what a top-1 can be (gallery roles of the synthetic benchmark, seen from one query)
TOP1_KINDS = ("target", "reference_distractor", "text_distractor", "other_query")
#: their column names in the printed table
TOP1_LABELS = {
    "target": "target",
    "reference_distractor": "ref.dis",
    "text_distractor": "text.dis",
    "other_query": "other",
}
#: the model folders of a quickstart run that are diagnosed, in this order
RUN_MODELS = ("stage1_model", "mra_model")


@dataclass
class DiagnosticsArguments:
    """Arguments of `mra-cir quickstart-diagnostics`."""

    output_dir: str = field(
        default="quickstart_output",
        metadata={"help": "The folder of a finished quickstart run (results.json, stage1_model, mra_model)."},
    )
    seed: int = field(default=0, metadata={"help": "Seed of the derangement used by the input ablations."})
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads."})


def derangement(count: int, seed: int) -> list[int]:
    """A random permutation of `range(count)` without fixed points (query i never keeps its own input)."""
    if count < 2:
        raise ValueError(f"an input ablation needs at least 2 queries, got {count}")
    order = torch.randperm(count, generator=torch.Generator().manual_seed(seed)).tolist()
    result = [0] * count
    for i, query in enumerate(order):  # a cycle through a random order: each query takes the next one's input
        result[query] = order[(i + 1) % count]
    return result


def top1_kinds(world, rankings: list[list[str]]) -> dict[str, int]:
    """How many top-1s are each of `TOP1_KINDS` (see the module docstring)."""
    gallery_ids = list(world.gallery["id"])
    roles = list(world.gallery["role"])
    position = {g: i for i, g in enumerate(gallery_ids)}
    references = list(world.queries["reference_id"])
    starts = sorted(position[r] for r in references)
    owner_of_start = {position[r]: q for q, r in enumerate(references)}
    owner, current = [], None  # every query's gallery rows follow its reference
    for row in range(len(gallery_ids)):
        if row in owner_of_start:
            current = owner_of_start[row]
        owner.append(current)
    if starts and starts[0] != 0:
        raise ValueError("the gallery does not start with a reference: not a synthetic-world benchmark")
    counts = dict.fromkeys(TOP1_KINDS, 0)
    for query, (ranked, targets) in enumerate(zip(rankings, world.queries["target_ids"])):
        row = position[ranked[0]]
        if ranked[0] in targets:
            counts["target"] += 1
        elif owner[row] == query and roles[row] in TOP1_KINDS:
            counts[roles[row]] += 1
        else:
            counts["other_query"] += 1
    return counts


def attribute_distance(first: dict, second: dict) -> int:
    """Attributes by which two scene graphs differ: the background, and per slot the colour, shape and size (an object
    present in one scene only counts 3)."""
    from dataset_builders.synthetic_world import POSITIONS

    distance = int(first["background"] != second["background"])
    a = {o["position"]: o for o in first["objects"]}
    b = {o["position"]: o for o in second["objects"]}
    for slot in POSITIONS:
        if slot in a and slot in b:
            distance += sum(a[slot][k] != b[slot][k] for k in ("color", "shape", "size"))
        elif slot in a or slot in b:
            distance += 3
    return distance


def top1_distances(world, rankings: list[list[str]]) -> list[int]:
    """Per query, [`attribute_distance`] between its top-1 and its target (0: the top-1 is a target)."""
    graphs = dict(zip(world.gallery["id"], world.gallery["scene_graph"]))
    targets = world.queries["target_scene_graph"]
    return [attribute_distance(json.loads(graphs[ranked[0]]), json.loads(t)) for ranked, t in zip(rankings, targets)]


def top1_shows_edit(world, rankings: list[list[str]]) -> list[bool]:
    """Per query, whether its top-1 has the edit: the edited slot holds an object with the edit's new value."""
    graphs = dict(zip(world.gallery["id"], world.gallery["scene_graph"]))
    shown = []
    for ranked, edit, reference in zip(rankings, world.queries["edit"], world.queries["reference_scene_graph"]):
        edit = json.loads(edit)
        slot = json.loads(reference)["objects"][edit["object"]]["position"]
        top = {o["position"]: o for o in json.loads(graphs[ranked[0]])["objects"]}
        shown.append(slot in top and top[slot][edit["attribute"]] == edit["new"])
    return shown


def diagnose_model(model, processor, world, seed: int = 0) -> dict[str, dict]:
    """Scores and top-1 kinds of every diagnosed query type for one model (see the module docstring)."""
    ground_truths = [list(t) for t in world.queries["target_ids"]]
    swap = derangement(len(ground_truths), seed)
    runs = {**benchmark_rankings(model, processor, world, ("image", "composed", "target_caption"))}
    runs["composed | reference of another query"] = benchmark_rankings(
        model, processor, world, ("composed",), reference_order=swap
    )["composed"]
    runs["composed | text of another query"] = benchmark_rankings(
        model, processor, world, ("composed",), text_order=swap
    )["composed"]
    out = {}
    for name, rankings in runs.items():
        scores = score_rankings(rankings, ground_truths)
        distances = top1_distances(world, rankings)
        out[name] = {
            **{k: round(scores[k], 2) for k in ("R@1", "R@10", "mAP@10")},
            "top1_attributes_off": round(sum(distances) / len(distances), 3),
            "top1_within_one_attribute": round(100 * sum(d <= 1 for d in distances) / len(distances), 2),
            "top1_shows_edit": round(100 * sum(top1_shows_edit(world, rankings)) / len(rankings), 2),
            "top1": top1_kinds(world, rankings),
        }
    return out


def diagnose_run(output_dir: str | Path, seed: int = 0) -> dict:
    """Diagnose the models of the quickstart run in `output_dir`; write and return `diagnostics.json`'s content."""
    from dataset_builders.synthetic_world import build_world
    from modeling_mra_cir import MraCirModel, MraCirProcessor

    out = Path(output_dir)
    results_path = out / "results.json"
    if not results_path.is_file():
        raise FileNotFoundError(f"{results_path} not found: run `mra-cir quickstart --output_dir {out}` first")
    settings = json.loads(results_path.read_text())["settings"]
    world = build_world(
        settings["seed"],
        settings["pool_size"],
        settings["num_queries"],
        settings["image_size"],
        cache_dir=out / "cache" / "world",
    )
    report = {"run": str(out), "seed": seed, "queries": len(world.queries), "models": {}}
    for name in RUN_MODELS:
        folder = out / name
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} has no saved model (config.json): not a finished quickstart run")
        model = MraCirModel.from_pretrained(folder).eval()
        processor = MraCirProcessor.from_pretrained(folder)
        report["models"][name] = diagnose_model(model, processor, world, seed)
    (out / "diagnostics.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict) -> str:
    """The report as one table per model: scores, how far the top-1 is from the target, and what the top-1 is."""
    columns = {  # table column -> report field
        "R@1": "R@1",
        "R@10": "R@10",
        "mAP@10": "mAP@10",
        "off": "top1_attributes_off",
        "off<=1%": "top1_within_one_attribute",
        "edit%": "top1_shows_edit",
        **{label: kind for kind, label in TOP1_LABELS.items()},
    }
    tables = []
    for name, rows in report["models"].items():
        flat = {
            query: {col: row.get(field, row["top1"].get(field)) for col, field in columns.items()}
            for query, row in rows.items()
        }
        title = (
            f"{name}, {report['queries']} queries. off: attributes by which the top-1 differs from the target (mean); "
            "off<=1%: top-1 at most one attribute off; edit%: top-1 has the edited attribute's new value; then what the top-1 is (queries): a target, the query's own "
            "reference / text distractor, another query's image"
        )
        tables.append(format_table(flat, title, keys=tuple(columns)))
    return "\n\n".join(tables)


__all__ = [
    "DiagnosticsArguments",
    "TOP1_KINDS",
    "derangement",
    "diagnose_model",
    "diagnose_run",
    "format_report",
    "top1_kinds",
]
