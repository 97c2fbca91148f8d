"""The scalable agent backend: any OpenAI-compatible chat-completions server (vLLM, SGLang, `transformers serve`).

Requests go out asynchronously (httpx) with bounded concurrency, round-robin over several base URLs (a fleet of
servers), images inlined as base64 data URLs. Time-outs, connection errors, 429 and 5xx are retried with exponential
backoff (honouring `Retry-After`), each retry on the next URL of the fleet. After the last retry an HTTP error answer
becomes `None` (a counted failure); if the last error was a connection failure or a time-out, i.e. no server is
reachable, `AgentUnavailableError` stops the build (what was answered before is already in the response cache).

The API key is read from an environment variable (`api_key_env`, default `OPENAI_API_KEY`) when a client is created;
it is never stored on the object, logged, or pickled.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import logging
import mimetypes
import os
import ssl
import threading
from collections import Counter
from collections.abc import Sequence

import httpx

from .base import AgentBackend, AgentPrompts, AgentUnavailableError, ChatRequest

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """One default (certificate-verifying) SSL context per process: building it costs ~0.1 s, and a client is made
    per `complete` call."""
    return ssl.create_default_context()


class OpenAIAgent(AgentBackend):
    """Talk to one or more OpenAI-compatible servers.

    Args:
        model (`str`): the `model` field of each request (e.g. "openbmb/MiniCPM-V-2_6"; for `transformers serve`, the
            served folder or hub id).
        base_urls (`str` or `list[str]`, defaults to "http://127.0.0.1:8000/v1"): one URL or a fleet, used in
            round-robin; each ends with the API prefix (`/v1`).
        prompts (`AgentPrompts` or `str`, *optional*): prompt set or registered prompt version.
        max_concurrency (`int`, defaults to 8): requests in flight at once (over the whole fleet).
        batch_size (`int`, *optional*): requests per `complete` call made by the cache (default 4x concurrency).
        max_new_tokens (`int`, defaults to 64): sent as `max_tokens` (always sent: some servers default to 1024).
        temperature (`float`, defaults to 0.0): 0 means greedy.
        timeout (`float`, defaults to 120.0): seconds per request.
        max_retries (`int`, defaults to 4): retries after the first attempt.
        backoff (`float`, defaults to 0.5): first backoff in seconds, doubled at each retry, capped by `backoff_max`.
        backoff_max (`float`, defaults to 8.0): longest wait between retries.
        api_key_env (`str`, defaults to "OPENAI_API_KEY"): environment variable holding the key (optional).
        extra_body (`dict`, *optional*): more JSON fields for every request (e.g. `{"seed": 0}`).

    Attributes:
        http_stats (`Counter`): `requests`, `retries`, `failed`, and one `status_<code>` / `timeout` / `connect_error`
            entry per error seen.

    Example:
        ```python
        >>> agent = OpenAIAgent("openbmb/MiniCPM-V-2_6", ["http://gpu1:8000/v1", "http://gpu2:8000/v1"])
        >>> agent.caption([AgentImage.from_path("cat.jpg")])
        ['A black cat sleeping on a grey sofa.']
        ```
    """

    backend_name = "openai"

    def __init__(
        self,
        model: str,
        base_urls: str | Sequence[str] = "http://127.0.0.1:8000/v1",
        prompts: AgentPrompts | str | None = None,
        max_concurrency: int = 8,
        batch_size: int | None = None,
        max_new_tokens: int = 64,
        temperature: float = 0.0,
        timeout: float = 120.0,
        max_retries: int = 4,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        api_key_env: str = "OPENAI_API_KEY",
        extra_body: dict | None = None,
    ):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        super().__init__(prompts=prompts, batch_size=batch_size or 4 * max_concurrency, max_new_tokens=max_new_tokens)
        urls = [base_urls] if isinstance(base_urls, str) else list(base_urls)
        if not urls:
            raise ValueError("OpenAIAgent needs at least one base URL")
        self.base_urls = [url.rstrip("/") for url in urls]
        self.model_name = model
        self.max_concurrency = max_concurrency
        self.temperature = temperature
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.api_key_env = api_key_env
        self.extra_body = dict(extra_body or {})
        self.http_stats: Counter = Counter()
        self._next_url = 0
        self._image_cache: dict[str, str] = {}

    # -- request building ------------------------------------------------------------------------------------------

    def _data_url(self, path: str, sha256: str) -> str:
        url = self._image_cache.get(sha256)
        if url is None:
            mime = mimetypes.guess_type(path)[0] or "image/png"
            with open(path, "rb") as handle:
                url = f"data:{mime};base64,{base64.b64encode(handle.read()).decode('ascii')}"
            if len(self._image_cache) > 4096:
                self._image_cache.clear()
            self._image_cache[sha256] = url
        return url

    def payload(self, request: ChatRequest) -> dict:
        """The JSON body of one chat completion (images first, then the text, in one user turn)."""
        content: list[dict] = [
            {"type": "image_url", "image_url": {"url": self._data_url(image.path, image.sha256)}}
            for image in request.images
        ]
        content.append({"type": "text", "text": request.prompt})
        body = {
            "model": self.model_name,
            "messages": [{"role": "user", "content": content}],
            "max_tokens": request.max_new_tokens,
            "temperature": self.temperature,
            "stream": False,
        }
        body.update(self.extra_body)
        return body

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    def _url(self) -> str:
        url = self.base_urls[self._next_url % len(self.base_urls)]
        self._next_url += 1
        return url

    # -- sending -------------------------------------------------------------------------------------------------------

    async def _one(self, client: httpx.AsyncClient, semaphore: asyncio.Semaphore, request: ChatRequest) -> str | None:
        body = self.payload(request)
        last_error = "unknown"
        unreachable = False
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.http_stats["retries"] += 1
            url = self._url()
            retry_after = None
            async with semaphore:
                self.http_stats["requests"] += 1
                try:
                    response = await client.post(f"{url}/chat/completions", json=body)
                except httpx.TimeoutException:
                    self.http_stats["timeout"] += 1
                    last_error, unreachable = f"time-out at {url}", True
                except httpx.TransportError as error:
                    self.http_stats["connect_error"] += 1
                    last_error, unreachable = f"{type(error).__name__} at {url}", True
                else:
                    if response.status_code == 200:
                        try:
                            return _content(response.json())
                        except (ValueError, KeyError, IndexError, TypeError) as error:
                            self.http_stats["bad_response"] += 1
                            logger.warning("unreadable answer from %s: %s", url, error)
                            self.http_stats["failed"] += 1
                            return None
                    self.http_stats[f"status_{response.status_code}"] += 1
                    last_error, unreachable = f"HTTP {response.status_code} at {url}", False
                    if response.status_code not in RETRY_STATUS:
                        logger.warning("%s: %s", last_error, response.text[:200])
                        self.http_stats["failed"] += 1
                        return None
                    retry_after = _retry_after(response)
            if attempt < self.max_retries:
                delay = min(self.backoff * 2**attempt, self.backoff_max)
                await asyncio.sleep(retry_after if retry_after is not None else delay)
        if unreachable:
            raise AgentUnavailableError(
                f"no answer from {self.base_urls} after {self.max_retries + 1} attempts (last: {last_error}); "
                "answers received so far are cached: re-run to resume"
            )
        logger.warning("giving up after %d attempts: %s", self.max_retries + 1, last_error)
        self.http_stats["failed"] += 1
        return None

    async def acomplete(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        """Async version of `complete` (one client per call; concurrency bounded by `max_concurrency`)."""
        semaphore = asyncio.Semaphore(self.max_concurrency)
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        client = httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers(), verify=_ssl_context())
        async with client:
            tasks = [asyncio.ensure_future(self._one(client, semaphore, request)) for request in requests]
            try:
                return list(await asyncio.gather(*tasks))
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise

    def complete(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.acomplete(requests))
        # called from inside an event loop (e.g. a notebook): run in a helper thread with its own loop
        result: dict[str, object] = {}

        def run() -> None:
            try:
                result["value"] = asyncio.run(self.acomplete(requests))
            except BaseException as error:  # noqa: BLE001 - re-raised below in the caller's thread
                result["error"] = error

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if "error" in result:
            raise result["error"]  # type: ignore[misc]
        return result["value"]  # type: ignore[return-value]

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state["_image_cache"] = {}
        return state


def _content(data: dict) -> str:
    content = data["choices"][0]["message"]["content"]
    if isinstance(content, list):  # some servers answer with content parts
        content = "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return "" if content is None else str(content)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return min(float(value), 60.0) if value is not None else None
    except ValueError:
        return None
