"""OpenAI chat rows as the fine-tuning API reads them, and their exact loss mask.

OpenAI's chat fine-tuning trains *every* assistant message of a row unless that message says
``"weight": 0``; content may be a string or a list of ``{"type": "text", "text": ...}`` parts; the
``developer`` role is the system role of newer models; ``tool`` messages answer an assistant's
``tool_calls``, and a row may carry the ``tools`` it could call. This module turns such a row into
a :class:`Conversation` and tokenises it so that the loss falls on the trained assistant turns and
nothing else.

The mask is found by rendering with the model's own chat template: for each assistant turn ``i``,
``render(messages[:i], add_generation_prompt=True)`` is everything before the answer and
``render(messages[:i + 1])`` is that plus the answer as the template writes it (tool calls
included). The difference, cut after the end-of-turn token, is what the model must learn to emit;
the template's text between turns (``\\n<|im_start|>user\\n...``) carries no loss.
"""

from __future__ import annotations

import json
from typing import Any

from transformers import PreTrainedTokenizerBase

from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems
from tuneforge.errors import DataError
from tuneforge.tasks.base import FALLBACK_TEMPLATE, IGNORE, Conversation, Encoded, end_of_turn

#: the roles a row may use -> the role the chat template sees (``developer`` is OpenAI's newer name for system)
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool"}
#: keys of a message that travel to the chat template besides role and content
PASSED_KEYS = ("tool_call_id", "name")


def content_text(content: Any) -> str | None:
    """A message's text: a string, or OpenAI content parts ``[{"type": "text", "text": ...}]`` joined by new lines.

    None for anything else (an image part, say), which the caller reports as a row problem.
    """
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return "\n".join(p["text"] for p in content)
    return None


def _tool_calls(calls: Any) -> list[dict[str, Any]] | None:
    """OpenAI ``tool_calls`` with JSON-string arguments decoded, as Hugging Face chat templates expect a mapping."""
    if not isinstance(calls, list) or not calls:
        return None
    out = []
    for call in calls:
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            return None
        args = fn.get("arguments", {})
        if isinstance(args, str):
            try:
                args = json.loads(args) if args.strip() else {}
            except json.JSONDecodeError:
                return None
        if not isinstance(args, dict):
            return None
        out.append({**{k: v for k, v in call.items() if k != "function"}, "type": call.get("type", "function"),
                    "function": {"name": fn["name"], "arguments": args}})
    return out


def _message(rec: Record, where: str, m: Any, problems: Problems) -> tuple[dict[str, Any], bool] | None:
    """One row message as the template reads it, and whether it is trained (assistant with weight 1)."""
    if not isinstance(m, dict) or m.get("role") not in ROLES:
        problems.add(rec, f"{where} must be an object with role in {sorted(ROLES)}")
        return None
    role = ROLES[m["role"]]
    calls = _tool_calls(m.get("tool_calls")) if role == "assistant" and m.get("tool_calls") is not None else None
    if m.get("tool_calls") is not None and calls is None:
        problems.add(rec, f"{where}: tool_calls must be a list of {{function: {{name, arguments}}}} with JSON "
                          "object arguments, on an assistant message")
        return None
    text = "" if m.get("content") is None and calls else content_text(m.get("content"))
    if text is None:
        problems.add(rec, f"{where}: content must be a string or a list of {{type: text, text}} parts")
        return None
    weight = m.get("weight", 1)
    if weight not in (0, 1) or isinstance(weight, bool) or (role != "assistant" and "weight" in m):
        problems.add(rec, f"{where}: weight must be 0 or 1, and only on assistant messages")
        return None
    out: dict[str, Any] = {"role": role, "content": text}
    out.update({k: m[k] for k in PASSED_KEYS if isinstance(m.get(k), str)})
    if calls:
        out["tool_calls"] = calls
    return out, role == "assistant" and weight == 1 and bool(text.strip() or calls)


