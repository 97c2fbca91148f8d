"""The agent's part of a triplet build, as `MraTriplets` runs it: step 1 (a caption per image, once, in the main
process) and, per shard of pairs, step 2 (the modification text) and the optional verification ([`.verification`]:
the agent's self-check and cycle consistency), every answer through `OutputFilter` with counted rejections and
counted failures.

With `agent_mode="direct"` step 1 is skipped: no caption is asked, every image gets an empty caption, step 2 sees the
two images only (its prompt set has `uses_captions=False`), and the filter's `same_as_caption` check is off.
"""

from __future__ import annotations

from collections import Counter

from ..agents.base import AgentImage, ModificationRequest
from ..agents.cache import CachedAgent
from ..agents.filters import OutputFilter
from .config import MraTripletsConfig
from .verification import CycleCheck, verify_accepted


def caption_images(
    cached_agent: CachedAgent, images: list[AgentImage], config: MraTripletsConfig
) -> tuple[dict[str, dict | None], dict]:
    """Step 1: `(captions, counts)`.

    `captions[id]` is `{"text", "path", "sha256"}` for a usable image, `None` for a caption the filter rejected (its
    pairs are rejected as `caption_failed`) and `{"failed": True}` for a request that failed (its pairs stay
    unanswered, so the build is incomplete and the next run asks it again). In direct mode every image is usable with
    the caption "" and nothing is asked.
    """
    output_filter = OutputFilter(max_words=config.max_words, max_chars=config.max_chars)
    if config.agent_mode == "direct":
        captions = {i.id: {"text": "", "path": i.path, "sha256": i.sha256} for i in images}
        return captions, {"images": 0, "rejected": {}, "failed": 0}
    raw = cached_agent.caption(images)
    captions: dict[str, dict | None] = {}
    for image, text in zip(images, raw):
        if text is None:  # the request failed: not a rejection, asked again by the next run
            captions[image.id] = {"failed": True}
            continue
        clean = output_filter.caption(text)
        captions[image.id] = None if clean is None else {"text": clean, "path": image.path, "sha256": image.sha256}
    counts = {"images": len(images), "rejected": dict(output_filter.rejected), "failed": sum(t is None for t in raw)}
    return captions, counts


def modification_shard(
    cached_agent: CachedAgent,
    pairs: list[dict],
    captions: dict[str, dict | None],
    config: MraTripletsConfig,
    cycle_check: CycleCheck | None = None,
) -> tuple[list[tuple[ModificationRequest, dict, str]], dict, list[tuple]]:
    """Step 2 (and the verification, with `config.verify` / `cycle_check`) for one shard of mined pairs:
    `(accepted, counts, dropped)` where `accepted` holds `(request, pair, modification text)` of the kept pairs, in
    order, `counts` the shard's statistics (`pairs`, `kept`, `rejected` by reason, `failed` by step) and `dropped`
    `(request, pair, text, reasons)` of the pairs a verifier rejected."""
    output_filter = OutputFilter(max_words=config.max_words, max_chars=config.max_chars)
    failed: Counter = Counter()  # pairs without a final outcome, by the step whose request failed
    requests, kept_pairs = [], []
    for pair in pairs:
        reference, target = captions.get(pair["reference_id"]), captions.get(pair["target_id"])
        if (reference or {}).get("failed") or (target or {}).get("failed"):
            failed["caption"] += 1
            continue
        if reference is None or target is None:
            output_filter.rejected["caption_failed"] += 1
            continue
        requests.append(
            ModificationRequest(
                reference=AgentImage(pair["reference_id"], reference["path"], reference["sha256"]),
                target=AgentImage(pair["target_id"], target["path"], target["sha256"]),
                reference_caption=reference["text"],
                target_caption=target["text"],
            )
        )
        kept_pairs.append(pair)
    accepted = []
    for request, pair, text in zip(requests, kept_pairs, cached_agent.modify(requests)):
        if text is None:
            failed["modify"] += 1
            continue
        clean = output_filter.modification(text, request.reference_caption, request.target_caption)
        if clean is not None:
            accepted.append((request, pair, clean))
    dropped: list[tuple] = []
    if (config.verify or cycle_check is not None) and accepted:
        accepted, dropped = verify_accepted(cached_agent, accepted, config, output_filter, failed, cycle_check)
    counts = {
        "pairs": len(pairs),
        "kept": len(accepted),
        "rejected": dict(output_filter.rejected),
        "failed": dict(failed),
    }
    return accepted, counts, dropped


__all__ = ["caption_images", "modification_shard"]
