"""The model benchmark script runs and reports finite ratios on the same weights (small config, one repeat)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "bench_model.py"


def test_bench_model_small():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--repeats", "1", "--batch-size", "2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    for key in ("image_features_ratio", "composed_features_ratio"):
        assert math.isfinite(report[key]) and report[key] > 0
    assert report["max_abs_diff_image_features"] < 1e-5
