"""On-disk response cache of the MRA agent (sqlite, WAL) and `CachedAgent`, the caching front of any backend.

A response is keyed by the backend name, the model name, the prompt version, the step ("caption", "modify",
"verify"), the prompt text, the SHA-256 of each image in order, the generation budget and the backend's
answer-changing settings (`AgentBackend.cache_settings()`: temperature, sampling, weights hash). A re-run makes zero calls
for what is done. A streaming backend's answers (the OpenAI backend) are committed one by one as they arrive, a batch
backend's after each batch, so a crash or a kill loses at most the requests in flight (`max_concurrency` for the
OpenAI backend, one batch for a batch backend), and `INSERT OR IGNORE` on the primary key never stores a duplicate
(several worker processes may share one cache file: the first answer stored wins and every reader uses it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from .base import AgentBackend, AgentImage, ChatRequest, ModificationRequest

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    backend TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_version TEXT NOT NULL,
    step TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def response_key(
    backend: str,
    model: str,
    prompt_version: str,
    step: str,
    prompt: str,
    image_hashes: Sequence[str],
    max_tokens: int,
    settings: dict | None = None,
) -> str:
    """The cache key (hex SHA-256 of the canonical JSON of every part; `settings` only when not empty)."""
    parts: list = [backend, model, prompt_version, step, prompt, list(image_hashes), int(max_tokens)]
    if settings:
        parts.append(settings)
    payload = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ResponseCache:
    """A sqlite table of agent responses (one row per key, never duplicated).

    Args:
        path (`str` or `Path`): the database file (created with its folder). WAL journal, so readers in other
            processes never block a writer.

    Example:
        ```python
        >>> cache = ResponseCache("agent_cache.sqlite")
        >>> cache.put_many([("k1", "make it red", "openai", "m", "mra-v1", "modify")])
        >>> cache.get_many(["k1"])
        {'k1': 'make it red'}
        ```
    """

    def __init__(self, path: str | Path):
        self.path = str(path)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._pid = None
        self._connect()

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or self._pid != os.getpid():
            connection = sqlite3.connect(self.path, timeout=60.0)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            connection.commit()
            self._local.connection = connection
            self._pid = os.getpid()
        return connection

    def get_many(self, keys: Iterable[str]) -> dict[str, str]:
        keys = list(dict.fromkeys(keys))
        found: dict[str, str] = {}
        connection = self._connect()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for key, response in connection.execute(
                f"SELECT key, response FROM responses WHERE key IN ({marks})", chunk
            ):
                found[key] = response
        return found

    def put_many(self, rows: Iterable[tuple[str, str, str, str, str, str]]) -> None:
        """Store `(key, response, backend, model, prompt_version, step)` rows in one transaction (first one wins)."""
        now = time.time()
        connection = self._connect()
        with connection:
            connection.executemany(
                "INSERT OR IGNORE INTO responses (key, response, backend, model, prompt_version, step, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(*row, now) for row in rows],
            )

    def __len__(self) -> int:
        return self._connect().execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def count_by_step(self) -> dict[str, int]:
        return dict(self._connect().execute("SELECT step, COUNT(*) FROM responses GROUP BY step").fetchall())

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None and self._pid == os.getpid():
            connection.close()
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.path = state["path"]
        self._local = threading.local()
        self._pid = None


@dataclass
class AgentCallStats:
    """What the agent did: requests sent to the backend, answered from the cache, and failed (None), per step, and
    why the failed ones failed (`failure_reasons`, from the backend's `failures` counter: `timeout`, `status_503`,
    `connect_error`, `bad_response` ...)."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    calls_by_step: dict[str, int] | None = None
    failed_by_step: dict[str, int] | None = None
    failure_reasons: dict[str, int] | None = None

    def add(self, step: str, calls: int, cached: int, failed: int, reasons: dict[str, int] | None = None) -> None:
        self.calls += calls
        self.cached += cached
        self.failed += failed
        self.calls_by_step = self.calls_by_step or {}
        self.calls_by_step[step] = self.calls_by_step.get(step, 0) + calls
        if failed:
            self.failed_by_step = self.failed_by_step or {}
            self.failed_by_step[step] = self.failed_by_step.get(step, 0) + failed
        for reason, count in (reasons or {}).items():
            self.failure_reasons = self.failure_reasons or {}
            self.failure_reasons[reason] = self.failure_reasons.get(reason, 0) + count

    def to_dict(self) -> dict:
        data = asdict(self)
        for name in ("calls_by_step", "failed_by_step", "failure_reasons"):
            data[name] = dict(getattr(self, name) or {})
        return data


