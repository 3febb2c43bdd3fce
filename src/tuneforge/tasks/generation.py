"""Generation: an instruction or a conversation to free text.

Rows come in the three layouts practitioners use: prompt/completion, chat ``messages`` (the
OpenAI fine-tuning format: the last message is the assistant answer to learn) and alpaca
(instruction/input/output). All become a list of prompt messages plus an answer, so the model's
own chat template formats them and the loss falls on the answer only.
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
from tuneforge.tasks.decoding import answer_logprobs, generate

ROLES = {"system", "user", "assistant"}


def detect_format(fields: dict[str, Any], recipe_data: Any) -> str:
    if recipe_data.messages_field in fields:
        return "messages"
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


def _parse_messages(rec: Record, field: str, problems: Problems) -> tuple[list[dict[str, str]], str] | None:
    msgs = rec.fields.get(field)
    if not isinstance(msgs, list) or not msgs:
        problems.add(rec, f"field {field!r} must be a non-empty list of messages")
        return None
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            problems.add(rec, f"{field}[{i}] must be an object with role in {sorted(ROLES)} and string content")
            return None
    if msgs[-1]["role"] != "assistant" or not msgs[-1]["content"].strip():
        problems.add(rec, f"the last message in {field!r} must be a non-empty assistant answer to learn from")
        return None
    if len(msgs) < 2 or msgs[-2]["role"] == "assistant":
        problems.add(rec, f"{field!r} needs a user (or system) message before the final assistant answer")
        return None
    return [{"role": m["role"], "content": m["content"]} for m in msgs[:-1]], msgs[-1]["content"]


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

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.model_kind != "decoder":
            raise ConfigError("generation needs a decoder (text generation) model; pick one with `tuneforge models`")

    def _system(self) -> list[dict[str, str]]:
        return [] if self.recipe.prompt.system is None else [{"role": "system", "content": self.recipe.prompt.system}]

    def _parse_one(self, rec: Record, fmt: str, problems: Problems) -> Example | None:
        """One row as an example; with ``data.references_field``, all its references ride along for scoring."""
        refs = _references(rec, self.recipe.data.references_field, problems)
        example = self._parse_body(rec, fmt, problems)
        if example is not None and refs is not None:
            example.references = refs
        return example

    def _parse_body(self, rec: Record, fmt: str, problems: Problems) -> Example | None:
        cfg = self.recipe.data
        if fmt == "messages":
            parsed = _parse_messages(rec, cfg.messages_field, problems)
            if parsed is None:
                return None
            prompt, answer = parsed
            prompt = [{"role": m["role"], "content": self.clip(m["content"])} for m in prompt]
            answer = self.clip(answer, keep_end=False)
            if prompt[0]["role"] != "system":
                prompt = self._system() + prompt
            return Example(where=rec.where(), text=prompt[-1]["content"], target=answer, messages=prompt)
        if fmt == "alpaca":
            instruction = require_text(rec, "instruction", problems)
            answer = require_text(rec, "output", problems)
            extra = rec.fields.get("input") or ""
            if instruction is None or answer is None:
                return None
            user = instruction + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
        else:
            user = require_text(rec, cfg.prompt_field, problems)
            answer = require_text(rec, cfg.completion_field, problems)
            if user is None or answer is None:
                return None
        user, answer = self.clip(user), self.clip(answer, keep_end=False)
        if self.recipe.prompt.instruction:
            user = self.recipe.prompt.instruction + "\n\n" + user
        messages = self._system() + [{"role": "user", "content": user}]
        return Example(where=rec.where(), text=user, target=answer, messages=messages)

    def parse(self, records: list[Record], what: str) -> list[Example]:
        if not records:
            return []
        fmt = self.schema.get("format", self.recipe.data.format)
        if fmt == "auto":  # decided once, from the first file parsed (train), for every split
            fmt = detect_format(records[0].fields, self.recipe.data)
            self.schema["format"] = fmt
        if fmt == "text":
            raise ConfigError("data.format 'text' (raw text) is not a generation layout; use prompt_completion, messages or alpaca")
        problems = Problems()
        examples = [ex for rec in records if (ex := self._parse_one(rec, fmt, problems)) is not None]
        problems.raise_if_any(what)
        self.report_clipped(what)
        return examples

    # -- inputs to predict on: laid out as the training rows were -----------------------
    def _format(self) -> str:
        return str(self.schema.get("format", self.recipe.data.format))

    def with_placeholder(self, fields: dict[str, Any]) -> dict[str, Any]:
        cfg = self.recipe.data
        msgs = fields.get(cfg.messages_field)
        if isinstance(msgs, list):  # a conversation: the answer to predict is the assistant turn it lacks
            if not msgs or not isinstance(msgs[-1], dict) or msgs[-1].get("role") != "assistant":
                fields[cfg.messages_field] = [*msgs, {"role": "assistant", "content": "-"}]
        elif "instruction" in fields:
            fields.setdefault("output", "-")
        else:
            fields.setdefault(cfg.completion_field, "-")
        return fields

    def input_fields(self, text: str) -> dict[str, Any]:
        """A prompt in the layout of the training rows: a one-message conversation, an alpaca instruction or
        a prompt field."""
        cfg = self.recipe.data
        layouts: dict[str, dict[str, Any]] = {"messages": {cfg.messages_field: [{"role": "user", "content": text}]},
                   "alpaca": {"instruction": text}}
        return layouts.get(self._format(), {cfg.prompt_field: text})

    def chat_fields(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The whole conversation for a run trained on conversations; else the last user message as the prompt."""
        if self._format() == "messages":
            return {self.recipe.data.messages_field: messages}
        return super().chat_fields(messages)

    def encode(self, example: Example) -> Encoded:
        return encode_prompt_answer(self.tokenizer, example.messages, example.target, self.recipe.train.max_length)

    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        ev = self.recipe.eval
        out = generate(model, self.tokenizer, [e.messages for e in examples],
                       max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size, desc="generate")
        return [{"prediction": text} for text in out]

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
        scored = answer_logprobs(model, self.tokenizer, [self.encode(e) for e in examples], self.recipe.eval.batch_size)
        nll = -sum(s for s, _ in scored)
        n = sum(k for _, k in scored)
        return {"perplexity": perplexity(nll, n) if n else math.nan}
