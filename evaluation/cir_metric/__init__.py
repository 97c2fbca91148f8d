"""The `evaluate` module of the CIR metrics: `evaluate.load(mra_cir.evaluation.cir_metric.MODULE_DIR, "map")`."""

from __future__ import annotations

import os

MODULE_DIR = os.path.dirname(os.path.abspath(__file__))

__all__ = ["MODULE_DIR"]
