"""`mra-cir window-sweep` end to end on a tiny BLIP-2 ITM checkpoint folder (with its Blip2Processor), a rule-based
agent, and FashionIQ placeholders: one embedding pass, one ranking pass and one caption per image for all windows,
the pairs a separate mining of each window would give, equal-size training sets, one model per window, evaluations
equal to the evaluator's own, and one table and plot."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from blip2_checkpoint import save_blip2_checkpoint
from cir_placeholders import fashioniq_images
from PIL import Image

import mra_cir.dataset_builders.mra_triplets.mining as mining_module
import mra_cir.retrieval.image_features as image_features_module
from mra_cir.commands import window_sweep as command
from mra_cir.dataset_builders.agents import AgentBackend, register_agent_backend
from mra_cir.dataset_builders.mra_triplets.mining import parse_windows, sample_rank_window
from mra_cir.dataset_builders.mra_triplets.shared_windows import SharedWindowDraws
from mra_cir.evaluation import FashionIQEvaluator
from mra_cir.modeling_mra_cir.loading import load_model_and_processor
from mra_cir.retrieval.image_features import load_image_features
from mra_cir.tiny import synthetic_clustered_tokens

WINDOWS = [(1, 1), (3, 4), (6, 8)]


class ColourAgent(AgentBackend):
    """Captions and modification texts from the image file names (`<i>_<colour>.png`); counts what it is asked."""

    backend_name, model_name = "sweep-colour", "file-name-v1"
    captioned: list[str] = []

    def __init__(self, **kwargs):
        super().__init__(prompts=kwargs.get("prompts"), max_new_tokens=kwargs.get("max_new_tokens"))

    def caption(self, images):
        ColourAgent.captioned += [image.id for image in images]
        return [f"a {image.id.split('_')[1][:-4]} square photo" for image in images]

    def modify(self, requests):
        return [f"make it {r.target.id.split('_')[1][:-4]} with more {r.target.id[:2]}" for r in requests]


@pytest.fixture
def blip2_checkpoint(tmp_path) -> Path:
    """A tiny BLIP-2 ITM checkpoint with its Blip2Processor: the layout of Salesforce/blip2-itm-vit-g."""
    return save_blip2_checkpoint(tmp_path / "blip2-itm")


def _photos(folder: Path, n: int) -> Path:
    folder.mkdir()
    colours = ["red", "green", "blue", "yellow", "purple"]
    for i in range(n):
        rng = np.random.default_rng(i)
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(
            folder / f"{i:02d}_{colours[i % 5]}.png"
        )
    return folder


def _counting(monkeypatch, module, name: str, rows_of) -> list[int]:
    counts: list[int] = []
    original = getattr(module, name)

    def wrapped(*args, **kwargs):
        counts.append(rows_of(*args, **kwargs))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapped)
    return counts


def test_shared_draws_equal_a_separate_mining_of_each_window():
    class Features:  # what the builder hands to its mining step
        def __init__(self, n, duplicates):
            self.features = synthetic_clustered_tokens(n, num_tokens=4, dim=16, num_clusters=3, seed=n)
            self.ids = [f"im{i:03d}" for i in range(n)]
            self.duplicates = duplicates

    windows = [(2, 3), (4, 8), (9, 12)]
    for n, duplicates in [(70, {"im005": "im004"}), (11, {})]:  # 11 images: fewer candidates than the depth (12)
        features = Features(n, duplicates)
        draws = SharedWindowDraws(windows, targets_per_reference=2 if n > 11 else 1, seed=3, slice_size=32)
        for q1, q2 in windows:
            expected = sample_rank_window(features.features, features.ids, q1, q2, draws.tpr, 3, duplicates=duplicates)
            mined = draws.mined(features, q1, q2)
            assert [(p["reference_id"], p["target_id"], p["rank"]) for p in mined["pairs"]] == [
                (p["reference_id"], p["target_id"], p["rank"]) for p in expected.pairs
            ], (n, q1, q2)
            assert mined["pairs"][0]["score"] == pytest.approx(expected.pairs[0]["score"]) if expected.pairs else True
            assert mined["too_few"] == list(expected.too_few)
        assert draws.ranking_passes == 1
    assert SharedWindowDraws(windows).mined(Features(11, {}), 9, 12)["too_few"] == [f"im{i:03d}" for i in range(11)]
    with pytest.raises(ValueError, match=r"\[1, 1\]"):
        SharedWindowDraws([(1, 1), (4, 8)], targets_per_reference=2)


def test_parse_windows():
    assert parse_windows("1-1,11-20, 31-40,51-60,91-100") == [(1, 1), (11, 20), (31, 40), (51, 60), (91, 100)]
    assert parse_windows("5,7-9") == [(5, 5), (7, 9)]
    for bad, message in [("20-11", "1 <= q1 <= q2"), ("a-b", "q1-q2"), ("1-2,1-2", "twice"), ("", "no window")]:
        with pytest.raises(ValueError, match=message):
            parse_windows(bad)


def test_window_sweep_end_to_end(tmp_path, benchmarks_dir, blip2_checkpoint, monkeypatch, capsys):
    register_agent_backend("sweep-colour", ColourAgent)
    ColourAgent.captioned = []
    photos = _photos(tmp_path / "photos", 24)
    fashioniq_images(benchmarks_dir, tmp_path / "fiq", n_queries=3, n_extra=24)
    embedded = _counting(monkeypatch, image_features_module, "encode_images", lambda m, p, images, **k: len(images))
    ranked = _counting(monkeypatch, mining_module, "topk_token_similarity", lambda q, *a, **k: q.shape[0])
    out = tmp_path / "sweep"
    argv = [
        "--images", str(photos), "--model", str(blip2_checkpoint), "--output", str(out),
        "--windows", ",".join(f"{a}-{b}" for a, b in WINDOWS), "--agent", "sweep-colour",
        "--train_args", "--max_steps 2 --per_device_train_batch_size 4 --learning_rate 1e-3 --use_cpu true "
        "--report_to none --save_strategy no --disable_tqdm true --dataloader_num_workers 0",
        "--benchmarks", "fashioniq", "--benchmark_roots", f"fashioniq={tmp_path / 'fiq'}",
        "--annotations_dirs", f"fashioniq={benchmarks_dir / 'fashioniq'}", "--categories", "dress",
        "--eval_max_queries", "3", "--eval_batch_size", "8", "--eval_num_workers", "0", "--allow_missing",
        "--vision_cache_dtype", "float32",
        "--device", "cpu", "--no_progress",
    ]  # fmt: skip
    assert command.main(argv) == 0, capsys.readouterr().err[-3000:]
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    results = json.loads((out / "results.json").read_text())
    assert printed["windows"] == list(results["windows"]) == ["1-1", "3-4", "6-8"]

    # build: one embedding pass, one ranking pass, one caption per image whatever the number of windows
    assert sum(embedded) == 24
    assert results["ranking_passes"] == 1 and sum(ranked) == 24
    assert len(ColourAgent.captioned) == len(set(ColourAgent.captioned))
    features = load_image_features(next((out / "work").glob("features-*")))
    sizes = {results["windows"][k]["triplets_used"] for k in results["windows"]}
    assert len(sizes) == 1 and sizes.pop() == min(results["windows"][k]["triplets_built"] for k in results["windows"])
    import datasets

    for q1, q2 in WINDOWS:
        entry = results["windows"][f"{q1}-{q2}"]
        triplets = datasets.load_dataset(
            "parquet",
            data_files=str(out / "windows" / f"{q1}-{q2}" / "triplets" / "data" / "*.parquet"),
            split="train",
        )
        assert len(triplets) == entry["triplets_used"] > 0
        separate = sample_rank_window(features.features, features.ids, q1, q2, 1, 0, duplicates=features.duplicates)
        allowed = {(p["reference_id"], p["target_id"], p["rank"]) for p in separate.pairs}
        assert {
            (r, t, k) for r, t, k in zip(triplets["reference_id"], triplets["target_id"], triplets["rank"])
        } <= allowed
        # train: one model per window, from the BLIP-2 checkpoint; evaluate: the evaluator's own numbers
        assert (Path(entry["model"]) / "model.safetensors").is_file() and entry["train"]["train_loss"] > 0
        assert set(entry["metrics"]["fashioniq"]) == {"dress_R@10", "dress_R@50", "average_R@10", "average_R@50"}
    model, processor = load_model_and_processor(results["windows"]["3-4"]["model"])
    direct = FashionIQEvaluator(
        tmp_path / "fiq", annotations_dir=benchmarks_dir / "fashioniq", categories=["dress"], max_queries=3,
        allow_missing=True, cache_dir="", show_progress=False,
    )(model, processor)  # fmt: skip
    assert results["windows"]["3-4"]["metrics"]["fashioniq"] == pytest.approx(direct, abs=1e-6)
    assert results["base"]["metrics"]["fashioniq"]["dress_R@50"] == 100.0  # tiny gallery: every target in the top 50
    assert any(results["windows"][k]["metrics"]["fashioniq"]["dress_R@10"] < 100 for k in results["windows"])
    assert list((out / "eval_cache" / "vision_outputs").iterdir())  # the frozen ViT's gallery outputs, shared

    # report: one table (base + every window, in order) and one plot
    table = (out / "window_sweep.md").read_text().splitlines()
    assert table[0].startswith("| window | triplets | train loss | fashioniq average_R@10")
    assert [row.split("|")[1].strip() for row in table[2:6]] == ["base (untrained)", "[1, 1]", "[3, 4]", "[6, 8]"]
    assert (out / "window_sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # the report alone, from results.json: nothing is built or trained again
    before = len(ColourAgent.captioned)
    (out / "window_sweep.png").unlink()
    assert command.main([*argv[:8], "--stages", "report"]) == 0
    assert (out / "window_sweep.png").is_file() and len(ColourAgent.captioned) == before


def test_clear_errors(tmp_path, capsys):
    base = ["--images", str(tmp_path), "--model", "m", "--output", str(tmp_path / "o")]
    assert command.main([*base, "--windows", "10-2"]) == 2
    assert "1 <= q1 <= q2" in capsys.readouterr().err
    assert command.main([*base, "--stages", "build,deploy"]) == 2
    assert "deploy" in capsys.readouterr().err
    assert command.main([*base, "--stages", "train"]) == 2
    assert "run the build stage first" in capsys.readouterr().err


def test_build_stage_refuses_several_processes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "8")  # as under `accelerate launch --num_processes 8`
    argv = ["--images", str(tmp_path), "--model", "m", "--output", str(tmp_path / "o"), "--stages", "build,train"]
    assert command.main(argv) == 2
    assert "runs in one process" in capsys.readouterr().err


def test_build_stage_passes_the_pool_sample_and_agent_mode_to_every_window(tmp_path, blip2_checkpoint, capsys):
    """`--per_class` / `--sample_seed` / `--agent_mode direct` reach each window's builder: the windows mine the same
    seeded sample, no caption is asked, and the cards record them."""
    from mra_cir.retrieval.image_features import list_images

    register_agent_backend("sweep-colour", ColourAgent)
    ColourAgent.captioned = []
    photos = _photos(tmp_path / "photos", 16)
    out = tmp_path / "sweep"
    argv = [
        "--images", str(photos), "--model", str(blip2_checkpoint), "--output", str(out), "--windows", "1-1,3-4",
        "--agent", "sweep-colour", "--stages", "build", "--per_class", "10", "--sample_seed", "3",
        "--agent_mode", "direct", "--no_progress",
    ]  # fmt: skip
    assert command.main(argv) == 0, capsys.readouterr().err[-3000:]
    assert ColourAgent.captioned == []  # direct mode: no caption step
    sample = {image_id for image_id, _ in list_images(photos, per_class=10, seed=3)}
    import datasets
    import yaml

    for window in ("1-1", "3-4"):
        folder = out / "windows" / window / "triplets"
        rows = datasets.load_dataset("parquet", data_files=str(folder / "data" / "*.parquet"), split="train")
        assert set(rows["reference_id"]) <= sample and set(rows["target_id"]) <= sample and len(rows) > 0
        assert set(rows["reference_caption"]) == set(rows["target_caption"]) == {""}
        config = yaml.safe_load((folder / "README.md").read_text().split("---")[1])["mra_cir"]["builder_config"]
        assert (config["per_class"], config["sample_seed"], config["agent_mode"]) == (10, 3, "direct")
        assert config["prompt_version"] == "mra-direct-v1"


def test_window_sweep_runs_a_transformers_agent_on_the_device_given(tmp_path, blip2_checkpoint, tiny_vlm, capsys):
    """`window-sweep --agent transformers --agent-device ...` reaches the local agent (the sweep shares the agent
    options of `build-triplets`): a tiny random VLM, asked on `cpu:0` (not the backend's default `cpu`), answers."""
    from mra_cir.dataset_builders.agents import transformers_backend

    devices: list[str] = []
    original = transformers_backend.TransformersAgent.__init__

    def recording(self, *args, **kwargs):
        devices.append(kwargs.get("device"))
        original(self, *args, **kwargs)

    photos = _photos(tmp_path / "photos", 10)
    out = tmp_path / "sweep"
    argv = [
        "--images", str(photos), "--model", str(blip2_checkpoint), "--output", str(out), "--windows", "1-1,2-3",
        "--stages", "build", "--agent", "transformers", "--agent-model", str(tiny_vlm), "--agent-device", "cpu:0",
        "--agent_batch_size", "4", "--max_new_tokens", "6", "--no_progress",
    ]  # fmt: skip
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformers_backend.TransformersAgent, "__init__", recording)
        assert command.main(argv) == 0, capsys.readouterr().err[-3000:]
    assert devices and set(devices) == {"cpu:0"}
    results = json.loads((out / "results.json").read_text())
    assert results["settings"]["agent_device"] == "cpu:0" and results["settings"]["agent"] == "transformers"
    for window in ("1-1", "2-3"):  # every mined pair was answered by the agent (kept or rejected with a reason)
        entry = results["windows"][window]
        assert entry["pairs_mined"] == 10
        assert entry["triplets_built"] + sum(entry["rejected"].values()) == 10


def test_agent_arguments_translate_once_for_every_backend():
    from mra_cir.pipelines import AgentArguments, SweepAgentArguments

    local = AgentArguments(agent="transformers", agent_model="m", agent_device="cuda:1", agent_trust_remote_code=True)
    assert local.agent_options() == {"device": "cuda:1", "trust_remote_code": True}
    served = SweepAgentArguments(agent_url=["http://h:1/v1"], agent_model="m", agent_timeout=5, agent_batch_size=3)
    assert served.agent == "openai" and served.agent_options() == {
        "batch_size": 3, "base_urls": ["http://h:1/v1"], "max_concurrency": 8, "api_key_env": "OPENAI_API_KEY",
        "timeout": 5, "max_retries": 4,
    }  # fmt: skip
    assert served.builder_kwargs()["agent_model"] == "m"
    with pytest.raises(ValueError, match="--agent_url"):
        SweepAgentArguments(agent_model="m").agent_options()
    with pytest.raises(ValueError, match="--agent_model"):
        AgentArguments(agent="transformers").check()
