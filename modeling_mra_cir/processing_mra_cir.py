"""`MraCirProcessor`: a PIL image processor (no torchvision) and a BERT-style tokenizer behind one call."""

from __future__ import annotations

from transformers import BatchFeature, ProcessorMixin


class MraCirProcessor(ProcessorMixin):
    r"""
    Turns reference images, modification texts and target images into `MraCirModel` inputs.

    Args:
        image_processor ([`~transformers.BlipImageProcessorPil`] or any image processor): resizes and normalises
            images to the vision tower's size (BLIP-2 uses 224 px, CLIP mean/std).
        tokenizer ([`~transformers.PreTrainedTokenizerBase`]): a BERT-style tokenizer ([CLS] text [SEP]), as the
            Q-Former was trained with.

    Example:

    ```python
    >>> inputs = processor(images=[ref], text=["make it red"], target_images=[tgt], return_tensors="pt")
    >>> out = model(**inputs)  # reference_pixel_values, input_ids, attention_mask, target_pixel_values
    ```
    """

    def __init__(self, image_processor, tokenizer, **kwargs):
        tokenizer.return_token_type_ids = False
        super().__init__(image_processor, tokenizer, **kwargs)

    def __call__(
        self,
        images=None,
        text: str | list[str] | None = None,
        target_images=None,
        return_tensors: str | None = "pt",
        padding: bool | str = True,
        truncation: bool = True,
        max_length: int | None = 64,
        **kwargs,
    ) -> BatchFeature:
        """Process any of `images` (references, or gallery images alone), `text` and `target_images`.

        Returns:
            [`~transformers.BatchFeature`] with `pixel_values` (images without targets), or
            `reference_pixel_values` + `target_pixel_values` (when `target_images` is given), and `input_ids` +
            `attention_mask` (when `text` is given).
        """
        if images is None and text is None and target_images is None:
            raise ValueError("MraCirProcessor needs at least one of images, text or target_images")
        data: dict = {}
        if text is not None:
            if isinstance(text, str):
                text = [text]
            if not isinstance(text, (list, tuple)) or not all(isinstance(t, str) for t in text):
                raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}")
            encoded = self.tokenizer(
                list(text),
                padding=padding,
                truncation=truncation,
                max_length=max_length,
                return_token_type_ids=False,
                return_tensors=return_tensors,
            )
            data["input_ids"] = encoded["input_ids"]
            data["attention_mask"] = encoded["attention_mask"]
        image_key = "reference_pixel_values" if target_images is not None else "pixel_values"
        if images is not None:
            data[image_key] = self.image_processor(images, return_tensors=return_tensors, **kwargs)["pixel_values"]
        if target_images is not None:
            data["target_pixel_values"] = self.image_processor(target_images, return_tensors=return_tensors, **kwargs)[
                "pixel_values"
            ]
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self) -> list[str]:
        return ["reference_pixel_values", "input_ids", "attention_mask", "target_pixel_values"]


__all__ = ["MraCirProcessor"]
