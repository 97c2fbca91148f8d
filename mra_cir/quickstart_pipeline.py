"""The offline quickstart: the whole MRA-CIR pipeline on the synthetic world, on a CPU, in minutes.

build the world -> stage 1 (BLIP-2's image-text contrastive objective, with its matching and captioning objectives as
options: the stand-in for pretrained BLIP-2) -> zero-shot baselines on the benchmark -> embed + mine the pool with the
rank window -> scene agent (captions, modification texts) -> triplets through the real builder (`MraTriplets`) ->
`MraCirTrainer` -> evaluate; plus the window ablation (same number of triplets and steps per window). Writes
`results.json`, `results.png` and prints a table.

Rank windows are given in the paper's ranks (51-60 of ~1.2M ImageNet images) and scaled linearly with the pool size
relative to `--window_reference_pool_size` (default 2000, the default pool, where the paper's numbers are used as they
are): a literal fraction of 1.2M would put every window at rank 1 of a few thousand images, erasing the difference
between "near-duplicate" and "related but different" that the window is about. The default pool covers about half of
the ~2,450 possible scene graphs. Measured on one seed (stage-1 embeddings, max-sim over token pairs), the agent's
texts for rank-1 pairs were 11% "no change", 34% one change and 55% two changes; for ranks 51-60, 1% / 19% / 80%; for
random pairs mostly two or three changes. The ablation reports what each window does to the trained model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

METHODS = ("image_only", "text_only", "composed_untrained", "mra_trained")
METRIC_KEYS = ("R@1", "R@5", "R@10", "mAP@10")
CURVE_KS = (1, 2, 3, 5, 10, 20, 30, 50)
#: the ablation's windows in the paper's ranks ("random" = uniform over the whole pool)
ABLATION_WINDOWS = ("1,1", "11,20", "51,60", "91,100", "random")


@dataclass
class QuickstartArguments:
    """Options of `mra-cir quickstart` / `examples/quickstart.py` (sizes left unset take the default or `--fast` one)."""

    seed: int = field(default=0, metadata={"help": "Seed of the world, the models, the mining and the agent."})
    output_dir: str = field(default="quickstart_output", metadata={"help": "Where results, plots and caches go."})
    fast: bool = field(default=False, metadata={"help": "Smaller world and fewer steps (~2 min; CI), no ablation."})
    pool_size: int | None = field(default=None, metadata={"help": "Pool images (default 2000; fast 600)."})
    num_queries: int | None = field(default=None, metadata={"help": "Benchmark queries (default 200; fast 100)."})
    image_size: int = field(default=32, metadata={"help": "Image side in pixels (the model's image size)."})
    stage1_steps: int | None = field(default=None, metadata={"help": "Stage-1 steps (default 6000; fast 1200)."})
    train_steps: int | None = field(default=None, metadata={"help": "MRA training steps (default 500; fast 200)."})
    hidden_size: int = field(default=64, metadata={"help": "Width of the ViT and the Q-Former."})
    num_layers: int = field(default=2, metadata={"help": "Layers of the ViT (and of the Q-Former, see below)."})
    qformer_layers: int | None = field(
        default=None,
        metadata={
            "help": "Q-Former layers (default: --num_layers). The composed query's text position sees the image only "
            "through the query tokens, one self-attention hop per layer after the first."
        },
    )
    patch_size: int = field(default=8, metadata={"help": "ViT patch side in pixels."})
    num_query_tokens: int = field(default=8, metadata={"help": "Q-Former query tokens (Q)."})
    batch_size: int = field(default=64, metadata={"help": "Batch size of MRA training (stage 2)."})
    stage1_batch_size: int | None = field(
        default=None, metadata={"help": "Stage-1 batch size (in-batch negatives; default: --batch_size)."}
    )
    stage1_learning_rate: float = field(default=3e-4, metadata={"help": "Stage-1 learning rate."})
    stage1_itm_weight: float = field(
        default=0.0,
        metadata={
            "help": "Stage-1 image-text matching (ITM, BLIP-2's hard negatives) loss weight; 0 (the default) = "
            "contrastive (ITC) only: at this scale ITM stays at its constant-prior loss and costs half the time."
        },
    )
    stage1_itg_weight: float = field(
        default=0.0,
        metadata={
            "help": "Stage-1 image-grounded text generation (ITG, BLIP-2's captioning loss through the fused path) "
            "weight; 0 = off."
        },
    )
    stage1_itm_negatives: str = field(
        default="hard", metadata={"help": "Stage-1 ITM negatives: hard (BLIP-2), random or mixed."}
    )
    stage1_corpus_size: int = field(
        default=0,
        metadata={"help": "Stage-1 captioned corpus size, drawn apart from the pool (0: the pool's own captions)."},
    )
    stage1_edit_pairs: bool = field(
        default=False,
        metadata={
            "help": "Stage-1 corpus as scene / one-edit-variant pairs kept in one batch (in-batch hard negatives)."
        },
    )
    learning_rate: float = field(default=1e-3, metadata={"help": "MRA training (stage 2) learning rate."})
    targets_per_reference: int = field(default=3, metadata={"help": "Targets mined per pool image (in the window)."})
    mining_reduce: str = field(
        default="max", metadata={"help": "Token similarity for mining: max (the paper) or mean_max (ColBERT-style)."}
    )
    num_triplets: int | None = field(
        default=None,
        metadata={"help": "Triplets trained on, for every window (default 90 percent of the pool size)."},
    )
    temperature_min: float = field(
        default=0.01, metadata={"help": "Lower clamp of the learnable logit temperature (both stages)."}
    )
    agent_error_rate: float = field(default=0.1, metadata={"help": "Scene agent: fraction of answers with an error."})
    window: str = field(default="51,60", metadata={"help": "Mining window q1,q2 in the paper's ranks (scaled)."})
    window_reference_pool_size: int = field(
        default=2000, metadata={"help": "Pool size at which paper ranks are used unscaled (linear scaling)."}
    )
    ablation: bool | None = field(
        default=None, metadata={"help": "Run the window ablation (default: on; off in fast)."}
    )
    num_threads: int = field(default=1, metadata={"help": "torch CPU threads (1 is fastest for these tiny models)."})
    window_workers: int = field(
        default=2,
        metadata={
            "help": "Processes that train and evaluate the mining windows side by side (each with --num_threads "
            "threads); the results do not depend on it. 1 = one after another in this process."
        },
    )
    device: str = field(
        default="cpu",
        metadata={
            "help": "Where stages 1 and 2 and the evaluation run: cpu (the documented default), cuda or auto "
            "(cuda when available). Mining and the agent stay on the CPU. On the CPU the same seed gives the same "
            "table; GPU kernels give other figures and are not guaranteed to repeat bit for bit."
        },
    )
    show_progress: bool = field(default=True, metadata={"help": "Progress bars."})

    def __post_init__(self):
        fast = self.fast
        self.pool_size = self.pool_size or (600 if fast else 2000)
        self.num_queries = self.num_queries or (100 if fast else 200)
        self.stage1_steps = self.stage1_steps or (1200 if fast else 6000)
        self.train_steps = self.train_steps or (200 if fast else 500)
        self.num_triplets = self.num_triplets or int(0.9 * self.pool_size)
        self.ablation = (not fast) if self.ablation is None else self.ablation
        parse_window(self.window)
        if self.pool_size < 20:
            raise ValueError(f"--pool_size must be at least 20, got {self.pool_size}")
        if self.mining_reduce not in ("max", "mean_max"):
            raise ValueError(f"--mining_reduce must be 'max' or 'mean_max', got {self.mining_reduce!r}")
        if self.num_threads < 1:
            raise ValueError(f"--num_threads must be >= 1, got {self.num_threads}")
        if self.window_workers < 1:
            raise ValueError(f"--window_workers must be >= 1, got {self.window_workers}")
        if self.stage1_corpus_size != 0 and self.stage1_corpus_size < 2:
            raise ValueError(f"--stage1_corpus_size must be 0 (the pool) or >= 2, got {self.stage1_corpus_size}")
        if self.stage1_edit_pairs and not self.stage1_corpus_size:
            raise ValueError("--stage1_edit_pairs needs --stage1_corpus_size (edit pairs are drawn for that corpus)")
        from trainers.alignment import ITM_NEGATIVES

        if self.stage1_itm_negatives not in ITM_NEGATIVES:
            raise ValueError(
                f"--stage1_itm_negatives must be hard, random or mixed, got {self.stage1_itm_negatives!r}"
            )
        if self.stage1_batch_size is not None and self.stage1_batch_size < 2:
            raise ValueError(f"--stage1_batch_size must be >= 2 (in-batch negatives), got {self.stage1_batch_size}")
        if self.stage1_itg_weight < 0:
            raise ValueError(f"--stage1_itg_weight must be >= 0, got {self.stage1_itg_weight}")
        if self.qformer_layers is not None and self.qformer_layers < 1:
            raise ValueError(f"--qformer_layers must be >= 1, got {self.qformer_layers}")
        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device not in ("cpu", "cuda"):
            raise ValueError(f"--device must be cpu, cuda or auto, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("--device cuda: torch sees no CUDA device here (use cpu or auto)")


def parse_window(text: str) -> tuple[int, int] | None:
    """`"51,60"` -> `(51, 60)`; `"random"` -> None."""
    if text.strip().lower() == "random":
        return None
    try:
        q1, q2 = (int(x) for x in text.split(","))
    except ValueError:
        raise ValueError(f"a window must be 'q1,q2' (e.g. 51,60) or 'random', got {text!r}") from None
    if not 1 <= q1 <= q2:
        raise ValueError(f"a window needs 1 <= q1 <= q2, got {text!r}")
    return q1, q2


def scale_window(window: str, pool_size: int, reference_pool_size: int) -> tuple[int, int]:
    """The window in ranks of this pool: paper ranks times `pool_size / reference_pool_size`, at least rank 1, at most
    the pool's last rank (`pool_size - 1`); "random" is the whole pool `[1, pool_size - 1]`."""
    parsed = parse_window(window)
    last = pool_size - 1
    if parsed is None:
        return 1, last
    scale = pool_size / reference_pool_size
    q1 = min(last, max(1, math.ceil(parsed[0] * scale)))
    q2 = min(last, max(q1, math.ceil(parsed[1] * scale)))
    return q1, q2


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation on the synthetic benchmark (one ranking path: GalleryIndex)
# ----------------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def _image_tokens(model, processor, images, batch_size: int = 256) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch_size):
        pixels = processor(images=list(images[i : i + batch_size]))["pixel_values"]
        out.append(model.get_image_features(pixel_values=pixels.to(model.device)))
    return torch.cat(out)


