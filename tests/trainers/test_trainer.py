"""MraCirTrainer / MraCirTrainingArguments on one CPU process with a tiny random model."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import REPO_ROOT

from mra_cir.tiny import random_triplet_dataset
from mra_cir.trainers.freezing_and_lora import prepare_model_for_training
from mra_cir.trainers.trainer import MraCirTrainer
from mra_cir.trainers.training_args import MraCirTrainingArguments


def new_model():
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import tiny_config

    torch.manual_seed(0)
    return MraCirModel(tiny_config(logit_temperature_init=0.05))


def make_args(tmp_path, **kw) -> MraCirTrainingArguments:
    defaults = dict(
        per_device_train_batch_size=4, max_steps=3, logging_steps=1, learning_rate=2e-3, report_to=[],
        save_strategy="no", disable_tqdm=True, seed=0, use_cpu=True,
    )  # fmt: skip
    return MraCirTrainingArguments(str(tmp_path / "out"), **{**defaults, **kw})


def step_losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


class ToyEvaluator:
    """An evaluator with the `CirEvaluator` interface whose metric depends on the model's weights."""

    primary_metric = "toy_R@1"

    def __init__(self):
        self.calls = 0

    def __call__(self, model, processor=None) -> dict[str, float]:
        assert not model.training and processor is not None
        self.calls += 1
        return {"toy_R@1": float(model.text_projection.weight.abs().sum()), "toy_mAP@5": 0.5}


def test_full_training_moves_qformer_side_only(tmp_path, processor, dataset):
    model = new_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MraCirTrainer(model, make_args(tmp_path), train_dataset=dataset, processing_class=processor)
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n in before if not torch.equal(before[n], after[n].detach())}
    assert not any(n.startswith("vision_model.") for n in changed), "the frozen ViT changed"
    assert not any(n.startswith("itm_head.") for n in changed)
    assert {"query_tokens", "logit_temperature", "text_projection.weight", "vision_projection.weight"} <= changed
    assert any(n.startswith("qformer.encoder.layer.0.crossattention") for n in changed)
    losses = step_losses(trainer)
    assert len(losses) == 3 and all(torch.isfinite(torch.tensor(losses)))


def test_every_trainable_parameter_gets_a_gradient(tmp_path, processor, dataset):
    """`ddp_find_unused_parameters` defaults to False: every trainable parameter must take part in the loss."""
    from mra_cir.trainers.collator import MraCirCollator

    args = make_args(tmp_path)
    assert args.ddp_find_unused_parameters is False and args.remove_unused_columns is False
    model = prepare_model_for_training(new_model(), args).train()
    model(**MraCirCollator(processor)([dataset[i] for i in range(4)])).loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing
    assert not any(p.requires_grad for n, p in model.named_parameters() if n.startswith("vision_model."))


def test_temperature_options(tmp_path, processor, dataset):
    args = make_args(tmp_path, learn_temperature=False, logit_temperature_init=0.1, max_steps=1)
    trainer = MraCirTrainer(new_model(), args, train_dataset=dataset, processing_class=processor)
    assert float(trainer.model.logit_temperature) == pytest.approx(0.1)
    trainer.train()
    assert float(trainer.model.logit_temperature) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="clamp range"):
        prepare_model_for_training(new_model(), make_args(tmp_path, logit_temperature_init=5.0))
    with pytest.raises(ValueError, match="qformer_training"):
        make_args(tmp_path, qformer_training="partial")


def test_save_load_and_model_card(tmp_path, processor, dataset):
    from transformers import AutoModel

    import mra_cir.modeling_mra_cir  # noqa: F401  (registers the Auto classes)

    args = make_args(tmp_path)
    trainer = MraCirTrainer(
        new_model(), args, train_dataset=dataset, processing_class=processor, dataset_name="toy/mra-triplets"
    )
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    loaded = AutoModel.from_pretrained(out)
    assert type(loaded).__name__ == "MraCirModel"
    for name, param in trainer.model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[name], param, msg=name)
    card = (out / "README.md").read_text()
    assert "toy/mra-triplets" in card and "- toy/mra-triplets" in card  # body and YAML header
    for setting in ('"learning_rate": 0.002', '"qformer_training": "full"', '"gather_negatives": true', "train_loss"):
        assert setting in card, setting
    assert (out / "processor_config.json").is_file() or (out / "preprocessor_config.json").is_file()
    trainer.create_model_card()  # what push_to_hub calls: must keep our card
    assert "toy/mra-triplets" in (out / "README.md").read_text()


def test_cir_evaluators_merged_under_eval(tmp_path, processor, dataset):
    evaluator = ToyEvaluator()
    args = make_args(tmp_path, eval_strategy="steps", eval_steps=2, max_steps=2)
    trainer = MraCirTrainer(
        new_model(), args, train_dataset=dataset, processing_class=processor, cir_evaluators=[evaluator]
    )
    trainer.train()  # evaluates at step 2 without any eval_dataset
    logged = [h for h in trainer.state.log_history if "eval_toy_R@1" in h]
    assert evaluator.calls == 1 and len(logged) == 1 and logged[0]["step"] == 2
    # with an eval dataset: the InfoNCE eval loss and the CIR metrics in one dict
    metrics = trainer.evaluate(random_triplet_dataset(8, seed=3))
    assert {"eval_loss", "eval_toy_R@1", "eval_toy_mAP@5"} <= set(metrics)
    assert metrics["eval_toy_R@1"] == pytest.approx(float(trainer.model.text_projection.weight.detach().abs().sum()))
    assert evaluator.calls == 2


