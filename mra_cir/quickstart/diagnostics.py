"""Where a quickstart run's queries win and lose on the single-edit diagnostic benchmark (`mra-cir
quickstart-diagnostics`).

For the stage-1 model and the MRA-trained model of a finished `mra-cir quickstart` run, every query is ranked with

- `image`, `composed`, and `target_caption` (the target's exact caption through the text path: the stand-in's
  ceiling for a perfectly composed query);
- `composed | reference of another query` and `composed | text of another query`: input ablations. Each query keeps
  its own ground truths but takes the reference image (or the modification text) of another query (a random
  derangement, fixed by `--seed`). If the trained query ignored one input, its scores would not drop.

and each top-1 is sorted by what it is in the gallery: `target`, the query's own `reference_distractor` (another
single edit of the reference) or `text_distractor` (the changed object in another scene), or `other_query` (an image
that belongs to another query). Every ranking goes through the one ranking path
(`mra_cir.retrieval.encoding.rank_gallery`) on the run's exported benchmark, and every score through
`mra_cir.evaluation`. Writes `diagnostics.json` next to `results.json` and prints a table.

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

from .benchmarks import CURVE_KS, evaluator, export_benchmarks
from .report import format_table

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


def attribute_distance(first: dict, second: dict) -> int:
    """Attributes by which two scene graphs differ: the background, and per slot the colour, shape and size (an object
    present in one scene only counts 3)."""
    from mra_cir.dataset_builders.synthetic_world import POSITIONS

    distance = int(first["background"] != second["background"])
    a = {o["position"]: o for o in first["objects"]}
    b = {o["position"]: o for o in second["objects"]}
    for slot in POSITIONS:
        if slot in a and slot in b:
            distance += sum(a[slot][k] != b[slot][k] for k in ("color", "shape", "size"))
        elif slot in a or slot in b:
            distance += 3
    return distance


class Top1Judge:
    """Reads a synthetic benchmark once and judges the top-1 of each query's ranking: its kind (`TOP1_KINDS`), its
    [`attribute_distance`] to the target, and whether it shows the query's edit."""

    def __init__(self, world):
        gallery_ids = list(world.gallery["id"])
        self.roles = dict(zip(gallery_ids, world.gallery["role"]))
        self.graphs = {g: json.loads(x) for g, x in zip(gallery_ids, world.gallery["scene_graph"])}
        queries = world.queries
        self.targets = [set(t) for t in queries["target_ids"]]
        self.target_graphs = [json.loads(t) for t in queries["target_scene_graph"]]
        self.edits = []  # (slot, attribute, new value) per query
        for edit, reference in zip(queries["edit"], queries["reference_scene_graph"]):
            edit = json.loads(edit)
            slot = json.loads(reference)["objects"][edit["object"]]["position"]
            self.edits.append((slot, edit["attribute"], edit["new"]))
        owner_of = {r: q for q, r in enumerate(queries["reference_id"])}
        if gallery_ids and gallery_ids[0] not in owner_of:
            raise ValueError("the gallery does not start with a reference: not a synthetic-world benchmark")
        self.owner, current = {}, None  # every query's gallery rows follow its reference
        for g in gallery_ids:
            current = owner_of.get(g, current)
            self.owner[g] = current

    def kind(self, query: int, top: str) -> str:
        if top in self.targets[query]:
            return "target"
        if self.owner[top] == query and self.roles[top] in TOP1_KINDS:
            return self.roles[top]
        return "other_query"

    def distance(self, query: int, top: str) -> int:
        return attribute_distance(self.graphs[top], self.target_graphs[query])

    def shows_edit(self, query: int, top: str) -> bool:
        slot, attribute, new = self.edits[query]
        objects = {o["position"]: o for o in self.graphs[top]["objects"]}
        return slot in objects and objects[slot][attribute] == new

    def summary(self, rankings: list[list[str]]) -> dict:
        """The top-1 fields of one diagnosed row (see [`diagnose_model`])."""
        tops = [ranked[0] for ranked in rankings]
        count = len(tops)
        distances = [self.distance(q, top) for q, top in enumerate(tops)]
        kinds = dict.fromkeys(TOP1_KINDS, 0)
        for q, top in enumerate(tops):
            kinds[self.kind(q, top)] += 1
        return {
            "top1_attributes_off": round(sum(distances) / count, 3),
            "top1_within_one_attribute": round(100 * sum(d <= 1 for d in distances) / count, 2),
            "top1_shows_edit": round(100 * sum(self.shows_edit(q, top) for q, top in enumerate(tops)) / count, 2),
            "top1": kinds,
        }


