"""The local agent backend: an image-text-to-text model run in-process with transformers.

`AutoModelForImageTextToText` + `AutoProcessor`; each request becomes one user turn (the images, then the text)
rendered by the processor's chat template; requests are generated in batches (left padding), greedy by default.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from .base import AgentBackend, AgentPrompts, ChatRequest


class TransformersAgent(AgentBackend):
    """Run a local vision-language model (e.g. a Llava, Qwen2-VL, Idefics3 or SmolVLM checkpoint) as the agent.

    Args:
        model (`str`): a model folder or hub id (`AutoModelForImageTextToText.from_pretrained`).
        prompts (`AgentPrompts` or `str`, *optional*): prompt set or registered prompt version.
        batch_size (`int`, defaults to 8): requests generated together (left-padded).
        max_new_tokens (`int`, defaults to 64): generation budget.
        device (`str`, defaults to "cpu"): where the model runs.
        dtype (`str`, defaults to "auto"): `torch_dtype`/`dtype` passed to `from_pretrained`.
        do_sample (`bool`, defaults to False): greedy unless True (then not reproducible).
        trust_remote_code (`bool`, defaults to False): for checkpoints with custom code.

    The model is loaded on first use (and not pickled), so the backend is cheap to create and to send to workers.

    Example:
        ```python
        >>> agent = TransformersAgent("path/to/vlm", batch_size=4, max_new_tokens=32)
        >>> agent.caption([AgentImage.from_path("cat.jpg")])
        ['a black cat on a sofa']
        ```
    """

    backend_name = "transformers"
    _unpicklable = ("_model", "_processor")

    def __init__(
        self,
        model: str,
        prompts: AgentPrompts | str | None = None,
        batch_size: int = 8,
        max_new_tokens: int = 64,
        device: str = "cpu",
        dtype: str = "auto",
        do_sample: bool = False,
        trust_remote_code: bool = False,
    ):
        super().__init__(prompts=prompts, batch_size=batch_size, max_new_tokens=max_new_tokens)
        self.model_name = str(model)
        self.device = device
        self.dtype = dtype
        self.do_sample = do_sample
        self.trust_remote_code = trust_remote_code
        self._model = None
        self._processor = None

    def _load(self):
        if self._model is None:
            from transformers import AutoModelForImageTextToText, AutoProcessor

            self._processor = AutoProcessor.from_pretrained(self.model_name, trust_remote_code=self.trust_remote_code)
            tokenizer = getattr(self._processor, "tokenizer", None)
            if tokenizer is not None:
                tokenizer.padding_side = "left"
            self._model = AutoModelForImageTextToText.from_pretrained(
                self.model_name, dtype=self.dtype, trust_remote_code=self.trust_remote_code
            ).to(self.device)
            self._model.eval()
        return self._model, self._processor

    @staticmethod
    def _messages(request: ChatRequest) -> list[dict]:
        content: list[dict] = [{"type": "image"} for _ in request.images]
        content.append({"type": "text", "text": request.prompt})
        return [{"role": "user", "content": content}]

    def complete(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        """Generate for each request; requests are grouped by image count and generation budget, in batches."""
        import torch

        model, processor = self._load()
        results: list[str | None] = [None] * len(requests)
        groups: dict[tuple[int, int], list[int]] = {}
        for index, request in enumerate(requests):
            groups.setdefault((len(request.images), request.max_new_tokens), []).append(index)
        for (num_images, max_new_tokens), indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                batch = [requests[i] for i in indices[start : start + self.batch_size]]
                texts = [
                    processor.apply_chat_template(self._messages(r), add_generation_prompt=True, tokenize=False)
                    for r in batch
                ]
                kwargs = {"text": texts, "padding": True, "return_tensors": "pt"}
                if num_images:
                    kwargs["images"] = [[_load_rgb(image.path) for image in r.images] for r in batch]
                inputs = processor(**kwargs).to(self.device)
                with torch.inference_mode():
                    generated = model.generate(
                        **inputs, max_new_tokens=max_new_tokens, do_sample=self.do_sample, num_beams=1
                    )
                new_tokens = generated[:, inputs["input_ids"].shape[1] :]
                decoded = processor.batch_decode(new_tokens, skip_special_tokens=True)
                for offset, text in enumerate(decoded):
                    results[indices[start + offset]] = text.strip()
        return results

    def close(self) -> None:
        self._model = None
        self._processor = None


def _load_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
