"""What trains and how: `prepare_model_for_training` applies the arguments' freezing (the ViT stays frozen), the
Q-Former mode (full, LoRA through peft on its `query`/`value` only, or frozen), the temperature and the negatives'
gathering to an `MraCirModel`."""

from __future__ import annotations

import torch
from torch import nn

from .training_args import MraCirTrainingArguments

# what `qformer_training="full"` trains (the ViT and the unused ITM head stay frozen)
QFORMER_SIDE_PREFIXES = ("query_tokens", "embeddings.", "qformer.", "vision_projection.", "text_projection.")


def is_peft(model: nn.Module) -> bool:
    """Whether `model` is a `peft.PeftModel` (LoRA)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def base_model(model: nn.Module) -> nn.Module:
    """The `MraCirModel` inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if is_peft(model) else model


def prepare_model_for_training(model: nn.Module, args: MraCirTrainingArguments) -> nn.Module:
    """Apply the arguments' freezing, LoRA, temperature and negative-gathering settings to an `MraCirModel`.

    Returns the model to train: the same model (full / frozen Q-Former) or a `peft.PeftModel` (LoRA). Idempotent: a
    model already prepared is returned unchanged.
    """
    if getattr(model, "_mra_cir_prepared", False) or is_peft(model):
        return model
    config = model.config
    config.gather_negatives = bool(args.gather_negatives)
    if args.logit_temperature_init is not None:
        tau = float(args.logit_temperature_init)
        if not config.logit_temperature_min <= tau <= config.logit_temperature_max:
            raise ValueError(
                f"logit_temperature_init={tau} is outside the model's clamp range "
                f"[{config.logit_temperature_min}, {config.logit_temperature_max}]"
            )
        with torch.no_grad():
            model.logit_temperature.fill_(tau)
        config.logit_temperature_init = tau
    if not args.freeze_vision_model and args.qformer_training != "full":
        raise ValueError("freeze_vision_model=False needs qformer_training='full'")
    mode = args.qformer_training
    for name, param in model.named_parameters():
        if name == "logit_temperature":
            param.requires_grad_(bool(args.learn_temperature))
        elif name.startswith("vision_model."):
            param.requires_grad_(not args.freeze_vision_model)
        elif name.startswith(QFORMER_SIDE_PREFIXES):
            param.requires_grad_(mode == "full")
        else:  # itm_head: not used by retrieval (a trainable unused parameter would stall DDP)
            param.requires_grad_(False)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=args.lora_rank,
            lora_alpha=args.lora_alpha,
            lora_dropout=args.lora_dropout,
            target_modules=args.lora_target_modules_value,
            modules_to_save=args.lora_modules_to_save_list or None,
            bias="none",
        )
        model = get_peft_model(model, lora)
        hit = [n for n, _ in model.named_modules() if n.endswith("lora_A")]
        if not hit or any(".vision_model." in n for n in hit):
            raise ValueError(f"lora_target_modules={args.lora_target_modules!r} must select Q-Former modules only")
    elif not any(p.requires_grad for p in model.parameters()):
        raise ValueError("nothing to train: qformer_training='frozen' with learn_temperature=False")
    model._mra_cir_prepared = True
    return model


__all__ = ["QFORMER_SIDE_PREFIXES", "base_model", "is_peft", "prepare_model_for_training"]
