"""The local agent backend: an image-text-to-text model run in-process with transformers.

`AutoModelForImageTextToText` + `AutoProcessor`; each request becomes one user turn (the images, then the text)
rendered by the processor's chat template; requests are generated in batches (left padding), greedy by default.

A checkpoint that needs its own code (an `auto_map` in its config for a `model_type` transformers does not have) runs
only with `trust_remote_code=True` (`--agent-trust-remote-code`), an explicit opt-in that is part of the response-cache
key. A remote-code model with an image-text-to-text class goes through the processor path above; one with a
MiniCPM-V-style chat API (`model.chat(image=None, msgs=[{"role": "user", "content": [images..., text]}],
tokenizer=...)`, e.g. `openbmb/MiniCPM-V-2_6`, the paper's agent) is driven through `chat`, one request at a time.
"""

from __future__ import annotations

import os
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
        trust_remote_code (`bool`, defaults to False): run the checkpoint's own code (see the module docstring); only
            for checkpoints you trust. Off, a checkpoint that needs it is refused with an error saying what to do.

    The model is loaded on first use (and not pickled), so the backend is cheap to create and to send to workers. The
    response-cache key covers the sampling settings, the dtype and the model folder's file contents (`cache_settings`).

    Example:
        ```python
        >>> agent = TransformersAgent("path/to/vlm", batch_size=4, max_new_tokens=32)
        >>> agent.caption([AgentImage.from_path("cat.jpg")])
        ['a black cat on a sofa']
        ```
    """

    backend_name = "transformers"
    _unpicklable = ("_model", "_processor", "_tokenizer")

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
        self._tokenizer = None
        self._weights: str | None = None
        if os.path.isfile(os.path.join(self.model_name, "config.json")):
            self.uses_chat_api()  # a local checkpoint that needs its own code is refused now, not at its first request

    def cache_settings(self) -> dict:
        """Sampling, the dtype and the content of a local model folder (its files' SHA-256, computed once and kept in a
        memo): new weights saved under the same folder name are a new model, not a cache hit."""
        if self._weights is None:
            import hashlib
            import json

            from mra_cir.retrieval.content_hashes import folder_content

            files = folder_content(self.model_name)
            self._weights = hashlib.sha256(json.dumps(files).encode()).hexdigest()[:16] if files else ""
        settings = {"do_sample": self.do_sample, "dtype": str(self.dtype), "weights": self._weights}
        if self.trust_remote_code:  # the checkpoint's own code runs (and may answer differently from transformers')
            settings["trust_remote_code"] = True
        return settings

    def uses_chat_api(self) -> bool:
        """Whether the model is driven through its own `chat` method (a remote-code checkpoint without an
        image-text-to-text class, e.g. MiniCPM-V-2.6); raises `ValueError` for a checkpoint that needs its own code
        when `trust_remote_code` is off."""
        from transformers import PretrainedConfig
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

        config = PretrainedConfig.get_config_dict(self.model_name)[0]
        auto_map = config.get("auto_map") or {}
        if not auto_map or (config.get("model_type") in CONFIG_MAPPING_NAMES and not self.trust_remote_code):
            return False
        if not self.trust_remote_code:
            raise ValueError(
                f"agent model {self.model_name!r} needs its own code (config auto_map: {sorted(auto_map)}; model_type "
                f"{config.get('model_type')!r} is not in transformers): pass trust_remote_code=True "
                "(--agent-trust-remote-code) if you trust it, or serve it with vLLM and use --agent openai"
            )
        return "AutoModelForImageTextToText" not in auto_map

    def _load(self):
        if self._model is None and self.uses_chat_api():
            from transformers import AutoModel, AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model_name, trust_remote_code=True)
            model = AutoModel.from_pretrained(self.model_name, dtype=self.dtype, trust_remote_code=True)
            if not callable(getattr(model, "chat", None)):
                raise ValueError(
                    f"agent model {self.model_name!r} ({type(model).__name__}) has neither an image-text-to-text "
                    "class nor a chat(image, msgs, tokenizer) method: the transformers backend cannot drive it"
                )
            self._model = model.to(self.device).eval()
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
        """Generate for each request; requests are grouped by image count and generation budget, in batches (a
        chat-API model: one request at a time)."""
        import torch

        model, processor = self._load()
        if self._tokenizer is not None:
            return [self._chat(model, request) for request in requests]
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

    def _chat(self, model, request: ChatRequest) -> str:
        """One request through a MiniCPM-V-style `chat`: the images (PIL) then the text as one user turn; greedy
        unless `do_sample` (`num_beams=1` replaces MiniCPM-V's default 3-beam search when not sampling)."""
        import torch

        content = [*(_load_rgb(image.path) for image in request.images), request.prompt]
        with torch.inference_mode():
            answer = model.chat(
                image=None, msgs=[{"role": "user", "content": content}], tokenizer=self._tokenizer,
                sampling=self.do_sample, max_new_tokens=request.max_new_tokens, num_beams=1,
            )  # fmt: skip
        if not isinstance(answer, str):
            raise TypeError(f"{type(model).__name__}.chat returned {type(answer).__name__}, not the answer's text")
        return answer.strip()

    def close(self) -> None:
        self._model = None
        self._processor = None
        self._tokenizer = None


def _load_rgb(path: str) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")
