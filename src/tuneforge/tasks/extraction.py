"""Extraction: text to a JSON object with a fixed set of fields.

The decoder answers with compact JSON whose keys always come in the schema's order, so the model
learns one stable layout and never has to guess a key order. Absent fields are written as ``null``
by default; ``prompt.absent_fields: omit`` leaves them out, which suits schemas where most fields
are absent in most rows (SNIPS has 39 slot types, a request fills two or three): the all-null
answer is then 276 tokens, and a short budget learns to answer nulls only.
Predictions are parsed leniently (code fences, trailing text) and scored per field.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field
from transformers import PreTrainedModel

from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems, require_field, require_text
from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluate.metrics import exact_match, field_prf, json_valid, normalise_record, parse_json_object
from tuneforge.tasks.base import TASKS, Encoded, Example, Task, encode_prompt_answer, fill_placeholders
from tuneforge.tasks.decoding import generate

DEFAULT_INSTRUCTION = (
    "Extract these fields from the text as a JSON object: {fields}. "
    "{absent} Answer with the JSON object only."
)
ABSENT = {"null": "Use null for a field the text does not state.",
          "omit": "Leave out a field the text does not state."}


class Extracted(BaseModel):
    """One result of /v1/extract: the parsed object and the answer it was parsed from."""

    fields: dict[str, Any] | None = Field(description="the parsed JSON object, null when the answer was not JSON")
    raw: str = Field(description="the model's answer as generated")


@TASKS.register("extraction")
class Extraction(Task):
    name = "extraction"
    headline = ("json_valid", "exact_match", "field_f1")
    per_item_metrics = ("json_valid", "exact_match")
    validation_metrics = ("json_valid", "exact_match", "field_f1", "field_precision", "field_recall")
    serve_route = "/v1/extract"
    serve_result_model = Extracted
    generates = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.model_kind != "decoder":
            raise ConfigError("extraction needs a decoder (text generation) model; pick one with `tuneforge models`")

    @property
    def fields(self) -> list[str]:
        return self.schema["fields"]

    def parse(self, records: list[Record], what: str) -> list[Example]:
        cfg = self.settings.data
        problems = Problems()
        examples = []
        for rec in records:
            text = require_text(rec, cfg.text_field, problems)
            target = require_field(rec, cfg.target_field, problems)
            if isinstance(target, str):  # CSV cells hold the object as a JSON string
                try:
                    target = json.loads(target)
                except json.JSONDecodeError as err:
                    problems.add(rec, f"field {cfg.target_field!r} is not valid JSON ({err.msg})")
                    continue
            if target is None and rec.fields.get(cfg.target_field) is not None:  # the string "null"
                problems.add(rec, f"field {cfg.target_field!r} must be a JSON object, got null")
                continue
            if target is not None and not isinstance(target, dict):
                problems.add(rec, f"field {cfg.target_field!r} must be a JSON object, got {type(target).__name__}")
                continue
            if text is not None and target is not None:
                examples.append(Example(where=rec.where(), text=self.clip(text), target=target))
        problems.raise_if_any(what)
        self.report_clipped(what)
        return examples

    def with_placeholder(self, fields: dict[str, Any]) -> dict[str, Any]:
        fields.setdefault(self.settings.data.target_field, {})
        return fields

    def fit_schema(self, train: list[Example]) -> None:
        fields = list(self.settings.data.fields or [])
        if not fields:
            for e in train:
                fields.extend(k for k in e.target if k not in fields)
        if not fields:
            raise DataError("extraction needs at least one field; every training object is empty")
        self.schema = {"fields": fields}

    def check_against_schema(self, examples: list[Example], what: str) -> None:
        if self.settings.data.fields:  # declared fields: other keys are ignored in every split
            return
        known = set(self.fields)
        bad = [f"{e.where}: unknown field(s) {sorted(set(e.target) - known)} (known: {', '.join(self.fields)})"
               for e in examples if set(e.target) - known]
        if bad:
            raise DataError(f"{len(bad)} bad row(s) in {what}; fix them or list the fields in data.fields", bad)

    def _messages(self, text: str) -> list[dict[str, str]]:
        instruction = self.settings.prompt.instruction or DEFAULT_INSTRUCTION
        system = self.settings.prompt.system
        messages = [] if system is None else [{"role": "system", "content": system}]
        absent = ABSENT[self.settings.prompt.absent_fields]
        user = fill_placeholders(instruction, fields=", ".join(self.fields), absent=absent) + "\n\nText: " + text
        return messages + [{"role": "user", "content": user}]

    def prompt_messages(self, example: Example) -> list[dict[str, str]]:
        return self._messages(example.text)

    def answer(self, target: dict[str, Any]) -> str:
        omit = self.settings.prompt.absent_fields == "omit"
        return json.dumps({k: target.get(k) for k in self.fields if not (omit and target.get(k) is None)},
                          ensure_ascii=False)

    def encode(self, example: Example) -> Encoded:
        return encode_prompt_answer(self.tokenizer, self._messages(example.text), self.answer(example.target),
                                    self.settings.max_length)

    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        ev = self.settings.eval
        raw = generate(model, self.tokenizer, [self.prompt_messages(e) for e in examples],
                       max_new_tokens=ev.max_new_tokens, batch_size=ev.batch_size, desc="extract",
                       dtype=ev.dtype)
        return [self.from_answer(r) for r in raw]

    def from_answer(self, raw: str) -> dict[str, Any]:
        return {"prediction": parse_json_object(raw), "raw": raw}

    def _pairs(self, examples: list[Example],
               predictions: list[dict[str, Any]]) -> tuple[list[dict], list[dict | None]]:
        refs = [{k: e.target.get(k) for k in self.fields} for e in examples]
        preds = [None if p["prediction"] is None else {k: p["prediction"].get(k) for k in self.fields}
                 for p in predictions]
        return refs, preds

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        refs, preds = self._pairs(examples, predictions)
        prf = field_prf(refs, preds)
        return {
            "json_valid": json_valid(refs, [p["prediction"] for p in predictions]),
            "exact_match": exact_match(refs, preds),
            "field_f1": prf["f1"],
            "field_precision": prf["precision"],
            "field_recall": prf["recall"],
            "per_field": prf["per_field"],
            **invented_values([e.text for e in examples], preds, self.fields),
        }

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        refs, preds = self._pairs(examples, predictions)
        return {
            "json_valid": [float(p["prediction"] is not None) for p in predictions],
            "exact_match": [exact_match([r], [p]) for r, p in zip(refs, preds)],
            "field_f1": [item_field_f1(r, p) for r, p in zip(refs, preds)],
        }

    # -- serving and the model card ---------------------------------------------------
    def serve_result(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return {"fields": prediction["prediction"], "raw": prediction["raw"]}

    @classmethod
    def card_purpose(cls, schema: dict[str, Any]) -> str:
        fields = schema.get("fields", [])
        return "turns a text into a JSON object" + (f" with the fields {', '.join(f'`{x}`' for x in fields)}"
                                                    if fields else "")

    @classmethod
    def reference_field(cls, data: dict[str, Any]) -> str | None:
        return str(data["target_field"])

    @classmethod
    def is_wrong(cls, reference: Any, prediction: Any) -> bool:
        return not isinstance(prediction, dict) or normalise_record(reference) != normalise_record(prediction)


def item_field_f1(ref: dict[str, Any], pred: dict[str, Any] | None) -> float:
    """Field F1 of one record; a record with no fields that is predicted with none is right (1.0), not 0."""
    if not normalise_record(ref) and not normalise_record(pred or {}):
        return 1.0
    return float(field_prf([ref], [pred])["f1"])


def _values(value: Any) -> list[str]:
    """A field's predicted value as the strings that should occur in the input (a list holds several)."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(v).strip() for v in items if v is not None and str(v).strip()]


def invented_values(texts: list[str], preds: list[dict[str, Any] | None], fields: list[str]) -> dict[str, Any]:
    """Grounding: the share of predicted values that do not occur in the input (case-insensitive), per field.

    A value the input never states is invented (a brand guessed from the product type, "Hestia" made
    into a value the listing does not hold); it is the error a copy-from-input constraint would remove. Fields
    whose values are rightly not copied (a normalised unit, a yes/no) show a high rate by design, so read it per
    field. ``invented_rate`` is over all predicted values; a field with no predicted values is left out.

    >>> invented_values(["Acme red mug"], [{"brand": "Acme", "colour": "blue"}], ["brand", "colour"])["invented_rate"]
    0.5
    """
    counts = {f: [0, 0] for f in fields}  # field -> [invented, predicted]
    for text, pred in zip(texts, preds):
        haystack = text.casefold()
        for field in fields:
            for value in _values((pred or {}).get(field)):
                counts[field][1] += 1
                counts[field][0] += value.casefold() not in haystack
    total = sum(n for _, n in counts.values())
    return {"invented_rate": sum(i for i, _ in counts.values()) / total if total else 0.0,
            "invented_by_field": {f: i / n for f, (i, n) in counts.items() if n}}
