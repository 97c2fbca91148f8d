"""`mra-cir build-triplets` as a user runs it: failures end in one line (counts + the command to resume), never a
traceback; `--agent scene` from a metadata.jsonl; bad `--model` values; a build whose pairs are all rejected; the
BLIP-2 checkpoint's expected missing temperature said in one line."""

from __future__ import annotations

import json
import logging
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import load_test_fixture

from mra_cir.cli import main

servers = load_test_fixture("agent_servers")
NUM_IMAGES = 10


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model, tiny_processor) -> tuple[Path, Path, dict]:
    """Rendered scenes with their scene graphs (metadata.jsonl, imagefolder convention) and an embedding model."""
    from mra_cir.dataset_builders.synthetic_world import canonical, render_scene, sample_scene

    root = tmp_path_factory.mktemp("scene_world")
    images, model = root / "images", root / "model"
    images.mkdir()
    rng = np.random.default_rng(0)
    graphs = {}
    for i in range(NUM_IMAGES):
        graph = sample_scene(rng)
        render_scene(graph, 32, rng).save(images / f"s{i:02d}.png")
        graphs[f"s{i:02d}.png"] = canonical(graph)
    lines = [json.dumps({"file_name": name, "scene_graph": graph}) for name, graph in graphs.items()]
    (images / "metadata.jsonl").write_text("\n".join(lines) + "\n")
    tiny_model.save_pretrained(model)
    tiny_processor.save_pretrained(model)
    return images, model, graphs


def _argv(images, model, output, *extra) -> list[str]:
    window = ["--q1", "1", "--q2", "3", "--pairs-per-shard", "4", "--num-proc", "1", "--max-new-tokens", "8"]
    return ["--images", str(images), "--model", str(model), "--output", str(output), *window, *extra]


def test_outage_ends_in_one_line_with_the_resume_command(world, tmp_path, capsys):
    images, model, _ = world
    with servers.FakeAgentServer() as server:
        server.outage = "status:503"
        argv = _argv(images, model, tmp_path / "out", "--agent", "openai", "--agent-url", server.url,
                     "--agent-model", "fake", "--agent-retries", "0")  # fmt: skip
        assert main(["build-triplets", *argv]) == 1
        err = capsys.readouterr().err
        (line,) = [line for line in err.splitlines() if line.startswith("build-triplets:")]
        assert f"build incomplete: {NUM_IMAGES} of {NUM_IMAGES} pairs have no answer yet" in line
        assert "reasons: status_503=10" in line and "Traceback" not in err
        resume = line.split("resume with: ", 1)[1]
        assert resume == "mra-cir build-triplets " + shlex.join(argv)
        assert not (tmp_path / "out" / "data").exists()

        server.outage = None
        server.reset()
        assert main(shlex.split(resume)[1:]) == 0  # the printed command, as the user would paste it
        assert server.count("caption") == NUM_IMAGES and server.count("modify") == NUM_IMAGES
        summary = json.loads((tmp_path / "out" / "build_summary.json").read_text())
        assert summary["complete"] and summary["triplets"] == NUM_IMAGES


def test_every_pair_rejected_is_one_line_not_a_traceback(world, tmp_path, capsys):
    images, model, _ = world
    refuse = lambda step, imgs, attempt: "refusal" if step == "modify" else "ok"  # noqa: E731
    with servers.FakeAgentServer(policy=refuse) as server:
        argv = _argv(images, model, tmp_path / "out", "--agent", "openai", "--agent-url", server.url,
                     "--agent-model", "fake")  # fmt: skip
        assert main(["build-triplets", *argv]) == 1
    err = capsys.readouterr().err
    assert f"0 triplets: every pair was rejected (refusal={NUM_IMAGES})" in err and "Traceback" not in err


