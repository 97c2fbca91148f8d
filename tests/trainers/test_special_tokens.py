"""The model config records the tokenizer's pad / bos / eos ids, so training starts without transformers' "The tokenizer
has new PAD/BOS/EOS tokens" warning and the saved config states the ids."""

from __future__ import annotations

import json
from unittest import mock

import torch
from transformers import trainer_utils

from mra_cir.modeling_mra_cir import MraCirModel
from mra_cir.tiny import TOY_WORDS, offline_processor, random_triplet_dataset, tiny_config
from mra_cir.trainers import MraCirTrainer, MraCirTrainingArguments
from mra_cir.trainers.collator import record_special_token_ids


def test_training_starts_without_the_special_token_warning_and_saves_the_ids(tmp_path):
    torch.manual_seed(0)
    model = MraCirModel(tiny_config())
    processor = offline_processor(32, texts=[" ".join(TOY_WORDS)])
    args = MraCirTrainingArguments(
        str(tmp_path / "out"), per_device_train_batch_size=4, max_steps=1, report_to=[], save_strategy="no",
        disable_tqdm=True, use_cpu=True,
    )  # fmt: skip
    with mock.patch.object(trainer_utils.logger, "warning") as warning:
        trainer = MraCirTrainer(model, args, train_dataset=random_triplet_dataset(8), processing_class=processor)
        trainer.train()
    messages = [str(call.args[0]) for call in warning.call_args_list if call.args]
    assert not [m for m in messages if "PAD/BOS/EOS" in m], messages
    trainer.save_model()
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["pad_token_id"] == processor.tokenizer.pad_token_id == 0


def test_record_special_token_ids_takes_what_the_tokenizer_defines():
    config = tiny_config()
    tokenizer = mock.Mock(pad_token_id=0, bos_token_id=None, eos_token_id=3)
    assert record_special_token_ids(config, mock.Mock(tokenizer=tokenizer)) == {"pad_token_id": 0, "eos_token_id": 3}
    assert config.pad_token_id == 0 and config.eos_token_id == 3 and getattr(config, "bos_token_id", None) is None
