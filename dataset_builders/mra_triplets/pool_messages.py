"""Why a pool cannot give a pair, in one line each, and what would: too few readable images, or a window larger than
the pool."""

from __future__ import annotations

from mra_cir.retrieval.image_files import IMAGE_EXTENSIONS


def too_few_images_message(folder: str, found: int, embedded: int, skipped: list, unreadable: list) -> str:
    """One line: the pool has fewer than two distinct readable images (naming what was skipped)."""
    parts = [f"{folder}: {embedded} distinct image(s) could be read and decoded out of {found} found; a pair needs 2"]
    if skipped:
        shown = ", ".join(f"{name} ({reason})" for name, reason in skipped[:5])
        parts.append(f"skipped: {shown}{f' and {len(skipped) - 5} more' if len(skipped) > 5 else ''}")
    if unreadable:
        parts.append("unreadable folders: " + ", ".join(f"{name} ({reason})" for name, reason in unreadable[:5]))
    if not found and not unreadable:
        parts.append(f"image extensions: {', '.join(IMAGE_EXTENSIONS)}")
    return "; ".join(parts)


def no_pairs_message(folder: str, embedded: int, q1: int, q2: int, too_few: int) -> str:
    """One line: no reference has `q2` candidates, so the window [q1, q2] gives no pair; a window that fits."""
    candidates = embedded - 1
    if q2 <= candidates:  # feature duplicates left every reference short of q2 candidates
        return (
            f"{folder}: no pair could be mined: all {too_few} references have fewer than q2={q2} candidates once "
            "images with identical features are left out; use a smaller --q2"
        )
    fit_q2 = candidates
    fit_q1 = max(1, fit_q2 - (q2 - q1))
    return (
        f"{folder}: no pair could be mined: {embedded} distinct images give each reference {candidates} "
        f"candidate(s), fewer than the window's last rank q2={q2} (ranks {q1}..{q2} need at least {q2 + 1} images); "
        f"use a window that fits the pool, e.g. --q1 {fit_q1} --q2 {fit_q2}, or add images"
    )


__all__ = ["no_pairs_message", "too_few_images_message"]
