"""Content hashes of files, computed once: a persistent memo `(path, size, mtime_ns, ctime_ns, inode) -> SHA-256`.

Every cache key of the triplet builder names the *contents* of the images and of the model files (an image edited in
place, even to the same size, is a new image), but hashing a large folder on every run would cost a full read. The
memo (sqlite) keeps each file's hash next to its `stat()` signature; a file whose size, mtime, ctime or inode changed is
hashed again. The ctime (status change time) is set by the file system on every write, rename or `utime`, and no user
program can set it back, so a rewrite in place to the same size with the old mtime restored (`cp --preserve=timestamps`
onto the file, `touch -r`) is detected too. Not detected: a change on a file system that keeps no ctime, or made while
the system clock was set back to the file's old ctime; `overwrite=True` recomputes everything.

Like git's index, an entry written less than `racy_window` seconds after the file's mtime is not trusted (the file may
have been written again within the same timestamp tick): it is hashed again until it is old enough.

Example:
    ```python
    >>> memo = ContentHashes("work/content_hashes.sqlite")
    >>> memo.sha256("photos/cat.jpg")        # read once ...
    '9f86d08…'
    >>> memo.sha256("photos/cat.jpg")        # ... then a stat() and a lookup
    '9f86d08…'
    ```
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

_SCHEMA = """
CREATE TABLE IF NOT EXISTS content_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    hashed_at REAL NOT NULL
)
"""
RACY_WINDOW = 2.0


def file_sha256(path: str | Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (image identity for caches and duplicate detection)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_cache_dir() -> Path:
    """`$MRA_CIR_CACHE_DIR`, else `~/.cache/mra_cir` (shared by the library's on-disk caches)."""
    return Path(os.environ.get("MRA_CIR_CACHE_DIR") or Path.home() / ".cache" / "mra_cir")


class ContentHashes:
    """A persistent memo of file content hashes.

    Args:
        path (`str` or `Path`, *optional*): the sqlite file (created with its folder; default
            `default_cache_dir() / "content_hashes.sqlite"`).
        racy_window (`float`, defaults to 2.0): entries hashed less than this many seconds after the file's mtime
            are hashed again on the next look-up.

    Attributes:
        hashed (`int`): files read and hashed by this object (the others came from the memo).
    """

    def __init__(self, path: str | os.PathLike | None = None, racy_window: float = RACY_WINDOW):
        self.path = str(path or default_cache_dir() / "content_hashes.sqlite")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.racy_window = racy_window
        self.hashed = 0
        self._local = threading.local()

    def _connect(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None or getattr(self._local, "pid", None) != os.getpid():
            connection = sqlite3.connect(self.path, timeout=60.0)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            columns = [row[1] for row in connection.execute("PRAGMA table_info(content_hashes)")]
            if columns and "ctime_ns" not in columns:  # a memo written before ctime was part of the signature
                connection.execute("DROP TABLE content_hashes")
            connection.execute(_SCHEMA)
            connection.commit()
            self._local.connection, self._local.pid = connection, os.getpid()
        return connection

    def sha256(self, path: str | os.PathLike) -> str:
        """The hex SHA-256 of the file's bytes (from the memo when its `stat()` signature is unchanged)."""
        return self.sha256_many([path])[0]

    def sha256_many(self, paths: Iterable[str | os.PathLike]) -> list[str]:
        """`sha256` of many files with one transaction for the new entries. Raises `OSError` for an unreadable file
        (naming it)."""
        keys = [os.path.abspath(os.fspath(p)) for p in paths]
        connection = self._connect()
        known: dict[str, tuple] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in connection.execute(
                f"SELECT path, size, mtime_ns, ctime_ns, inode, sha256, hashed_at FROM content_hashes "
                f"WHERE path IN ({marks})",
                chunk,
            ):
                known[row[0]] = row[1:]
        out, new_rows = [], []
        for key in keys:
            stat = os.stat(key)
            signature = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
            entry = known.get(key)
            if entry is not None and entry[:4] == signature and entry[5] - stat.st_mtime_ns / 1e9 >= self.racy_window:
                out.append(entry[4])
                continue
            digest = file_sha256(key)
            self.hashed += 1
            out.append(digest)
            new_rows.append((key, *signature, digest, time.time()))
        if new_rows:
            with connection:
                connection.executemany("INSERT OR REPLACE INTO content_hashes VALUES (?, ?, ?, ?, ?, ?, ?)", new_rows)
        return out

    def close(self) -> None:
        connection = getattr(self._local, "connection", None)
        if connection is not None and getattr(self._local, "pid", None) == os.getpid():
            connection.close()
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {"path": self.path, "racy_window": self.racy_window, "hashed": 0}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()


def folder_content(folder: str | os.PathLike, memo: ContentHashes | None = None, skip_suffixes=(".md",)) -> list:
    """`[relative path, sha256]` of every file under `folder` (or of the file itself), sorted; hidden files and
    `skip_suffixes` (model cards) are left out. `[]` when the path does not exist (e.g. a Hub id)."""
    folder = Path(folder)
    if not folder.exists():
        return []
    memo = memo or ContentHashes()
    if folder.is_file():
        return [[folder.name, memo.sha256(folder)]]
    files = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
        and path.suffix.lower() not in skip_suffixes
    )
    return [[p.relative_to(folder).as_posix(), h] for p, h in zip(files, memo.sha256_many(files))]


__all__ = ["ContentHashes", "default_cache_dir", "folder_content"]
