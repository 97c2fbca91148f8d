"""What a triplet build did, read back from the statistics it wrote, and when it counts as complete.

A build is **complete** when every mined pair has an answer or a counted, final rejection (a filtered text: empty,
refusal, image leak, ...). A pair whose caption, modification or verification *request* failed (time-out, 5xx,
unreachable, malformed answer: the backend returned nothing) is **failed**: it is not a rejection, the response cache
does not store it, and the build stays incomplete, so the next run asks exactly those requests again.

`stop_reason` finds why a preparation stopped when `datasets` reports it as a `DatasetGenerationError`: an agent
error (also one raised in a worker process, whose exception reaches the main process without its cause: the worker
records it with `record_agent_error`) or a Ctrl-C (which `datasets`' pool can bury under a `TimeoutError`).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from ..agents.base import AgentError, AgentUnavailableError


class IncompleteBuildError(RuntimeError):
    """Some pairs have no answer yet because agent requests failed; the dataset was not written (so the next run of
    the same build is not taken for a finished one), the answers received are cached, and re-running asks only the
    failed requests.

    Attributes:
        summary (`dict`): the build statistics (`pairs_failed`, `failed_by_step`, `failure_reasons`, ...).
    """

    def __init__(self, summary: dict):
        self.summary = summary
        super().__init__(incomplete_message(summary))


def incomplete_message(summary: dict) -> str:
    """One line: how many pairs failed at which step and why, and that a re-run asks only those."""
    steps = summary.get("failed_by_step") or {}
    parts = []
    if summary.get("captions_failed"):
        parts.append(f"{summary['captions_failed']} caption request(s) failed, blocking {steps.get('caption', 0)}")
    for step in ("modify", "verify"):
        if steps.get(step):
            parts.append(f"{step}: {steps[step]}")
    reasons = ", ".join(f"{k}={v}" for k, v in sorted((summary.get("failure_reasons") or {}).items()))
    return (
        f"build incomplete: {summary['pairs_failed']} of {summary['pairs_mined']} pairs have no answer yet "
        f"({'; '.join(parts) or 'agent requests failed'}{'; reasons: ' + reasons if reasons else ''}); "
        f"{summary['agent_answers_cached']} answers are cached: run the same build again to ask only the failed ones"
    )


def read_build_summary(stats_dir: Path, prepared_in_this_run: bool, answers_cached: int = 0) -> dict:
    """The summary of the last preparation whose statistics are in `stats_dir` (see `MraTriplets.build_summary`)."""
    prepare_path = stats_dir / "prepare.json"
    if not prepare_path.exists():
        raise FileNotFoundError(f"{prepare_path}: no statistics; run download_and_prepare first")
    prepare = json.loads(prepare_path.read_text())
    rejected: Counter = Counter(prepare["captions"]["rejected"])
    calls: Counter = Counter()
    by_step: Counter = Counter()
    reasons: Counter = Counter()
    failed_by_step: Counter = Counter()

    def add_agent(agent: dict) -> None:
        calls.update({"calls": agent["calls"], "cached": agent["cached"], "failed": agent["failed"]})
        by_step.update(agent.get("calls_by_step") or {})
        reasons.update(agent.get("failure_reasons") or {})

    add_agent(prepare["agent"]["caption"])
    kept = pairs = 0
    for path in sorted(stats_dir.glob("shard-*.json")):
        shard = json.loads(path.read_text())
        kept += shard["kept"]
        pairs += shard["pairs"]
        rejected.update(shard["rejected"])
        failed_by_step.update(shard.get("failed") or {})
        add_agent(shard["agent"])
    captions_failed = prepare["captions"].get("failed", 0)
    pairs_failed = sum(failed_by_step.values())
    return {
        "prepared_in_this_run": prepared_in_this_run,
        "complete": pairs_failed == 0 and captions_failed == 0 and pairs == prepare["pairs_mined"],
        "images_found": prepare["images_found"],
        "unreadable_folders": prepare.get("unreadable_folders", []),
        "images_embedded": prepare["images_embedded"],
        "images_skipped": len(prepare["skipped"]),
        "skipped": prepare["skipped"],
        "duplicates": len(prepare["duplicates"]),
        "pairs_mined": prepare["pairs_mined"],
        "pairs_generated": pairs,
        "pairs_failed": pairs_failed,
        "failed_by_step": dict(failed_by_step),
        "captions_failed": captions_failed,
        "failure_reasons": dict(sorted(reasons.items())),
        "too_few_candidates": prepare["too_few_candidates"],
        "agent_calls": calls["calls"],
        "agent_cached": calls["cached"],
        "agent_failed": calls["failed"],
        "agent_calls_by_step": dict(by_step),
        "agent_answers_cached": answers_cached,
        "rejected": dict(sorted(rejected.items())),
        "triplets": kept,
    }


def record_agent_error(stats_dir: str | Path, shard_index: int, error: AgentError) -> None:
    """In the process generating a shard: write down the agent error that stops it (see `stop_reason`)."""
    record = {"type": type(error).__name__, "message": str(error)}
    path = Path(stats_dir) / f"agent-error-{shard_index:05d}-{os.getpid()}.json"
    path.write_text(json.dumps(record))


def stop_reason(error: BaseException, stats_dir: Path) -> BaseException:
    """What to raise for `error`, an exception out of `datasets`' `download_and_prepare`: a `KeyboardInterrupt` met in
    its chain of causes and contexts, else an `AgentError` there or recorded by a worker (`record_agent_error`),
    else `error` itself."""
    import datasets

    chain, seen = [error], set()
    while chain:
        item = chain.pop(0)
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, KeyboardInterrupt):
            return KeyboardInterrupt()
        chain += [item.__cause__, item.__context__]
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, AgentError):
            return cause
        cause = cause.__cause__
    if isinstance(error, datasets.exceptions.DatasetGenerationError):
        for path in sorted(Path(stats_dir).glob("agent-error-*.json")):
            record = json.loads(path.read_text())
            kind = AgentUnavailableError if record["type"] == "AgentUnavailableError" else AgentError
            return kind(record["message"])
    return error


__all__ = ["IncompleteBuildError", "incomplete_message", "read_build_summary", "record_agent_error", "stop_reason"]
