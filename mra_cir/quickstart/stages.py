"""The quickstart's stages as functions: the world, the pretrained backbone (the shipped stand-in for BLIP-2, or stage 1
from scratch), the pool as an image folder, triplets through the real builder (`MraTriplets` with the scene agent),
and MRA training (`MraCirTrainer`).

Each stage calls the library; `pipeline.run_quickstart` runs them in order.
"""

from __future__ import annotations

from pathlib import Path

from .arguments import QuickstartArguments

#: width of the stand-in's image-text embedding (D)
EMBED_DIM = 64


def build_quickstart_world(args: QuickstartArguments):
    """The synthetic world of the run (cached under `<output_dir>/cache/world`)."""
    from mra_cir.dataset_builders.synthetic_world import build_world

    return build_world(
        args.seed,
        args.pool_size,
        args.num_queries,
        args.image_size,
        cache_dir=Path(args.output_dir) / "cache" / "world",
        cirr_queries=args.cirr_queries,
        circo_queries=args.circo_queries,
        pool_options={
            "variants_per_root": args.pool_variants_per_root,
            "duplicate_rate": args.pool_duplicate_rate,
            "edit_weights": args.pool_edit_weights,
        },
    )


def load_backbone(args: QuickstartArguments, world) -> tuple[object, object, dict]:
    """The pretrained model MRA starts from -> `(model, processor, summary)`: the stand-in (`args.stand_in`, default
    the shipped [`~mra_cir.quickstart.STAND_IN`]) loaded like any checkpoint, or, with `--pretrain_from_scratch`, a
    small model pretrained here by stage 1 ([`run_stage1`])."""
    import json

    from mra_cir.modeling_mra_cir import MraCirModel, MraCirProcessor

    from .arguments import STAND_IN

    if args.pretrain_from_scratch:
        model, processor = stage1_model_and_processor(args)
        summary = run_stage1(args, model, processor, world)
        return (
            model,
            processor,
            {
                "kind": "pretrained from scratch (stage 1)",
                **summary,
                "batch_size": summary["arguments"]["batch_size"],
            },
        )
    folder = Path(args.stand_in or STAND_IN)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"--stand_in {folder}: no config.json there (a folder written by save_pretrained)")
    model = MraCirModel.from_pretrained(folder).to(args.device).eval()
    processor = MraCirProcessor.from_pretrained(folder)
    card = folder / "pretraining.json"
    pretraining = json.loads(card.read_text()) if card.is_file() else {}
    summary = {
        "kind": "pretrained stand-in",
        "path": str(folder),
        "steps": pretraining.get("steps"),
        "seconds": pretraining.get("seconds"),
        "device": pretraining.get("device"),
        "model_sha256": pretraining.get("model_sha256"),
    }
    return model, processor, summary


def stage1_model_and_processor(args: QuickstartArguments):
    """A random BLIP-2-shaped `MraCirModel` of the run's size and an offline processor whose tokenizer knows every
    word of the world, of the agent and of the benchmarks' texts (as a pretrained model knows the words of a benchmark
    it never saw; the phrasings stay held out); seeded: the same seed gives the same weights."""
    from transformers import set_seed

    from mra_cir.dataset_builders.synthetic_world import benchmark_texts, world_texts
    from mra_cir.dataset_builders.synthetic_world.scene_agent import agent_texts
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import offline_processor, tiny_config

    set_seed(args.seed)
    processor = offline_processor(
        args.image_size, texts=world_texts() + agent_texts() + benchmark_texts(), vocab_size=512
    )
    config = tiny_config(
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=4,
        image_size=args.image_size,
        patch_size=args.patch_size,
        num_query_tokens=args.num_query_tokens,
        embed_dim=EMBED_DIM,
        vocab_size=len(processor.tokenizer),
        logit_temperature_min=args.temperature_min,
    )
    config.qformer_config.num_hidden_layers = args.qformer_layers or args.num_layers
    return MraCirModel(config).to(args.device), processor


def run_stage1(args: QuickstartArguments, model, processor, world) -> dict:
    """Stage 1: BLIP-2-style image-text pre-training on the pool's captions (or a separate captioned corpus), in
    place; returns the summary of `align_image_text`."""
    from mra_cir.quickstart.stage1 import AlignmentArguments, align_image_text

    if args.stage1_corpus_size:
        from mra_cir.dataset_builders.synthetic_world import generate_alignment_corpus

        corpus = generate_alignment_corpus(
            args.seed, args.stage1_corpus_size, args.image_size, edit_pairs=args.stage1_edit_pairs
        )
    else:
        corpus = (world.pool["image"], world.pool["caption"], world.pool["scene_graph"])
    return align_image_text(
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


def export_pool(world, folder: Path) -> Path:
    """Write the pool's stored PNG bytes as `<id>.png` (the triplet builder reads a folder; hashes are unchanged)."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    raw = world.pool.cast_column("image", datasets.Image(decode=False))
    for row in raw:
        path = folder / f"{row['id']}.png"
        if not path.exists():
            path.write_bytes(row["image"]["bytes"])
    return folder


def build_triplets(
    args: QuickstartArguments, q1: int, q2: int, images: Path, model_dir: Path, agent, cache: Path,
    pair_miner=None, targets_per_reference: int | None = None,
):  # fmt: skip
    """Run `MraTriplets` (embed with the stage-1 model, mine [q1, q2] or with `pair_miner`, scene agent) ->
    `(dataset, summary)`."""
    from mra_cir.dataset_builders.mra_triplets import MraTriplets

    builder = MraTriplets(
        images=str(images),
        embedding_model=str(model_dir),
        q1=q1,
        q2=q2,
        targets_per_reference=min(targets_per_reference or args.targets_per_reference, q2 - q1 + 1),
        pair_miner=pair_miner,
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
    from mra_cir.trainers import MraCirTrainer, MraCirTrainingArguments

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
        group_by_reference=args.group_by_reference,
        disable_tqdm=not args.show_progress,
    )
    trainer = MraCirTrainer(model, training_args, train_dataset=triplets, processing_class=processor)
    output = trainer.train()
    model = trainer.model
    model.eval()
    return model, {"train_loss": output.training_loss, "steps": output.global_step}


__all__ = [
    "EMBED_DIM",
    "build_quickstart_world",
    "build_triplets",
    "export_pool",
    "run_stage1",
    "stage1_model_and_processor",
    "train_mra",
]
