"""Generation: an instruction or a conversation to free text.

Rows come in the three layouts practitioners use: prompt/completion, chat ``messages`` (the
OpenAI fine-tuning format: every assistant message is learnt unless it says ``"weight": 0``; see
``tasks/chat_turns.py``), ShareGPT conversations and alpaca (instruction/input/output). All become
a list of prompt messages plus an answer (and, for conversations that train more than their last
answer, the whole conversation), so the model's own chat template formats them and the loss falls
on the trained answers only.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedModel

from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems, require_text
from tuneforge.errors import ConfigError
from tuneforge.evaluate.metrics import bleu, perplexity, rouge_l
from tuneforge.tasks.base import TASKS, Encoded, Example, Task, encode_prompt_answer
from tuneforge.tasks.chat_turns import encode_conversation, needs_whole_conversation, parse_conversation
from tuneforge.tasks.decoding import answer_logprobs, generate

#: ShareGPT's speaker names (``from``) -> chat roles, as LLaMA-Factory's ``sharegpt`` formatting reads them
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}


def detect_format(fields: dict[str, Any], recipe_data: Any) -> str:
    if recipe_data.messages_field in fields:
        return "messages"
    if "conversations" in fields:
        return "sharegpt"
    if "instruction" in fields and "output" in fields:
        return "alpaca"
    if recipe_data.prompt_field in fields:
        return "prompt_completion"
    raise ConfigError(
        f"cannot tell the data format from the fields {sorted(fields)}: expected "
        f"{recipe_data.messages_field!r}, instruction/output, or {recipe_data.prompt_field!r}/"
        f"{recipe_data.completion_field!r}; set data.format and the field names"
    )


def _references(rec: Record, field: str | None, problems: Problems) -> list[str] | None:
    """The row's list of acceptable answers (``data.references_field``); ``None`` when the recipe names no such
    field or the row lacks it (training rows usually hold one completion each, the test rows all references)."""
    if field is None or field not in rec.fields:
        return None
    value = rec.fields[field]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) and v.strip() for v in value):
        problems.add(rec, f"field {field!r} (data.references_field) must be a non-empty list of non-empty strings")
        return None
    return list(value)


def sharegpt_messages(rec: Record, problems: Problems) -> list[dict[str, Any]] | None:
    """ShareGPT's ``conversations: [{from, value}]`` as chat messages (``human`` -> user, ``gpt`` -> assistant)."""
    turns = rec.fields.get("conversations")
    if not isinstance(turns, list) or not turns:
        problems.add(rec, "field 'conversations' must be a non-empty list of {from, value} turns")
        return None
    messages = []
    for i, turn in enumerate(turns):
        role = SHAREGPT_ROLES.get(turn.get("from")) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            problems.add(rec, f"conversations[{i}] must be an object with from in {sorted(SHAREGPT_ROLES)} "
                              "and string value")
            return None
        messages.append({"role": role, "content": turn["value"]})
    if isinstance(rec.fields.get("system"), str) and messages[0]["role"] != "system":
        messages.insert(0, {"role": "system", "content": rec.fields["system"]})
    return messages


def alpaca_history(rec: Record) -> list[dict[str, str]]:
    """LLaMA-Factory's alpaca ``system`` and ``history: [[instruction, answer], ...]``: the turns before the prompt."""
    turns: list[dict[str, str]] = []
    if isinstance(rec.fields.get("system"), str) and rec.fields["system"].strip():
        turns.append({"role": "system", "content": rec.fields["system"]})
    for pair in rec.fields.get("history") or []:
        if isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair):
            turns += [{"role": "user", "content": pair[0]}, {"role": "assistant", "content": pair[1]}]
    return turns


def references_of(example: Example) -> list[str]:
    """Every answer an item accepts: its ``references`` when the data gave them, else its one target."""
    return example.references if example.references is not None else [example.target]


