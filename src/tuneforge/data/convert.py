"""Conversion between the common fine-tuning data formats, through one canonical conversation.

Every format is a plug-in in ``FORMATS``: it says whether a row looks like it (``detect``), reads a
row into a ``Conversation`` and writes one back. Converting A to B is ``B.write(A.read(row))``, so
n formats need n readers and n writers, not n x n converters.

Formats (the field names are the ones each ecosystem uses):

- ``messages``: ``{"messages": [{"role", "content"}, ...]}`` (chat templates, TRL's SFT).
- ``openai``: the OpenAI chat fine-tuning JSONL, the same shape with the roles it accepts checked.
- ``openai_preference``: OpenAI's preference (DPO) JSONL: ``input.messages``,
  ``preferred_output`` and ``non_preferred_output`` (one assistant message each).
- ``prompt_completion``: ``{"prompt", "completion"}``.
- ``alpaca``: ``{"instruction", "input", "output"}`` (``input`` may be empty).
- ``preference``: ``{"prompt", "chosen", "rejected"}`` (TRL's DPO format); a prompt holding an
  Anthropic-style ``\\n\\nHuman: ... \\n\\nAssistant:`` transcript is split into its turns.
- ``text_label``: ``{"text", "label"}`` classification rows; the label is the answer.

A conversation ends with the assistant's answer; a preference conversation also carries the
rejected answer. Writing a preference format from a row without one is refused (there is no
rejected answer to invent), and so is writing a multi-turn chat into a single-turn format that
would have to drop turns.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.readers import Record, read_records
from tuneforge.errors import DataError, UserError
from tuneforge.registry import Registry
from tuneforge.files import write_jsonl_atomic

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Conversation:
    """Prompt turns followed by the final assistant answer, and the rejected answer of a preference pair."""

    messages: list[dict[str, str]]
    rejected: str | None = None

    @property
    def prompt(self) -> list[dict[str, str]]:
        return self.messages[:-1]

    @property
    def answer(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class Format:
    """How one format is recognised, read into a ``Conversation`` and written back."""

    name: str
    detect: Callable[[dict[str, Any]], bool]
    read: Callable[[dict[str, Any]], Conversation]
    write: Callable[[Conversation], dict[str, Any]]


FORMATS: Registry[Format] = Registry("data format")


def _text(fields: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    if key not in fields:
        raise ValueError(f"missing field {key!r} (fields present: {', '.join(fields) or 'none'})")
    value = fields[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise ValueError(f"field {key!r} is empty")
    return value


def check_messages(messages: Any, *, final_assistant: bool = True) -> list[dict[str, str]]:
    """Role and turn-order conformance of a chat: the problems are raised as one ``ValueError``.

    Rules: a list of ``{"role", "content"}`` objects with string content; roles from ``ROLES``; a
    system message only first; after it, user and assistant alternate starting with the user
    (tool messages may follow an assistant turn); the last message is the assistant's answer.
    """
    if not isinstance(messages, list) or not messages:
        raise ValueError("messages must be a non-empty list")
    problems = []
    previous = None
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or "role" not in m:
            problems.append(f"message {i} must be an object with 'role' and string 'content'")
            continue
        role = m["role"]
        if role not in ROLES:
            problems.append(f"message {i} has unknown role {role!r} (known: {', '.join(ROLES)})")
        elif role == "system" and i != 0:
            problems.append(f"message {i}: a system message may only come first")
        elif role == "user" and previous == "user":
            problems.append(f"message {i}: two user turns in a row")
        elif role == "assistant" and previous in (None, "system", "assistant"):
            problems.append(f"message {i}: assistant turn without a user turn before it")
        elif role == "tool" and previous not in ("assistant", "tool"):
            problems.append(f"message {i}: tool message not after an assistant turn")
        if not m["content"].strip() and role != "tool":
            problems.append(f"message {i} ({role}) has empty content")
        previous = role
    if final_assistant and isinstance(messages[-1], dict) and messages[-1].get("role") != "assistant":
        problems.append("the last message must be the assistant's answer")
    if problems:
        raise ValueError("; ".join(problems))
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def _single_turn(conv: Conversation, fmt: str) -> tuple[str | None, str]:
    """(system, user) of a one-turn conversation, refusing what a single-turn format would lose."""
    prompt = conv.prompt
    system = prompt[0]["content"] if prompt and prompt[0]["role"] == "system" else None
    rest = prompt[1:] if system is not None else prompt
    if len(rest) != 1 or rest[0]["role"] != "user":
        raise ValueError(f"{fmt} holds one user turn; this row has {len(rest)} prompt turns (use messages)")
    return system, rest[0]["content"]


_TRANSCRIPT = re.compile(r"\n\n(Human|Assistant):")


def split_transcript(text: str) -> list[dict[str, str]]:
    """Anthropic HH-style ``\\n\\nHuman: ... \\n\\nAssistant: ...`` text into chat messages."""
    parts = _TRANSCRIPT.split("\n\n" + text.lstrip("\n") if not text.startswith("\n\n") else text)
    messages = []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if speaker == "Human" else "assistant"
        if content.strip():
            messages.append({"role": role, "content": content.strip()})
    return messages


def _prompt_messages(prompt: str) -> list[dict[str, str]]:
    turns = split_transcript(prompt) if _TRANSCRIPT.search(prompt) else []
    return turns or [{"role": "user", "content": prompt}]


def _read_messages(fields: dict[str, Any]) -> Conversation:
    return Conversation(check_messages(fields.get("messages")))


def _write_messages(conv: Conversation) -> dict[str, Any]:
    return {"messages": conv.messages}


def _read_openai(fields: dict[str, Any]) -> Conversation:
    extra = set(fields) - {"messages", "tools", "parallel_tool_calls"}
    if extra:
        raise ValueError(f"OpenAI chat rows hold only 'messages' (and tools); unexpected: {', '.join(sorted(extra))}")
    return _read_messages(fields)


def _read_openai_pref(fields: dict[str, Any]) -> Conversation:
    prompt = fields.get("input", {}).get("messages") if isinstance(fields.get("input"), dict) else None
    chosen, rejected = fields.get("preferred_output"), fields.get("non_preferred_output")
    if not (isinstance(chosen, list) and len(chosen) == 1 and isinstance(rejected, list) and len(rejected) == 1):
        raise ValueError("preferred_output and non_preferred_output must each hold one assistant message")
    messages = check_messages([*(prompt or []), chosen[0]])
    check_messages([*(prompt or []), rejected[0]])
    return Conversation(messages, rejected=rejected[0]["content"])


def _write_openai_pref(conv: Conversation) -> dict[str, Any]:
    if conv.rejected is None:
        raise ValueError("openai_preference needs a rejected answer; this row has none")
    return {"input": {"messages": conv.prompt}, "preferred_output": [{"role": "assistant", "content": conv.answer}],
            "non_preferred_output": [{"role": "assistant", "content": conv.rejected}]}


def _read_prompt_completion(fields: dict[str, Any]) -> Conversation:
    return Conversation(check_messages([*_prompt_messages(_text(fields, "prompt")),
                                        {"role": "assistant", "content": _text(fields, "completion")}]))


def _write_prompt_completion(conv: Conversation) -> dict[str, Any]:
    system, user = _single_turn(conv, "prompt_completion")
    return {"prompt": user if system is None else f"{system}\n\n{user}", "completion": conv.answer}


def _read_alpaca(fields: dict[str, Any]) -> Conversation:
    instruction = _text(fields, "instruction")
    extra = fields.get("input") or ""
    if not isinstance(extra, str):
        raise ValueError("field 'input' must be a string")
    user = f"{instruction}\n\n{extra}" if extra.strip() else instruction
    return Conversation([{"role": "user", "content": user}, {"role": "assistant", "content": _text(fields, "output")}])


def _write_alpaca(conv: Conversation) -> dict[str, Any]:
    system, user = _single_turn(conv, "alpaca")
    return {"instruction": user if system is None else f"{system}\n\n{user}", "input": "", "output": conv.answer}


def _read_preference(fields: dict[str, Any]) -> Conversation:
    prompt = _prompt_messages(_text(fields, "prompt"))
    return Conversation(check_messages([*prompt, {"role": "assistant", "content": _text(fields, "chosen")}]),
                        rejected=_text(fields, "rejected"))


def _write_preference(conv: Conversation) -> dict[str, Any]:
    if conv.rejected is None:
        raise ValueError("preference needs a rejected answer; this row has none")
    prompt = conv.prompt
    if len(prompt) == 1 and prompt[0]["role"] == "user":
        text = prompt[0]["content"]
    else:
        text = "".join(f"\n\n{'Human' if m['role'] == 'user' else m['role'].capitalize()}: {m['content']}"
                       for m in prompt)
    return {"prompt": text, "chosen": conv.answer, "rejected": conv.rejected}


def _read_text_label(fields: dict[str, Any]) -> Conversation:
    label = fields.get("label")
    if not isinstance(label, (str, int)) or not str(label).strip():
        raise ValueError("field 'label' must be a non-empty string or integer")
    return Conversation([{"role": "user", "content": _text(fields, "text")},
                         {"role": "assistant", "content": str(label)}])


def _write_text_label(conv: Conversation) -> dict[str, Any]:
    _, user = _single_turn(conv, "text_label")
    return {"text": user, "label": conv.answer}


_BUILT_IN = (
    Format("openai_preference", lambda f: "preferred_output" in f, _read_openai_pref, _write_openai_pref),
    Format("preference", lambda f: {"prompt", "chosen", "rejected"} <= set(f), _read_preference, _write_preference),
    Format("messages", lambda f: "messages" in f, _read_messages, _write_messages),
    Format("openai", lambda f: False, _read_openai, _write_messages),  # never guessed: same shape as messages
    Format("prompt_completion", lambda f: {"prompt", "completion"} <= set(f), _read_prompt_completion,
           _write_prompt_completion),
    Format("alpaca", lambda f: {"instruction", "output"} <= set(f), _read_alpaca, _write_alpaca),
    Format("text_label", lambda f: {"text", "label"} <= set(f), _read_text_label, _write_text_label),
)
for _fmt in _BUILT_IN:
    FORMATS.register(_fmt.name)(_fmt)


def detect_format(fields: dict[str, Any]) -> str | None:
    """The format a row looks like, or ``None``; built-in formats are tried most specific first."""
    built_in = [f.name for f in _BUILT_IN]
    for name in built_in + [n for n in FORMATS.names() if n not in built_in]:
        if FORMATS.get(name).detect(fields):
            return name
    return None


def read_conversation(record: Record, fmt: str = "auto") -> Conversation:
    """The record as a conversation; ``DataError`` naming ``file:line`` when it does not fit the format."""
    name = detect_format(record.fields) if fmt == "auto" else fmt
    if name is None:
        raise DataError(f"{record.where()}: cannot tell the format of this row (fields: "
                        f"{', '.join(record.fields)}); pass --from with one of {', '.join(FORMATS.names())}")
    try:
        return FORMATS.get(name).read(record.fields)
    except ValueError as err:
        raise DataError(f"{record.where()}: not a valid {name} row: {err}") from None


@dataclass
class ConvertResult:
    output: Path
    rows: int
    source_format: str
    skipped: list[str]
    """``file:line: why`` of each row left out (only with ``skip_invalid``)."""


def convert_file(source: Path | str, output: Path | str, *, to: str, from_: str = "auto",
                 skip_invalid: bool = False) -> ConvertResult:
    """Convert every row of ``source`` to format ``to``; all bad rows are reported together.

    With ``skip_invalid`` the rows that cannot be converted are left out and listed in the result
    instead of stopping the conversion.
    """
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():
        raise UserError(f"refusing to overwrite the input {source}; pick another output file")
    target = FORMATS.get(to)
    records = read_records(source)
    rows, problems, seen = [], [], set()
    for rec in records:
        try:
            conv = read_conversation(rec, from_)
            seen.add(detect_format(rec.fields) if from_ == "auto" else from_)
            rows.append(target.write(conv))
        except DataError as err:
            problems.append(str(err))
        except ValueError as err:
            problems.append(f"{rec.where()}: cannot write as {to}: {err}")
    if problems and not skip_invalid:
        raise DataError(f"{len(problems)} row(s) of {source} could not be converted to {to}; nothing was written "
                        "(fix them, or pass --skip-invalid to leave them out)", problems)
    write_jsonl_atomic(output, rows)
    return ConvertResult(output, len(rows), ", ".join(sorted(str(s) for s in seen)), problems)