def test_scene_agent_from_metadata_jsonl(world, tmp_path, capsys):
    from mra_cir.dataset_builders.synthetic_world.scene_agent import agent_caption

    images, model, graphs = world
    argv = _argv(images, model, tmp_path / "out", "--agent", "scene")
    assert main(["build-triplets", *argv]) == 2  # without --agent-model: what it needs, in one line
    assert "give --agent-model PATH, a metadata.jsonl" in capsys.readouterr().err

    assert main(["build-triplets", *argv, "--agent-model", str(images / "metadata.jsonl")]) == 0
    import datasets

    rows = datasets.load_dataset(str(tmp_path / "out"), split="train")
    assert len(rows) > 0
    for row in rows:  # the captions are the scene graphs' own
        assert row["reference_caption"] == agent_caption(json.loads(graphs[row["reference_id"]]))
        assert row["target_caption"] == agent_caption(json.loads(graphs[row["target_id"]]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"file_name": "s00.png"}\n')
    assert main(["build-triplets", *argv, "--agent-model", str(bad)]) == 2
    assert f"{bad}, line 1: needs 'file_name' and 'scene_graph'" in capsys.readouterr().err


@pytest.mark.parametrize("model", ["/nope", "relative/missing/folder", "EMPTY"])
def test_bad_model_is_one_line(world, tmp_path, capsys, model):
    images, _, _ = world
    if model == "EMPTY":
        model = str(tmp_path / "empty")
        Path(model).mkdir()
    argv = _argv(images, model, tmp_path / "out", "--agent", "scene", "--agent-model", str(images))
    assert main(["build-triplets", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"build-triplets: error: model {model!r}") and "Traceback" not in err
    assert "Repo id" not in err


def test_evaluate_bad_model_is_one_line(tmp_path, capsys, benchmarks_dir):
    for model in ("/nope", str(tmp_path), "user/not-cached-anywhere"):
        argv = ["evaluate", "--model", model, "--benchmark", "cirr", "--data-root", str(benchmarks_dir / "cirr")]
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"mra-cir evaluate: error: model {model!r}") and "Repo id" not in err


def test_blip2_checkpoint_says_temperature_is_expected_in_one_line(tmp_path, tiny_processor, caplog):
    import torch
    from transformers import Blip2Config, Blip2ForImageTextRetrieval

    from mra_cir.modeling_mra_cir.loading import load_model_and_processor

    config = Blip2Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                           image_size=32, patch_size=8),
        qformer_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                            vocab_size=99, use_qformer_text_input=True),
        text_config=dict(model_type="opt", hidden_size=16, num_hidden_layers=1, num_attention_heads=2, ffn_dim=16,
                         vocab_size=99, word_embed_proj_dim=16),
        num_query_tokens=4, image_text_hidden_size=16,
    )  # fmt: skip
    torch.manual_seed(0)
    Blip2ForImageTextRetrieval(config).save_pretrained(tmp_path / "blip2")
    tiny_processor.save_pretrained(tmp_path / "blip2")
    with caplog.at_level(logging.INFO):
        model, _ = load_model_and_processor(str(tmp_path / "blip2"))
    assert "LOAD REPORT" not in caplog.text
    assert [r.getMessage() for r in caplog.records if "logit_temperature" in r.getMessage()] == [
        f"{tmp_path / 'blip2'} is a BLIP-2 checkpoint: logit_temperature (not part of BLIP-2) starts at 0.07, "
        "as expected"
    ]
    assert float(model.logit_temperature.detach()) == pytest.approx(0.07)
    # a genuinely missing weight is still reported
    from safetensors.torch import load_file, save_file

    state = load_file(tmp_path / "blip2" / "model.safetensors")
    del state["itm_head.weight"]
    save_file(state, tmp_path / "blip2" / "model.safetensors", metadata={"format": "pt"})
    caplog.clear()
    with caplog.at_level(logging.INFO):
        load_model_and_processor(str(tmp_path / "blip2"))
    assert "LOAD REPORT" in caplog.text and "itm_head.weight" in caplog.text
    assert "logit_temperature |" not in caplog.text
