"""The agent interface of the MRA triplet builder: caption each image, then write the modification text.

Every backend (a local transformers model, an OpenAI-compatible server fleet, the synthetic world's scene agent)
implements `AgentBackend`. LLM backends implement only `complete` (chat requests with images -> raw text) and inherit
`caption` / `modify` / `verify`, which build the prompts from `AgentPrompts`; rule-based agents override `caption`
and `modify` (and optionally `verify`) directly and never see a prompt.

Backends are created by name with [`~.registry.make_agent`]; the builder config stores only the name and primitive
arguments, so a backend is rebuilt in every worker process.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mra_cir.retrieval.content_hashes import file_sha256

from .prompts import AgentPrompts, get_prompts


class AgentError(RuntimeError):
    """A backend failed in a way that must stop the build (not a single bad answer, which is returned as None)."""


class AgentUnavailableError(AgentError):
    """The whole backend is down: no server answered anything (neither a request nor a probe of every URL) within the
    time-out. A single request that keeps timing out while the servers answer others is a failed item, not this.

    The build stops cleanly; everything answered so far is in the response cache, so a re-run resumes.
    """


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
    def from_path(cls, path: str | Path, id: str | None = None, content_hashes=None) -> AgentImage:
        """The image of a file; its hash comes from `content_hashes` (a [`ContentHashes`] memo: read once) when given,
        else from reading the file."""
        path = Path(path)
        digest = content_hashes.sha256(path) if content_hashes is not None else file_sha256(path)
        return cls(id=id if id is not None else path.name, path=str(path), sha256=digest)


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion: the images (in order) then the text prompt, as a single user turn.

    Args:
        images (`tuple[AgentImage, ...]`): zero or more images, sent before the text.
        prompt (`str`): the user text.
        max_new_tokens (`int`, defaults to 64): generation budget (always sent to servers).
    """

    images: tuple[AgentImage, ...]
    prompt: str
    max_new_tokens: int = 64


@dataclass(frozen=True)
class ModificationRequest:
    """Step 2 input: both images and both captions (from step 1)."""

    reference: AgentImage
    target: AgentImage
    reference_caption: str
    target_caption: str


_YES = re.compile(r"^\W*(yes|y|true|correct)\b", re.IGNORECASE)
_NO = re.compile(r"^\W*(no|n|false|incorrect)\b", re.IGNORECASE)


def parse_yes_no(text: str | None) -> bool | None:
    """True for an answer starting with "yes", False for "no", None otherwise (unclear or failed)."""
    if text is None:
        return None
    if _YES.match(text):
        return True
    if _NO.match(text):
        return False
    return None


