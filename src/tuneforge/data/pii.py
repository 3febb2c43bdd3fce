"""Personal data in text: e-mail addresses, phone numbers, card numbers, IBANs and postal addresses.

Each kind is a detector in ``DETECTORS`` returning ``Span``s, so ``clean`` can redact exactly what
``audit`` reported. Candidates are found by pattern and then confirmed by a maintained library
where one exists, which keeps false alarms down on ordinary numbers (dates, times, counts):

- phone numbers: Google's libphonenumber (``phonenumbers``) finds and validates them
  (``Leniency.VALID``: the number must be a real, dialable number for its region);
- card numbers: 13 to 19 digits that pass the Luhn checksum (``stdnum.luhn``) and start like an
  issuer (2-6);
- IBANs: the ISO 13616 mod-97 checksum and country length (``stdnum.iban``);
- postal addresses: ``pyap`` (US, Canadian and British street addresses), kept only when pyap
  also finds a postal code: alone, its US parser read 9 SNIPS booking requests ("for 10 at the
  Dunbrody Country House Hotel in") as addresses;
- e-mail: a pattern (RFC 5322 is far wider, but this is what people paste).

Person names are not detected: the maintained finders (Presidio, spaCy NER) need a language
model that is not shipped on PyPI, so they cannot install offline; ``names_available`` says so
in the audit rather than reporting an empty, reassuring count.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from tuneforge.extras import require
from tuneforge.registry import Registry


@dataclass(frozen=True)
class Span:
    kind: str
    start: int
    end: int
    value: str


DETECTORS: Registry[Callable[[str], list[Span]]] = Registry("personal data detector")

_EMAIL = re.compile(r"(?<![\w.+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b")
_CARD = re.compile(r"(?<!\d)[2-6]\d{3}(?:[ -]?\d){9,15}(?!\d)")
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]){11,30}\b")
_DIGITS7 = re.compile(r"(?:\d\D{0,2}){7}")
_STREET_HINT = re.compile(r"\d", re.ASCII)

names_available = False
"""No offline-installable maintained person-name finder (see the module docstring)."""


@DETECTORS.register("email")
def find_emails(text: str) -> list[Span]:
    return [Span("email", m.start(), m.end(), m.group()) for m in _EMAIL.finditer(text)]


@DETECTORS.register("card_number")
def find_card_numbers(text: str) -> list[Span]:
    luhn = require("stdnum.luhn", "PII detection")

    spans = []
    for m in _CARD.finditer(text):
        digits = re.sub(r"\D", "", m.group())
        if 13 <= len(digits) <= 19 and luhn.is_valid(digits):
            spans.append(Span("card_number", m.start(), m.end(), m.group()))
    return spans


@DETECTORS.register("iban")
def find_ibans(text: str) -> list[Span]:
    iban = require("stdnum.iban", "PII detection")

    return [Span("iban", m.start(), m.end(), m.group()) for m in _IBAN.finditer(text) if iban.is_valid(m.group())]


@DETECTORS.register("phone")
def find_phones(text: str, region: str = "US") -> list[Span]:
    """Valid phone numbers; ``region`` decides how numbers without a ``+country`` prefix are read."""
    if not _DIGITS7.search(text):  # libphonenumber is slow; most texts hold no 7 digits at all
        return []
    phonenumbers = require("phonenumbers", "PII detection")

    matcher = phonenumbers.PhoneNumberMatcher(text, region, leniency=phonenumbers.Leniency.VALID)
    return [Span("phone", m.start, m.end, m.raw_string) for m in matcher]


@DETECTORS.register("address")
def find_addresses(text: str) -> list[Span]:
    if not _STREET_HINT.search(text):  # every address pyap knows has a house number
        return []
    pyap = require("pyap", "PII detection")

    spans = []
    for country in ("US", "CA", "GB"):
        for address in pyap.parse(text, country=country):
            if not getattr(address, "postal_code", None):
                continue
            value = address.full_address
            start = text.find(value)
            if start >= 0 and not any(s.start <= start < s.end for s in spans):
                spans.append(Span("address", start, start + len(value), value))
    return spans


def find_pii(text: str, kinds: list[str] | None = None, *, region: str = "US") -> list[Span]:
    """Every personal-data span in ``text``, of the given kinds (default: all), in text order.

    A card number is not also reported as a phone number: overlapping spans keep the first kind
    found. ``region`` reads phone numbers written without a ``+country`` prefix.
    """
    spans: list[Span] = []
    for kind in kinds or ["email", "card_number", "iban", "phone", "address"]:
        found = find_phones(text, region) if kind == "phone" else DETECTORS.get(kind)(text)
        for span in found:
            if not any(s.start < span.end and span.start < s.end for s in spans):
                spans.append(span)
    return sorted(spans, key=lambda s: s.start)


def redact(text: str, spans: list[Span]) -> str:
    """``text`` with every span replaced by ``[KIND]`` (``[EMAIL]``, ``[PHONE]`` ...)."""
    out, pos = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        if s.start < pos:
            continue
        out += [text[pos : s.start], f"[{s.kind.upper()}]"]
        pos = s.end
    return "".join(out) + text[pos:]
