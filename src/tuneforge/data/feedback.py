"""Human feedback data: pairwise preferences, rankings and binary (good/bad) judgements.

Three row layouts are read, picked per row from the fields it has (field names follow ``data.prompt_field``,
``data.completion_field`` and ``data.label_field``; ``chosen``, ``rejected``, ``responses`` and ``scores`` are
fixed):

- pairwise: ``prompt``, ``chosen``, ``rejected`` (strings, or ``chosen``/``rejected`` as chat-message lists;
  without ``prompt``, two full conversations whose shared beginning is the prompt);
- ranking: ``prompt``, ``responses`` (best first), optionally ``scores`` (higher is better; then any order);
- binary: ``prompt``, ``completion``, ``label`` (good/bad, true/false, 1/0, thumbs up/down).

A prompt is a string or a list of ``{role, content}`` messages. Anthropic HH transcripts
(``"\\n\\nHuman: ... \\n\\nAssistant:"``) are turned into chat messages, so the model's own chat template
frames them rather than the HH markers. Every row becomes one :class:`Feedback`; every bad row is reported
with its file and line, all at once (see :mod:`tuneforge.data.validate`).

``feedback_from_log`` makes such rows from a served model: the request log (``tuneforge serve --log-requests``)
joined by answer id to what users sent to ``POST /v1/feedback`` (``tuneforge data feedback LOG``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems
from tuneforge.errors import DataError, UserError
from tuneforge.files import write_jsonl_atomic

Messages = list[dict[str, str]]

ROLES = ("system", "user", "assistant")
GOOD = {"good", "true", "1", "yes", "desirable", "positive", "thumbs_up", "up", "+1"}
BAD = {"bad", "false", "0", "no", "undesirable", "negative", "thumbs_down", "down", "-1"}
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")


@dataclass
class Feedback:
    """One judged prompt: its responses best first; ``label`` is set for binary feedback (one response)."""

    messages: Messages
    responses: list[str]
    label: bool | None = None
    #: how the row was given: "pair", "ranking" or "binary"
    kind: str = "pair"

    def __str__(self) -> str:
        if self.label is not None:
            return f"{'good' if self.label else 'bad'}: {self.responses[0]}"
        return " > ".join(repr(r[:80]) for r in self.responses)

    def pairs(self) -> list[tuple[str, str]]:
        """Every (better, worse) pair the row implies: K(K-1)/2 of them for a ranking of K."""
        return [(a, b) for i, a in enumerate(self.responses) for b in self.responses[i + 1 :]]


def hh_to_messages(text: str) -> Messages:
    """Split an HH transcript into chat messages; a trailing empty ``Assistant:`` turn is the answer's slot.

    >>> hh_to_messages("\\n\\nHuman: Hi\\n\\nAssistant: Hello!\\n\\nHuman: Bye\\n\\nAssistant:")
    [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}, {'role': 'user', 'content': 'Bye'}]
    """
    parts = _HH_TURN.split(text)
    head = parts[0].strip()
    messages = [{"role": "user", "content": head}] if head else []
    for speaker, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def is_hh(text: str) -> bool:
    return bool(re.search(r"(^|\n\n)Human:", text)) and "Assistant:" in text


def _prompt(rec: Record, field: str, problems: Problems) -> Messages | None:
    value = rec.fields.get(field)
    if isinstance(value, str):
        if not value.strip():
            problems.add(rec, f"empty text in field {field!r}")
            return None
        return hh_to_messages(value) if is_hh(value) else [{"role": "user", "content": value}]
    if isinstance(value, list):
        return _messages(rec, field, value, problems)
    problems.add(rec, f"field {field!r} must be a string or a list of chat messages, got "
                      f"{'null' if value is None else type(value).__name__}")
    return None


def _messages(rec: Record, field: str, value: list[Any], problems: Problems) -> Messages | None:
    ok = bool(value) and all(isinstance(m, dict) and m.get("role") in ROLES and isinstance(m.get("content"), str)
                             for m in value)
    if not ok:
        problems.add(rec, f"field {field!r} must be a non-empty list of {{role, content}} messages with role in "
                          f"{', '.join(ROLES)}")
        return None
    return [{"role": m["role"], "content": m["content"]} for m in value]


def _response(rec: Record, field: str, value: Any, problems: Problems) -> tuple[Messages, str] | None:
    """A response as (messages before it, its text): a string, or a message list ending with the assistant."""
    if isinstance(value, str):
        if not value.strip():
            problems.add(rec, f"empty text in field {field!r}")
            return None
        if is_hh(value):  # a whole HH transcript: the last assistant turn is the response
            value = hh_to_messages(value)
        else:
            return [], value.strip()
    if isinstance(value, list):
        msgs = _messages(rec, field, value, problems)
        if msgs is None:
            return None
        if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
            problems.add(rec, f"field {field!r}: the last message must be a non-empty assistant answer")
            return None
        return msgs[:-1], msgs[-1]["content"].strip()
    problems.add(rec, f"field {field!r} must be a string or a list of chat messages, got "
                      f"{'null' if value is None else type(value).__name__}")
    return None


def _with_prompt(rec: Record, prompt_field: str, answers: list[tuple[Messages, str]],
                 problems: Problems) -> tuple[Messages, list[str]] | None:
    """Join the row's prompt with the messages each response carries; they must agree."""
    contexts = [tuple(tuple(sorted(m.items())) for m in ctx) for ctx, _ in answers]
    if len(set(contexts)) > 1:
        problems.add(rec, "the responses continue different conversations; they must share everything before "
                          "the last assistant answer")
        return None
    prompt: Messages = []
    if prompt_field in rec.fields:
        got = _prompt(rec, prompt_field, problems)
        if got is None:
            return None
        prompt = got
    prompt = prompt + answers[0][0]
    if not prompt:
        problems.add(rec, f"missing field {prompt_field!r} (and the responses carry no conversation before them)")
        return None
    if prompt[-1]["role"] == "assistant":
        problems.add(rec, "the prompt ends with an assistant turn; it must end with the turn being answered")
        return None
    return prompt, [a for _, a in answers]


