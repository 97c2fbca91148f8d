"""The agent-error study of the quickstart (`--error_study`): the training sets it makes from a verified build, and
the study end to end at a tiny size."""

from __future__ import annotations

import json

import datasets
import pytest

from mra_cir.quickstart import QuickstartArguments
from mra_cir.quickstart.error_study import study_rate, study_table


def _every(reasons: list[str], errors: list[str]) -> datasets.Dataset:
    n = len(reasons)
    return datasets.Dataset.from_dict(
        {"modification_text": [f"text {i}" for i in range(n)], "drop_reason": reasons, "agent_error": errors}
    )


def test_training_sets_of_a_rate_and_the_verifiers_against_the_truth():
    reasons = ["", "not_verified", "cycle_inconsistent", "not_verified,cycle_inconsistent", "", ""] * 10
    errors = ["", "refusal", "", "wrong_value", "missed_change", ""] * 10
    sets, figures = study_rate(_every(reasons, errors), 0.3, budget=50, seed=0, verifiers=["agent", "cycle", "either"])
    assert len(sets["noisy_30"]) == 50  # everything the agent wrote, cut to the budget
    assert "drop_reason" not in sets["noisy_30"].column_names and "agent_error" not in sets["noisy_30"].column_names
    texts = {name: set(s["modification_text"]) for name, s in sets.items()}
    flagged = {name: {f"text {i}" for i, r in enumerate(reasons) if mark in r} for name, mark in
               (("agent", "not_verified"), ("cycle", "cycle_inconsistent"))}  # fmt: skip
    assert len(sets["verified_30_agent"]) == 40 and not texts["verified_30_agent"] & flagged["agent"]
    assert len(sets["verified_30_cycle"]) == 40 and not texts["verified_30_cycle"] & flagged["cycle"]
    assert len(sets["verified_30_either"]) == 30
    assert figures["wrong"] == 0.5 and figures["kinds"] == {"refusal": 10, "wrong_value": 10, "missed_change": 10}
    assert figures["verifiers"]["agent"]["precision"] == 1.0 and figures["verifiers"]["agent"]["recall"] == 0.6667
    clean, _ = study_rate(_every(["", ""], ["", ""]), 0.0, budget=50, seed=0, verifiers=["agent"])
    assert list(clean) == ["clean"]


def test_rates_are_checked():
    with pytest.raises(ValueError, match="error_study"):
        QuickstartArguments(fast=True, error_study="0,1.5")
    with pytest.raises(ValueError, match="error_study_verifiers"):
        QuickstartArguments(fast=True, error_study="0.3", error_study_verifiers="agent,oracle")


def test_the_study_end_to_end_at_a_tiny_size(tmp_path):
    from mra_cir.quickstart.error_study import run_error_study

    args = QuickstartArguments(
        seed=5, output_dir=str(tmp_path), pool_size=120, num_queries=10, cirr_queries=20, circo_queries=10,
        train_steps=4, batch_size=16, window="1-20", window_workers=1, show_progress=False,
        agent_error_kinds="all", error_study="0,0.5", error_study_verifiers="agent", cycle_k=2,
    )  # fmt: skip
    results = run_error_study(args)
    assert results == json.loads((tmp_path / "error_study.json").read_text())
    assert list(results["trained"]) == ["clean", "noisy_50", "verified_50_agent"]
    at_zero, at_half = results["verification"]["0"], results["verification"]["50"]
    assert at_zero["wrong"] == 0 and 0.3 < at_half["wrong"] < 0.6
    assert results["trained"]["verified_50_agent"]["triplets"] < results["trained"]["noisy_50"]["triplets"]
    assert 0 <= results["trained"]["noisy_50"]["cirr_style"]["R@10"] <= 100
    assert "| verified_50_agent |" in study_table([results, results])