def test_resume_reproduces_next_losses(tmp_path, processor, dataset):
    args = make_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2)
    first = MraCirTrainer(new_model(), args, train_dataset=dataset, processing_class=processor)
    first.train()
    losses = step_losses(first)
    assert len(losses) == 4 and len(set(losses)) == 4  # the weights move: each step's loss differs
    resumed = MraCirTrainer(new_model(), make_args(tmp_path, max_steps=4, save_strategy="steps", save_steps=2),
                            train_dataset=dataset, processing_class=processor)  # fmt: skip
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    resumed_losses = step_losses(resumed)  # the checkpoint's log history (steps 1-2), then steps 3-4 run again
    assert len(resumed_losses) == 4 and resumed_losses[:2] == losses[:2]
    assert resumed_losses[2:] == pytest.approx(losses[2:], rel=1e-5, abs=1e-6)


def test_vit_cache_and_gradient_checkpointing_keep_the_losses(tmp_path, processor, dataset):
    reference = MraCirTrainer(
        new_model(), make_args(tmp_path / "a"), train_dataset=dataset, processing_class=processor
    )
    reference.train()
    args = make_args(tmp_path / "b", cache_vit_outputs=True, vit_cache_dir=str(tmp_path / "cache"),
                     activation_checkpointing=True)  # fmt: skip
    assert args.activation_checkpointing_kwargs == {"use_reentrant": False}
    cached = MraCirTrainer(new_model(), args, train_dataset=dataset, processing_class=processor)
    assert len(cached.vit_cache) == len(set(dataset["reference_id"]) | set(dataset["target_id"]))
    assert (tmp_path / "cache" / "vit_outputs.json").is_file()
    cached.train()
    assert cached.model.is_activation_checkpointing
    assert step_losses(cached) == pytest.approx(step_losses(reference), rel=1e-5)
    with pytest.raises(ValueError, match="freeze_vision_model"):
        make_args(tmp_path, cache_vit_outputs=True, freeze_vision_model=False)


def test_bf16_autocast_step_runs(tmp_path, processor, dataset):
    trainer = MraCirTrainer(new_model(), make_args(tmp_path, bf16=True, max_steps=1), train_dataset=dataset,
                            processing_class=processor)  # fmt: skip
    trainer.train()
    assert torch.isfinite(torch.tensor(step_losses(trainer))).all()
    assert trainer.model.text_projection.weight.dtype == torch.float32  # autocast: master weights stay fp32


def test_training_args_json_roundtrip(tmp_path):
    args = make_args(tmp_path, qformer_training="lora", lora_rank=4)
    data = json.loads(args.to_json_string())
    assert data["qformer_training"] == "lora" and data["lora_rank"] == 4 and data["learn_temperature"] is False


def test_train_script_from_yaml(tmp_path):
    """`mra-cir train config.yaml` (== examples/train.py): parse, train, save; the shipped configs parse."""

    import yaml
    from transformers import HfArgumentParser

    from mra_cir.cli import main as cli_main
    from mra_cir.pipelines.training import DataArguments, ModelArguments
    from mra_cir.pipelines.training import parse_train_args as parse_args

    configs = REPO_ROOT / "examples" / "configs"
    _, _, args = parse_args([str(configs / "train_synthetic_cpu.yaml")])
    assert args.remove_unused_columns is False and args.cache_vit_outputs
    _, data_args, args = parse_args(
        [str(configs / "train_synthetic_cpu.yaml"), "--output_dir", "o", "--lora_rank", "3"]
    )
    assert (args.output_dir, args.lora_rank, data_args.train_dataset) == ("o", 3, "toy:64")  # file + overrides
    # the paper's config asks for bf16, which TrainingArguments refuses without a GPU: parse it with bf16 off here
    paper = yaml.safe_load((configs / "train_paper_blip2_vitg.yaml").read_text())
    assert paper.pop("bf16") is True
    model_args, data_args, args = HfArgumentParser(
        (ModelArguments, DataArguments, MraCirTrainingArguments)
    ).parse_dict(paper)
    assert model_args.model_name_or_path == "Salesforce/blip2-itm-vit-g" and args.learning_rate == 1e-5
    # zero-shot: benchmarks are optional monitoring, off in the recipe (tests/trainers/test_zero_shot_recipe.py)
    assert args.eval_benchmarks_list == [] and args.triplet_holdout == 0.02 and args.qformer_training == "full"
    config = tmp_path / "run.yaml"
    config.write_text(
        f"model_name_or_path: tiny\ntrain_dataset: 'toy:8'\ndataset_name: toy-set\noutput_dir: {tmp_path / 'out'}\n"
        "qformer_training: lora\nlora_rank: 2\nmax_steps: 1\nper_device_train_batch_size: 4\nreport_to: none\n"
        "use_cpu: true\nsave_strategy: 'no'\ndisable_tqdm: true\n"
    )
    assert cli_main(["train", str(config)]) == 0
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    assert "toy-set" in (tmp_path / "out" / "merged" / "README.md").read_text()
    assert json.loads((tmp_path / "out" / "all_results.json").read_text())["train_loss"] > 0
