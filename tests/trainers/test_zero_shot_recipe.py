"""The zero-shot protocol: the shipped recipes select nothing on a benchmark split, every hyper-parameter of the paper
recipe names its source, benchmark selection is refused, and the held-out triplets (the only selectable data) are split
without shared images and scored (eval loss, triplet recall) by the trainer."""

from __future__ import annotations

import re

import pytest
import torch
import yaml
from conftest import REPO_ROOT

from mra_cir.modeling_mra_cir import MraCirModel
from mra_cir.pipelines.training import parse_train_args as parse_args
from mra_cir.tiny import TOY_WORDS, offline_processor, random_triplet_dataset, tiny_config
from mra_cir.trainers import MraCirTrainer, MraCirTrainingArguments
from mra_cir.trainers.holdout import TripletRecallEvaluator, split_holdout

RECIPES = sorted((REPO_ROOT / "examples" / "configs").glob("*.yaml"))
PAPER_RECIPE = REPO_ROOT / "examples" / "configs" / "train_paper_blip2_vitg.yaml"
#: benchmark and split names that must not appear in a training-selection setting
BENCHMARK_WORDS = re.compile(r"fashion|fiq|cirr|circo|dress|shirt|toptee|test1|\bval\b|validation", re.I)
SELECTION_KEYS = ("metric_for_best_model", "load_best_model_at_end", "greater_is_better", "eval_dataset")
SOURCES = ("paper", "LAVIS", "CoVR-2", "SPRC", "transformers", "ours")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipes_select_nothing_on_a_benchmark(recipe):
    config = yaml.safe_load(recipe.read_text()) or {}
    for key in SELECTION_KEYS:
        assert not BENCHMARK_WORDS.search(str(config.get(key, ""))), f"{recipe.name}: {key}={config.get(key)!r}"
    # no uncommented line, whatever its key, selects or stops on a benchmark metric
    for line in recipe.read_text().splitlines():
        setting = line.split("#", 1)[0]
        if any(k in setting for k in ("best", "early_stopping", "metric")):
            assert not BENCHMARK_WORDS.search(setting), f"{recipe.name}: {line}"
    overrides = ["--bf16", "false", "--use_cpu", "true"] if config.get("bf16") else []
    _, _, args = parse_args([str(recipe), *overrides])
    assert args.zero_shot_protocol
    assert not BENCHMARK_WORDS.search(args.metric_for_best_model or "")


def test_paper_recipe_keeps_the_last_checkpoint_and_cites_every_value():
    _, data, args = parse_args([str(PAPER_RECIPE), "--bf16", "false", "--use_cpu", "true"])
    assert args.load_best_model_at_end is False and args.metric_for_best_model is None
    assert args.triplet_holdout == 0.02 and data.benchmark_roots is None and not args.eval_benchmarks
    assert args.freeze_vision_model and args.qformer_training == "full"
    missing = []
    for line in PAPER_RECIPE.read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        value, _, comment = line.partition("#")
        if not any(re.search(rf"\b{re.escape(s)}\b", comment) for s in SOURCES):
            missing.append(value.strip())
    assert missing == [], f"settings without a source: {missing}"


@pytest.mark.parametrize("metric", ["fashioniq_average_R@10", "eval_cirr_R@1", "circo_mAP@5", "CIRR_R_subset@1"])
def test_benchmark_selection_is_refused(metric, tmp_path):
    with pytest.raises(ValueError, match="not zero-shot") as error:
        MraCirTrainingArguments(str(tmp_path), metric_for_best_model=metric, use_cpu=True, report_to=[])
    assert metric in str(error.value) and "triplet_holdout" in str(error.value)
    # a study that is not zero-shot opts out explicitly; the held-out triplets are always selectable
    MraCirTrainingArguments(
        str(tmp_path), metric_for_best_model=metric, zero_shot_protocol=False, use_cpu=True, report_to=[]
    )
    args = MraCirTrainingArguments(str(tmp_path), metric_for_best_model="triplet_R@10", use_cpu=True, report_to=[])
    assert args.metric_for_best_model == "triplet_R@10"


