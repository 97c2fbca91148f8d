"""Load a model and its processor for any command: a saved `MraCirModel` folder or a BLIP-2 image-text retrieval
checkpoint (`Salesforce/blip2-itm-vit-g` layout, folder or Hub id), with the matching processor.

The parameter names of `MraCirModel` are those of transformers' `Blip2ForImageTextRetrieval`, so an official BLIP-2 ITM
checkpoint loads directly; its `Blip2Processor` (BLIP image processor + BERT tokenizer) becomes an `MraCirProcessor`
with the same image settings and tokenizer.

Example:

```python
>>> model, processor = load_model_and_processor("out/mra-cir")                # a trained MraCirModel
>>> model, processor = load_model_and_processor("Salesforce/blip2-itm-vit-g")  # the official BLIP-2 checkpoint
```
"""

from __future__ import annotations

import contextlib
import json
import logging
import os

import torch

logger = logging.getLogger(__name__)

DTYPES = ("float32", "bfloat16", "float16")


def load_processor(name_or_path: str):
    """An [`MraCirProcessor`]: saved as such, or built from a BLIP-2 checkpoint's image processor and tokenizer."""
    from transformers import AutoProcessor, AutoTokenizer, BlipImageProcessorPil

    from .processing_mra_cir import MraCirProcessor

    try:
        processor = AutoProcessor.from_pretrained(name_or_path)
        if isinstance(processor, MraCirProcessor):
            return processor
        return MraCirProcessor(BlipImageProcessorPil(**processor.image_processor.to_dict()), processor.tokenizer)
    except (OSError, ValueError, TypeError, AttributeError) as err:
        logger.info("AutoProcessor could not load %s (%s); building an MraCirProcessor", name_or_path, err)
        return MraCirProcessor(
            BlipImageProcessorPil.from_pretrained(name_or_path), AutoTokenizer.from_pretrained(name_or_path)
        )


def load_model_and_processor(
    name_or_path: str,
    processor_name_or_path: str | None = None,
    device: str | torch.device | None = None,
    dtype: str | None = None,
):
    """`(model, processor)` in eval mode: an `MraCirModel` from a saved folder or a BLIP-2 ITM checkpoint.

    Args:
        name_or_path (`str`): a model folder or a Hub id (`Salesforce/blip2-itm-vit-g`).
        processor_name_or_path (`str`, *optional*): where the processor is (default: `name_or_path`).
        device (`str` or `torch.device`, *optional*): where the model goes (default: stays on the CPU).
        dtype (`str`, *optional*): `"float32"`, `"bfloat16"` or `"float16"` (default: the checkpoint's).

    A BLIP-2 checkpoint has no `logit_temperature` (the learnable temperature of the MRA-CIR loss): it starts at
    `config.logit_temperature_init`, which is expected, so one line says so instead of transformers' LOAD REPORT.

    Raises:
        `FileNotFoundError`: a local-looking path that does not exist, or a folder without `config.json` (it would
        otherwise load with default settings, silently); `OSError` naming the model when a Hub id cannot be loaded.
    """
    from . import MraCirModel

    check_model_source(name_or_path)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    blip2 = _source_model_type(name_or_path) not in (None, MraCirModel.config_class.model_type)
    try:
        with _expected_missing(MraCirModel, BLIP2_ONLY_MISSING if blip2 else ()):
            model = MraCirModel.from_pretrained(name_or_path, dtype=getattr(torch, dtype) if dtype else None)
    except OSError as error:
        raise OSError(f"model {name_or_path!r} could not be loaded: {str(error).splitlines()[0]}") from None
    if blip2:
        logger.warning(
            "%s is a BLIP-2 checkpoint: logit_temperature (not part of BLIP-2) starts at %g, as expected",
            name_or_path,
            model.config.logit_temperature_init,
        )
    if device is not None:
        model = model.to(device)
    return model.eval(), load_processor(processor_name_or_path or name_or_path)


#: parameters of `MraCirModel` that a BLIP-2 image-text retrieval checkpoint cannot have
BLIP2_ONLY_MISSING = ("logit_temperature",)


def _source_model_type(name_or_path: str) -> str | None:
    """`model_type` of the checkpoint's config (None when it cannot be read: `from_pretrained` then says why)."""
    path = os.path.join(name_or_path, "config.json")
    try:
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as handle:
                return json.load(handle).get("model_type")
        from transformers import PretrainedConfig

        return PretrainedConfig.get_config_dict(name_or_path)[0].get("model_type")
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def _expected_missing(model_class, names: tuple[str, ...]):
    """Let `from_pretrained` treat `names` as expected-missing (no LOAD REPORT for them) for one call."""
    if not names:
        yield
        return
    before = model_class._keys_to_ignore_on_load_missing
    model_class._keys_to_ignore_on_load_missing = [*(before or []), *(rf"^{name}$" for name in names)]
    try:
        yield
    finally:
        model_class._keys_to_ignore_on_load_missing = before


def check_model_source(name_or_path: str) -> None:
    """Raise `FileNotFoundError` naming the model when `name_or_path` looks local but is not a model folder (it does
    not exist, or has no `config.json`); a Hub id of the form `user/name` passes."""
    looks_local = os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or os.path.exists(name_or_path)
    if looks_local or name_or_path.count("/") != 1:
        if not os.path.exists(name_or_path):
            raise FileNotFoundError(f"model {name_or_path!r}: no such folder (nor a Hub id of the form 'user/name')")
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise FileNotFoundError(
                f"model {name_or_path!r}: the folder has no config.json (a saved MraCirModel or BLIP-2 checkpoint has "
                "one); refusing to load default settings"
            )


__all__ = ["DTYPES", "check_model_source", "load_model_and_processor", "load_processor"]
