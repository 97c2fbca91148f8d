"""The optional third step of a triplet build: verifying each modification text, and keeping what it drops.

Two verifiers, each on its own or both (a pair is dropped when either rejects it):

- **agent self-check** (`MraTripletsConfig.verify`): one more agent request per pair shows both images with the
  text and asks whether applying the text to the reference gives the target (the prompt set's `verify` prompt, so it
  is versioned with `prompt_version`); cached, counted and resumed like steps 1 and 2 (`CachedAgent.verify`); an
  answer that is neither yes nor no is `verify_unclear`, a "no" is `not_verified`.
- **cycle consistency** (`MraTripletsConfig.cycle_check`): no agent call. The embedding model's composed query of
  (reference image, text) must rank the target within the top `cycle_k` of the reference's *window candidates*: the
  images ranked `q1..q2` by the mining similarity (the set the target was drawn from; the target is added when a
  custom `pair_miner` put it elsewhere), each scored like retrieval scores a gallery image (the maximum cosine over
  its Q tokens, `max_sim_logits`). A text that describes another change points the query at another candidate
  (`cycle_inconsistent`).

Pairs a verifier drops are not lost: the builder writes them to the `dropped` split with the reasons in
`drop_reason` (comma-separated when both rejected it; the card's counts take the first, the agent's).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..agents.base import ModificationRequest, parse_yes_no
from .mining import Ranker, mining_query_block_size

CYCLE_REASON = "cycle_inconsistent"
#: the dropped split's name (the builder writes it only when a verifier is on)
DROPPED_SPLIT = "dropped"


def window_candidates(features, q1: int, q2: int, reduce: str, references: list[str]) -> dict[str, list[str]]:
    """For each of `references`: the ids ranked `q1..q2` among the other images (`features`: an `ImageFeatures`,
    ranked as `sample_rank_window` ranks them, duplicates left out)."""
    duplicates = features.duplicates or {}
    keep = [i for i, image_id in enumerate(features.ids) if image_id not in duplicates]
    kept_ids = [features.ids[i] for i in keep]
    position = {image_id: p for p, image_id in enumerate(kept_ids)}
    keys = features.features[keep]
    wanted = sorted({position[r] for r in references if r in position})
    if not wanted:
        return {}
    ranker = Ranker(keys, reduce, False, None, mining_query_block_size(keys))
    ranked = ranker.ranked(torch.tensor(wanted, dtype=torch.long), q2)
    return {kept_ids[p]: [kept_ids[j] for j, _ in cands[q1 - 1 : q2]] for p, cands in zip(wanted, ranked)}


class CycleCheck:
    """The cycle-consistency verifier of one build: the window candidates and their image tokens, written once by
    `prepare` (main process) to `path`, read lazily in whichever process generates a shard, with the model.

    Args:
        path (`str`): the file `prepare` wrote.
        model (`str`): the embedding model (folder or checkpoint) whose composed query is checked.
        k (`int`): the target must rank within the top k of its reference's candidates.
        device (`str`, *optional*): where the composed queries are computed (default the CPU).
    """

    def __init__(self, path: str, model: str, k: int, device: str | None = None, batch_size: int = 64):
        self.path, self.model, self.k, self.device, self.batch_size = str(path), model, int(k), device, batch_size
        self._loaded = None

    @classmethod
    def prepare(cls, path: Path, features, pairs: list[dict], config, device: str | None = None) -> CycleCheck:
        references = sorted({p["reference_id"] for p in pairs})
        candidates = window_candidates(features, config.q1, config.q2, config.reduce, references)
        needed = sorted({i for c in candidates.values() for i in c} | {p["target_id"] for p in pairs})
        row = {image_id: i for i, image_id in enumerate(features.ids)}
        tokens = features.features[[row[i] for i in needed]].float().cpu()
        torch.save({"candidates": candidates, "ids": needed, "tokens": tokens}, path)
        return cls(str(path), config.embedding_model, config.cycle_k, device)

    def __getstate__(self):
        return {**self.__dict__, "_loaded": None}  # workers load the model and the tokens themselves

    def _load(self):
        if self._loaded is None:
            from mra_cir.modeling_mra_cir.loading import load_model_and_processor

            data = torch.load(self.path)
            model, processor = load_model_and_processor(self.model, device=self.device)
            self._loaded = (data, {image_id: i for i, image_id in enumerate(data["ids"])}, model.eval(), processor)
        return self._loaded

    def ranks(self, requests: list[ModificationRequest], texts: list[str]) -> list[int]:
        """The target's rank (1 = first) among its reference's candidates, under the composed query (request, text)."""
        from PIL import Image

        from mra_cir.modeling_mra_cir.modeling_mra_cir import max_sim_logits

        data, row, model, processor = self._load()
        out: list[int] = []
        for start in range(0, len(requests), self.batch_size):
            batch = requests[start : start + self.batch_size]
            images = []
            for request in batch:
                with Image.open(request.reference.path) as image:
                    images.append(image.convert("RGB"))
            inputs = processor(images=images, text=texts[start : start + len(batch)], return_tensors="pt")
            device = next(model.parameters()).device
            with torch.no_grad():
                queries = model.get_composed_features(
                    inputs["pixel_values"].to(device), inputs["input_ids"].to(device),
                    inputs["attention_mask"].to(device),
                ).float().cpu()  # fmt: skip
            for query, request in zip(queries, batch):
                target = request.target.id
                candidates = data["candidates"].get(request.reference.id, [])
                candidates = candidates if target in candidates else [*candidates, target]
                scores = max_sim_logits(query[None], data["tokens"][[row[c] for c in candidates]])[0]
                out.append(1 + int((scores > scores[candidates.index(target)]).sum()))
        return out


def verify_accepted(cached_agent, accepted: list[tuple], config, output_filter, failed, cycle: CycleCheck | None):
    """Run the verifiers on step 2's accepted `(request, pair, text)` -> `(kept, dropped)`; `dropped` holds
    `(request, pair, text, reasons)`. A failed self-check request leaves the pair unanswered (`failed["verify"]`),
    neither kept nor dropped, so the next run asks it again."""
    reasons: list[list[str] | None] = [[] for _ in accepted]
    if config.verify:
        answers = cached_agent.verify([a[0] for a in accepted], [a[2] for a in accepted])
        for i, answer in enumerate(answers):
            if answer is None:
                reasons[i] = None
                continue
            parsed = parse_yes_no(answer)
            if not output_filter.verification(parsed):  # an unclear answer may be kept (`reject_unclear_...`)
                reasons[i].append("not_verified" if parsed is False else "verify_unclear")
    if cycle is not None:
        live = [i for i, r in enumerate(reasons) if r is not None]
        ranks = cycle.ranks([accepted[i][0] for i in live], [accepted[i][2] for i in live])
        for i, rank in zip(live, ranks):
            if rank > cycle.k:
                if not reasons[i]:  # counted once, under the first verifier that rejected it
                    output_filter.rejected[CYCLE_REASON] += 1
                reasons[i].append(CYCLE_REASON)
    kept, dropped = [], []
    for item, why in zip(accepted, reasons):
        if why is None:
            failed["verify"] += 1
        elif why:
            dropped.append((*item, why))
        else:
            kept.append(item)
    return kept, dropped


def write_dropped(stats_dir: str, shard_index: int, dropped: list[tuple]) -> None:
    """Write one shard's dropped pairs (read back by `read_dropped` for the `dropped` split)."""
    from .fingerprints import atomic_write_json

    records = [
        {"request": _request_dict(request), "pair": pair, "text": text, "reasons": reasons}
        for request, pair, text, reasons in dropped
    ]
    atomic_write_json(Path(stats_dir) / f"dropped-{shard_index:05d}.json", records)