def parse_conversation(rec: Record, field_name: str, msgs: Any, problems: Problems) -> Conversation | None:
    """A row's messages as a :class:`Conversation`, or None with the row's problem recorded.

    Rules: the last message is an assistant answer (text or tool calls) and something that is not an
    assistant message comes before the first assistant turn; at least one assistant turn is trained.
    """
    if not isinstance(msgs, list) or not msgs:
        problems.add(rec, f"field {field_name!r} must be a non-empty list of messages")
        return None
    messages, trained = [], []
    for i, m in enumerate(msgs):
        parsed = _message(rec, f"{field_name}[{i}]", m, problems)
        if parsed is None:
            return None
        messages.append(parsed[0])
        if parsed[1]:
            trained.append(i)
    last = messages[-1]
    if last["role"] != "assistant" or not (last["content"].strip() or last.get("tool_calls")):
        problems.add(rec, f"the last message in {field_name!r} must be a non-empty assistant answer to learn from")
        return None
    first_assistant = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
    if first_assistant == 0:
        problems.add(rec, f"{field_name!r} needs a user (or system) message before the first assistant answer")
        return None
    if not trained:
        problems.add(rec, f"every assistant message in {field_name!r} has weight 0: nothing to learn from")
        return None
    tools = rec.fields.get("tools")
    if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
        problems.add(rec, "field 'tools' must be a list of tool (function) definitions")
        return None
    answer = last["content"] or json.dumps([c["function"] for c in last.get("tool_calls", [])])
    return Conversation(messages=messages, trained=tuple(trained), tools=tools or None, answer=answer)


def needs_whole_conversation(conv: Conversation) -> bool:
    """Whether the row trains more than its last answer, or tools shape it, so the one-answer encoding falls short."""
    last = len(conv.messages) - 1
    return conv.trained != (last,) or conv.tools is not None or "tool_calls" in conv.messages[last]


def _render(tokenizer: PreTrainedTokenizerBase, conv: Conversation, upto: int, generation_prompt: bool) -> str:
    template = None if tokenizer.chat_template else FALLBACK_TEMPLATE
    text = tokenizer.apply_chat_template(conv.messages[:upto], tools=conv.tools, chat_template=template,
                                         tokenize=False, add_generation_prompt=generation_prompt)
    return str(text)


def conversation_pieces(tokenizer: PreTrainedTokenizerBase, conv: Conversation) -> list[tuple[str, bool]]:
    """The rendered conversation as ``(text, trained)`` pieces, in order; the trained ones are assistant answers
    up to and including their end-of-turn token.

    A template whose rendering of the earlier turns changes once a later turn follows (some strip the
    reasoning of past turns) cannot give an exact mask for those turns: that is an error naming the turn.
    """
    eot = end_of_turn(tokenizer)
    pieces: list[tuple[str, bool]] = []
    done = ""
    for i, m in enumerate(conv.messages):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, conv, i, True)
        through = _render(tokenizer, conv, i + 1, False)
        if not before.startswith(done) or not through.startswith(before):
            raise DataError(f"the model's chat template renders assistant turn {i} differently once later turns "
                            "follow, so its loss mask cannot be exact; set \"weight\": 0 on the earlier assistant "
                            "turns or train one answer per row")
        answer = through[len(before):]
        cut = answer.find(eot)
        said = answer[: cut + len(eot)] if cut >= 0 else answer.rstrip()
        # a template that does not close turns (the fallback one): the answer still ends with the stop token
        pieces += [(before[len(done):], False), (said if cut >= 0 else said + eot, i in conv.trained)]
        done = before + said
    return [(text, trained) for text, trained in pieces if text]


def encode_conversation(tokenizer: PreTrainedTokenizerBase, conv: Conversation, max_length: int) -> Encoded:
    """Token ids of the whole conversation with labels on the trained answers only.

    Over-long rows keep their last ``max_length`` tokens (the oldest turns go first, as for prompts).
    """
    ids: list[int] = []
    labels: list[int] = []
    for text, trained in conversation_pieces(tokenizer, conv):
        tokens = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += tokens
        labels += tokens if trained else [IGNORE] * len(tokens)
    truncated = len(ids) > max_length
    if truncated:
        ids, labels = ids[-max_length:], labels[-max_length:]
    return Encoded(input_ids=ids, labels=labels, truncated=truncated,
                   n_answer=sum(1 for label in labels if label != IGNORE))
