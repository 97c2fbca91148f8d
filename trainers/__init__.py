"""Training only: `MraCirTrainer` and its arguments (`trainer.py` beside `training_args.py`), the collator, the batch
sampler, the frozen-ViT output cache and the stage-1 image-text pre-training of the offline stand-in.

Evaluation is its own package (`mra_cir.evaluation`); the trainer takes any evaluator object
(`MraCirTrainer(cir_evaluators=[...])`) and imports none.
"""

from __future__ import annotations

from .collator import MraCirCollator
from .sampler import NoDuplicateTargetSampler
from .trainer import MraCirTrainer
from .training_args import MraCirTrainingArguments
from .vit_cache import VitOutputCache

__all__ = ["MraCirCollator", "MraCirTrainer", "MraCirTrainingArguments", "NoDuplicateTargetSampler", "VitOutputCache"]
