"""The agent registry: backend names -> lazy factories, so that `make_agent("scene")` works from a fresh process.

A built-in backend is registered by the *import path* of its class (`"module:Class"`), imported only when it is first
made: the registry imports no backend module, and no backend module imports the registry, so there is no import
circle and no import side effect to rely on. A user's backend is registered with a class or any callable:

```python
>>> from mra_cir.dataset_builders.agents import make_agent, register_agent_backend
>>> register_agent_backend("colour", ColourAgent)       # a subclass of AgentBackend, or a factory function
>>> agent = make_agent("colour")
>>> make_agent("openai", model="openbmb/MiniCPM-V-2_6", base_urls=["http://gpu1:8000/v1"])
```
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from .base import AgentBackend

AgentFactory = Callable[..., AgentBackend]

#: built-in backends, by import path (resolved on first use)
BUILTIN_BACKENDS: dict[str, str] = {
    "transformers": "mra_cir.dataset_builders.agents.transformers_backend:TransformersAgent",
    "openai": "mra_cir.dataset_builders.agents.openai_backend:OpenAIAgent",
    "scene": "mra_cir.dataset_builders.synthetic_world.scene_agent:make_scene_agent",
}
_REGISTRY: dict[str, AgentFactory | str] = dict(BUILTIN_BACKENDS)


def register_agent_backend(name: str, factory: AgentFactory | str) -> None:
    """Make `make_agent(name, **kwargs)` call `factory(**kwargs)`.

    Args:
        name (`str`): the backend name (`MraTripletsConfig.agent`, `--agent`); re-registering a name replaces it.
        factory (`Callable` or `str`): a class or function returning an [`AgentBackend`], or `"module:attribute"`
            imported on first use.
    """
    if not name or not (callable(factory) or (isinstance(factory, str) and ":" in factory)):
        raise ValueError("register_agent_backend needs a non-empty name and a callable (or 'module:attribute')")
    _REGISTRY[name] = factory


def available_agent_backends() -> list[str]:
    """The registered backend names."""
    return sorted(_REGISTRY)


def agent_factory(name: str) -> AgentFactory:
    """The factory registered under `name` (imported now if it was registered by import path)."""
    if name not in _REGISTRY:
        raise KeyError(f"unknown agent backend {name!r}; available: {available_agent_backends()}")
    factory = _REGISTRY[name]
    if isinstance(factory, str):
        module, _, attribute = factory.partition(":")
        factory = getattr(importlib.import_module(module), attribute)
        _REGISTRY[name] = factory
    return factory


def make_agent(name: str, **kwargs) -> AgentBackend:
    """Create a registered backend: `"transformers"` (`model=DIR`), `"openai"` (`model=ID, base_urls=[...]`),
    `"scene"` (the synthetic world's scene-graph agent: `scene_graphs={id: graph}`, or `model=` a `metadata.jsonl` with
    `file_name` and `scene_graph` or a folder holding one), or any name added with [`register_agent_backend`]."""
    return agent_factory(name)(**kwargs)


__all__ = ["BUILTIN_BACKENDS", "agent_factory", "available_agent_backends", "make_agent", "register_agent_backend"]
