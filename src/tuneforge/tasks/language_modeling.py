"""Continued pre-training: next-token training on raw domain text (unsupervised domain adaptation).

Gururangan et al. (2020, "Don't Stop Pretraining", https://arxiv.org/abs/2004.10964) show that a further
pass of the pre-training objective over in-domain text helps the supervised tasks that follow. Training
text is packed: every document is tokenised, documents are joined with the end-of-sequence token and the
stream is cut into ``train.max_length`` blocks, so no compute goes to padding (as in GPT-2 and the
transformers ``run_clm`` example; documents sharing a block see each other, the standard trade-off for
pre-training). The score is held-out perplexity, lower is better, per document and over the corpus.
"""

from __future__ import annotations

import math
from typing import Any

from transformers import PreTrainedModel

from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems, require_text
from tuneforge.errors import ConfigError
from tuneforge.evaluate.metrics import perplexity
from tuneforge.tasks.base import TASKS, Encoded, Example, Task
from tuneforge.tasks.decoding import answer_logprobs

MIN_BLOCK = 8  # a shorter tail of the packed stream is dropped: too little context to learn from


@TASKS.register("language_modeling")
class LanguageModeling(Task):
    name = "language_modeling"
    headline = ("perplexity",)
    lower_is_better = ("perplexity",)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.model_kind != "decoder":
            raise ConfigError("language_modeling (continued pre-training) needs a decoder model")

    def parse(self, records: list[Record], what: str) -> list[Example]:
        problems = Problems()
        assert self.settings.data is not None  # a task is built from a one-task recipe, which has its data section
        field = self.settings.data.text_field
        examples = [Example(where=f"{r.source}:{r.line}", text=t, target=None)
                    for r in records if (t := require_text(r, field, problems)) is not None]
        problems.raise_if_any(what)
        return examples

    def with_placeholder(self, fields: dict[str, Any]) -> dict[str, Any]:
        assert self.settings.data is not None
        fields.setdefault(self.settings.data.text_field, "")  # the text is the input: no placeholder
        return fields

    def check_distill(self) -> None:
        raise ConfigError("distill: continued pre-training learns from raw text, not from a teacher; "
                          "remove the distill section")

    def _ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def _block(self, ids: list[int]) -> Encoded:
        return Encoded(input_ids=ids, labels=list(ids), n_answer=len(ids) - 1)

    def encode(self, example: Example) -> Encoded:
        return self._block(self._ids(example.text)[: self.settings.max_length])

    def encode_many(self, examples: list[Example]) -> list[Encoded]:
        eos = self.tokenizer.eos_token_id
        stream: list[int] = []
        for e in examples:
            stream += self._ids(e.text) + ([eos] if eos is not None else [])
        n = self.settings.max_length
        blocks = [stream[i : i + n] for i in range(0, len(stream), n)]
        return [self._block(b) for b in blocks if len(b) >= MIN_BLOCK]

    def _windows(self, example: Example) -> list[Encoded]:
        """A document longer than the context is scored in consecutive windows (no token twice)."""
        ids, n = self._ids(example.text), self.settings.max_length
        return [self._block(ids[i : i + n]) for i in range(0, len(ids), n) if len(ids[i : i + n]) >= 2]

    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        windows = [self._windows(e) for e in examples]
        flat = [w for ws in windows for w in ws]
        scored = iter(answer_logprobs(model, self.tokenizer, flat, self.settings.eval.batch_size,
                                      self.settings.eval.dtype))
        out = []
        for ws in windows:
            parts = [next(scored) for _ in ws]
            nll, n = -sum(s for s, _ in parts), sum(k for _, k in parts)
            out.append({"prediction": perplexity(nll, n) if n else math.nan, "nll": nll, "tokens": n})
        return out

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        nll = sum(p["nll"] for p in predictions)
        n = sum(p["tokens"] for p in predictions)
        return {"perplexity": perplexity(nll, n) if n else math.nan, "tokens": n}
