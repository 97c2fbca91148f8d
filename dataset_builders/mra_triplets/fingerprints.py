"""Cache keys and atomic writes of the triplet builder: what each cached step depends on, hashed."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (a cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def folder_state(folder: str | Path) -> list:
    """`[relative path, size, mtime_ns]` of every file under `folder` (or of the file itself), sorted."""
    folder = Path(folder)
    if not folder.exists():
        return []
    if folder.is_file():
        return [[folder.name, folder.stat().st_size, folder.stat().st_mtime_ns]]
    return sorted(
        [path.relative_to(folder).as_posix(), path.stat().st_size, path.stat().st_mtime_ns]
        for path in folder.rglob("*")
        if path.is_file()
    )


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it over `path`: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


__all__ = ["atomic_write_json", "fingerprint", "folder_state"]
