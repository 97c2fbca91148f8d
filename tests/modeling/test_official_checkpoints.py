"""Official checkpoints everywhere: every command that takes a model accepts a BLIP-2 image-text retrieval checkpoint
(the `Salesforce/blip2-itm-vit-g` layout: `Blip2ForImageTextRetrieval` weights + `Blip2Processor`) as well as an
`MraCirModel` folder, with the same results for the same weights; a Hub id that cannot be reached is an error naming
it. (`window-sweep` takes one in tests/cli/test_window_sweep.py, `convert-lavis --base-model` below.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from blip2_checkpoint import save_blip2_checkpoint
from cir_placeholders import circo_images

from mra_cir.commands import build_triplets, convert_lavis, evaluate, search, train
from mra_cir.dataset_builders.agents import AgentBackend, register_agent_backend
from mra_cir.modeling_mra_cir import MraCirModel, MraCirProcessor
from mra_cir.modeling_mra_cir.lavis_conversion import mra_cir_to_lavis
from mra_cir.modeling_mra_cir.loading import load_model_and_processor
from mra_cir.tiny import random_image

HUB_ID = "Salesforce/blip2-itm-vit-g"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """The same weights twice: as a BLIP-2 ITM checkpoint and as an MraCirModel folder."""
    root = tmp_path_factory.mktemp("official")
    blip2 = save_blip2_checkpoint(root / "blip2-itm")
    model, processor = load_model_and_processor(str(blip2))
    model.save_pretrained(root / "mra-cir")
    processor.save_pretrained(root / "mra-cir")
    return blip2, root / "mra-cir"


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_checkpoint_layout_is_blip2(checkpoints):
    blip2, _ = checkpoints
    config = json.loads((blip2 / "config.json").read_text())
    assert config["model_type"] == "blip-2" and config["architectures"] == ["Blip2ForImageTextRetrieval"]
    assert json.loads((blip2 / "processor_config.json").read_text())["processor_class"] == "Blip2Processor"
    model, processor = load_model_and_processor(str(blip2))
    assert isinstance(model, MraCirModel) and isinstance(processor, MraCirProcessor)


def test_evaluate(checkpoints, benchmarks_dir, tmp_path, capsys):
    root = circo_images(benchmarks_dir, tmp_path / "circo", n_queries=4, n_extra=12)
    results = {}
    for name, folder in zip(("blip2", "mra-cir"), checkpoints):
        argv = ["--model", str(folder), "--benchmark", "circo", "--data_root", str(root), "--max_queries", "4"]
        argv += ["--annotations_dir", str(benchmarks_dir / "circo"), "--output", str(tmp_path / name)]
        assert evaluate.main([*argv, "--cache_dir", "", "--no_progress", "--device", "cpu"]) == 0
        results[name] = _last_json(capsys)
    assert results["blip2"]["metrics"] == results["mra-cir"]["metrics"] and "mAP@5" in results["blip2"]["metrics"]
    rankings = [json.loads((tmp_path / n / "circo_val_rankings.json").read_text()) for n in ("blip2", "mra-cir")]
    assert rankings[0] == rankings[1] and len(rankings[0]) == 4


def test_search(checkpoints, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(8):
        random_image(i).save(photos / f"p{i}.png")
    results = []
    for i, folder in enumerate(checkpoints):
        argv = ["--index", str(tmp_path / f"index{i}"), "--model", str(folder), "--images", str(photos)]
        assert search.main([*argv, "--image", str(photos / "p3.png"), "--text", "make it red", "--k", "5"]) == 0
        results.append(_last_json(capsys)["results"])
    assert [r["id"] for r in results[0]] == [r["id"] for r in results[1]] and len(results[0]) == 5
    assert [r["score"] for r in results[0]] == pytest.approx([r["score"] for r in results[1]], abs=2e-6)  # 6 decimals


def test_train(checkpoints, tmp_path):
    blip2, _ = checkpoints
    out = tmp_path / "trained"
    argv = ["--model_name_or_path", str(blip2), "--train_dataset", "toy:8", "--output_dir", str(out)]
    argv += ["--max_steps", "1", "--per_device_train_batch_size", "4", "--use_cpu", "true", "--report_to", "none"]
    assert train.main([*argv, "--save_strategy", "no", "--disable_tqdm", "true"]) == 0
    model, processor = load_model_and_processor(str(out))
    assert isinstance(model, MraCirModel) and isinstance(processor, MraCirProcessor)
    assert f"base_model: {blip2}" in (out / "README.md").read_text()
    reference = MraCirModel.from_pretrained(blip2)
    assert not torch.equal(model.query_tokens, reference.query_tokens)  # it trained from the BLIP-2 weights
    assert torch.equal(  # the frozen ViT is BLIP-2's
        model.vision_model.embeddings.patch_embedding.weight, reference.vision_model.embeddings.patch_embedding.weight
    )


class _NameAgent(AgentBackend):
    backend_name, model_name = "official-names", "v1"

    def __init__(self, **kwargs):
        super().__init__(prompts=kwargs.get("prompts"), max_new_tokens=kwargs.get("max_new_tokens"))

    def caption(self, images):
        return [f"photo {image.id[:-4]}" for image in images]

    def modify(self, requests):
        return [f"make it like {r.target.id[:-4]}" for r in requests]


def test_build_triplets(checkpoints, tmp_path, capsys):
    register_agent_backend("official-names", _NameAgent)
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        random_image(i).save(photos / f"p{i}.png")
    pairs = []
    for i, folder in enumerate(checkpoints):
        out = tmp_path / f"triplets{i}"
        argv = ["--images", str(photos), "--model", str(folder), "--output", str(out), "--agent", "official-names"]
        assert build_triplets.main([*argv, "--q1", "2", "--q2", "4"]) == 0, capsys.readouterr().err[-2000:]
        capsys.readouterr()
        import datasets

        built = datasets.load_dataset("parquet", data_files=str(out / "data" / "*.parquet"), split="train")
        pairs.append(sorted(zip(built["reference_id"], built["target_id"], built["rank"])))
    assert pairs[0] == pairs[1] and len(pairs[0]) == 10  # the same weights mine the same pairs


def test_convert_lavis_base_model(checkpoints, tmp_path, capsys):
    blip2, _ = checkpoints
    model = MraCirModel.from_pretrained(blip2)
    lavis = {k: v for k, v in mra_cir_to_lavis(model.state_dict()).items() if not k.startswith("visual_encoder")}
    torch.save({"model": lavis}, tmp_path / "no_vit.pth")
    assert convert_lavis.main([str(tmp_path / "no_vit.pth"), str(tmp_path / "out"), "--base_model", str(blip2)]) == 0
    report = _last_json(capsys)
    assert report["from_base_model"]["source"] == str(blip2) and report["from_base_model"]["keys"] > 0
    converted, processor = load_model_and_processor(str(tmp_path / "out"))
    assert isinstance(processor, MraCirProcessor)  # the BLIP-2 checkpoint's processor, as an MraCirProcessor
    assert all(torch.equal(v, converted.state_dict()[k]) for k, v in model.state_dict().items())


@pytest.mark.parametrize("command", ["evaluate", "search"])
def test_unreachable_hub_id_is_named(command, tmp_path, capsys, monkeypatch, benchmarks_dir):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    if command == "evaluate":
        argv = [
            "--benchmark",
            "circo",
            "--data_root",
            str(tmp_path),
            "--annotations_dir",
            str(benchmarks_dir / "circo"),
        ]
        code = evaluate.main(["--model", HUB_ID, *argv])
    else:
        random_image(0).save(tmp_path / "q.png")
        argv = ["--index", str(tmp_path / "idx"), "--images", str(tmp_path), "--image", str(tmp_path / "q.png")]
        code = search.main([*argv, "--text", "red", "--model", HUB_ID])
    assert code == 2
    assert HUB_ID in capsys.readouterr().err
