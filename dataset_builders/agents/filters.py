"""Output hygiene of the MRA agent: normalise every answer, reject bad ones with a counted reason.

Normalisation: one line (newlines and runs of whitespace become one space), trimmed, surrounding quotes and a leading
label ("Instruction:", "Caption:") removed. Rejections (the reason names are the keys of the counts in the dataset
card and the command summary):

- `request_failed`: the backend returned nothing (after retries);
- `control_characters`: the raw text holds a control or format character other than tab and line breaks (NUL, the
  ESC of ANSI terminal sequences, bidirectional overrides such as U+202E, zero-width characters: Unicode categories
  Cc and Cf), which would be stored in the dataset and shown to whoever reads it;
- `empty`: nothing left after normalisation;
- `refusal`: "I'm sorry", "I cannot", "as an AI" ...;
- `image_leak`: the text refers to the pictures by number or position ("image 1", "the first image", "the second
  photo", "the reference image") instead of describing the change;
- `same_as_caption`: the modification repeats the reference or target caption (case- and punctuation-insensitive;
  off for the one-step agent, which has no captions);
- `too_long`: more than `max_words` words or `max_chars` characters;
- `caption_failed`: a pair whose reference or target caption was rejected;
- `not_verified` / `verify_unclear`: the optional verification step answered no / neither yes nor no.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass, field

REASONS = (
    "request_failed",
    "control_characters",
    "empty",
    "refusal",
    "image_leak",
    "same_as_caption",
    "too_long",
    "caption_failed",
    "not_verified",
    "verify_unclear",
)

_REFUSAL = re.compile(
    r"\b(i'?m sorry|i am sorry|i apologi[sz]e|i can(?:no|')t|i am unable|i'?m unable|unable to (?:help|assist|"
    r"determine|see)|as an ai|i do not have the ability|i won'?t)\b",
    re.IGNORECASE,
)
_LEAK = re.compile(
    r"\b((?:image|picture|photo|img)\s*(?:#\s*)?[12]\b|(?:first|second|1st|2nd|former|latter|left|right|"
    r"reference|target|original|source)\s+(?:image|picture|photo|img)s?\b)",
    re.IGNORECASE,
)
_LABEL = re.compile(r"^(?:instruction|modification|caption|answer|description|output)\s*:\s*", re.IGNORECASE)
_QUOTES = "\"'`\u201c\u201d\u2018\u2019"


def normalize_text(text: str) -> str:
    """One line, trimmed, quotes and a leading "Label:" removed."""
    text = " ".join(text.split())
    text = _LABEL.sub("", text).strip()
    if len(text) >= 2 and text[0] in _QUOTES and text[-1] in _QUOTES:
        text = text[1:-1].strip()
    return text


_ALLOWED_CONTROLS = frozenset("\t\n\r")


def has_control_characters(text: str) -> bool:
    """Whether `text` holds a control or format character (Unicode categories Cc and Cf) other than tab, line feed
    and carriage return: NUL, ESC (ANSI terminal sequences), DEL, C1 controls, bidirectional marks and overrides
    (U+200E, U+202A-U+202E, U+2066-U+2069), zero-width characters, the byte-order mark."""
    return any(
        unicodedata.category(char) in ("Cc", "Cf") and char not in _ALLOWED_CONTROLS
        for char in text
        if not char.isprintable()
    )


def _comparable(text: str) -> str:
    return re.sub(r"[^\w ]+", "", text.lower()).strip()


@dataclass
class OutputFilter:
    """Normalises agent outputs and rejects bad ones, counting the reasons.

    Args:
        max_words (`int`, defaults to 40): longer answers are rejected (`too_long`).
        max_chars (`int`, defaults to 300): longer answers are rejected (`too_long`).
        reject_unclear_verification (`bool`, defaults to True): with verification on, drop answers that are neither
            yes nor no (`verify_unclear`); otherwise keep them.

    Attributes:
        rejected (`Counter`): reason -> count, over every call since creation.

    Example:
        ```python
        >>> f = OutputFilter()
        >>> f.modification("  Make it red.\\n", "a blue car", "a red car")
        'Make it red.'
        >>> f.modification("Change image 1 to image 2", "a", "b") is None, dict(f.rejected)
        (True, {'image_leak': 1})
        ```
    """

    max_words: int = 40
    max_chars: int = 300
    reject_unclear_verification: bool = True
    rejected: Counter = field(default_factory=Counter)

    def reason(self, text: str | None) -> tuple[str | None, str | None]:
        """`(normalised text, None)` when it passes the generic checks, else `(None, reason)` (not counted)."""
        if text is None:
            return None, "request_failed"
        if has_control_characters(text):
            return None, "control_characters"
        text = normalize_text(text)
        if not text or not re.search(r"\w", text):
            return None, "empty"
        if _REFUSAL.search(text):
            return None, "refusal"
        if _LEAK.search(text):
            return None, "image_leak"
        if len(text) > self.max_chars or len(text.split()) > self.max_words:
            return None, "too_long"
        return text, None

    def _reject(self, reason: str) -> None:
        self.rejected[reason] += 1

    def caption(self, text: str | None) -> str | None:
        """A clean caption or None (the reason is counted with the prefix `caption_`)."""
        clean, reason = self.reason(text)
        if reason:
            self._reject(f"caption_{reason}")
        return clean

    def modification(
        self, text: str | None, reference_caption: str | None = None, target_caption: str | None = None
    ) -> str | None:
        """A clean modification text or None (the reason is counted). `same_as_caption` compares with the captions
        given; the one-step agent (`agent_mode="direct"`) has none (None or ""), so that check is off."""
        clean, reason = self.reason(text)
        captions = {_comparable(c) for c in (reference_caption, target_caption) if c}
        if reason is None and _comparable(clean) in captions:
            reason = "same_as_caption"
        if reason:
            self._reject(reason)
            return None
        return clean

    def verification(self, answer: bool | None) -> bool:
        """Whether a verified pair is kept (counting `not_verified` / `verify_unclear`)."""
        if answer is True:
            return True
        if answer is False:
            self._reject("not_verified")
            return False
        self._reject("verify_unclear")
        return not self.reject_unclear_verification