#: what `benchmark_rankings` can rank the gallery with; `target_caption` is a ceiling of the stand-in, not a baseline
BENCHMARK_METHODS = ("image", "text", "composed", "target_caption")


@torch.no_grad()
def benchmark_gallery_index(model, processor, world):
    """The benchmark gallery encoded by `model` as a [`GalleryIndex`]."""
    from modeling_mra_cir.gallery_index import GalleryIndex

    model.eval()
    return GalleryIndex(_image_tokens(model, processor, world.gallery["image"]), list(world.gallery["id"]))


@torch.no_grad()
def benchmark_rankings(
    model,
    processor,
    world,
    methods: tuple[str, ...] = ("composed",),
    reference_order: Sequence[int] | None = None,
    text_order: Sequence[int] | None = None,
    k: int = max(CURVE_KS),
    index=None,
) -> dict[str, list[list[str]]]:
    """The top `k` gallery ids of every benchmark query, per method (the query's reference excluded, CIRR-style).

    Methods: `image` (reference image tokens, max over token pairs), `text` (`get_text_features` of the modification
    text), `composed` (`get_composed_features`), `target_caption` (the target's exact caption in the pool's first
    template through the text path: what the stand-in could reach if the query were perfectly composed).

    Args:
        reference_order, text_order (`Sequence[int]`, *optional*): query i takes the reference image (text) of query
            `order[i]`; its ground truths and excluded reference stay its own (the input ablations of
            `mra_cir.quickstart_diagnostics`). Default: every query its own.
        index ([`GalleryIndex`], *optional*): the gallery already encoded by this model ([`benchmark_gallery_index`]),
            to rank several variants without encoding the gallery again.
    """
    from dataset_builders.synthetic_world import pool_caption

    unknown = [m for m in methods if m not in BENCHMARK_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown} (one of {', '.join(BENCHMARK_METHODS)})")
    model.eval()
    gallery_ids = list(world.gallery["id"])
    index = index if index is not None else benchmark_gallery_index(model, processor, world)
    queries = world.queries
    references = list(queries["reference_id"])
    count = len(references)
    reference_order = list(range(count)) if reference_order is None else list(reference_order)
    text_order = list(range(count)) if text_order is None else list(text_order)
    for name, order in (("reference_order", reference_order), ("text_order", text_order)):
        if len(order) != count or not all(0 <= i < count for i in order):
            raise ValueError(f"{name} must give one query index in [0, {count}) per query, got {len(order)} entries")
    position = {g: i for i, g in enumerate(gallery_ids)}
    source_rows = [position[references[i]] for i in reference_order]
    modifications = queries["modification_text"]
    texts = processor(text=[modifications[i] for i in text_order]).to(model.device)
    rankings = {}
    for method in methods:
        if method == "image":
            query = index.features[source_rows]
        elif method == "text":
            query = model.get_text_features(texts["input_ids"], texts["attention_mask"])
        elif method == "target_caption":
            captions = [pool_caption(json.loads(graph), 0) for graph in queries["target_scene_graph"]]
            encoded = processor(text=captions).to(model.device)
            query = model.get_text_features(encoded["input_ids"], encoded["attention_mask"])
        else:
            pixels = processor(images=[world.gallery[row]["image"] for row in source_rows])["pixel_values"]
            pixels = pixels.to(model.device)
            query = torch.cat(
                [
                    model.get_composed_features(
                        pixels[i : i + 256], texts["input_ids"][i : i + 256], texts["attention_mask"][i : i + 256]
                    )
                    for i in range(0, count, 256)
                ]
            )
        _, rankings[method] = index.search(query, k=k, exclude=references)
    return rankings


