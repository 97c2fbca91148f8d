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

    Raises:
        `FileNotFoundError`: a local-looking path that does not exist, or a folder without `config.json` (it would
        otherwise load with default settings, silently).
    """
    from . import MraCirModel

    _check_source(name_or_path)
    if dtype is not None and dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    model = MraCirModel.from_pretrained(name_or_path, dtype=getattr(torch, dtype) if dtype else None)
    if device is not None:
        model = model.to(device)
    return model.eval(), load_processor(processor_name_or_path or name_or_path)


def _check_source(name_or_path: str) -> None:
    looks_local = os.path.isabs(name_or_path) or name_or_path.startswith((".", "~")) or os.path.exists(name_or_path)
    if looks_local or name_or_path.count("/") != 1:
        if not os.path.exists(name_or_path):
            raise FileNotFoundError(f"model {name_or_path!r}: no such folder (nor a Hub id of the form 'user/name')")
        if not os.path.isfile(os.path.join(name_or_path, "config.json")):
            raise FileNotFoundError(
                f"model {name_or_path!r}: the folder has no config.json (a saved MraCirModel or BLIP-2 checkpoint has "
                "one); refusing to load default settings"
            )


__all__ = ["DTYPES", "load_model_and_processor", "load_processor"]
