"""The MRA agent: caption each image, then write the modification text from both images and both captions.

`base` (the backend interface and request types), `prompts` (versioned prompts), `cache` (the on-disk response cache
and `CachedAgent`), `filters` (output hygiene, counted rejections), `registry` (backends by name, imported lazily),
and one module per backend: `transformers_backend` (a local model), `openai_backend` (any OpenAI-compatible server
fleet). The synthetic world's scene-graph agent lives with the world (`synthetic_world.scene_agent`).
"""

from __future__ import annotations

from .base import (
    AgentBackend,
    AgentError,
    AgentImage,
    AgentUnavailableError,
    ChatRequest,
    ModificationRequest,
    file_sha256,
    parse_yes_no,
)
from .cache import CachedAgent, ResponseCache
from .filters import OutputFilter
from .prompts import DEFAULT_PROMPT_VERSION, DIRECT_PROMPT_VERSION, AgentPrompts, get_prompts, register_prompts
from .registry import available_agent_backends, make_agent, register_agent_backend

__all__ = [
    "DEFAULT_PROMPT_VERSION",
    "DIRECT_PROMPT_VERSION",
    "AgentBackend",
    "AgentError",
    "AgentImage",
    "AgentPrompts",
    "AgentUnavailableError",
    "CachedAgent",
    "ChatRequest",
    "ModificationRequest",
    "OutputFilter",
    "ResponseCache",
    "available_agent_backends",
    "file_sha256",
    "get_prompts",
    "make_agent",
    "parse_yes_no",
    "register_agent_backend",
    "register_prompts",
]
