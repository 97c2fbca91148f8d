"""The quickstart: the CI check (`--fast` must improve R@10 over the untrained composed query) and reproducibility."""

from __future__ import annotations

import json

import pytest
import torch

from mra_cir.quickstart import BENCHMARK_KEYS, METHODS, STAND_IN, QuickstartArguments, parse_window, scale_window


def test_window_scaling():
    assert scale_window("51-60", 2000, 2000) == (51, 60)
    assert scale_window("51-60", 600, 2000) == (16, 18)
    assert scale_window("1-1", 600, 2000) == (1, 1)
    assert scale_window("random", 600, 2000) == (1, 599)
    assert scale_window("91-100", 50, 2000) == (3, 3)
    assert parse_window("51-60") == (51, 60) and parse_window(" 7 ") == (7, 7) and parse_window("Random") is None
    with pytest.raises(ValueError, match="q1-q2"):
        parse_window("51,60")  # one spelling everywhere: the comma separates windows in --windows
    with pytest.raises(ValueError, match="q1 <= q2"):
        parse_window("60-51")


def test_stage1_and_baselines_are_reproducible(tmp_path):
    """Same seed -> same stage-1 weights -> same baseline table (component-level check of `same seed, same table`)."""
    from transformers import set_seed

    from mra_cir.dataset_builders.synthetic_world import build_world, world_texts
    from mra_cir.dataset_builders.synthetic_world.scene_agent import agent_texts
    from mra_cir.modeling_mra_cir import MraCirModel
    from mra_cir.quickstart.benchmarks import evaluate_methods, export_benchmarks
    from mra_cir.quickstart.stage1 import AlignmentArguments, align_image_text
    from mra_cir.tiny import offline_processor, tiny_config

    world = build_world(seed=0, pool_size=40, num_queries=6, cirr_queries=16, circo_queries=6, cache_dir=tmp_path)
    processor = offline_processor(32, texts=world_texts() + agent_texts(), vocab_size=512)
    folders = export_benchmarks(world, tmp_path / "benchmarks")

    def run():
        set_seed(0)
        model = MraCirModel(tiny_config(vocab_size=len(processor.tokenizer), num_query_tokens=4))
        summary = align_image_text(
            model, processor, world.pool["image"], world.pool["caption"],
            AlignmentArguments(max_steps=4, batch_size=16, seed=0), show_progress=False,
        )  # fmt: skip
        baselines = ("image_only", "text_only", "image_text_fusion", "composed_untrained")
        return summary, evaluate_methods(model, processor, folders, tmp_path / "cache", baselines)

    (s1, r1), (s2, r2) = run(), run()
    assert s1["final_loss"] == s2["final_loss"] and s1["final_loss"] != s1["first_loss"]
    assert r1 == r2
    assert list(r1) == list(BENCHMARK_KEYS)
    for benchmark, keys in BENCHMARK_KEYS.items():
        assert set(r1[benchmark]) == set(METHODS) - {"mra_trained"}
        assert all(0 <= r1[benchmark][m][k] <= 100 for m in r1[benchmark] for k in keys)


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory):
    """`mra-cir quickstart --fast` (seed 0) on the shipped stand-in, once for the tests below."""
    from mra_cir.commands.quickstart import main

    out = tmp_path_factory.mktemp("fast")
    torch.set_num_threads(1)
    assert main(["--fast", "--output_dir", str(out), "--show_progress", "false"]) == 0
    return out


