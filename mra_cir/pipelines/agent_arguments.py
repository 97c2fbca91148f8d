"""`AgentArguments`: the agent options of every job that runs an agent (`build-triplets`, `window-sweep`), and their
one translation into the builder's agent options.

Example:

```python
>>> from mra_cir.pipelines import AgentArguments
>>> AgentArguments(agent="transformers", agent_model="models/minicpm", agent_device="cuda:1").agent_options()
{'device': 'cuda:1'}
```
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: the backends that need `--agent_model` (the scene agent can read it from the images' metadata)
NEEDS_MODEL = ("openai", "transformers")


@dataclass
class AgentArguments:
    """The multimodal LLM that captions the images and writes the modification texts."""

    agent: str = field(
        default="transformers",
        metadata={"help": "Agent backend: transformers, openai, or a registered name (e.g. scene)."},
    )
    agent_model: str | None = field(
        default=None,
        metadata={
            "help": "The agent's model: a local folder (transformers), the served model id (openai), or for scene a "
            "metadata.jsonl with file_name and scene_graph (or a folder holding one)."
        },
    )
    agent_url: list[str] = field(
        default_factory=list, metadata={"help": "OpenAI-compatible base URL(s), round-robin (e.g. http://h:8000/v1)."}
    )
    agent_concurrency: int = field(default=8, metadata={"help": "Requests in flight per process (openai backend)."})
    agent_batch_size: int | None = field(default=None, metadata={"help": "Requests per agent batch."})
    agent_device: str = field(default="cpu", metadata={"help": "Device of the transformers backend."})
    agent_trust_remote_code: bool = field(
        default=False,
        metadata={
            "help": "transformers backend: run the agent model's own code (e.g. MiniCPM-V-2.6's model.chat). Only for "
            "checkpoints you trust."
        },
    )
    agent_mode: str = field(
        default="two_step",
        metadata={
            "help": "two_step (caption each image, then compare) or direct (no captions, the paper's ablation).",
            "choices": ["two_step", "direct"],
        },
    )
    agent_timeout: float = field(default=120.0, metadata={"help": "Seconds per request (openai backend)."})
    agent_retries: int = field(default=4, metadata={"help": "Retries after a failed request (openai backend)."})
    api_key_env: str = field(default="OPENAI_API_KEY", metadata={"help": "Environment variable with the API key."})
    prompt_version: str | None = field(
        default=None, metadata={"help": "Registered prompt set (default: the agent mode's, mra-v1 or mra-direct-v1)."}
    )
    max_new_tokens: int = field(default=64, metadata={"help": "Generation budget per answer."})

    def check(self) -> None:
        """Raise `ValueError` naming the missing option (`--agent openai` without URLs, an LLM without a model)."""
        if self.agent == "openai" and not self.agent_url:
            raise ValueError("--agent openai needs --agent_url URL [URL ...]")
        if self.agent in NEEDS_MODEL and not self.agent_model:
            raise ValueError(f"--agent {self.agent} needs --agent_model")

    def agent_options(self) -> dict:
        """The backend's own options (`MraTriplets(agent_options=...)`): those of the chosen backend only (a backend's
        factory refuses options it does not know)."""
        self.check()
        options: dict = {}
        if self.agent_batch_size:
            options["batch_size"] = self.agent_batch_size
        if self.agent == "openai":
            options.update(
                base_urls=list(self.agent_url), max_concurrency=self.agent_concurrency, api_key_env=self.api_key_env,
                timeout=self.agent_timeout, max_retries=self.agent_retries,
            )  # fmt: skip
        elif self.agent == "transformers":
            options["device"] = self.agent_device
            if self.agent_trust_remote_code:
                options["trust_remote_code"] = True
        return options

    def builder_kwargs(self) -> dict:
        """The `MraTriplets` config fields of the agent (`agent`, `agent_model`, `agent_mode`, `prompt_version`,
        `max_new_tokens`) and its `agent_options`."""
        return dict(
            agent=self.agent, agent_model=self.agent_model, agent_mode=self.agent_mode,
            prompt_version=self.prompt_version, max_new_tokens=self.max_new_tokens, agent_options=self.agent_options(),
        )  # fmt: skip


__all__ = ["AgentArguments"]
