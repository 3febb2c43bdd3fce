"""``my_task``: short-answer questions. Rows are ``{"question": ..., "answer": ...}``; scored by token F1.

It reuses the generation task's decoding and training and only says how a row becomes an example and
how answers are scored: what a real plug-in task for a new row layout would write.
"""

from __future__ import annotations

from typing import Any

from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems, require_text
from tuneforge.evaluate.metrics_extra import qa_exact_match, token_f1
from tuneforge.recipe import Section, TaskSection
from tuneforge.tasks.base import TASKS, Example
from tuneforge.tasks.generation import Generation


class ShortAnswerSettings(Section):
    """The task's own recipe section, ``my_task:``."""

    #: SQuAD's normalisation (case, punctuation, articles) before exact match; off: the strings must be equal
    normalise: bool = True


@TASKS.register("my_task", config=TaskSection("my_task", ShortAnswerSettings))
class ShortAnswer(Generation):
    name = "my_task"
    headline = ("token_f1", "exact_match")
    per_item_metrics = ("token_f1",)
    validation_metrics = ("token_f1",)
    lower_is_better = ()

    def parse(self, records: list[Record], what: str) -> list[Example]:
        problems = Problems()
        examples = []
        for rec in records:
            question, answer = require_text(rec, "question", problems), require_text(rec, "answer", problems)
            if question is not None and answer is not None:
                examples.append(Example(where=rec.where(), text=question, target=answer,
                                        messages=[{"role": "user", "content": question}]))
        problems.raise_if_any(what)
        return examples

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        refs, preds = [e.target for e in examples], [p["prediction"] for p in predictions]
        if not (self.settings.own or ShortAnswerSettings()).normalise:
            return {"token_f1": token_f1(refs, preds), "exact_match": sum(map(str.__eq__, refs, preds)) / len(refs)}
        return {"token_f1": token_f1(refs, preds), "exact_match": qa_exact_match(refs, preds)}

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        return {"token_f1": [token_f1([e.target], [p["prediction"]]) for e, p in zip(examples, predictions)]}

    def extra_eval(self, model: Any, examples: list[Example]) -> dict[str, Any]:
        return {}