def test_fast_quickstart_mra_beats_every_baseline(fast_run):
    """The CI check: `quickstart --fast` (seed 0) starts from the shipped stand-in, trains through the real builder and
    trainer, scores the world's three benchmarks with the real evaluators, and the MRA-trained query beats every
    baseline on the CIRR-style benchmark at R@1 and R@10 and on the CIRCO-style one at mAP@10 (CPU runs are
    deterministic for a seed)."""
    results = json.loads((fast_run / "results.json").read_text())
    assert list(results["benchmarks"]) == list(BENCHMARK_KEYS)
    for benchmark, keys in BENCHMARK_KEYS.items():
        methods = results["benchmarks"][benchmark]["methods"]
        assert list(methods) == list(METHODS)
        assert all(set(methods[m]) == set(keys) for m in METHODS)
    cirr = results["benchmarks"]["cirr_style"]["methods"]
    circo = results["benchmarks"]["circo_style"]["methods"]
    for baseline in METHODS[:-1]:
        assert cirr["mra_trained"]["R@1"] > cirr[baseline]["R@1"], baseline
        assert cirr["mra_trained"]["R@10"] > cirr[baseline]["R@10"], baseline
        assert circo["mra_trained"]["mAP@10"] > circo[baseline]["mAP@10"], baseline
    assert results["backbone"]["kind"] == "pretrained stand-in" and results["backbone"]["path"] == str(STAND_IN)
    assert results["triplets"]["budget_per_window"] == QuickstartArguments(fast=True).num_triplets
    assert (fast_run / "results.png").stat().st_size > 1000
    assert results["window_ablation"] == {} and "skipped" in results["window_ablation_note"]
    assert QuickstartArguments(fast=True).pool_size == results["settings"]["pool_size"]
    for name in ("cirr_style", "circo_style", "single_edit"):  # the exported benchmarks, re-scorable by the CLI
        assert (fast_run / "benchmarks" / name).is_dir()
    rephrased = results["cirr_style_rephrased"]
    assert rephrased["backbone"]["target_caption"]["R@10"] > cirr["mra_trained"]["R@10"]  # the ceiling is above


def test_the_apps_example_queries_rank_their_targets_higher_after_mra(fast_run):
    """The app's example queries (the first of the single-edit benchmark) on the default quickstart's model: the
    MRA-trained composed ranking puts the targets higher than the pretrained stand-in's composed ranking (mean rank,
    a miss counting 51), through the app's own search path."""
    from mra_cir.app import AppArguments, load_engine

    engine = load_engine(AppArguments(quickstart_dir=str(fast_run)))
    assert [m.name for m in engine.models] == ["MRA-trained", "stand-in (before MRA)"]
    bench = fast_run / "benchmarks" / "single_edit"
    info = json.loads((bench / "image_info_unlabeled2017.json").read_text())["images"]
    names = {e["id"]: e["file_name"] for e in info}
    queries = json.loads((bench / "annotations" / "val.json").read_text())
    assert [(names[q["reference_img_id"]], q["relative_caption"]) for q in queries[:8]] == list(engine.examples)
    ranks = {m.name: [] for m in engine.models}
    for query, (reference, text) in zip(queries, engine.examples):
        targets = {names[i] for i in query["gt_img_ids"]}
        picked = engine.reference_from_gallery(reference)
        for result in engine.search(picked, text, "composed", 50, exclude_id=reference):
            ranks[result.name].append(next((r + 1 for r, i in enumerate(result.ids) if i in targets), 51))
    mra, before = ranks["MRA-trained"], ranks["stand-in (before MRA)"]
    assert sum(mra) < sum(before), ranks
    assert sum(a < b for a, b in zip(mra, before)) > len(mra) / 2, ranks


def test_seeds_table_means_spreads_and_margins(tmp_path):
    """`--seeds`: mean, sample std and the MRA margin over the best baseline, from per-seed results (hand-checked)."""
    from mra_cir.quickstart.seeds import markdown, summarize

    def run(shift: float) -> dict:
        benchmarks = {}
        for benchmark, keys in BENCHMARK_KEYS.items():
            rank = {m: i for i, m in enumerate(METHODS)}  # mra_trained last, so highest
            benchmarks[benchmark] = {"methods": {m: {k: rank[m] + shift for k in keys} for m in METHODS}}
        return {"benchmarks": benchmarks}

    summary = summarize({0: run(0.0), 1: run(1.0), 2: run(2.0)})
    cell = summary["table"]["cirr_style"]["mra_trained"]["R@1"]
    assert cell == {"mean": 5.0, "std": 1.0}  # values 4, 5, 6
    margin = summary["margins"]["cirr_style/R@1"]
    assert margin["best_baseline"] == "composed_untrained" and margin["margin"] == 1.0 and margin["spread"] == 1.0
    assert margin["margin_exceeds_spread"] is False and margin["wins_on_every_seed"] is True
    table = markdown(summary)
    assert "`mra-cir quickstart`." in table and "| **mra trained** | **5.0 ± 1.0**" in table
    assert "`mra-cir quickstart --seeds 3 4`." in markdown(summarize({3: run(0.0), 4: run(1.0)}))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"stage1_corpus_size": 1}, "stage1_corpus_size"),
        ({"stage1_edit_pairs": True, "stage1_corpus_size": 0}, "needs --stage1_corpus_size"),
        ({"stage1_itm_negatives": "easy"}, "stage1_itm_negatives"),
        ({"qformer_layers": 0}, "qformer_layers"),
        ({"stage1_batch_size": 1}, "stage1_batch_size"),
        ({"stage1_itg_weight": -1.0}, "stage1_itg_weight"),
        ({"seeds": [1, 1]}, "--seeds"),
        ({"seed": 1_000_000}, "reserved for pretraining"),
        ({"stand_in": "x", "pretrain_from_scratch": True}, "exclude each other"),
    ],
)
def test_stand_in_options_are_validated(options, message):
    with pytest.raises(ValueError, match=message):
        QuickstartArguments(**options)