def read_dropped(stats_dir: str, shard_index: int) -> list[tuple]:
    """`(request, pair, text, reasons)` of one shard's dropped pairs."""
    from ..agents.base import AgentImage

    path = Path(stats_dir) / f"dropped-{shard_index:05d}.json"
    records = json.loads(path.read_text()) if path.exists() else []
    out = []
    for record in records:
        r = record["request"]
        request = ModificationRequest(
            AgentImage(*r["reference"]), AgentImage(*r["target"]), r["reference_caption"], r["target_caption"]
        )
        out.append((request, record["pair"], record["text"], record["reasons"]))
    return out


def _request_dict(request: ModificationRequest) -> dict:
    images = {
        name: [i.id, i.path, i.sha256] for name, i in (("reference", request.reference), ("target", request.target))
    }
    return {**images, "reference_caption": request.reference_caption, "target_caption": request.target_caption}


#: the drop reasons of each verifier (`drop_reason` holds them comma-separated)
VERIFIER_REASONS = {"agent": ("not_verified", "verify_unclear"), "cycle": (CYCLE_REASON,)}


def verifier_scores(wrong: list[bool], reasons: list[str]) -> dict:
    """Each verifier (`agent`, `cycle`, and `either`, a pair dropped by one or the other) against a truth: `wrong[i]`
    says whether text i is wrong (the world's `agent_error`, or a person's audit), `reasons[i]` is its `drop_reason`.

    A verifier *flags* a text it drops. `precision`: of the flagged texts, the share that is wrong; `recall`: of the
    wrong texts, the share flagged (None when undefined); `dropped`: the share of all texts flagged; `residual_error`:
    the share of wrong texts among those it keeps.
    """
    if len(wrong) != len(reasons):
        raise ValueError(f"verifier_scores got {len(wrong)} truths and {len(reasons)} drop reasons")
    said = [set(filter(None, (r or "").split(","))) for r in reasons]
    out = {}
    for name, marks in {**VERIFIER_REASONS, "either": sum(VERIFIER_REASONS.values(), ())}.items():
        flagged = [bool(s & set(marks)) for s in said]
        tp = sum(f and w for f, w in zip(flagged, wrong))
        kept_wrong = sum(w and not f for f, w in zip(flagged, wrong))
        n_flagged, n_wrong, n = sum(flagged), sum(wrong), len(wrong)
        out[name] = {
            "precision": round(tp / n_flagged, 4) if n_flagged else None,
            "recall": round(tp / n_wrong, 4) if n_wrong else None,
            "dropped": round(n_flagged / n, 4) if n else None,
            "residual_error": round(kept_wrong / (n - n_flagged), 4) if n > n_flagged else None,
        }
    return out


__all__ = [
    "CYCLE_REASON",
    "DROPPED_SPLIT",
    "VERIFIER_REASONS",
    "CycleCheck",
    "read_dropped",
    "verifier_scores",
    "verify_accepted",
    "window_candidates",
    "write_dropped",
]