def diagnose_model(model, processor, world, benchmark_dir: str | Path, cache_dir: str | Path, seed: int = 0) -> dict:
    """Scores and top-1 fields of every diagnosed query type for one model (see the module docstring); the gallery
    is encoded once."""
    from mra_cir.dataset_builders.synthetic_world import pool_caption
    from mra_cir.dataset_builders.synthetic_world.export import gallery_numbers
    from mra_cir.evaluation.circo import score_circo
    from mra_cir.evaluation.metrics import recall_at_k
    from mra_cir.retrieval.encoding import rank_gallery
    from mra_cir.retrieval.gallery_index import GalleryIndex

    run = evaluator("single_edit", benchmark_dir, "composed", cache_dir)
    split = run.loader.load("val")
    index = GalleryIndex(run.encode_gallery(model, processor, split), list(split.gallery["image_id"]))
    references = list(split.queries["reference_id"])
    texts = list(split.queries["text"])
    images = split.queries["reference_image"]
    ground_truths = list(split.queries["target_ids"])
    swap = derangement(len(references), seed)
    reference_tokens = index.features[[index.index_of(r) for r in references]]
    captions = [pool_caption(json.loads(graph), 0) for graph in world.queries["target_scene_graph"]]
    variants = {  # row name -> (mode, images, texts, image features)
        "image": ("image", None, None, reference_tokens),
        "composed": ("composed", images, texts, None),
        "target_caption": ("text", None, captions, None),
        "composed | reference of another query": ("composed", [images[i] for i in swap], texts, None),
        "composed | text of another query": ("composed", images, [texts[i] for i in swap], None),
    }
    judge = Top1Judge(world)
    to_world = gallery_numbers(world.gallery)
    out = {}
    for name, (mode, queried, query_texts, features) in variants.items():
        ranked = rank_gallery(
            model, processor, index, queried, query_texts, mode, k=max(CURVE_KS), exclude=references,
            batch_size=run.batch_size, image_features=features,
        ).ids  # fmt: skip
        recall = recall_at_k(ranked, ground_truths, ks=(1, 10))
        mean_ap = score_circo(ranked, ground_truths, references, exclude_reference=True)["mAP@10"]
        scores = {"R@1": 100 * recall[1], "R@10": 100 * recall[10], "mAP@10": mean_ap}
        in_world = [[to_world[g] for g in ranking] for ranking in ranked]
        out[name] = {**{k: round(v, 2) for k, v in scores.items()}, **judge.summary(in_world)}
    return out


def diagnose_run(output_dir: str | Path, seed: int = 0, num_threads: int | None = None) -> dict:
    """Diagnose the models of the quickstart run in `output_dir` (on `num_threads` CPU threads when given); write and
    return `diagnostics.json`'s content."""
    from mra_cir.dataset_builders.synthetic_world import build_world
    from mra_cir.modeling_mra_cir import MraCirModel, MraCirProcessor

    if num_threads:
        torch.set_num_threads(num_threads)
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
        benchmarks=("single_edit",),
    )
    benchmark_dir = export_benchmarks(world, out / "benchmarks")["single_edit"]
    report = {"run": str(out), "seed": seed, "queries": len(world.queries), "models": {}}
    for name in RUN_MODELS:
        folder = out / name
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder} has no saved model (config.json): not a finished quickstart run")
        model = MraCirModel.from_pretrained(folder).eval()
        processor = MraCirProcessor.from_pretrained(folder)
        report["models"][name] = diagnose_model(
            model, processor, world, benchmark_dir, out / "cache" / "gallery_features", seed
        )
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
            "off<=1%: top-1 at most one attribute off; edit%: top-1 has the edited attribute's new value; then what "
            "the top-1 is (queries): a target, the query's own reference / text distractor, another query's image"
        )
        tables.append(format_table(flat, title, keys=tuple(columns)))
    return "\n\n".join(tables)


__all__ = [
    "DiagnosticsArguments",
    "TOP1_KINDS",
    "Top1Judge",
    "attribute_distance",
    "derangement",
    "diagnose_model",
    "diagnose_run",
    "format_report",
]