def parse_feedback(rec: Record, *, prompt_field: str, completion_field: str, label_field: str,
                   problems: Problems) -> Feedback | None:
    """One row as :class:`Feedback`, or ``None`` after reporting why it is not valid."""
    f = rec.fields
    if "responses" in f:
        return _ranking(rec, prompt_field, problems)
    if "chosen" in f or "rejected" in f:
        for k in ("chosen", "rejected"):
            if k not in f:
                problems.add(rec, f"missing field {k!r}")
        answers = [_response(rec, k, f[k], problems) for k in ("chosen", "rejected") if k in f]
        if len(answers) < 2 or any(a is None for a in answers):
            return None
        joined = _with_prompt(rec, prompt_field, [a for a in answers if a is not None], problems)
        if joined is None:
            return None
        if joined[1][0] == joined[1][1]:
            problems.add(rec, "chosen and rejected are identical: the pair says nothing")
            return None
        return Feedback(messages=joined[0], responses=joined[1], kind="pair")
    if completion_field in f or label_field in f:
        return _binary(rec, prompt_field, completion_field, label_field, problems)
    problems.add(rec, f"no feedback fields: give chosen + rejected, responses (+ scores), or {completion_field} + "
                      f"{label_field} (fields present: {', '.join(f) or 'none'})")
    return None


def _ranking(rec: Record, prompt_field: str, problems: Problems) -> Feedback | None:
    raw = rec.fields["responses"]
    if not isinstance(raw, list) or len(raw) < 2:
        problems.add(rec, "field 'responses' must be a list of at least 2 responses, best first")
        return None
    answers = [_response(rec, f"responses[{i}]", r, problems) for i, r in enumerate(raw)]
    if any(a is None for a in answers):
        return None
    scores = rec.fields.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != len(raw) or \
                not all(isinstance(s, (int, float)) and not isinstance(s, bool) for s in scores):
            problems.add(rec, f"field 'scores' must be a list of {len(raw)} numbers, one per response")
            return None
        order = sorted(range(len(raw)), key=lambda i: -scores[i])  # stable: ties keep the given order
        answers = [answers[i] for i in order]
    joined = _with_prompt(rec, prompt_field, answers, problems)  # type: ignore[arg-type]
    if joined is None:
        return None
    if len(set(joined[1])) != len(joined[1]):
        problems.add(rec, "field 'responses' holds the same response twice")
        return None
    return Feedback(messages=joined[0], responses=joined[1], kind="ranking")


def _binary(rec: Record, prompt_field: str, completion_field: str, label_field: str,
            problems: Problems) -> Feedback | None:
    missing = [k for k in (completion_field, label_field) if k not in rec.fields]
    if missing:
        problems.add(rec, f"binary feedback needs {completion_field!r} and {label_field!r}; missing {missing}")
        return None
    answer = _response(rec, completion_field, rec.fields[completion_field], problems)
    label = rec.fields[label_field]
    text = str(label).strip().lower().replace(" ", "_") if isinstance(label, (str, bool, int)) else None
    good = True if text in GOOD else False if text in BAD else None
    if good is None:
        problems.add(rec, f"field {label_field!r} must say good or bad (good/bad, true/false, 1/0), got {label!r}")
        return None
    if answer is None:
        return None
    joined = _with_prompt(rec, prompt_field, [answer], problems)
    if joined is None:
        return None
    return Feedback(messages=joined[0], responses=joined[1], label=good, kind="binary")


def parse_all(records: list[Record], what: str, *, prompt_field: str, completion_field: str,
              label_field: str) -> list[tuple[Record, Feedback]]:
    """Every record parsed; one ``DataError`` lists every bad row."""
    problems = Problems()
    out = []
    for rec in records:
        fb = parse_feedback(rec, prompt_field=prompt_field, completion_field=completion_field,
                            label_field=label_field, problems=problems)
        if fb is not None:
            out.append((rec, fb))
    problems.raise_if_any(what)
    return out