def score_rankings(rankings: list[list[str]], ground_truths: list[list[str]]) -> dict:
    """`{"R@1", "R@5", "R@10", "mAP@10", "curve": {K: R@K}}` in percent (every ground truth counts: CIRCO-style mAP)."""
    from trainers.cir_metrics import map_at_k, recall_at_k

    curve = recall_at_k(rankings, ground_truths, ks=CURVE_KS)
    return {
        "R@1": 100 * curve[1],
        "R@5": 100 * curve[5],
        "R@10": 100 * curve[10],
        "mAP@10": 100 * map_at_k(rankings, ground_truths, ks=(10,))[10],
        "curve": {str(k): 100 * v for k, v in curve.items()},
    }


def evaluate_benchmark(model, processor, world, methods: tuple[str, ...] = ("composed",)) -> dict[str, dict]:
    """Rank the gallery for every query ([`benchmark_rankings`]) and score it ([`score_rankings`]).

    Returns:
        `dict`: method -> `{"R@1", "R@5", "R@10", "mAP@10", "curve": {K: R@K}}`, in percent.
    """
    ground_truths = [list(t) for t in world.queries["target_ids"]]
    rankings = benchmark_rankings(model, processor, world, methods)
    return {method: score_rankings(ranked, ground_truths) for method, ranked in rankings.items()}


