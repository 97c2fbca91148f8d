"""`MraCirTrainingArguments`: the `TrainingArguments` of MRA-CIR fine-tuning (freezing, LoRA, loss, evaluation).

Only the fields that MRA-CIR adds are declared here (plus `remove_unused_columns`, whose default changes: the
collator needs the raw triplet columns); everything else is `transformers.TrainingArguments`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from transformers import TrainingArguments

# The Q-Former's self- and cross-attention `query` / `value` projections (names as in transformers' Blip2QFormer:
# `qformer.encoder.layer.<i>.attention.attention.query`, `qformer.encoder.layer.<i>.crossattention.attention.value`).
# A regular expression, matched by peft against the full module name: it can never hit the vision tower (whose
# attention is one fused `qkv`) nor a language model (peft's BLIP-2 defaults, `q_proj`/`v_proj`, would).
QFORMER_LORA_TARGET_MODULES = r"qformer\.encoder\.layer\.\d+\.(attention|crossattention)\.attention\.(query|value)"

QFORMER_TRAINING_MODES = ("full", "lora", "frozen")
#: metric-name prefixes of the zero-shot benchmarks: no training-time selection may use them (`zero_shot_protocol`)
BENCHMARK_METRIC_PREFIXES = ("fashioniq", "cirr", "circo")


@dataclass
class MraCirTrainingArguments(TrainingArguments):
    r"""
    [`~transformers.TrainingArguments`] for [`MraCirTrainer`], plus the MRA-CIR options below.

    Example:

    ```python
    >>> from mra_cir.trainers.training_args import MraCirTrainingArguments
    >>> args = MraCirTrainingArguments("out", qformer_training="lora", lora_rank=16, learning_rate=1e-4)
    ```
    """

    # ------------------------------------------------------------------------------------------------ what trains
    freeze_vision_model: bool = field(
        default=True,
        metadata={
            "help": "Keep the ViT frozen (the paper). Its outputs never change, so they can be cached "
            "(--cache_vit_outputs)."
        },
    )
    qformer_training: str = field(
        default="full",
        metadata={
            "help": "How the Q-Former side trains: 'full' (every Q-Former weight, the query tokens, the text "
            "embeddings and both projections), 'lora' (peft LoRA adapters on the Q-Former plus --lora_modules_to_save)"
            " or 'frozen' (nothing but the temperature; a sanity baseline).",
            "choices": list(QFORMER_TRAINING_MODES),
        },
    )
    # ------------------------------------------------------------------------------------------------------ LoRA
    lora_rank: int = field(default=16, metadata={"help": "LoRA rank r (with --qformer_training lora)."})
    lora_alpha: float = field(default=32.0, metadata={"help": "LoRA scaling alpha (the update is scaled by alpha/r)."})
    lora_dropout: float = field(default=0.05, metadata={"help": "Dropout on the LoRA input."})
    lora_target_modules: str = field(
        default=QFORMER_LORA_TARGET_MODULES,
        metadata={
            "help": "Modules that get LoRA adapters: a regular expression over full module names (when it holds a "
            "regex character), or a comma-separated list of name suffixes (peft matching). Default: the Q-Former's self- and cross-attention query/value "
            "(never peft's BLIP-2 defaults, which target a language model this model does not have)."
        },
    )
    lora_modules_to_save: str | None = field(
        default="vision_projection,text_projection",
        metadata={
            "help": "Comma-separated modules trained fully and saved with the adapter under LoRA "
            "(default: both projections). Empty for none."
        },
    )
    # ------------------------------------------------------------------------------------------------------ loss
    gather_negatives: bool = field(
        default=True,
        metadata={
            "help": "Under DDP, score each query against the targets of every process (in-batch negatives across "
            "devices, labels offset by rank); sets the model's config.gather_negatives."
        },
    )
    logit_temperature_init: float | None = field(
        default=None,
        metadata={"help": "Initial InfoNCE temperature tau (logits = cosine / tau). Default: the model config's."},
    )
    learn_temperature: bool | None = field(
        default=None,
        metadata={
            "help": "Learn tau (clamped to the config's [min, max]). Default: True with full training, False with "
            "LoRA (an adapter checkpoint holds only adapter and modules-to-save weights, so tau could not be resumed)."
        },
    )
    avoid_duplicate_targets: bool = field(
        default=True,
        metadata={
            "help": "Sample training batches so that no target id appears twice in one global batch (all processes"
            " together): a duplicate target is a false negative that poisons InfoNCE. Needs a 'target_id' column."
        },
    )
    group_by_reference: bool = field(
        default=False,
        metadata={
            "help": "Keep the triplets of one reference image in one batch (with --avoid_duplicate_targets): its other "
            "mined targets, its near neighbours, become the in-batch negatives that only the text tells apart. Needs "
            "a 'reference_id' column."
        },
    )
    # ------------------------------------------------------------------------------------------------ evaluation
    eval_benchmarks: str | None = field(
        default=None,
        metadata={
            "help": "Comma-separated CIR benchmarks evaluated at each evaluation (fashioniq, cirr, circo; "
            "validation splits), their metrics logged as eval_<metric>. Built by the train script from "
            "--benchmarks_dir; MraCirTrainer itself takes ready evaluators (cir_evaluators=...)."
        },
    )
    zero_shot_protocol: bool = field(
        default=True,
        metadata={
            "help": "Zero-shot: no benchmark split steers training. Refuses a metric_for_best_model (hence best-"
            "checkpoint selection and early stopping) on a benchmark metric (fashioniq_*, cirr_*, circo_*); benchmark"
            " metrics may still be logged (--eval_benchmarks). Select on the held-out triplets (--triplet_holdout: "
            "loss, triplet_R@K) or keep the last checkpoint. False only for supervised / non-zero-shot studies."
        },
    )
    triplet_holdout: float = field(
        default=0.0,
        metadata={
            "help": "Hold out a fraction (< 1) or a number (>= 1) of the training references with their triplets, and "
            "every training triplet sharing an image with them: evaluated at each evaluation as eval_loss (InfoNCE) "
            "and eval_triplet_R@1/5/10/50 (composed query among the slice's targets). 0: none."
        },
    )
    eval_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where the benchmark evaluators of --eval_benchmarks cache the gallery's frozen-ViT outputs across "
            "evaluations (default ~/.cache/mra_cir/gallery_features; '' = no cache)."
        },
    )
    eval_cache_vision_outputs: bool = field(
        default=True,
        metadata={
            "help": "Cache the benchmark galleries' ViT outputs across evaluations (with a frozen ViT only): later "
            "evaluations run only the Q-Former. Disk: ~0.7 MB per image in bfloat16 (89 GB for CIRCO's 123k)."
        },
    )
    # ------------------------------------------------------------------------------------------------------ speed
    cache_vit_outputs: bool = field(
        default=False,
        metadata={
            "help": "Compute the frozen ViT output of every training image once before training (keyed by image id)"
            " and feed it to the model instead of pixels. Needs --freeze_vision_model and 'reference_id'/'target_id'"
            " columns."
        },
    )
    vit_cache_dir: str | None = field(
        default=None,
        metadata={"help": "Where the ViT-output cache is saved and reloaded (default: memory only)."},
    )
    vit_cache_dtype: str = field(
        default="float32",
        metadata={
            "help": "Storage dtype of cached ViT outputs (float32, bfloat16 or float16: half the memory).",
            "choices": ["float32", "bfloat16", "float16"],
        },
    )
    # --------------------------------------------------------------------------------- overridden default values
    remove_unused_columns: bool = field(
        default=False,
        metadata={"help": "Keep the raw triplet columns: the MRA-CIR collator needs them (default False here)."},
    )

    def __post_init__(self):
        if not self.use_cpu and int(os.environ.get("WORLD_SIZE", "1")) > 1 and not _has_accelerator():
            # `accelerate launch --multi_gpu` / torchrun on a CPU-only machine: without use_cpu, TrainingArguments
            # would silently train each process alone (no DDP, no gathered negatives)
            self.use_cpu = True
        super().__post_init__()
        if self.qformer_training not in QFORMER_TRAINING_MODES:
            raise ValueError(
                f"qformer_training must be one of {QFORMER_TRAINING_MODES}, got {self.qformer_training!r}"
            )
        if self.lora_rank < 1:
            raise ValueError(f"lora_rank must be >= 1, got {self.lora_rank}")
        if self.learn_temperature is None:
            self.learn_temperature = self.qformer_training != "lora"
        elif self.learn_temperature and self.qformer_training == "lora":
            raise ValueError(
                "learn_temperature=True is not supported with qformer_training='lora': the adapter checkpoint holds "
                "only adapter and modules-to-save weights, so a learned temperature would be lost on save/resume"
            )
        if self.logit_temperature_init is not None and self.logit_temperature_init <= 0:
            raise ValueError(f"logit_temperature_init must be > 0, got {self.logit_temperature_init}")
        if self.cache_vit_outputs and not self.freeze_vision_model:
            raise ValueError("cache_vit_outputs needs freeze_vision_model=True (a trained ViT's outputs change)")
        if self.triplet_holdout < 0:
            raise ValueError(f"triplet_holdout must be >= 0, got {self.triplet_holdout}")
        selection = (self.metric_for_best_model or "").removeprefix("eval_").lower()
        if self.zero_shot_protocol and selection.startswith(BENCHMARK_METRIC_PREFIXES):
            raise ValueError(
                f"metric_for_best_model={self.metric_for_best_model!r} selects on a benchmark split: not zero-shot "
                "(zero_shot_protocol=True). Select on the held-out triplets (--triplet_holdout 0.02 "
                "--metric_for_best_model triplet_R@10, or loss), keep the last checkpoint (no metric_for_best_model), "
                "or pass --zero_shot_protocol false for a study that is not zero-shot"
            )
        if self.activation_checkpointing and self.activation_checkpointing_kwargs is None:
            # reentrant checkpointing drops the gradient of LoRA weights when a layer's input does not require grad
            self.activation_checkpointing_kwargs = {"use_reentrant": False}
            self.gradient_checkpointing_kwargs = self.activation_checkpointing_kwargs  # the deprecated alias
        if self.ddp_find_unused_parameters is None:
            # every trainable parameter takes part in the loss (the unused ITM head is frozen by the trainer)
            self.ddp_find_unused_parameters = False

    @property
    def lora_target_modules_value(self) -> str | list[str]:
        """`lora_target_modules` as peft wants it: the regular expression, or a list when comma-separated."""
        value = self.lora_target_modules.strip()
        if any(c in value for c in "\\()[]|*+?^$"):
            return value
        return [s.strip() for s in value.split(",") if s.strip()]

    @property
    def lora_modules_to_save_list(self) -> list[str]:
        return [s.strip() for s in (self.lora_modules_to_save or "").split(",") if s.strip()]

    @property
    def eval_benchmarks_list(self) -> list[str]:
        return [s.strip().lower() for s in (self.eval_benchmarks or "").split(",") if s.strip()]


def _has_accelerator() -> bool:
    import torch

    if torch.cuda.is_available():
        return True
    xpu = getattr(torch, "xpu", None)
    mps = getattr(torch.backends, "mps", None)
    return bool((xpu is not None and xpu.is_available()) or (mps is not None and mps.is_available()))


__all__ = [
    "BENCHMARK_METRIC_PREFIXES",
    "MraCirTrainingArguments",
    "QFORMER_LORA_TARGET_MODULES",
    "QFORMER_TRAINING_MODES",
]
