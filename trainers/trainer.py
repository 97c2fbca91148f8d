"""`MraCirTrainer`: `transformers.Trainer` for MRA-CIR (max-sim InfoNCE, optional LoRA, CIR evaluation, model card).

It overrides only what MRA-CIR needs: the loss (through `model(**inputs)`, so that DDP synchronises gradients and the
model gathers negatives across processes), the training sampler (no duplicate target in a global batch), the
evaluation (CIR benchmark metrics merged under `eval_`), and saving (the model card; the merged LoRA model).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import Trainer
from transformers.trainer_utils import speed_metrics
from transformers.utils import logging

from .collator import MraCirCollator, record_special_token_ids
from .freezing_and_lora import base_model, is_peft, prepare_model_for_training
from .holdout import TripletRecallEvaluator, split_holdout
from .sampler import NoDuplicateTargetSampler
from .training_args import MraCirTrainingArguments
from .vit_cache import VitOutputCache

logger = logging.get_logger(__name__)

SUMMARY_ARGS = (
    "learning_rate",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "num_train_epochs",
    "max_steps",
    "warmup_steps",
    "weight_decay",
    "lr_scheduler_type",
    "optim",
    "seed",
    "bf16",
    "fp16",
    "activation_checkpointing",
    "freeze_vision_model",
    "qformer_training",
    "gather_negatives",
    "logit_temperature_init",
    "learn_temperature",
    "avoid_duplicate_targets",
    "group_by_reference",
    "cache_vit_outputs",
    "zero_shot_protocol",
    "triplet_holdout",
    "metric_for_best_model",
    "load_best_model_at_end",
)
LORA_SUMMARY_ARGS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_modules_to_save")


class MraCirTrainer(Trainer):
    r"""
    [`~transformers.Trainer`] for MRA-CIR fine-tuning.

    Args:
        model ([`MraCirModel`]): the model; frozen / wrapped with LoRA according to `args` (see
            [`prepare_model_for_training`]).
        args ([`MraCirTrainingArguments`]): training arguments.
        train_dataset / eval_dataset (`datasets.Dataset`, *optional*): triplet datasets (the builder's features);
            the eval loss is the InfoNCE over each eval batch (no cross-process negatives in evaluation).
        processing_class ([`MraCirProcessor`]): builds the default [`MraCirCollator`]; saved next to the model.
        cir_evaluators (`Sequence[Callable]`, *optional*): objects with `__call__(model, processor=None) ->
            dict[str, float]` (e.g. `mra_cir.evaluation.CirrEvaluator`); run at each evaluation, their metrics merged
            as `eval_<benchmark>_<metric>` (`eval_<metric>` for an evaluator without a `benchmark` attribute), also
            without an `eval_dataset`. Under DDP an evaluator with `supports_distributed = True` (the benchmark
            evaluators) runs on every process, each encoding its shard of the gallery; others run on the main
            process; the main process's metrics are shared. Zero-shot runs log benchmark metrics but never select on
            them (`args.zero_shot_protocol`).
        vit_cache ([`VitOutputCache`], *optional*): precomputed ViT outputs; built (and saved to
            `args.vit_cache_dir`) when `args.cache_vit_outputs` and none is given.
        dataset_name (`str`, *optional*): how the model card names the training data (default: from the dataset's
            info).
        **kwargs: passed to [`~transformers.Trainer`].

    Example:

    ```python
    >>> args = MraCirTrainingArguments("out", per_device_train_batch_size=64, learning_rate=1e-5, bf16=True)
    >>> trainer = MraCirTrainer(model, args, train_dataset=triplets, processing_class=processor)
    >>> trainer.train()
    >>> trainer.save_model()  # model + processor + README.md model card
    ```
    """

    loss_is_scaled_for_ga = False  # the loss is a per-batch mean: Trainer divides it by the accumulation steps

    def __init__(
        self,
        model: nn.Module,
        args: MraCirTrainingArguments,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        data_collator: Callable | None = None,
        cir_evaluators: Sequence[Callable[..., dict[str, float]]] | None = None,
        vit_cache: VitOutputCache | None = None,
        dataset_name: str | None = None,
        **kwargs,
    ):
        if not isinstance(args, MraCirTrainingArguments):
            raise TypeError(f"MraCirTrainer needs MraCirTrainingArguments, got {type(args).__name__}")
        self.base_model_name = getattr(base_model(model), "name_or_path", None) or None
        if processing_class is not None:
            record_special_token_ids(base_model(model).config, processing_class)
        model = prepare_model_for_training(model, args)
        if data_collator is None:
            if processing_class is None:
                raise ValueError("MraCirTrainer needs processing_class (an MraCirProcessor) or a data_collator")
            data_collator = MraCirCollator(processing_class)
        self.cir_evaluators = list(cir_evaluators or [])
        self.dataset_name = dataset_name or _dataset_name(train_dataset)
        self.holdout_report: dict | None = None
        if args.triplet_holdout and train_dataset is not None:
            if eval_dataset is not None:
                raise ValueError(
                    "give either eval_dataset or args.triplet_holdout (a slice of train_dataset), not both"
                )
            train_dataset, eval_dataset, self.holdout_report = split_holdout(
                train_dataset, args.triplet_holdout, args.data_seed if args.data_seed is not None else args.seed
            )
            logger.info("held-out triplets: %s", self.holdout_report)
            self.cir_evaluators.append(
                TripletRecallEvaluator(
                    eval_dataset, args.per_device_eval_batch_size, num_workers=args.dataloader_num_workers
                )
            )
        # Trainer refuses eval_strategy without an eval_dataset; CIR evaluators alone are enough here
        restore = None
        if eval_dataset is None and self.cir_evaluators and args.eval_strategy != "no":
            restore, args.eval_strategy = args.eval_strategy, "no"
        try:
            super().__init__(
                model=model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                **kwargs,
            )
        finally:
            if restore is not None:
                args.eval_strategy = restore
        if vit_cache is None and args.cache_vit_outputs and train_dataset is not None:
            vit_cache = self._build_vit_cache([d for d in (train_dataset, eval_dataset) if d is not None])
        self.vit_cache = vit_cache
        if vit_cache is not None:
            if not isinstance(self.data_collator, MraCirCollator):
                raise ValueError("the ViT-output cache works through MraCirCollator (data_collator must be one)")
            self.data_collator.vit_cache = vit_cache
            # cached images need not be decoded: keep the image columns as bytes (decoded only on a cache miss)
            self.train_dataset = _undecoded(self.train_dataset)
            if self.eval_dataset is not None and not isinstance(self.eval_dataset, dict):
                self.eval_dataset = _undecoded(self.eval_dataset)

    # ------------------------------------------------------------------------------------------------------- loss
    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ):
        """Max-sim InfoNCE of the batch, from `model(**inputs)` (the DDP wrapper when distributed, so gradients are
        synchronised; the model gathers negatives across processes itself)."""
        outputs = model(**inputs, return_loss=True)
        return (outputs.loss, outputs) if return_outputs else outputs.loss

    # ---------------------------------------------------------------------------------------------------- sampler
    def _get_train_sampler(self, train_dataset=None):
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        columns = getattr(dataset, "column_names", None) or []
        if not self.args.avoid_duplicate_targets or "target_id" not in columns:
            if self.args.avoid_duplicate_targets and dataset is not None:
                logger.warning("train dataset has no 'target_id' column: duplicate targets are not kept apart")
            return super()._get_train_sampler(train_dataset)
        return NoDuplicateTargetSampler(
            dataset["target_id"],
            per_device_batch_size=self.args.per_device_train_batch_size,
            world_size=self.args.world_size,
            seed=self.args.data_seed if self.args.data_seed is not None else self.args.seed,
            reference_ids=self._reference_ids(dataset, columns),
        )

    def _reference_ids(self, dataset, columns: list[str]):
        if not self.args.group_by_reference:
            return None
        if "reference_id" not in columns:
            raise ValueError("--group_by_reference needs a 'reference_id' column in the train dataset")
        return dataset["reference_id"]

    # ------------------------------------------------------------------------------------------------- evaluation
    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict[str, float]:
        """Trainer's evaluation (eval loss over `eval_dataset`) plus the CIR evaluators' metrics; with evaluators
        and no eval dataset, the CIR metrics alone (logged and passed to callbacks like any evaluation)."""
        if eval_dataset is not None or self.eval_dataset is not None:
            return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)
        if not self.cir_evaluators:
            raise ValueError("evaluation needs an eval_dataset or cir_evaluators")
        start = time.time()
        metrics = self._cir_metrics(metric_key_prefix)
        metrics.update(speed_metrics(metric_key_prefix, start))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics

    def evaluation_loop(
        self, dataloader, description, prediction_loss_only=None, ignore_keys=None, metric_key_prefix="eval"
    ):
        output = super().evaluation_loop(dataloader, description, prediction_loss_only, ignore_keys, metric_key_prefix)
        if description == "Evaluation":
            output.metrics.update(self._cir_metrics(metric_key_prefix))
        return output

    def _cir_metrics(self, prefix: str) -> dict[str, float]:
        """Run every CIR evaluator (unwrapped model, eval mode) and share the main process's metrics.

        Under DDP an evaluator with `supports_distributed = True` runs on every process (each encodes its shard of
        the gallery and the shards are gathered once: no process idles in a collective while one encodes the whole
        gallery); any other evaluator runs on the main process only."""
        if not self.cir_evaluators:
            return {}
        distributed = self.args.world_size > 1 and torch.distributed.is_initialized()
        metrics: dict[str, float] = {}
        model = self.accelerator.unwrap_model(self.model)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for evaluator in self.cir_evaluators:
                    everywhere = distributed and getattr(evaluator, "supports_distributed", False)
                    if not (everywhere or self.is_world_process_zero()):
                        continue
                    result = evaluator(model, self.processing_class)
                    if self.is_world_process_zero():
                        self._merge_metrics(metrics, evaluator, result, prefix)
        finally:
            model.train(was_training)
        if distributed:
            shared = [metrics]
            torch.distributed.broadcast_object_list(shared, src=0)
            metrics = shared[0]
        return metrics

    @staticmethod
    def _merge_metrics(metrics: dict[str, float], evaluator, result: dict, prefix: str) -> None:
        benchmark = getattr(evaluator, "benchmark", "")
        for key, value in result.items():
            name = f"{prefix}_{benchmark}_{key}" if benchmark else f"{prefix}_{key}"
            if name in metrics:
                name = f"{prefix}_{type(evaluator).__name__}_{key}"
            if isinstance(value, (int, float)) or (torch.is_tensor(value) and value.numel() == 1):
                metrics[name] = float(value)

    # ------------------------------------------------------------------------------------------------ saving, card
    def training_summary(self) -> dict[str, Any]:
        """What the model card reports: base model, data, settings, latest metrics."""
        args = self.args
        hyper = {name: getattr(args, name) for name in SUMMARY_ARGS}
        if args.qformer_training == "lora":
            hyper.update({name: getattr(args, name) for name in LORA_SUMMARY_ARGS})
        hyper["world_size"] = args.world_size
        hyper["global_batch_size"] = args.per_device_train_batch_size * args.world_size
        hyper["effective_batch_size"] = hyper["global_batch_size"] * args.gradient_accumulation_steps
        metrics: dict[str, float] = {}
        for entry in self.state.log_history:
            for key, value in entry.items():
                if key.startswith("eval_") or key in ("loss", "train_loss"):
                    metrics[key] = value
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        summary: dict[str, Any] = {
            "datasets": [self.dataset_name] if self.dataset_name else [],
            "hyperparameters": hyper,
            "training_progress": {"global_step": self.state.global_step, "epoch": self.state.epoch},
            "num_train_triplets": len(self.train_dataset) if hasattr(self.train_dataset, "__len__") else None,
            "checkpoint_selection": (
                f"best {args.metric_for_best_model}" if args.load_best_model_at_end else "last checkpoint"
            ),
            "trainable_parameters": trainable,
            "metrics": metrics,
        }
        if self.holdout_report:
            summary["held_out_triplets"] = self.holdout_report
        if self.base_model_name:
            summary["base_model"] = self.base_model_name
        return summary

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        base = base_model(self.accelerator.unwrap_model(self.model))
        base.training_summary = self.training_summary()
        super()._save(output_dir, state_dict=state_dict)
        if self.args.should_save and is_peft(self.accelerator.unwrap_model(self.model)):
            # peft wrote its own generic card: replace it with ours (adapter settings included)
            self._write_card(output_dir or self.args.output_dir, base)

    def _write_card(self, output_dir: str, base: nn.Module) -> None:
        from mra_cir.modeling_mra_cir.model_card import render_model_card

        summary = dict(getattr(base, "training_summary", None) or self.training_summary())
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "README.md").write_text(render_model_card(base.config, summary), encoding="utf-8")

    def create_model_card(self, *args, **kwargs) -> None:
        """Write the MRA-CIR model card (README.md) to `output_dir` (used by `push_to_hub`); main process only."""
        if not self.is_world_process_zero():
            return
        base = base_model(self.accelerator.unwrap_model(self.model))
        base.training_summary = self.training_summary()
        self._write_card(self.args.output_dir, base)

    def save_merged_model(self, output_dir: str) -> None:
        """Save a standalone `MraCirModel` with the LoRA adapters merged in (plus the processor and the card).

        Without LoRA this is [`~Trainer.save_model`]. The merge happens on a copy (the trainer's model keeps its
        adapters), so it needs the memory of a second model; main process only.
        """
        model = self.accelerator.unwrap_model(self.model)
        if not is_peft(model):
            self.save_model(output_dir)
            return
        if not self.args.should_save:
            return
        merged = copy.deepcopy(model).merge_and_unload()
        merged.training_summary = {**self.training_summary(), "merged_lora": True}
        merged.save_pretrained(output_dir)
        if self.processing_class is not None:
            self.processing_class.save_pretrained(output_dir)

    # ------------------------------------------------------------------------------------------------ ViT cache
    def _build_vit_cache(self, datasets: list) -> VitOutputCache:
        args = self.args
        dtype = getattr(torch, args.vit_cache_dtype)
        model = self.accelerator.unwrap_model(self.model)
        with args.main_process_first(desc="ViT-output cache"):
            if args.vit_cache_dir and (Path(args.vit_cache_dir) / "vit_outputs.json").is_file():
                cache = VitOutputCache.load(args.vit_cache_dir, model=base_model(model))
            else:
                cache = VitOutputCache(dtype=dtype)
            for dataset in datasets:
                for split in dataset.values() if isinstance(dataset, dict) else [dataset]:
                    cache.fill(
                        model,
                        self.processing_class,
                        split,
                        batch_size=args.per_device_eval_batch_size * 8,
                        device=args.device,
                        show_progress=self.is_world_process_zero() and not self.args.disable_tqdm,
                    )
            if args.vit_cache_dir and self.is_world_process_zero():
                cache.save(args.vit_cache_dir)
        return cache


def _dataset_name(dataset) -> str | None:
    info = getattr(dataset, "info", None)
    if info is None:
        return None
    name = info.dataset_name or info.builder_name
    if name and info.config_name and info.config_name != "default":
        name = f"{name} ({info.config_name})"
    return name


def _undecoded(dataset):
    """The dataset with its `Image` columns left undecoded (bytes/path dicts): a metadata-only change."""
    from datasets import Dataset, Image

    if not isinstance(dataset, Dataset):
        return dataset
    for column in ("reference_image", "target_image"):
        feature = dataset.features.get(column)
        if isinstance(feature, Image) and feature.decode:
            dataset = dataset.cast_column(column, Image(decode=False))
    return dataset


__all__ = ["MraCirTrainer"]