class CachedAgent:
    """Any `AgentBackend` behind the response cache: the same `caption` / `modify` / `verify` methods.

    Misses are sent to the backend `backend.batch_size` at a time and committed after each batch. A backend with
    `complete_stream` (the OpenAI backend) gets every miss at once instead, keeps its requests in flight without batch
    boundaries and hands answers back as they come; each is committed before the next is taken, and the backend sends
    a new request only for a taken answer. So a kill loses at most the requests in flight: `max_concurrency` of a
    streaming backend, one batch of a batch backend. Failures (None) are not stored, so a re-run asks them again.
    After storing, values are read back from the cache, so concurrent processes sharing the file all use the first
    stored answer.

    Args:
        backend (`AgentBackend`): the agent.
        cache (`ResponseCache`, *optional*): without one, nothing is cached (every item is a call).
        on_progress (`Callable[[int], None]`, *optional*): called with the number of items finished after each commit.
    """

    def __init__(
        self,
        backend: AgentBackend,
        cache: ResponseCache | None = None,
        on_progress: Callable[[int], None] | None = None,
    ):
        self.backend = backend
        self.cache = cache
        self.on_progress = on_progress
        self.stats = AgentCallStats()
        self._settings = backend.cache_settings()

    def _key(self, step: str, request: ChatRequest) -> str:
        backend = self.backend
        hashes = [image.sha256 for image in request.images]
        return response_key(
            backend.backend_name,
            backend.model_name,
            backend.prompt_version,
            step,
            request.prompt,
            hashes,
            request.max_new_tokens,
            self._settings,
        )

    def _answers(self, step: str, items: list, chats: list[ChatRequest], call: Callable[[list], list]):
        """Groups of `(index, answer)`, each group committed before the next is asked for: one answer at a time when
        the backend streams and uses the default prompts for this step, else one batch (a backend overriding
        `caption` / `modify` / `verify` is called in batches, as written)."""
        backend = self.backend
        stream = getattr(backend, "complete_stream", None)
        if stream is not None and getattr(type(backend), step) is getattr(AgentBackend, step):
            for item in stream(chats):
                yield [item]
            return
        for start in range(0, len(items), backend.batch_size):
            answers = call(items[start : start + backend.batch_size])
            if len(answers) != len(items[start : start + backend.batch_size]):
                raise RuntimeError(f"{backend!r}.{step} returned {len(answers)} answers for a batch of other size")
            yield list(enumerate(answers, start))

    def _run(
        self, step: str, items: Sequence, chats: Sequence[ChatRequest], call: Callable[[list], list]
    ) -> list[str | None]:
        keys = [self._key(step, chat) for chat in chats]
        found = self.cache.get_many(keys) if self.cache is not None else {}
        cached = sum(key in found for key in keys)
        if self.on_progress and cached:
            self.on_progress(cached)
        # one call per distinct missing key, in first-seen order
        missing: dict[str, tuple] = {}
        for key, item, chat in zip(keys, items, chats):
            if key not in found and key not in missing:
                missing[key] = (item, chat)
        missing_keys = list(missing)
        fresh: dict[str, str | None] = {}
        backend = self.backend
        failures_before = Counter(getattr(backend, "failures", None) or {})
        rows: list[tuple] = []
        done = failed = 0

        def commit() -> None:
            if self.cache is not None and rows:
                self.cache.put_many(rows)
                fresh.update(self.cache.get_many([row[0] for row in rows]))  # first stored answer wins
            if self.on_progress and done:
                self.on_progress(done)

        answers = self._answers(
            step, [missing[k][0] for k in missing_keys], [missing[k][1] for k in missing_keys], call
        )
        try:
            for group in answers:
                for index, answer in group:
                    key = missing_keys[index]
                    fresh[key] = answer
                    done += 1
                    if answer is None:
                        failed += 1
                    else:
                        rows.append(
                            (key, answer, backend.backend_name, backend.model_name, backend.prompt_version, step)
                        )
                commit()
                rows, done = [], 0
        finally:  # also when the backend stops (unavailable, Ctrl-C): what was answered is kept
            commit()
        reasons = Counter(getattr(backend, "failures", None) or {})
        reasons.subtract(failures_before)
        reasons = {reason: count for reason, count in reasons.items() if count > 0}
        if failed and not reasons:
            reasons = {"no_answer": failed}
        self.stats.add(step, calls=len(missing_keys), cached=cached, failed=failed, reasons=reasons)
        return [found[key] if key in found else fresh.get(key) for key in keys]

    def caption(self, images: Sequence[AgentImage]) -> list[str | None]:
        chats = [self.backend.caption_request(image) for image in images]
        return self._run("caption", images, chats, self.backend.caption)

    def modify(self, requests: Sequence[ModificationRequest]) -> list[str | None]:
        chats = [self.backend.modify_request(request) for request in requests]
        return self._run("modify", requests, chats, self.backend.modify)

    def verify(self, requests: Sequence[ModificationRequest], modifications: Sequence[str]) -> list[str | None]:
        pairs = list(zip(requests, modifications))
        chats = [self.backend.verify_request(r, m) for r, m in pairs]
        return self._run(
            "verify", pairs, chats, lambda batch: self.backend.verify([r for r, _ in batch], [m for _, m in batch])
        )
