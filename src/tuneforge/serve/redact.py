"""Mask personal data in logged requests: e-mail addresses, phone numbers, payment card numbers.

Deliberately small and conservative (regular expressions, a Luhn check for cards) so that the
request log never stores the obvious identifiers; it is not a full PII detector (names and
addresses pass through), which is why logging stays opt-in.
"""

from __future__ import annotations

import re
from typing import Any

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# 13 to 19 digits, optionally grouped by spaces or dashes: the lengths card schemes use
CARD = re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)")
# an optional +country code, then 7 to 15 digits with the usual separators; at least 7 digits
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?![\w])")


def luhn_ok(digits: str) -> bool:
    """The checksum every payment card number satisfies (ISO/IEC 7812)."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if luhn_ok(digits) else match.group()


def _phone(match: re.Match[str]) -> str:
    return "[PHONE]" if len(re.sub(r"\D", "", match.group())) >= 7 else match.group()


def redact_text(text: str) -> str:
    """``text`` with e-mails, card numbers (Luhn-valid) and phone numbers replaced by placeholders."""
    text = EMAIL.sub("[EMAIL]", text)
    text = CARD.sub(_card, text)
    return PHONE.sub(_phone, text)


def redact(value: Any) -> Any:
    """Redact every string inside a JSON-like value (dicts, lists, strings)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value
