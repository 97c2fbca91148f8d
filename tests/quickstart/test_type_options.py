"""The quickstart's options for transformation types and pool density, at a tiny size: a pool of variants, balanced
triplets, the adaptive window in the ablation, and the per-type scores; off by default."""

from __future__ import annotations

import pytest

from mra_cir.quickstart import QuickstartArguments


def test_by_type_is_opt_in():
    assert QuickstartArguments(fast=True).by_type is False  # the default run's results.json keeps its keys
    assert QuickstartArguments(fast=True, balance_types="uniform").by_type is True
    assert QuickstartArguments(fast=True, window="adaptive").by_type is True
    assert QuickstartArguments(fast=True, pool_variants_per_root=5, by_type=False).by_type is False
    with pytest.raises(ValueError, match="window"):
        QuickstartArguments(fast=True, ablation_windows=["adaptiv"])
    with pytest.raises(ValueError, match="error study mines fixed ranks"):
        QuickstartArguments(fast=True, window="adaptive", error_study="0,0.3")
    with pytest.raises(ValueError, match="balance_oversample"):
        QuickstartArguments(fast=True, balance_oversample=0)


def test_tiny_run_with_every_type_option(tmp_path):
    from mra_cir.dataset_builders.mra_triplets.transformation_types import TYPES
    from mra_cir.evaluation.by_type import query_weighted_mean
    from mra_cir.quickstart.pipeline import run_quickstart

    args = QuickstartArguments(
        seed=6, output_dir=str(tmp_path), pool_size=80, num_queries=10, cirr_queries=24, circo_queries=12,
        train_steps=3, batch_size=16, window="1-300", num_triplets=60, window_workers=1, show_progress=False,
        pool_variants_per_root=10, pool_duplicate_rate=0.3, pool_edit_weights="shape=1",
        balance_types="uniform", ablation=True, ablation_windows=["adaptive"],
    )  # fmt: skip
    results = run_quickstart(args)
    types = results["triplet_types"]
    assert set(types) == {"1-300", "adaptive"}
    for built in types.values():
        assert built["tagged"]["texts"] == 60 and built["true"]["texts"] == 60
        balance = built["balance"]
        assert balance["target"] == "uniform" and sum(balance["kept"].values()) == 60
        assert sum(balance["candidates"].values()) > 60  # drawn from more candidates than kept
        assert set(balance["kept"]) <= set(TYPES) - {"other"}
    assert results["window_ablation"]["adaptive"]["window_in_pool"].startswith("adaptive(depth ")
    main = results["by_type"]["cirr_style"]["mra_trained"]["types"]
    r1 = results["benchmarks"]["cirr_style"]["methods"]["mra_trained"]["R@1"]
    by_type = results["window_ablation"]["adaptive"]["by_type"]["types"]
    assert sum(g["queries"] for g in by_type.values()) == 24
    ablation = results["window_ablation"]["adaptive"]
    assert query_weighted_mean(by_type, "R@10") == pytest.approx(ablation["R@10"], abs=0.05)
    assert query_weighted_mean(main, "R@1") == pytest.approx(r1, abs=0.05)
    assert set(results["by_type"]["circo_style"]) == {"image_only", "text_only", "image_text_fusion",
                                                      "composed_untrained", "mra_trained"}  # fmt: skip
