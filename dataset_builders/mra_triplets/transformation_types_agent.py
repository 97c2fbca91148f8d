"""The agent-based transformation-type tagger: a (multimodal) LLM reads each modification text and names its types;
answers are cached like the agent's steps (the same response cache and key, `agents.cache`).

Use it when a model is at hand and the lexical tagger ([`.transformation_types`]) misses a phrasing: it understands
paraphrases the lexicon never listed, at the cost of one call per distinct text (cached, so a re-run costs nothing).
Its answers are parsed leniently (type names or their usual synonyms, separated by commas); an answer that names no
known type falls back to the lexical tagger's labels, counted in `fallbacks`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from ..agents.base import AgentBackend, ChatRequest
from ..agents.cache import ResponseCache, response_key
from .transformation_types import TYPES, tag_types

PROMPT_VERSION = "types-v1"
STEP = "tag_types"
PROMPT = (
    "A modification text asks to change a reference image into a target image. Name the kinds of change it asks for, "
    "as a comma-separated list taken from: color, material, shape, added, removed, count, size, position, background, "
    "style, other. (material: fabric, texture or pattern; shape: shape, cut or the object replaced by another kind; "
    "position: where things are, their pose, or the viewpoint; background: background or setting; style: the look, "
    "a graphic, the photo's mode; other: none of these.) Answer with the list only.\nText: {text}"
)
#: words an answer may use for a type
SYNONYMS = {
    "colour": "color", "texture": "material", "pattern": "material", "replaced": "shape", "replacement": "shape",
    "addition": "added", "add": "added", "removal": "removed", "remove": "removed", "number": "count",
    "cardinality": "count", "viewpoint": "position", "pose": "position", "scene": "background", "setting": "background",
}  # fmt: skip


def parse_types(answer: str | None) -> list[str]:
    """Known type names in an answer, in its order, each once (synonyms mapped; unknown words ignored)."""
    out: list[str] = []
    for word in re.findall(r"[a-z]+", (answer or "").lower()):
        kind = SYNONYMS.get(word, word)
        if kind in TYPES and kind not in out:
            out.append(kind)
    return out


class AgentTypeTagger:
    """Tag texts with an agent backend's `complete` (any LLM backend: transformers, an OpenAI-compatible server).

    Args:
        backend (`AgentBackend`): the model; rule-based backends without `complete` cannot tag.
        cache (`str` or `Path`, *optional*): the response cache file (the builder's `agent_cache.sqlite` works).
        max_new_tokens (`int`, defaults to 24): generation budget per text.

    Calling it on one text gives that text's types; `tag_many` tags a list in the backend's batches.
    """

    def __init__(self, backend: AgentBackend, cache: str | Path | None = None, max_new_tokens: int = 24):
        self.backend = backend
        self.cache = ResponseCache(cache) if cache is not None else None
        self.max_new_tokens = max_new_tokens
        self.calls = 0
        self.fallbacks = 0

    def _key(self, prompt: str) -> str:
        b = self.backend
        return response_key(
            b.backend_name, b.model_name, PROMPT_VERSION, STEP, prompt, [], self.max_new_tokens, b.cache_settings()
        )

    def tag_many(self, texts: Sequence[str]) -> list[list[str]]:
        prompts = [PROMPT.format(text=text) for text in texts]
        keys = [self._key(prompt) for prompt in prompts]
        answers = self.cache.get_many(keys) if self.cache is not None else {}
        missing = list(dict.fromkeys(k for k in keys if k not in answers))
        prompt_of = dict(zip(keys, prompts))
        b = self.backend
        for start in range(0, len(missing), b.batch_size):
            chunk = missing[start : start + b.batch_size]
            replies = b.complete([ChatRequest((), prompt_of[k], self.max_new_tokens) for k in chunk])
            self.calls += len(chunk)
            rows = [(k, r, b.backend_name, b.model_name, PROMPT_VERSION, STEP) for k, r in zip(chunk, replies) if r]
            if self.cache is not None and rows:
                self.cache.put_many(rows)
            answers.update({k: r for k, r in zip(chunk, replies) if r})
        out = []
        for text, key in zip(texts, keys):
            types = parse_types(answers.get(key))
            if not types:
                self.fallbacks += 1
                types = tag_types(text)
            out.append(types)
        return out

    def __call__(self, text: str) -> list[str]:
        return self.tag_many([text])[0]


__all__ = ["PROMPT", "PROMPT_VERSION", "AgentTypeTagger", "parse_types"]
