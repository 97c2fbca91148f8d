"""Training and evaluation: `MraCirTrainer`, its arguments, collator, sampler, ViT cache, CIR evaluators and metrics."""

from __future__ import annotations

from .batch_sampler import NoDuplicateTargetSampler
from .collator import MraCirCollator
from .mra_cir_config import MraCirTrainingArguments
from .mra_cir_trainer import MraCirTrainer
from .vit_cache import VitOutputCache

__all__ = ["MraCirCollator", "MraCirTrainer", "MraCirTrainingArguments", "NoDuplicateTargetSampler", "VitOutputCache"]