@TASKS.register("generation")
class Generation(Task):
    name = "generation"
    headline = ("rouge_l", "bleu", "perplexity")
    per_item_metrics = ("rouge_l",)
    validation_metrics = ("rouge_l", "bleu")
    lower_is_better = ("perplexity",)
    generates = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.model_kind != "decoder":
            raise ConfigError("generation needs a decoder (text generation) model; pick one with `tuneforge models`")

    def _system(self) -> list[dict[str, str]]:
        system = self.settings.prompt.system
        return [] if system is None else [{"role": "system", "content": system}]

    def _parse_one(self, rec: Record, fmt: str, problems: Problems) -> Example | None:
        """One row as an example; with ``data.references_field``, all its references ride along for scoring."""
        refs = _references(rec, self.settings.data.references_field, problems)
        example = self._parse_body(rec, fmt, problems)
        if example is not None and refs is not None:
            example.references = refs
        return example

    def _parse_body(self, rec: Record, fmt: str, problems: Problems) -> Example | None:
        cfg = self.settings.data
        if fmt in ("messages", "sharegpt"):
            turns = sharegpt_messages(rec, problems) if fmt == "sharegpt" else None
            if fmt == "sharegpt" and turns is None:
                return None
            msgs = rec.fields.get(cfg.messages_field) if turns is None else turns
            conv = parse_conversation(rec, cfg.messages_field, msgs, problems)
            if conv is None:
                return None
            conv.messages = [{**m, "content": self.clip(m["content"])} for m in conv.messages]
            if conv.messages[0]["role"] != "system" and self._system():
                conv.messages = self._system() + conv.messages
                conv.trained = tuple(i + 1 for i in conv.trained)
            prompt, answer = conv.messages[:-1], self.clip(conv.answer, keep_end=False)
            whole = conv if needs_whole_conversation(conv) else None
            return Example(where=rec.where(), text=prompt[-1]["content"], target=answer, messages=prompt,
                           conversation=whole)
        if fmt == "alpaca":
            instruction = require_text(rec, "instruction", problems)
            answer = require_text(rec, "output", problems)
            extra = rec.fields.get("input") or ""
            if instruction is None or answer is None:
                return None
            user = instruction + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
            history = [{"role": m["role"], "content": self.clip(m["content"])} for m in alpaca_history(rec)]
            if history:
                user, answer = self.clip(user), self.clip(answer, keep_end=False)
                system = [] if history[0]["role"] == "system" else self._system()
                messages = system + history + [{"role": "user", "content": user}]
                return Example(where=rec.where(), text=user, target=answer, messages=messages)
        else:
            user = require_text(rec, cfg.prompt_field, problems)
            answer = require_text(rec, cfg.completion_field, problems)
            if user is None or answer is None:
                return None
        user, answer = self.clip(user), self.clip(answer, keep_end=False)
        if self.settings.prompt.instruction:
            user = self.settings.prompt.instruction + "\n\n" + user
        messages = self._system() + [{"role": "user", "content": user}]
        return Example(where=rec.where(), text=user, target=answer, messages=messages)

    def parse(self, records: list[Record], what: str) -> list[Example]:
        if not records:
            return []
        fmt = self.schema.get("format", self.settings.data.format)
        if fmt == "auto":  # decided once, from the first file parsed (train), for every split
            fmt = detect_format(records[0].fields, self.settings.data)
            self.schema["format"] = fmt
        if fmt == "text":
            raise ConfigError("data.format 'text' (raw text) is not a generation layout; "
                              "use prompt_completion, messages or alpaca")
        problems = Problems()
        examples = [ex for rec in records if (ex := self._parse_one(rec, fmt, problems)) is not None]
        problems.raise_if_any(what)
        self.report_clipped(what)
        return examples

    # -- inputs to predict on: laid out as the training rows were -----------------------
    def _format(self) -> str:
        return str(self.schema.get("format", self.settings.data.format))

    def with_placeholder(self, fields: dict[str, Any]) -> dict[str, Any]:
        cfg = self.settings.data
        msgs = fields.get(cfg.messages_field)
        if isinstance(msgs, list):  # a conversation: the answer to predict is the assistant turn it lacks
            if not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
                fields[cfg.messages_field] = [*msgs, {"role": "assistant", "content": "-"}]
        elif isinstance(fields.get("conversations"), list):
            turns = fields["conversations"]
            if not turns or not isinstance(turns[-1], dict) or SHAREGPT_ROLES.get(turns[-1].get("from")) != "assistant":
                fields["conversations"] = [*turns, {"from": "gpt", "value": "-"}]
        elif "instruction" in fields:
            fields.setdefault("output", "-")
        else:
            fields.setdefault(cfg.completion_field, "-")
        return fields

    def input_fields(self, text: str) -> dict[str, Any]:
        """A prompt in the layout of the training rows: a one-message conversation, an alpaca instruction or
        a prompt field."""
        cfg = self.settings.data
        layouts: dict[str, dict[str, Any]] = {"messages": {cfg.messages_field: [{"role": "user", "content": text}]},
                   "sharegpt": {"conversations": [{"from": "human", "value": text}]},
                   "alpaca": {"instruction": text}}
        return layouts.get(self._format(), {cfg.prompt_field: text})

    def chat_fields(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The whole conversation for a run trained on conversations; else the last user message as the prompt."""
        if self._format() == "messages":
            return {self.settings.data.messages_field: messages}
        return super().chat_fields(messages)

    def encode(self, example: Example) -> Encoded:
        """Every trained assistant turn of a conversation, else the one answer after its prompt."""
        if example.conversation is not None:
            return encode_conversation(self.tokenizer, example.conversation, self.settings.max_length)
        return encode_prompt_answer(self.tokenizer, example.messages, example.target, self.settings.max_length)

    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        ev = self.settings.eval
        out = generate(model, self.tokenizer, [self.prompt_messages(e) for e in examples],
                       max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size, desc="generate",
                       dtype=ev.dtype)
        return [self.from_answer(text) for text in out]

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        """BLEU against all references of each item, ROUGE-L against its best one; the number of references used."""
        refs = [references_of(e) for e in examples]
        preds = [p["prediction"] for p in predictions]
        b = bleu(refs, preds)
        return {"rouge_l": rouge_l(refs, preds), "bleu": b["score"], "bleu_signature": b["signature"],
                "references_per_item": sum(len(r) for r in refs) / len(refs)}

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        return {"rouge_l": [rouge_l([references_of(e)], [p["prediction"]]) for e, p in zip(examples, predictions)]}

    def extra_eval(self, model: PreTrainedModel, examples: list[Example]) -> dict[str, Any]:
        """Perplexity of the reference answers (teacher-forced), end-of-turn token included."""
        scored = answer_logprobs(model, self.tokenizer, [self.encode(e) for e in examples],
                                 self.settings.eval.batch_size, self.settings.eval.dtype)
        nll = -sum(s for s, _ in scored)
        n = sum(k for _, k in scored)
        return {"perplexity": perplexity(nll, n) if n else math.nan}
