"""The MRA-CIR model: configuration, model, processor, loading, conversion, card (search: `mra_cir.retrieval`).

Importing this package registers `mra_cir` with `AutoConfig`, `AutoModel` and `AutoProcessor`; a saved model also
carries its code (`auto_map`), so `AutoModel.from_pretrained(dir, trust_remote_code=True)` works without it.
"""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoProcessor

from .configuration_mra_cir import MraCirConfig
from .modeling_mra_cir import (
    MraCirModel,
    MraCirOutput,
    MraCirPreTrainedModel,
    gather_across_processes,
    max_sim_infonce_loss,
    max_sim_logits,
)
from .processing_mra_cir import MraCirProcessor

AutoConfig.register("mra_cir", MraCirConfig, exist_ok=True)
AutoModel.register(MraCirConfig, MraCirModel, exist_ok=True)
AutoProcessor.register(MraCirConfig, MraCirProcessor, exist_ok=True)
MraCirConfig.register_for_auto_class()
MraCirModel.register_for_auto_class("AutoModel")
MraCirProcessor.register_for_auto_class("AutoProcessor")

__all__ = [
    "MraCirConfig",
    "MraCirModel",
    "MraCirOutput",
    "MraCirPreTrainedModel",
    "MraCirProcessor",
    "gather_across_processes",
    "max_sim_infonce_loss",
    "max_sim_logits",
]
