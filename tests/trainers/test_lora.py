"""LoRA training of the Q-Former: what trains, resume, adapter and merged saving, loading with AutoModel."""

from __future__ import annotations

import pytest
import torch

from mra_cir.trainers.freezing_and_lora import prepare_model_for_training
from mra_cir.trainers.trainer import MraCirTrainer
from mra_cir.trainers.training_args import QFORMER_LORA_TARGET_MODULES, MraCirTrainingArguments


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    """A saved tiny base model, so the adapter config records a loadable base_model_name_or_path."""
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.tiny import tiny_config

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("base")
    MraCirModel(tiny_config(logit_temperature_init=0.05)).save_pretrained(path)
    return path


def new_model(base_dir):
    from mra_cir.modeling_mra_cir import MraCirModel

    return MraCirModel.from_pretrained(base_dir)


def make_args(tmp_path, **kw) -> MraCirTrainingArguments:
    defaults = dict(
        per_device_train_batch_size=4, max_steps=3, logging_steps=1, learning_rate=5e-3, report_to=[],
        save_strategy="no", disable_tqdm=True, seed=0, use_cpu=True, qformer_training="lora", lora_rank=4,
        lora_alpha=8, lora_dropout=0.0,
    )  # fmt: skip
    return MraCirTrainingArguments(str(tmp_path / "out"), **{**defaults, **kw})


def step_losses(trainer) -> list[float]:
    return [h["loss"] for h in trainer.state.log_history if "loss" in h]


def test_lora_targets_qformer_query_value_only(tmp_path, base_dir):
    model = prepare_model_for_training(new_model(base_dir), make_args(tmp_path))
    adapted = sorted(n.removesuffix(".lora_A") for n, _ in model.named_modules() if n.endswith(".lora_A"))
    layers = model.config.qformer_config.num_hidden_layers
    assert len(adapted) == layers * 2 * 2  # (self, cross) x (query, value) per layer
    assert all(".qformer.encoder.layer." in n and n.endswith((".query", ".value")) for n in adapted)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all("lora_" in n or "modules_to_save" in n for n in trainable)
    assert any("vision_projection.modules_to_save" in n for n in trainable)
    assert "base_model.model.logit_temperature" not in trainable  # fixed under LoRA (see learn_temperature)
    with pytest.raises(ValueError, match="learn_temperature"):
        make_args(tmp_path, learn_temperature=True)
    import re

    assert not any(re.fullmatch(QFORMER_LORA_TARGET_MODULES, n) for n, _ in model.named_modules() if "vision" in n)


def test_only_adapter_and_saved_modules_change(tmp_path, base_dir, processor, dataset):
    model = new_model(base_dir)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = MraCirTrainer(model, make_args(tmp_path), train_dataset=dataset, processing_class=processor)
    trainer.train()
    peft_model = trainer.model
    params = dict(peft_model.named_parameters())
    changed = {n for n, p in params.items() if not _unchanged(n, p, before)}
    assert changed, "nothing trained"
    assert all("lora_" in n or "modules_to_save" in n for n in changed), sorted(changed)[:5]
    assert any("lora_B" in n for n in changed) and any("text_projection.modules_to_save" in n for n in changed)
    base = peft_model.get_base_model()
    for name, param in base.vision_model.named_parameters():
        assert torch.equal(param, before[f"vision_model.{name}"]), f"frozen ViT changed: {name}"


def _unchanged(peft_name: str, param: torch.Tensor, before: dict) -> bool:
    """Compare a peft parameter with the base parameter it wraps (new LoRA weights count as changed if not zero)."""
    name = peft_name.removeprefix("base_model.model.").replace(".base_layer", "")
    name = name.replace(".modules_to_save.default", "").replace(".original_module", "")
    if name in before:
        return torch.equal(param.detach(), before[name])
    return "lora_A" in peft_name  # lora_A starts random and only lora_B (zero-initialised) must move first


def test_lora_resume_reproduces_next_losses(tmp_path, base_dir, processor, dataset):
    args = dict(max_steps=4, save_strategy="steps", save_steps=2)
    first = MraCirTrainer(new_model(base_dir), make_args(tmp_path, **args), train_dataset=dataset,
                          processing_class=processor)  # fmt: skip
    first.train()
    losses = step_losses(first)
    assert len(set(losses)) == 4
    assert (tmp_path / "out" / "checkpoint-2" / "adapter_model.safetensors").is_file()
    resumed = MraCirTrainer(new_model(base_dir), make_args(tmp_path, **args), train_dataset=dataset,
                            processing_class=processor)  # fmt: skip
    resumed.train(resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"))
    assert step_losses(resumed)[2:] == pytest.approx(losses[2:], rel=1e-5, abs=1e-6)


def test_adapter_and_merged_model_load_with_automodel(tmp_path, base_dir, processor, dataset):
    from transformers import AutoModel

    import mra_cir.modeling_mra_cir  # noqa: F401  (registers the Auto classes)
    from mra_cir.trainers.collator import MraCirCollator

    trainer = MraCirTrainer(new_model(base_dir), make_args(tmp_path, activation_checkpointing=True),
                            train_dataset=dataset, processing_class=processor, dataset_name="toy/mra-triplets")  # fmt: skip
    trainer.train()
    trainer.save_model()
    out = tmp_path / "out"
    assert (out / "adapter_model.safetensors").is_file() and not (out / "model.safetensors").exists()
    card = (out / "README.md").read_text()
    for text in ("toy/mra-triplets", '"qformer_training": "lora"', '"lora_rank": 4', "lora_target_modules"):
        assert text in card, text

    batch = MraCirCollator(processor)([dataset[i] for i in range(6)])
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model(**batch).logits_per_query
        assert not torch.allclose(expected, new_model(base_dir).eval()(**batch).logits_per_query)  # LoRA did move
    trainer.save_merged_model(str(tmp_path / "merged"))
    merged = AutoModel.from_pretrained(tmp_path / "merged").eval()
    assert type(merged).__name__ == "MraCirModel" and not any("lora" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits_per_query, expected, rtol=1e-4, atol=1e-4)
    assert "toy/mra-triplets" in (tmp_path / "merged" / "README.md").read_text()
    # the trainer's own model keeps its adapters after merging a copy
    assert any("lora_A" in n for n, _ in trainer.model.named_parameters())
    # the adapter folder itself loads through transformers' peft integration (base model from the adapter config)
    adapter = AutoModel.from_pretrained(out).eval()
    with torch.no_grad():
        torch.testing.assert_close(adapter(**batch).logits_per_query, expected, rtol=1e-4, atol=1e-4)