def test_device_option_is_validated():
    assert QuickstartArguments(device="cpu").device == "cpu"
    assert QuickstartArguments(device="auto").device == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device"):
        QuickstartArguments(device="tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            QuickstartArguments(device="cuda")


def test_help_lists_the_options(capsys):
    from mra_cir.commands.quickstart import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--seed", "--output_dir", "--fast", "--pool_size", "--window", "--ablation"):
        assert option in out


def test_stand_in_options_reach_the_model(tmp_path):
    """A tiny run with a separate edit-pair corpus, ITC + ITG (no ITM), its own stage-1 batch size and 3 Q-Former
    layers: the saved model and the results have them."""
    from mra_cir.commands.quickstart import main
    from mra_cir.modeling_mra_cir import MraCirModel

    torch.set_num_threads(1)
    options = ["--fast", "--pretrain_from_scratch", "--pool_size", "40", "--num_queries", "6", "--stage1_steps", "3",
               "--train_steps", "2", "--batch_size", "8",
               "--num_triplets", "16", "--ablation", "false", "--show_progress", "false", "--qformer_layers", "3",
               "--cirr_queries", "16", "--circo_queries", "6",
               "--stage1_corpus_size", "64", "--stage1_edit_pairs", "true", "--stage1_itm_weight", "0",
               "--stage1_itg_weight", "0.5", "--stage1_batch_size", "16"]  # fmt: skip
    assert main([*options, "--output_dir", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["settings"]["model"]["qformer_layers"] == 3 and results["settings"]["model"]["vit_layers"] == 2
    assert results["backbone"]["final_itm_loss"] is None and results["settings"]["stage1_corpus_size"] == 64
    assert results["backbone"]["final_itg_loss"] > 0 and results["backbone"]["batch_size"] == 16
    model = MraCirModel.from_pretrained(tmp_path / "mra_model")
    assert model.config.qformer_config.num_hidden_layers == 3 and model.config.vision_config.num_hidden_layers == 2
    assert results["environment"]["device"] == "cpu"


def test_window_workers_do_not_change_the_results(tmp_path):
    """The ablation's windows trained in 2 spawned processes give exactly the table of one process, in window order."""
    from mra_cir.commands.quickstart import main

    torch.set_num_threads(1)
    options = ["--fast", "--pretrain_from_scratch", "--pool_size", "40", "--num_queries", "6", "--stage1_steps", "3",
               "--train_steps", "3", "--batch_size", "8",
               "--num_triplets", "16", "--ablation", "true", "--show_progress", "false", "--window_reference_pool_size",
               "40", "--cirr_queries", "16", "--circo_queries", "6"]  # fmt: skip
    tables = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main([*options, "--window_workers", str(workers), "--output_dir", str(out)]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["environment"]["window_workers"] == workers
        assert (out / "mra_model" / "config.json").exists()
        tables[workers] = (results["benchmarks"], results["window_ablation"])
    assert tables[1] == tables[2]
    assert list(tables[2][1]) == ["51-60", "1-1", "11-20", "31-40", "91-100", "random"]
    assert set(tables[2][1]["31-40"]) >= set(BENCHMARK_KEYS["cirr_style"])  # scored on the CIRR-style benchmark
    with pytest.raises(ValueError, match="window_workers"):
        QuickstartArguments(window_workers=0)