def prompt_preview(messages: Messages) -> str:
    """The last user turn, as the short input shown in reports."""
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else messages[-1]["content"]


# ----------------------------------------------------------------------------- feedback from a served model
@dataclass
class ServedFeedback:
    """Preference rows built from a server's request log and its feedback file, and what could not be used."""

    rows: list[dict[str, Any]]
    feedback: int
    unmatched: list[str]
    unused: int


def _jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path}:{n}: not JSON ({err.msg}); a request or feedback log holds one object a line") \
                from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


def served_feedback(log: list[dict[str, Any]], feedback: list[dict[str, Any]], kind: str) -> ServedFeedback:
    """Join feedback to the logged answers by ``id`` and write preference data of ``kind``.

    ``pairwise``: a ``preferred`` answer beats the served one (``prompt``/``chosen``/``rejected``); two served
    answers to the same prompt, one rated good and one bad, make a pair too. ``binary``: each rated answer is a
    ``prompt``/``completion``/``label`` row, and a ``preferred`` answer a good row beside the served one's bad
    row (what KTO trains on). The last feedback on an answer wins. Prompts and answers are as logged: redacted.
    """
    if kind not in FEEDBACK_KINDS:
        raise UserError(f"--kind {kind!r}: choose one of {', '.join(FEEDBACK_KINDS)}")
    answers = {r["id"]: r for r in log if isinstance(r.get("id"), str) and r.get("inputs") and r.get("outputs")}
    latest: dict[str, dict[str, Any]] = {}
    for row in feedback:
        if isinstance(row.get("id"), str):
            latest[row["id"]] = row
    unmatched = sorted(i for i in latest if i not in answers)
    judged = [(answers[i], fb) for i, fb in latest.items() if i in answers]
    rows = FEEDBACK_KINDS[kind](judged)
    used = {r["id"] for r in rows}
    return ServedFeedback(rows=rows, feedback=len(latest), unmatched=unmatched,
                          unused=sum(1 for a, _ in judged if a["id"] not in used))


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _pairwise(judged: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    by_prompt: dict[str, dict[bool, list[str]]] = {}
    for answer, fb in judged:
        prompt, served = _text(answer["inputs"][0]), _text(answer["outputs"][0])
        preferred = fb.get("preferred")
        if isinstance(preferred, str) and preferred.strip() and preferred.strip() != served.strip():
            rows.append({"prompt": prompt, "chosen": preferred, "rejected": served, "id": answer["id"]})
        elif fb.get("rating") in ("good", "bad"):
            by_prompt.setdefault(prompt, {True: [], False: []})[fb["rating"] == "good"].append(answer["id"])
    texts = {a["id"]: _text(a["outputs"][0]) for a, _ in judged}
    for prompt, rated in by_prompt.items():
        for good in rated[True]:
            for bad in rated[False]:
                if texts[good] != texts[bad]:
                    rows.append({"prompt": prompt, "chosen": texts[good], "rejected": texts[bad], "id": good})
    return rows


def _binary_rows(judged: list[tuple[dict[str, Any], dict[str, Any]]]) -> list[dict[str, Any]]:
    rows = []
    for answer, fb in judged:
        prompt, served = _text(answer["inputs"][0]), _text(answer["outputs"][0])
        preferred = fb.get("preferred")
        if isinstance(preferred, str) and preferred.strip() and preferred.strip() != served.strip():
            rows.append({"prompt": prompt, "completion": preferred, "label": "good", "id": answer["id"]})
            rows.append({"prompt": prompt, "completion": served, "label": "bad", "id": answer["id"]})
        elif fb.get("rating") in ("good", "bad"):
            rows.append({"prompt": prompt, "completion": served, "label": fb["rating"], "id": answer["id"]})
    return rows


FEEDBACK_KINDS: dict[str, Callable[[list[tuple[dict[str, Any], dict[str, Any]]]], list[dict[str, Any]]]] = {
    "pairwise": _pairwise, "binary": _binary_rows}


def feedback_from_log(log_path: Path | str, output: Path | str, *, kind: str = "pairwise",
                      feedback_path: Path | str | None = None) -> ServedFeedback:
    """Read a request log and its feedback file (default ``<log>.feedback.jsonl``) and write ``output`` (JSONL)."""
    log_path = Path(log_path)
    fb_path = Path(feedback_path) if feedback_path else log_path.with_name(f"{log_path.stem}.feedback.jsonl")
    for p in (log_path, fb_path):
        if not p.is_file():
            raise UserError(f"{p}: no such file (the server writes the log with --log-requests and feedback beside it)")
    result = served_feedback(_jsonl(log_path), _jsonl(fb_path), kind)
    if not result.rows:
        raise DataError(f"{fb_path}: {result.feedback} feedback row(s), none usable as {kind} preference data "
                        f"({len(result.unmatched)} with an id not in {log_path})")
    write_jsonl_atomic(Path(output), result.rows)
    return result
