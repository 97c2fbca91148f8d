"""`mra-cir pretrain-stand-in` and the shipped stand-in: loadable, reproducible, resumable, its card true."""

from __future__ import annotations

import json
import shlex

import pytest
import torch
from transformers import AutoModel, HfArgumentParser

import mra_cir.modeling_mra_cir  # noqa: F401  (registers "mra_cir" with AutoModel)
from mra_cir.dataset_builders.agents.base import file_sha256
from mra_cir.modeling_mra_cir import MraCirModel, MraCirProcessor
from mra_cir.quickstart import STAND_IN
from mra_cir.quickstart.pretraining import (
    DEFAULT_SIZE,
    TRACE_STEPS,
    PretrainArguments,
    paraphrase_loss,
    pretrain_stand_in,
)

TINY = ["--num_pairs", "96", "--chunk_size", "48", "--batch_size", "8", "--paraphrase_batch_size", "4",
        "--vision_hidden_size", "32", "--vision_layers", "1", "--hidden_size", "32", "--qformer_layers", "2",
        "--embed_dim", "16", "--num_query_tokens", "4", "--warmup_steps", "2", "--show_progress", "false"]  # fmt: skip


def _args(argv: list[str]) -> PretrainArguments:
    (args,) = HfArgumentParser(PretrainArguments).parse_args_into_dataclasses(args=argv)
    return args


def test_a_tiny_pretraining_writes_a_stand_in_with_a_true_card(tmp_path):
    torch.set_num_threads(1)
    summary = pretrain_stand_in(_args([*TINY, "--max_steps", "6", "--output_dir", str(tmp_path / "s")]))
    folder = tmp_path / "s"
    assert summary["steps"] == 6 and len(summary["loss_trace"]) == 6
    assert set(summary["final_losses"]) == {"itc", "fused", "paraphrase", "loss"}
    recorded = json.loads((folder / "pretraining.json").read_text())
    assert recorded["model_sha256"] == file_sha256(folder / "model.safetensors")
    card = (folder / "README.md").read_text()
    assert recorded["model_sha256"] in card and "mra-cir pretrain-stand-in --output_dir s" in card
    assert not list(folder.glob("*.py"))  # no remote-code copies: `import mra_cir` registers the classes
    model = AutoModel.from_pretrained(folder)
    assert isinstance(model, MraCirModel) and model.config.qformer_config.num_hidden_layers == 2
    processor = MraCirProcessor.from_pretrained(folder)
    assert processor.tokenizer.convert_tokens_to_ids("recolour") != processor.tokenizer.unk_token_id


def test_an_interrupted_pretraining_resumes_to_the_same_weights(tmp_path):
    torch.set_num_threads(1)
    whole = tmp_path / "whole"
    pretrain_stand_in(_args([*TINY, "--max_steps", "6", "--output_dir", str(whole)]))
    parts = tmp_path / "parts"
    first = pretrain_stand_in(_args([*TINY, "--max_steps", "6", "--stop_after", "3", "--output_dir", str(parts)]))
    assert first["steps"] == 3 and (parts / "checkpoint" / "state.pt").is_file()
    assert not (parts / "model.safetensors").exists()  # an unfinished run writes no model
    resumed = pretrain_stand_in(_args([*TINY, "--max_steps", "6", "--output_dir", str(parts)]))
    assert resumed["steps"] == 6
    assert file_sha256(parts / "model.safetensors") == file_sha256(whole / "model.safetensors")


def test_pretraining_options_are_validated():
    with pytest.raises(ValueError, match="reserved for pretraining|pretraining seeds start"):
        PretrainArguments(seed=3)
    with pytest.raises(ValueError, match="patch_size"):
        PretrainArguments(patch_size=5)
    with pytest.raises(ValueError, match="paraphrase_batch_size"):
        PretrainArguments(paraphrase_batch_size=1)


def test_paraphrase_loss_is_low_for_matching_rows():
    a = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)
    assert paraphrase_loss(a, a, 0.05) < 0.1 < paraphrase_loss(a, a.roll(1, 0), 0.05)


# ----------------------------------------------------------------------------------------------------------------------
# The shipped stand-in
# ----------------------------------------------------------------------------------------------------------------------
def _recorded() -> dict:
    return json.loads((STAND_IN / "pretraining.json").read_text())


def test_the_shipped_stand_in_loads_and_matches_its_card():
    recorded = _recorded()
    assert file_sha256(STAND_IN / "model.safetensors") == recorded["model_sha256"]
    assert recorded["model_sha256"] in (STAND_IN / "README.md").read_text()
    assert (STAND_IN / "model.safetensors").stat().st_size < 50 * 2**20
    model = AutoModel.from_pretrained(STAND_IN)
    assert isinstance(model, MraCirModel)
    config = model.config
    assert config.qformer_config.num_hidden_layers == DEFAULT_SIZE["qformer_layers"]
    assert config.vision_config.hidden_size == DEFAULT_SIZE["vision_hidden_size"]
    assert recorded["steps"] == recorded["arguments"]["max_steps"]


def test_the_documented_command_reproduces_the_recorded_loss_trace(tmp_path):
    """The first 50 steps of the command in the card (and in docs/quickstart.md) give the recorded losses."""
    torch.set_num_threads(1)
    recorded = _recorded()
    card = (STAND_IN / "README.md").read_text()
    command = card.split("- Command: `", 1)[1].split("`", 1)[0]
    argv = shlex.split(command)[2:]  # drop "mra-cir pretrain-stand-in"
    assert argv[:2] == ["--output_dir", "stand_in"]
    args = _args(
        [*argv[2:], "--output_dir", str(tmp_path), "--stop_after", str(TRACE_STEPS), "--show_progress", "false"]
    )
    summary = pretrain_stand_in(args)
    assert len(recorded["loss_trace"]) == TRACE_STEPS
    assert summary["loss_trace"] == pytest.approx(recorded["loss_trace"], rel=1e-4)