def test_split_holdout_shares_no_image():
    dataset = random_triplet_dataset(60, num_images=40, seed=2)
    train, held, report = split_holdout(dataset, 0.2, seed=0)
    held_images = set(held["reference_id"]) | set(held["target_id"])
    assert not held_images & (set(train["reference_id"]) | set(train["target_id"]))
    assert report["held_out_triplets"] == len(held) > 0 and report["train_triplets"] == len(train) > 0
    assert report["held_out_triplets"] + report["train_triplets"] + report["dropped_triplets"] == 60
    assert report["held_out_references"] == round(0.2 * len(set(dataset["reference_id"])))
    assert split_holdout(dataset, 0.2, seed=0)[2] == report  # seeded
    assert split_holdout(dataset, 3, seed=0)[2]["held_out_references"] == 3
    with pytest.raises(ValueError, match="at least one on each side"):
        split_holdout(dataset, 0.0001, seed=0)
    with pytest.raises(ValueError, match="reference_id"):
        split_holdout(dataset.remove_columns("reference_id"), 0.2)


def _brute_force_recall(model, processor, held, k: int) -> float:
    """R@k of the held-out triplets, written without the evaluator: max-sim of each composed query over the slice's
    distinct targets, its own reference removed."""
    ids = list(dict.fromkeys(held["target_id"]))
    first = {t: i for i, t in reversed(list(enumerate(held["target_id"])))}
    with torch.no_grad():
        keys = torch.cat(
            [model.get_image_features(processor(images=[held[first[t]]["target_image"]])["pixel_values"]) for t in ids]
        )
        hits = 0
        for row in held:
            enc = processor(images=[row["reference_image"]], text=[row["modification_text"]])
            q = model.get_composed_features(enc["pixel_values"], enc["input_ids"], enc["attention_mask"])[0]
            order = [ids[i] for i in torch.argsort((keys @ q).amax(-1), descending=True, stable=True).tolist()]
            order = [x for x in order if x != row["reference_id"]]
            hits += row["target_id"] in order[:k]
    return 100.0 * hits / len(held)


def test_trainer_holds_out_triplets_and_scores_them(tmp_path):
    torch.manual_seed(0)
    model = MraCirModel(tiny_config())
    processor = offline_processor(32, [" ".join(TOY_WORDS)])
    dataset = random_triplet_dataset(48, num_images=40, seed=1)
    args = MraCirTrainingArguments(
        str(tmp_path / "out"),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=8,
        max_steps=2,
        learning_rate=1e-4,
        triplet_holdout=0.25,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
    )
    trainer = MraCirTrainer(model, args, train_dataset=dataset, processing_class=processor)
    report = trainer.holdout_report
    assert (
        len(trainer.train_dataset) == report["train_triplets"]
        and len(trainer.eval_dataset) == report["held_out_triplets"]
    )
    assert isinstance(trainer.cir_evaluators[-1], TripletRecallEvaluator)
    trainer.train()
    metrics = trainer.evaluate()
    assert "eval_loss" in metrics
    recalls = [metrics[f"eval_triplet_R@{k}"] for k in (1, 5, 10, 50)]
    assert recalls == sorted(recalls) and 0 < recalls[-1]
    trained = trainer.accelerator.unwrap_model(trainer.model).eval()
    held = trainer.eval_dataset
    assert len(set(held["target_id"])) > 10  # R@10 is not trivially 100
    for k in (1, 5, 10):
        assert metrics[f"eval_triplet_R@{k}"] == pytest.approx(_brute_force_recall(trained, processor, held, k))
    summary = trainer.training_summary()
    assert summary["checkpoint_selection"] == "last checkpoint" and summary["held_out_triplets"] == report
    assert summary["hyperparameters"]["zero_shot_protocol"] is True
    with pytest.raises(ValueError, match="not both"):
        MraCirTrainer(model, args, train_dataset=dataset, eval_dataset=dataset, processing_class=processor)


def test_in_training_benchmark_evaluators_cache_the_vit_only(tmp_path, benchmarks_dir):
    from mra_cir.pipelines.training import build_cir_evaluators

    _, data, args = parse_args(
        ["--train_dataset", "toy:4", "--output_dir", str(tmp_path), "--use_cpu", "true", "--eval_benchmarks", "circo"]
        + ["--benchmark_roots", f"circo={benchmarks_dir / 'circo'}", "--eval_cache_dir", str(tmp_path / "c")]
        + ["--dataloader_num_workers", "3"]
    )
    (evaluator,) = build_cir_evaluators(args, data)
    assert evaluator.supports_distributed and evaluator.num_workers == 3 and evaluator.cache_dir == tmp_path / "c"
    # final features change with the Q-Former at every step: never cached in training; the frozen ViT's outputs are
    assert evaluator.cache_features is False and evaluator.cache_vision_outputs is True
    args.freeze_vision_model = False
    assert build_cir_evaluators(args, data)[0].cache_vision_outputs is False
    args.eval_benchmarks = "coco"
    with pytest.raises(ValueError, match="unknown benchmark 'coco'"):
        build_cir_evaluators(args, data)
