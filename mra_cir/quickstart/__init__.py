"""The offline quickstart (`mra-cir quickstart`): every stage of the method on the synthetic world, as stage functions
(`stages`), scored by the real evaluators on the world's exported benchmarks (`benchmarks`), with the window ablation
(`windows`), the report (`report`), several seeds at once (`seeds`) and the diagnostics of a finished run
(`diagnostics`)."""

from __future__ import annotations

from .arguments import ABLATION_WINDOWS, STAND_IN, QuickstartArguments, parse_window, scale_window
from .benchmarks import BENCHMARK_KEYS, METHODS
from .pipeline import run_quickstart

__all__ = [
    "ABLATION_WINDOWS",
    "STAND_IN",
    "BENCHMARK_KEYS",
    "METHODS",
    "QuickstartArguments",
    "parse_window",
    "run_quickstart",
    "scale_window",
]
