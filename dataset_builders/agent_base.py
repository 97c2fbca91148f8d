"""The agent interface of the MRA triplet builder: caption each image, then write the modification text.

Every backend (a local transformers model, an OpenAI-compatible server fleet, the synthetic world's scene agent)
implements `AgentBackend`. LLM backends implement `complete` (chat requests with images -> raw text) and inherit
`caption` / `modify` / `verify`, which build the prompts; rule-based agents override those three directly.
"""

from __future__ import annotations

import hashlib
from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (image identity for caches and duplicate detection)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class AgentImage:
    """An image as the agent sees it.

    Args:
        id (`str`): the image's id in the source (relative path or dataset id), used in the output dataset.
        path (`str`): a readable file path.
        sha256 (`str`): hash of the file bytes (cache key: a renamed file is not asked again).
    """

    id: str
    path: str
    sha256: str

    @classmethod
    def from_path(cls, path: str | Path, id: str | None = None) -> AgentImage:
        path = Path(path)
        return cls(id=id if id is not None else path.name, path=str(path), sha256=file_sha256(path))


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion: the images (in order) then the text prompt, as a single user turn."""

    images: tuple[AgentImage, ...]
    prompt: str
    max_new_tokens: int = 64


@dataclass(frozen=True)
class ModificationRequest:
    reference: AgentImage
    target: AgentImage
    reference_caption: str
    target_caption: str


class AgentBackend(ABC):
    """Base class of every agent backend.

    Subclasses set `backend_name` (e.g. "transformers", "openai", "scene") and `model_name` (the model id); both go
    into the response cache key with the prompt version, the prompt and the image hashes.
    """

    backend_name: str = "abstract"
    model_name: str = ""

    def complete(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        """Raw generations for chat requests (None for a request that failed after retries)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement complete(); override caption/modify")

    def close(self) -> None:
        """Release resources (HTTP clients, models)."""
