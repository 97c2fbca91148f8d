"""Cache keys and atomic writes of the triplet builder: what each cached step depends on, hashed.

| cached step | folder / file under `work_dir` | its key covers |
|---|---|---|
| image features | `features-<model key>/` (shards reused by content) | the model's files (weights, config, preprocessing: their SHA-256) or a Hub id's resolved commit, each image's bytes (in the manifest) |
| mined pairs | `mined-<key>.json` | the model key, every embedded image's id and SHA-256, the duplicates, the window, the seed, the reduction |
| agent answers | `agent_cache.sqlite` rows | backend, model, its answer-changing settings, prompt, step, each image's SHA-256, budget |
| the dataset | `datasets` cache folder (`hash`) | the images (ids + SHA-256), the model key, the agent's identity and settings (+ the config) |

File hashes come from a [`ContentHashes`] memo: each file is read once, then recognised by `(path, size, mtime,
ctime, inode)`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from mra_cir.retrieval.content_hashes import ContentHashes, folder_content

logger = logging.getLogger(__name__)


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able parts (a cache key)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def model_key(name_or_path: str, memo: ContentHashes | None = None) -> str:
    """The key of everything computed from a model (see [`model_identity`])."""
    return model_identity(name_or_path, memo)[0]


def model_identity(name_or_path: str, memo: ContentHashes | None = None) -> tuple[str, str | None]:
    """`(key, Hub revision or None)` of a model. The key covers the SHA-256 of each file of a local model folder
    (weights, `config.json`, the processor's preprocessing files; model cards left out), or for a Hub id its name and
    the commit it resolves to ([`hub_revision`]; the name alone, said in a log line, when that cannot be resolved)."""
    files = folder_content(name_or_path, memo)
    if files:
        return fingerprint("model", files), None
    revision, how = hub_revision(name_or_path)
    if revision is None:
        logger.warning(
            "model %r: its Hub revision could not be resolved (%s); the cache key uses the name only, so features "
            "computed from an older revision of the same name would be reused",
            name_or_path,
            how,
        )
        return fingerprint("hub-model", name_or_path), None
    logger.info("model %r: Hub revision %s (%s)", name_or_path, revision, how)
    return fingerprint("hub-model", name_or_path, revision), revision


def hub_revision(repo_id: str, timeout: float = 10.0) -> tuple[str | None, str]:
    """`(commit sha, how it was found)` of a Hub model id: the revision `from_pretrained` would load.

    Online, the Hub's answer (`HfApi().model_info(repo_id).sha`); offline (`HF_HUB_OFFLINE=1`) or when the Hub cannot
    be reached, the snapshot the local Hugging Face cache points `main` at (what `from_pretrained` then loads);
    `(None, reason)` when neither is available.
    """
    from huggingface_hub import HfApi, constants, try_to_load_from_cache

    reason = "offline (HF_HUB_OFFLINE)"
    if not constants.is_offline_mode():
        try:
            return HfApi().model_info(repo_id, timeout=timeout).sha, "from the Hub"
        except Exception as error:  # noqa: BLE001 - unreachable, gated, unknown: fall back to the local cache
            reason = f"the Hub did not answer: {type(error).__name__}"
    try:
        cached = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        cached = None
    if isinstance(cached, str):
        return Path(cached).parent.name, f"the local Hugging Face cache's snapshot; {reason}"
    return None, f"{reason}, and it is not in the local Hugging Face cache"


def image_hashes(listed: list[tuple[str, str]], memo: ContentHashes) -> dict[str, str | None]:
    """id -> SHA-256 of the file's bytes (`None` for an unreadable file or a broken link: it is skipped later)."""
    readable = [(image_id, path) for image_id, path in listed if os.path.isfile(path)]
    try:
        found = dict(zip([i for i, _ in readable], memo.sha256_many([p for _, p in readable])))
    except OSError:  # a file vanished or became unreadable meanwhile: one at a time
        found = {}
        for image_id, path in readable:
            try:
                found[image_id] = memo.sha256(path)
            except OSError:
                pass
    return {image_id: found.get(image_id) for image_id, _ in listed}


def atomic_write_json(path: Path, data: Any) -> None:
    """Write JSON to a temporary file and rename it over `path`: a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
    os.replace(tmp, path)


def miner_key(miner) -> str:
    """The identity of a `pair_miner` in the dataset's cache key: its `cache_key` string, else its qualified name."""
    key = getattr(miner, "cache_key", None)
    if isinstance(key, str) and key:
        return key
    named = miner if hasattr(miner, "__qualname__") else type(miner)
    return f"{named.__module__}.{named.__qualname__}"


__all__ = [
    "atomic_write_json",
    "fingerprint",
    "hub_revision",
    "image_hashes",
    "miner_key",
    "model_identity",
    "model_key",
]