# ----------------------------------------------------------------------------------------------------------------------
# Stages
# ----------------------------------------------------------------------------------------------------------------------
def _export_pool(world, folder: Path) -> Path:
    """Write the pool's stored PNG bytes as `<id>.png` (the triplet builder reads a folder; hashes are unchanged)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    raw = world.pool.cast_column("image", datasets.Image(decode=False))
    for row in raw:
        path = folder / f"{row['id']}.png"
        if not path.exists():
            path.write_bytes(row["image"]["bytes"])
    return folder


def build_triplets(args: QuickstartArguments, q1: int, q2: int, images: Path, model_dir: Path, agent, cache: Path):
    """Run `MraTriplets` (embed with the stage-1 model, mine [q1, q2], scene agent) -> `(dataset, summary)`."""
    from dataset_builders.mra_triplets import MraTriplets

    builder = MraTriplets(
        images=str(images),
        embedding_model=str(model_dir),
        q1=q1,
        q2=q2,
        targets_per_reference=min(args.targets_per_reference, q2 - q1 + 1),
        reduce=args.mining_reduce,
        seed=args.seed,
        agent="scene",
        agent_backend=agent,
        cache_dir=str(cache),
        embedding_batch_size=256,
        show_progress=args.show_progress,
    )
    builder.download_and_prepare()
    return builder.as_dataset(split="train"), builder.build_summary()


def train_mra(args: QuickstartArguments, model, processor, triplets, output_dir: Path) -> tuple[object, dict]:
    """Stage 2: `MraCirTrainer` on the triplets, training `model` (a stage-1 model) in place ->
    `(model, train metrics)`."""
    from trainers.mra_cir_config import MraCirTrainingArguments
    from trainers.mra_cir_trainer import MraCirTrainer

    training_args = MraCirTrainingArguments(
        output_dir=str(output_dir),
        max_steps=args.train_steps,
        per_device_train_batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=max(1, args.train_steps // 20),
        lr_scheduler_type="cosine",
        weight_decay=0.01,
        seed=args.seed,
        data_seed=args.seed,
        logging_steps=max(1, args.train_steps // 5),
        save_strategy="no",
        report_to=[],
        use_cpu=args.device == "cpu",
        dataloader_num_workers=0,
        cache_vit_outputs=True,
        disable_tqdm=not args.show_progress,
    )
    trainer = MraCirTrainer(model, training_args, train_dataset=triplets, processing_class=processor)
    output = trainer.train()
    model = trainer.model
    model.eval()
    return model, {"train_loss": output.training_loss, "steps": output.global_step}


def train_and_evaluate_window(job: dict) -> dict:
    """Stage 2 and its evaluation for one mining window, from the saved stage-1 model (a worker's unit of work).

    `job`: `args` ([`QuickstartArguments`]), `window`, `triplets` (the window's budgeted `datasets.Dataset`),
    `stage1_dir`, `save_dir` (where the trained model goes, or None). Every window starts from the same checkpoint
    with the same seed, so the result does not depend on which process runs it, or in which order.

    Returns:
        `dict`: `window`, `metrics` (see [`evaluate_benchmark`]), `train` (loss and steps), `seconds`.
    """
    from dataset_builders.synthetic_world import build_world
    from modeling_mra_cir import MraCirModel, MraCirProcessor

    started = time.perf_counter()
    args: QuickstartArguments = job["args"]
    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    world = build_world(
        args.seed, args.pool_size, args.num_queries, args.image_size, cache_dir=out / "cache" / "world"
    )
    model = MraCirModel.from_pretrained(job["stage1_dir"]).to(args.device)
    processor = MraCirProcessor.from_pretrained(job["stage1_dir"])
    trained, train_metrics = train_mra(args, model, processor, job["triplets"], out / "train" / job["window"])
    metrics = evaluate_benchmark(trained, processor, world, methods=("composed",))["composed"]
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


# ----------------------------------------------------------------------------------------------------------------------
# Reporting
# ----------------------------------------------------------------------------------------------------------------------
def format_table(rows: dict[str, dict], title: str, keys: Sequence[str] = METRIC_KEYS) -> str:
    """`rows` (name -> {key: number}) as a fixed-width table under `title`; floats with one decimal, ints as they are."""
    width = max(len(name) for name in rows) + 2
    columns = [max(9, len(k) + 2) for k in keys]
    lines = [title, "method".ljust(width) + "".join(k.rjust(c) for k, c in zip(keys, columns))]
    for name, values in rows.items():
        cells = (
            f"{values[k]:{c}d}" if isinstance(values[k], int) else f"{values[k]:{c}.1f}" for k, c in zip(keys, columns)
        )
        lines.append(name.ljust(width) + "".join(cells))
    return "\n".join(lines)


def plot_results(results: dict, path: Path) -> None:
    """Recall@K curves per method (left) and the window ablation (right) -> PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ablation = results.get("window_ablation") or {}
    fig, axes = plt.subplots(1, 2 if ablation else 1, figsize=(11 if ablation else 6, 4), squeeze=False)
    ax = axes[0][0]
    for name in METHODS:
        curve = results["curves"][name]
        ax.plot([int(k) for k in curve], list(curve.values()), marker="o", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("K")
    ax.set_ylabel("Recall@K (%)")
    ax.set_title(f"synthetic CIR benchmark (seed {results['seed']})")
    ax.grid(alpha=0.3)
    ax.legend()
    if ablation:
        ax = axes[0][1]
        names = list(ablation)
        x = range(len(names))
        for offset, key in zip((-0.2, 0.0, 0.2), ("R@1", "R@10", "mAP@10")):
            ax.bar([i + offset for i in x], [ablation[n][key] for n in names], width=0.2, label=key)
        ax.set_xticks(list(x), [f"{n}\n{ablation[n]['window_in_pool']}" for n in names], fontsize=8)
        ax.set_ylabel("%")
        ax.set_title("mining window ablation (same triplets and steps)")
        ax.grid(alpha=0.3, axis="y")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _metrics(result: dict) -> dict:
    return {k: round(result[k], 2) for k in METRIC_KEYS}


# ----------------------------------------------------------------------------------------------------------------------
# The pipeline
# ----------------------------------------------------------------------------------------------------------------------
def run_quickstart(args: QuickstartArguments) -> dict:
    """Run the whole pipeline; write `results.json` and `results.png` under `args.output_dir`; return the results."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import set_seed

    from dataset_builders.scene_agent import SceneGraphAgent, agent_texts
    from dataset_builders.synthetic_world import build_world, world_texts
    from modeling_mra_cir import MraCirModel
    from modeling_mra_cir.tiny import offline_processor, tiny_config
    from trainers.alignment import AlignmentArguments, align_image_text

    torch.set_num_threads(args.num_threads)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[name] = round(now - clock, 2)
        clock = now
        print(f"[quickstart] {name}: {timings[name]:.1f} s", flush=True)

    # 1. the world
    world = build_world(
        args.seed, args.pool_size, args.num_queries, args.image_size, cache_dir=out / "cache" / "world"
    )
    lap("world")

    # 2. stage 1: tokenizer on every word of the world, tiny BLIP-2-shaped model, image-text alignment
    set_seed(args.seed)
    processor = offline_processor(args.image_size, texts=world_texts() + agent_texts(), vocab_size=512)
    config = tiny_config(
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=4,
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_query_tokens=args.num_query_tokens,
        embed_dim=64,
        vocab_size=len(processor.tokenizer),
        logit_temperature_min=args.temperature_min,
    )
    config.qformer_config.num_hidden_layers = args.qformer_layers or args.num_layers
    model = MraCirModel(config).to(args.device)
    if args.stage1_corpus_size:
        from dataset_builders.synthetic_world import generate_alignment_corpus

        corpus = generate_alignment_corpus(
            args.seed, args.stage1_corpus_size, args.image_size, edit_pairs=args.stage1_edit_pairs
        )
    else:
        corpus = (world.pool["image"], world.pool["caption"], world.pool["scene_graph"])
    stage1 = align_image_text(
        model,
        processor,
        corpus[0],
        corpus[1],
        AlignmentArguments(
            max_steps=args.stage1_steps,
            batch_size=args.stage1_batch_size or args.batch_size,
            learning_rate=args.stage1_learning_rate,
            seed=args.seed,
            itm_weight=args.stage1_itm_weight,
            itm_negatives=args.stage1_itm_negatives,
            itg_weight=args.stage1_itg_weight,
            batch_blocks=2 if args.stage1_edit_pairs and args.stage1_corpus_size else 1,
        ),
        show_progress=args.show_progress,
        groups=corpus[2],  # images with the same content are never each other's ITM negatives
    )
    stage1_dir = out / "stage1_model"
    model.save_pretrained(stage1_dir)
    processor.save_pretrained(stage1_dir)
    lap("stage1_alignment")

    # 3. zero-shot baselines
    base = evaluate_benchmark(model, processor, world, methods=("image", "text", "composed"))
    evaluations = {"image_only": base["image"], "text_only": base["text"], "composed_untrained": base["composed"]}
    lap("baselines")

    # 4-6. embed + mine (builder), scene agent, triplets, for the main window and the ablation windows
    images = _export_pool(world, out / "cache" / "pool_images")
    agent = SceneGraphAgent.from_dataset(world.pool, error_rate=args.agent_error_rate, seed=args.seed)
    windows = [args.window] + ([w for w in ABLATION_WINDOWS if w != args.window] if args.ablation else [])
    built = {}
    for window in windows:
        q1, q2 = scale_window(window, args.pool_size, args.window_reference_pool_size)
        triplets, summary = build_triplets(args, q1, q2, images, stage1_dir, agent, out / "cache" / "triplets")
        built[window] = {"triplets": triplets, "summary": summary, "window_in_pool": f"[{q1},{q2}]"}
    # the same budget for every window (and with or without the ablation): args.num_triplets triplets, same steps
    budget = args.num_triplets
    short = {w: len(b["triplets"]) for w, b in built.items() if len(b["triplets"]) < budget}
    if short:
        raise RuntimeError(f"windows {short} produced fewer than --num_triplets={budget} triplets; lower it")
    for b in built.values():  # same budget for every window: the same number of triplets (and of steps)
        b["triplets"] = b["triplets"].shuffle(seed=args.seed).select(range(budget))
    lap("mine_agent_triplets")

    # 7. train and evaluate (every window from the saved stage-1 model, side by side when --window_workers > 1)
    jobs = [
        {
            "args": args,
            "window": window,
            "triplets": built[window]["triplets"],
            "stage1_dir": str(stage1_dir),
            "save_dir": str(out / "mra_model") if window == args.window else None,
        }
        for window in windows
    ]
    ablation = {}
    for result in run_windows(args, jobs):
        window, metrics = result["window"], result["metrics"]
        built[window].update(metrics=metrics, train=result["train"])
        if window == args.window:
            evaluations["mra_trained"] = metrics
        ablation[window] = {
            **_metrics(metrics),
            "window_in_pool": built[window]["window_in_pool"],
            "triplets": budget,
            "train_loss": round(result["train"]["train_loss"], 4),
        }
        timings[f"train_eval_{window}"] = result["seconds"]
    lap("train_eval_all_windows")
    timings["total"] = round(time.perf_counter() - started, 2)

    main = built[args.window]
    results = {
        "methods": {name: _metrics(evaluations[name]) for name in METHODS},
        "curves": {name: evaluations[name]["curve"] for name in METHODS},
        "seed": args.seed,
        "settings": {
            **asdict(args),
            "window_in_pool": main["window_in_pool"],
            "model": {
                "hidden_size": args.hidden_size,
                "vit_layers": args.num_layers,
                "qformer_layers": args.qformer_layers or args.num_layers,
                "query_tokens": args.num_query_tokens,
                "embed_dim": 64,
                "patch_size": args.patch_size,
                "parameters": sum(p.numel() for p in model.parameters()),
            },
            "world": world.settings,
            "gallery_size": len(world.gallery),
        },
        "stage1": {
            **{k: v for k, v in stage1.items() if k != "arguments"},
            "batch_size": stage1["arguments"]["batch_size"],
        },
        "triplets": {"budget_per_window": budget, "builder_summary": _jsonable(main["summary"])},
        "window_ablation": ablation if args.ablation else {},
        "window_ablation_note": None if args.ablation else "skipped (--fast or --ablation false)",
        "timings_s": timings,
        "environment": {
            "torch": torch.__version__,
            "python": platform.python_version(),
            "threads": args.num_threads,
            "window_workers": args.window_workers,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        },
    }
    (out / "results.json").write_text(json.dumps(results, indent=2))
    plot_results(results, out / "results.png")
    print()
    print(format_table(results["methods"], f"Synthetic zero-shot CIR benchmark ({len(world.queries)} queries, "
                       f"gallery {len(world.gallery)}, seed {args.seed})"))  # fmt: skip
    if args.ablation:
        print()
        print(format_table(ablation, f"Window ablation ({budget} triplets, {args.train_steps} steps each)"))
    else:
        print("\nwindow ablation: skipped (--fast or --ablation false)")
    print(f"\nresults: {out / 'results.json'}\nplot:    {out / 'results.png'}\nmodel:   {out / 'mra_model'}")
    print(f"total time: {timings['total']:.0f} s")
    return results


def _jsonable(data):
    return json.loads(json.dumps(data, default=str))


def clean_caches(output_dir: str | Path) -> None:
    """Delete the quickstart's caches (world, exported images, triplets) under `output_dir`."""
    shutil.rmtree(Path(output_dir) / "cache", ignore_errors=True)


__all__ = [
    "ABLATION_WINDOWS",
    "BENCHMARK_METHODS",
    "benchmark_gallery_index",
    "METHODS",
    "QuickstartArguments",
    "benchmark_rankings",
    "evaluate_benchmark",
    "parse_window",
    "run_quickstart",
    "scale_window",
    "score_rankings",
]
