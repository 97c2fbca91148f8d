"""`benchmarks/bench_real_shape.py`: the real ViT-g shape (checked without building it), and the script end to end on
its `--small` config: phases timed, features equal to transformers' on shared weights, the ViT frozen."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys

from conftest import REPO_ROOT

SCRIPT = REPO_ROOT / "benchmarks" / "bench_real_shape.py"


def _module():
    spec = importlib.util.spec_from_file_location("bench_real_shape", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_real_config_is_blip2_vit_g():
    config = _module().real_config()
    v, q = config.vision_config, config.qformer_config
    assert (v.hidden_size, v.num_hidden_layers, v.num_attention_heads, v.intermediate_size) == (1408, 39, 16, 6144)
    assert (v.image_size, v.patch_size, v.initializer_range) == (224, 14, 0.02)
    assert (q.hidden_size, q.num_hidden_layers, q.cross_attention_frequency, q.encoder_hidden_size) == (
        768,
        12,
        2,
        1408,
    )
    assert (config.num_query_tokens, config.image_text_hidden_size) == (32, 256)


def test_reference_model_shares_the_weights(tiny_model):
    reference = _module().reference_model(tiny_model)
    ours = dict(tiny_model.named_parameters())
    for name, param in reference.named_parameters():
        assert param.data_ptr() == ours[name].data_ptr(), name  # no second copy of a 1 B-parameter model


def test_script_small():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--small", "--batch-size", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["config"] == "tiny" and report["batch_size"] == 3
    assert set(report["seconds"]) == {"init", "reference_check", "image_features", "composed_features", "train_step"}
    for key in ("images_per_s", "queries_per_s", "train_step_s", "loss", "peak_rss_gib"):
        assert math.isfinite(report[key]) and report[key] > 0, key
    assert report["equal"] and report["features_equal"]
    assert max(report["max_abs_diff"].values()) < 1e-5
    assert report["image_spread"] > 1e-4  # random images give different features: equality is not trivial
    assert 0 < report["trainable_parameters"] < report["parameters"]  # the ViT is frozen
