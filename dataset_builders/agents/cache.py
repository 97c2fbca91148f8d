"""On-disk response cache of the MRA agent (sqlite, WAL) and `CachedAgent`, the caching front of any backend.

A response is keyed by the backend name, the model name, the prompt version, the step ("caption", "modify",
"verify"), the prompt text, the SHA-256 of each image in order and the generation budget. A re-run makes zero calls
for what is done; every batch is committed as soon as it is answered, so a crash or a kill loses at most the batch in
flight, and `INSERT OR IGNORE` on the primary key never stores a duplicate (several worker processes may share one
cache file: the first answer stored wins and every reader uses it).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
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
    backend: str, model: str, prompt_version: str, step: str, prompt: str, image_hashes: Sequence[str], max_tokens: int
) -> str:
    """The cache key (hex SHA-256 of the canonical JSON of every part)."""
    payload = json.dumps([backend, model, prompt_version, step, prompt, list(image_hashes), int(max_tokens)])
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
    """What the agent did: requests sent to the backend, answered from the cache, and failed (None), per step."""

    calls: int = 0
    cached: int = 0
    failed: int = 0
    calls_by_step: dict[str, int] | None = None

    def add(self, step: str, calls: int, cached: int, failed: int) -> None:
        self.calls += calls
        self.cached += cached
        self.failed += failed
        self.calls_by_step = self.calls_by_step or {}
        self.calls_by_step[step] = self.calls_by_step.get(step, 0) + calls

    def to_dict(self) -> dict:
        data = asdict(self)
        data["calls_by_step"] = dict(self.calls_by_step or {})
        return data


class CachedAgent:
    """Any `AgentBackend` behind the response cache: the same `caption` / `modify` / `verify` methods.

    Misses are sent to the backend `backend.batch_size` at a time and committed after each batch; failures (None) are
    not stored, so a re-run asks them again. After storing, values are read back from the cache, so concurrent
    processes sharing the file all use the first stored answer.

    Args:
        backend (`AgentBackend`): the agent.
        cache (`ResponseCache`, *optional*): without one, nothing is cached (every item is a call).
        on_progress (`Callable[[int], None]`, *optional*): called with the number of items finished after each batch.
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
        )

    def _run(self, step: str, items: Sequence, keys: Sequence[str], call: Callable[[list], list]) -> list[str | None]:
        found = self.cache.get_many(keys) if self.cache is not None else {}
        cached = sum(key in found for key in keys)
        if self.on_progress and cached:
            self.on_progress(cached)
        # one call per distinct missing key, in first-seen order
        missing: dict[str, object] = {}
        for key, item in zip(keys, items):
            if key not in found and key not in missing:
                missing[key] = item
        missing_keys = list(missing)
        fresh: dict[str, str | None] = {}
        calls = failed = 0
        backend = self.backend
        for start in range(0, len(missing_keys), backend.batch_size):
            batch_keys = missing_keys[start : start + backend.batch_size]
            answers = call([missing[key] for key in batch_keys])
            if len(answers) != len(batch_keys):
                raise RuntimeError(f"{backend!r}.{step} returned {len(answers)} answers for {len(batch_keys)} inputs")
            calls += len(batch_keys)
            rows = []
            for key, answer in zip(batch_keys, answers):
                fresh[key] = answer
                if answer is None:
                    failed += 1
                else:
                    rows.append((key, answer, backend.backend_name, backend.model_name, backend.prompt_version, step))
            if self.cache is not None and rows:
                self.cache.put_many(rows)
                fresh.update(self.cache.get_many([row[0] for row in rows]))  # first stored answer wins
            if self.on_progress:
                self.on_progress(len(batch_keys))
        self.stats.add(step, calls=calls, cached=cached, failed=failed)
        return [found[key] if key in found else fresh.get(key) for key in keys]

    def caption(self, images: Sequence[AgentImage]) -> list[str | None]:
        keys = [self._key("caption", self.backend.caption_request(image)) for image in images]
        return self._run("caption", images, keys, self.backend.caption)

    def modify(self, requests: Sequence[ModificationRequest]) -> list[str | None]:
        keys = [self._key("modify", self.backend.modify_request(request)) for request in requests]
        return self._run("modify", requests, keys, self.backend.modify)

    def verify(self, requests: Sequence[ModificationRequest], modifications: Sequence[str]) -> list[str | None]:
        pairs = list(zip(requests, modifications))
        keys = [self._key("verify", self.backend.verify_request(r, m)) for r, m in pairs]
        return self._run(
            "verify", pairs, keys, lambda batch: self.backend.verify([r for r, _ in batch], [m for _, m in batch])
        )
