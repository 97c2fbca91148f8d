"""The scalable agent backend: any OpenAI-compatible chat-completions server (vLLM, SGLang, `transformers serve`).

Requests go out asynchronously (httpx) from `max_concurrency` workers, round-robin over several base URLs (a fleet of
servers), images inlined as base64 data URLs, from one event loop and one kept-alive client per backend object (a
daemon thread). `complete_stream` hands answers back as they come, so there is no batch boundary where the servers
wait for the client, and a slow request holds one worker, not a batch. A worker sends its next request only after the
caller has taken its previous answer (the response cache commits each answer before it takes the next), so at any
moment at most `max_concurrency` requests are in flight or answered and not yet committed: what a kill can lose.
Time-outs, connection errors, malformed answers, 429 and 5xx are retried with exponential backoff (honouring
`Retry-After`), each retry on the next URL of the fleet.

After the last retry the item is `None` (a counted failure, with its reason in `failures`: `timeout`, `status_503`,
`connect_error`, `bad_response` ...): the build stays incomplete and a re-run asks it again. Only when the fleet
answered nothing at all, neither this request's last attempt nor any other request since it started nor a probe of
every URL (`GET <url>/models`, any status counts), does `AgentUnavailableError` stop the build (what was answered
before is already in the response cache). So one request that always times out is one failed item, not an outage.

The API key is read from an environment variable (`api_key_env`, default `OPENAI_API_KEY`) when a client is created;
it is never stored on the object, logged, or pickled.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import logging
import mimetypes
import os
import queue
import ssl
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence

import httpx

from .base import AgentBackend, AgentPrompts, AgentUnavailableError, ChatRequest

logger = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
_JSON = {"Content-Type": "application/json"}


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
        batch_size (`int`, *optional*): requests per call when the caller works in batches (default 4x
            concurrency). `CachedAgent` streams instead (`complete_stream`) and commits every answer as it comes.
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
    _unpicklable = ("_event_loop", "_loop_thread", "_loop_pid", "_client")

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
        self._last_response = float("-inf")  # monotonic time of the last HTTP answer (any status) from any server
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: threading.Thread | None = None
        self._loop_pid: int | None = None
        self._client: httpx.AsyncClient | None = None

    def cache_settings(self) -> dict:
        """Temperature and the extra request fields change the answers: they are part of the cache keys."""
        return {"temperature": self.temperature, **({"extra_body": self.extra_body} if self.extra_body else {})}

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

    async def _one(self, client: httpx.AsyncClient, request: ChatRequest) -> str | None:
        body = json.dumps(self.payload(request)).encode()
        reason, last_error, last_started = "unknown", "unknown", 0.0
        first_started = time.monotonic()
        for attempt in range(self.max_retries + 1):
            if attempt:
                self.http_stats["retries"] += 1
            url = self._url()
            retry_after = None
            self.http_stats["requests"] += 1
            last_started = time.monotonic()
            try:
                response = await client.post(f"{url}/chat/completions", content=body, headers=_JSON)
            except httpx.TimeoutException:
                self.http_stats["timeout"] += 1
                reason, last_error = "timeout", f"time-out at {url}"
            except httpx.TransportError as error:
                self.http_stats["connect_error"] += 1
                reason, last_error = "connect_error", f"{type(error).__name__} at {url}"
            else:
                self._last_response = time.monotonic()
                if response.status_code == 200:
                    try:
                        return _content(json.loads(response.content))
                    except (ValueError, KeyError, IndexError, TypeError) as error:
                        # a truncated or malformed body: asked again (a server hiccup, not an answer)
                        self.http_stats["bad_response"] += 1
                        reason, last_error = "bad_response", f"unreadable answer from {url}: {error}"
                else:
                    self.http_stats[f"status_{response.status_code}"] += 1
                    reason = f"status_{response.status_code}"
                    last_error = f"HTTP {response.status_code} at {url}"
                    if response.status_code not in RETRY_STATUS:
                        return self._failed(reason, f"{last_error}: {response.text[:200]}")
                    retry_after = _retry_after(response)
            if attempt < self.max_retries:
                delay = min(self.backoff * 2**attempt, self.backoff_max)
                await asyncio.sleep(retry_after if retry_after is not None else delay)
        if reason in ("timeout", "connect_error") and self._last_response < last_started and not await self._probe():
            silent = time.monotonic() - max(first_started, self._last_response)
            raise AgentUnavailableError(
                f"no server of {self.base_urls} answered anything for {silent:.1f} s ({self.max_retries + 1} "
                f"attempt(s) of a request, last: {last_error}; a probe of every URL got no answer either); answers "
                "received so far are cached: re-run to resume"
            )
        return self._failed(reason, f"giving up after {self.max_retries + 1} attempts: {last_error}")

    def _failed(self, reason: str, message: str) -> None:
        """Count a failed item; the first failure of each kind is logged as a warning, the others at debug level
        (an outage would otherwise print one line per request: the build's summary counts them by reason)."""
        self.http_stats["failed"] += 1
        self.failures[reason] += 1
        level = logging.WARNING if self.failures[reason] == 1 else logging.DEBUG
        logger.log(level, "%s (failed requests so far: %s)", message, dict(self.failures))
        return None

    async def _probe(self) -> bool:
        """Whether any server of the fleet answers anything (any HTTP status) to `GET <url>/models` within the
        time-out: a request that keeps failing while a server answers is a failed item, not an unavailable fleet."""

        async def ask(client: httpx.AsyncClient, url: str) -> bool:
            try:
                await client.get(f"{url}/models")
                return True
            except httpx.HTTPError:
                return False

        self.http_stats["probes"] += 1
        async with httpx.AsyncClient(timeout=self.timeout, headers=self._headers(), verify=_ssl_context()) as client:
            alive = any(await asyncio.gather(*(ask(client, url) for url in self.base_urls)))
        if alive:
            self._last_response = time.monotonic()
        return alive

    def _new_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency)
        return httpx.AsyncClient(timeout=self.timeout, limits=limits, headers=self._headers(), verify=_ssl_context())

    async def _run(
        self,
        client: httpx.AsyncClient,
        requests: Sequence[ChatRequest],
        deliver,
        window: asyncio.Semaphore | None = None,
    ) -> None:
        """`max_concurrency` workers take the requests in order and `deliver(index, answer)` each as it comes: no
        batch boundary, and a slow request holds one worker, not the others. With `window`, a worker takes a permit
        before each request and the caller releases it once it has taken the answer, which bounds the requests in
        flight plus the answers not yet taken. Cancelled workers cancel their requests."""
        todo = iter(enumerate(requests))

        async def worker() -> None:
            while True:
                if window is not None:
                    await window.acquire()
                item = next(todo, None)  # one shared iterator: each worker takes the next request
                if item is None:
                    if window is not None:
                        window.release()
                    return
                deliver(item[0], await self._one(client, item[1]))

        workers = [asyncio.ensure_future(worker()) for _ in range(min(self.max_concurrency, len(requests)))]
        try:
            await asyncio.gather(*workers)
        except BaseException:
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            raise

    async def acomplete(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        """Async version of `complete` for a caller's own event loop (one client per call; concurrency bounded by
        `max_concurrency`)."""
        answers: list[str | None] = [None] * len(requests)
        async with self._new_client() as client:
            await self._run(client, requests, answers.__setitem__)
        return answers

    def _loop(self) -> asyncio.AbstractEventLoop:
        """The backend's event loop, running in a daemon thread and kept between calls together with its HTTP client
        (kept-alive connections: no new loop, client or TCP handshake per batch)."""
        if self._event_loop is None or self._loop_pid != os.getpid() or not self._loop_thread.is_alive():
            self._client = None  # a client made in another loop (or before a fork) is unusable here
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name="mra-cir-openai-agent", daemon=True)
            thread.start()
            self._event_loop, self._loop_thread, self._loop_pid = loop, thread, os.getpid()
        return self._event_loop

    def complete_stream(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, str | None]]:
        """`(index, answer)` for every request, in the order they are answered (`CachedAgent` commits each one
        before it asks for the next). A new request goes out only when the caller has taken an answer, so at most
        `max_concurrency` requests are in flight or answered and not yet taken. Closing the iterator early, an error
        or Ctrl-C cancels the requests still in flight."""
        if not requests:
            return
        answered: queue.SimpleQueue = queue.SimpleQueue()
        loop = self._loop()
        window: list[asyncio.Semaphore] = []

        async def run() -> None:
            if self._client is None:
                self._client = self._new_client()
            window.append(asyncio.Semaphore(self.max_concurrency))
            await self._run(self._client, requests, lambda index, answer: answered.put((index, answer)), window[0])

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        future.add_done_callback(lambda done: answered.put(None))  # wakes the reader when the run ends or fails
        try:
            for _ in range(len(requests)):
                item = answered.get()
                if item is None:
                    future.result()  # raises the run's error (e.g. AgentUnavailableError)
                    raise RuntimeError("the agent's requests ended before every answer came back")
                yield item
                loop.call_soon_threadsafe(window[0].release)  # the caller has taken (and stored) this answer
        finally:
            future.cancel()  # a no-op when everything came back

    def complete(self, requests: Sequence[ChatRequest]) -> list[str | None]:
        answers: list[str | None] = [None] * len(requests)
        for index, answer in self.complete_stream(requests):
            answers[index] = answer
        return answers

    def close(self) -> None:
        loop, client = self._event_loop, self._client
        if loop is not None and self._loop_pid == os.getpid() and self._loop_thread.is_alive():
            if client is not None:
                try:
                    asyncio.run_coroutine_threadsafe(client.aclose(), loop).result(timeout=10)
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
            loop.call_soon_threadsafe(loop.stop)
            self._loop_thread.join(timeout=10)
            loop.close()
        self._event_loop = self._loop_thread = self._client = None

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
