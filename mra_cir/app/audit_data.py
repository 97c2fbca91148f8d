"""The data side of `mra-cir audit-triplets`: a seeded sample of a triplet dataset, a person's answers kept in a JSONL
file as they are given, and the report (error rates by kind; the verifier against the person).

The paper's suggested check on its agent is a hand audit of 100 generated triplets (caption and modification-text
quality), related to retrieval. An `AuditSession` draws that sample (seeded, so a reload or a colleague gets the same
triplets), serves the next unjudged one, and appends each answer to `answers` the moment it is given: a reload, a
crash or a second sitting resumes where it stopped. A later answer for the same triplet replaces the earlier one.

When the dataset was verified (`build-triplets --verify` / `--cycle-check`), its `dropped` split is sampled too (with
its share of the dataset), so the report can say how often the verifier agreed with the person: its precision (of the
triplets it dropped, the share the person found wrong) and recall (of the wrong ones, the share it dropped).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

#: the person's answers: `ok`, or what is wrong (a wrong caption, a wrong modification text)
ANSWERS = ("ok", "caption_wrong", "text_wrong")


@dataclass
class AuditArguments:
    """Options of `mra-cir audit-triplets`."""

    dataset: str = field(
        metadata={"help": "The triplets: an exported folder (build-triplets --output), parquet file(s) or a Hub id."}
    )
    sample: int = field(default=100, metadata={"help": "Triplets to audit (a seeded random sample)."})
    seed: int = field(default=0, metadata={"help": "Seed of the sample (the same seed, the same triplets)."})
    answers: str | None = field(
        default=None,
        metadata={"help": "JSONL file of the answers (default: audit-<seed>.jsonl beside the dataset, or here)."},
    )
    report: bool = field(
        default=False, metadata={"help": "Print the report of the answers given so far instead of serving the page."}
    )
    server_name: str | None = field(default=None, metadata={"help": "Address to serve on (default 127.0.0.1)."})
    port: int | None = field(default=None, metadata={"help": "Port (default 7860)."})

    def __post_init__(self):
        if self.sample < 1:
            raise ValueError(f"--sample must be >= 1, got {self.sample}")
        if self.answers is None:
            folder = Path(self.dataset) if Path(self.dataset).is_dir() else Path(".")
            self.answers = str(folder / f"audit-{self.seed}.jsonl")


def load_splits(spec: str) -> dict:
    """`{"train": Dataset, "dropped": Dataset (only when the dataset has one)}` of a triplet dataset."""
    from mra_cir.dataset_builders.mra_triplets.publishing import load_triplets

    splits = {"train": load_triplets(spec, split="train")}
    path = Path(spec)
    has_dropped = any(path.glob("**/dropped-*.parquet")) if path.is_dir() else not spec.endswith(".parquet")
    if has_dropped:
        try:
            splits["dropped"] = load_triplets(spec, split="dropped")
        except (ValueError, KeyError, FileNotFoundError):
            if path.is_dir():  # a local folder whose dropped files cannot be read: say so, never audit half of it
                raise
            # a Hub dataset: the dropped split is optional (only verified builds have one); audit the train split
    return splits


class AuditSession:
    """A seeded sample of `splits` and the answers given so far (see the module docstring).

    Args:
        splits (`dict[str, datasets.Dataset]`): `train` and, for a verified build, `dropped`.
        sample (`int`): triplets to audit (all of them when the dataset is smaller).
        seed (`int`): seed of the sample.
        answers (`str | Path`): the JSONL file (created on the first answer; read back when it exists).
    """

    def __init__(self, splits: dict, sample: int, seed: int, answers: str | Path):
        self.splits = splits
        self.answers_path = Path(answers)
        items = [(name, i) for name, split in splits.items() for i in range(len(split))]
        if not items:
            raise ValueError("the dataset has no triplets to audit")
        self.items = random.Random(seed).sample(items, min(sample, len(items)))
        self.seed = seed
        self.answers: dict[str, str] = {}
        if self.answers_path.is_file():
            for number, line in enumerate(self.answers_path.read_text(encoding="utf-8").splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    self.answers[record["item"]] = record["answer"]
                except (json.JSONDecodeError, KeyError, TypeError):
                    raise ValueError(f"{self.answers_path}, line {number}: not an answer record") from None

    @staticmethod
    def key(item: tuple[str, int]) -> str:
        return f"{item[0]}:{item[1]}"

    def row(self, item: tuple[str, int]) -> dict:
        return self.splits[item[0]][item[1]]

    def next_item(self) -> tuple[str, int] | None:
        """The first sampled triplet without an answer (None when all are judged)."""
        return next((item for item in self.items if self.key(item) not in self.answers), None)

    def judged(self) -> int:
        return sum(self.key(item) in self.answers for item in self.items)

    def answer(self, item: tuple[str, int], answer: str) -> None:
        """Record `answer` for `item` now: appended to the JSONL file and flushed before returning."""
        if answer not in ANSWERS:
            raise ValueError(f"an answer is one of {ANSWERS}, got {answer!r}")
        row = self.row(item)
        record = {
            "item": self.key(item), "answer": answer, "reference_id": row.get("reference_id"),
            "target_id": row.get("target_id"), "modification_text": row.get("modification_text"), "seed": self.seed,
            "time": round(time.time(), 3),
        }  # fmt: skip
        self.answers_path.parent.mkdir(parents=True, exist_ok=True)
        with self.answers_path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
        self.answers[self.key(item)] = answer


def _share(count: int, total: int) -> dict:
    """A share with its 95 % Wilson interval."""
    if not total:
        return {"count": count, "share": None, "ci95": None}
    p, z = count / total, 1.96
    centre = (p + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return {"count": count, "share": round(p, 4), "ci95": [round(centre - half, 4), round(centre + half, 4)]}


def audit_report(session: AuditSession) -> dict:
    """Error rates by kind among the judged triplets (the sample's own, unweighted); for a verified dataset, the
    verifiers' precision and recall against the person (a text judged wrong = positive; a caption judged wrong
    with a right text counts as a right text), and, in the synthetic world, the person against the known truth."""
    from mra_cir.dataset_builders.mra_triplets.verification import verifier_scores

    judged = [
        (item, session.answers[session.key(item)]) for item in session.items if session.key(item) in session.answers
    ]
    total = len(judged)
    report = {"sample": len(session.items), "judged": total, "rates": {a: _share(0, total) for a in ANSWERS}}
    for answer in ANSWERS:
        report["rates"][answer] = _share(sum(a == answer for _, a in judged), total)
    rows = [session.row(item) for item, _ in judged]
    wrong = [a == "text_wrong" for _, a in judged]
    if rows and "drop_reason" in rows[0]:
        report["verifiers"] = verifier_scores(wrong, [r.get("drop_reason") or "" for r in rows])
        # the sample holds each split at its share of the dataset, so these are the dataset's figures
    if rows and "agent_error" in rows[0]:
        truth = [bool(r["agent_error"]) for r in rows]
        agree = sum(t == w for t, w in zip(truth, wrong))
        report["person_vs_truth"] = {"agreement": round(agree / total, 4), "truly_wrong": _share(sum(truth), total)}
    return report


def format_report(report: dict) -> str:
    """The report as lines for the terminal."""
    lines = [f"audited {report['judged']} of {report['sample']} sampled triplets"]
    for answer, value in report["rates"].items():
        if value["share"] is not None:
            low, high = value["ci95"]
            lines.append(
                f"  {answer:<14} {value['count']:>4}  {100 * value['share']:5.1f} %  (95 % CI {100 * low:.1f}-{100 * high:.1f})"
            )
    for name, scores in (report.get("verifiers") or {}).items():
        cells = ", ".join(f"{k} {'-' if v is None else f'{v:.2f}'}" for k, v in scores.items())
        lines.append(f"  verifier {name:<7} against the audit: {cells}")
    if "person_vs_truth" in report:
        lines.append(
            f"  the person agreed with the world's truth on {100 * report['person_vs_truth']['agreement']:.1f} %"
        )
    return "\n".join(lines)


__all__ = ["ANSWERS", "AuditArguments", "AuditSession", "audit_report", "format_report", "load_splits"]