class AgentBackend:
    """Base class of every agent backend.

    Class attributes / constructor arguments:
        backend_name (`str`): e.g. "transformers", "openai", "scene"; part of the response-cache key.
        model_name (`str`): the model id (or a version string for rule-based agents); part of the cache key.
        prompts (`AgentPrompts`): the prompt set; `prompt_version` (its version) is part of the cache key.
        batch_size (`int`): how many requests the caller should hand over per call; the cache commits after each
            batch, so it also bounds what a crash can lose.
        max_new_tokens (`int`): generation budget of caption/modify requests (verify uses 4).

    Two ways to implement a backend:

    1. **An LLM** (chat model with images): implement `complete(requests) -> list[str | None]` only. `caption`,
       `modify` and `verify` build `ChatRequest`s from the prompts and call it.
    2. **A rule-based agent** (e.g. the synthetic world's scene-graph agent): override `caption(images)` and
       `modify(requests)` (and `verify` if it can), ignore prompts. Set `backend_name`/`model_name` (bump
       `model_name` when the rules change, so cached answers are not reused):

    ```python
    >>> class SceneAgent(AgentBackend):
    ...     backend_name, model_name = "scene", "scene-v1"
    ...     def caption(self, images):
    ...         return [describe(scene_of(image.path)) for image in images]
    ...     def modify(self, requests):
    ...         return [diff(scene_of(r.reference.path), scene_of(r.target.path)) for r in requests]
    >>> register_agent_backend("scene", SceneAgent)
    ```

    Return `None` for an item that failed (it is counted, the build stays incomplete and a re-run asks it again; count
    the reason in `self.failures`); raise `AgentUnavailableError` when the whole backend is down (the build stops; a
    re-run resumes from the cache). Settings that change the answers (temperature, sampling, the weights) belong in
    `cache_settings()`, which is part of every response-cache key.
    Backends must be picklable (the builder may hand them to worker processes): create clients/models lazily and
    drop them in `__getstate__` (see `_unpicklable`).
    """

    backend_name: str = "abstract"
    model_name: str = ""
    batch_size: int = 8
    max_new_tokens: int = 64
    _unpicklable: tuple[str, ...] = ()

    def __init__(
        self,
        prompts: AgentPrompts | str | None = None,
        batch_size: int | None = None,
        max_new_tokens: int | None = None,
    ):
        self.prompts = get_prompts(prompts) if isinstance(prompts, str) else (prompts or AgentPrompts())
        if batch_size is not None:
            if batch_size < 1:
                raise ValueError(f"batch_size must be >= 1, got {batch_size}")
            self.batch_size = batch_size
        if max_new_tokens is not None:
            self.max_new_tokens = max_new_tokens
        self.failures: Counter = Counter()

    @property
    def prompt_version(self) -> str:
        return self.prompts.version

    def cache_settings(self) -> dict[str, Any]:
        """The settings besides the model, the prompt and the generation budget that change the answers (e.g.
        temperature, sampling, a weights hash): part of every response-cache key and of the builder's cache folder.
        JSON-able values only; `{}` for a backend whose answers depend on nothing else."""
        return {}

    # -- the three steps (LLM backends inherit these) ---------------------------------------------------------------

    def caption_request(self, image: AgentImage) -> ChatRequest:
        return ChatRequest(images=(image,), prompt=self.prompts.caption, max_new_tokens=self.max_new_tokens)

    def modify_request(self, request: ModificationRequest) -> ChatRequest:
        prompt = self.prompts.modify.format(
            reference_caption=request.reference_caption, target_caption=request.target_caption
        )
        return ChatRequest(
            images=(request.reference, request.target), prompt=prompt, max_new_tokens=self.max_new_tokens
        )

    def verify_request(self, request: ModificationRequest, modification: str) -> ChatRequest:
        prompt = self.prompts.verify.format(modification=modification)
        return ChatRequest(images=(request.reference, request.target), prompt=prompt, max_new_tokens=4)

    def caption(self, images: Sequence[AgentImage]) -> list[str | None]:
        """Step 1: one caption per image (None where it failed)."""
        return self.complete([self.caption_request(image) for image in images])

    def modify(self, requests: Sequence[ModificationRequest]) -> list[str | None]:
        """Step 2: one modification text (reference -> target) per request (None where it failed)."""
        return self.complete([self.modify_request(request) for request in requests])

    def verify(self, requests: Sequence[ModificationRequest], modifications: Sequence[str]) -> list[str | None]:
        """Optional step 3: the raw yes/no answers to "does the text describe the change?" (`parse_yes_no` reads
        them). Rule-based agents that cannot verify may return "yes" for every item."""
        if len(requests) != len(modifications):
            raise ValueError(f"verify got {len(requests)} requests and {len(modifications)} modifications")
        return self.complete([self.verify_request(r, m) for r, m in zip(requests, modifications)])

    def complete(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        """Raw generations for chat requests (None for a request that failed after retries)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement complete(); override caption/modify")

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def close(self) -> None:
        """Release resources (HTTP clients, models). The backend can still be used afterwards (lazy re-creation)."""

    def __enter__(self) -> AgentBackend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for name in self._unpicklable:
            state[name] = None
        return state

    def __repr__(self) -> str:
        return f"{type(self).__name__}(backend={self.backend_name!r}, model={self.model_name!r}, prompts={self.prompt_version!r})"
