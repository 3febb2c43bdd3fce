"""Mask personal data and secrets in logged requests before they reach the disk.

The request log (``tuneforge serve --log-requests``) is written with mode 0600 and every string
in it passes through ``redact``. The detectors that run, in this order (an earlier one wins
where two overlap):

- ``[SECRET]``: the value after a password-like cue: ``password``, ``passwd``, ``passphrase``,
  ``passcode``, ``secret``, ``api key``/``api_key``, ``access token``, ``token`` followed by
  ``:``, ``=`` or ``is`` (or a value holding a digit), and 3 to 8 digits after ``pin``, ``pin
  code``, ``cvv`` or ``cvc``. The cue itself stays, so a reader sees what was masked;
- the data audit's detectors (``tuneforge.data.pii``): ``[EMAIL]``; ``[CARD]`` (13 to 19 digits
  passing the Luhn checksum); ``[IBAN]`` (ISO 13616 mod-97 checksum); ``[PHONE]`` (numbers that
  libphonenumber validates). Its street-address finder (pyap) is left out: it costs about 0.1 s
  per 4,000 characters, too slow to run on every request, so addresses pass through;
- ``[PHONE]`` again, loosely: any 7 to 15 digits in phone-like groups (``(555) 123-4567``), which
  libphonenumber would reject as unassigned; a log errs on the side of masking;
- ``[NAME]``: one to three capitalised words after a cue that introduces a person (``my name is``,
  ``I am``, ``I'm``, ``this is``, ``call me``, ``name:``, ``Mr``, ``Mrs``, ``Ms``, ``Miss``, ``Dr``,
  ``Dear``, ``signed``, ``regards,``). No maintained name finder installs offline (see
  ``tuneforge.data.pii``), so a name with no cue passes through: logging stays opt-in;
- in a JSON object, the whole value of a key that names a person or a secret (``name``,
  ``first_name``, ``password``, ``pin``, ``api_key`` ...), e.g. an extraction's output field.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tuneforge.data.pii import Span, find_pii

_SECRET = re.compile(
    r"(?i)\b(?:password|passwd|pwd|passphrase|passcode|secret|api[ _-]?key|access[ _-]?token|token)\b"
    r"(?P<sep>\s*(?:[:=]|\bis\b)\s*|\s+)(?P<value>[^\s,;]+)")
_PIN = re.compile(r"(?i)\b(?:pin(?:[ -]?code)?|cvv|cvc)\b\W{0,3}(?:is\s+)?(?P<value>\d{3,8})\b")
# an optional +country code, then 7 to 15 digits with the usual separators; at least 7 digits
_PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){1,4}(?!\w)")
_NAME_CUE = (r"(?:(?i:my name is|name is|i am|i'm|this is|call me|signed|regards,?|sincerely,?|dear)\s+"
             r"|(?i:name)\s*:\s*|(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)")
_WORD = "[A-Z\u00c0-\u00de][a-z\u00df-\u00ff]+(?:[-'][A-Z\u00c0-\u00de]?[a-z\u00df-\u00ff]+)?"  # Jane, O'Neil, Müller
_NAME = re.compile(_NAME_CUE + r"(?:(?:Mr|Mrs|Ms|Miss|Dr)\.?\s+)?" + rf"(?P<value>{_WORD}(?:\s+{_WORD}){{0,2}})")
_SECRET_KEYS = re.compile(r"(?i)^(?:password|passwd|passphrase|pin|pin_?code|cvv|cvc|secret|api_?key|token"
                          r"|access_?token)$")
_NAME_KEYS = re.compile(r"(?i)^(?:name|full_?name|first_?name|last_?name|surname|given_?name|customer_?name)$")
LABELS = {"secret": "SECRET", "email": "EMAIL", "card_number": "CARD", "iban": "IBAN", "phone": "PHONE", "name": "NAME"}


def luhn_ok(digits: str) -> bool:
    """The checksum every payment card number satisfies (ISO/IEC 7812), as the card detector checks it."""
    from stdnum import luhn

    return bool(luhn.is_valid(digits))


def find_secrets(text: str) -> list[Span]:
    """Values after a password, key or PIN cue; a bare word after ``password`` needs a digit to count."""
    spans = []
    for m in _SECRET.finditer(text):
        if m.group("sep").strip() or any(c.isdigit() for c in m.group("value")):
            spans.append(Span("secret", m.start("value"), m.end("value"), m.group("value")))
    spans += [Span("secret", m.start("value"), m.end("value"), m.group("value")) for m in _PIN.finditer(text)]
    return spans


def find_loose_phones(text: str) -> list[Span]:
    return [Span("phone", m.start(), m.end(), m.group()) for m in _PHONE.finditer(text)
            if len(re.sub(r"\D", "", m.group())) >= 7]


def find_names(text: str) -> list[Span]:
    return [Span("name", m.start("value"), m.end("value"), m.group("value")) for m in _NAME.finditer(text)]


def find_data_pii(text: str) -> list[Span]:
    """The data audit's own detectors, all but the slow address finder."""
    return find_pii(text, ["email", "card_number", "iban", "phone"])


DETECTORS: tuple[Callable[[str], list[Span]], ...] = (find_secrets, find_data_pii, find_loose_phones, find_names)


def redact_text(text: str) -> str:
    """``text`` with every span the detectors find replaced by its ``[LABEL]``."""
    spans: list[Span] = []
    for detect in DETECTORS:
        for span in detect(text):
            if not any(s.start < span.end and span.start < s.end for s in spans):
                spans.append(span)
    out, pos = [], 0
    for s in sorted(spans, key=lambda s: s.start):
        out += [text[pos : s.start], f"[{LABELS[s.kind]}]"]
        pos = s.end
    return "".join(out) + text[pos:]


def redact(value: Any, key: str = "") -> Any:
    """Redact every string inside a JSON-like value; a value under a name or secret key is masked whole."""
    if isinstance(value, str) and value and _SECRET_KEYS.match(key):
        return "[SECRET]"
    if isinstance(value, str) and value and _NAME_KEYS.match(key):
        return "[NAME]"
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v, key) for v in value]
    return value
