"""The served model: turns request inputs into the task's own examples and predictions into answers.

Every input goes through the same path as offline ``tuneforge predict`` (``task.parse_for_prediction``,
then ``task.predict``), so a served answer is the offline answer. The task decides what a request's
text or conversation stands for and how its prediction reads as an answer.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneforge.api import Loaded, load_run
from tuneforge.data.readers import Record
from tuneforge.errors import UserError
from tuneforge.infer import DecodeBatch, Sampling
from tuneforge.tasks.base import Example, pad_id, prompt_text
from tuneforge.tasks.decoding import prompt_ids, prompt_learning, stop_token_ids


@dataclass
class Answer:
    """The text an OpenAI-style endpoint returns, and its token counts."""

    text: str
    completion_tokens: int
    finish_reason: str


class ServedModel:
    """One loaded run. ``predict`` is what the batcher calls; everything else is cheap and thread-safe."""

    def __init__(self, loaded: Loaded, name: str, run_dir: Path | None = None, device: str = "cpu") -> None:
        self.loaded = loaded
        self.name = name
        self.run_dir = run_dir  # where preflight.json is read from (the timeout follows its measured latency)
        self.device = device
        self.task = loaded.task
        # A fast tokenizer must not be used by two threads at once (padding and truncation settings
        # are mutable Rust state: "Already borrowed"); the worker thread has the task's, the event
        # loop this copy for counting and cutting answers.
        self.tokenizer = copy.deepcopy(loaded.task.tokenizer)

    @classmethod
    def from_run(cls, run_dir: Path | str, device: str = "cpu") -> ServedModel:
        return cls(load_run(run_dir, device=device), Path(run_dir).resolve().name, Path(run_dir), device)

    # -- inputs -------------------------------------------------------------------------
    def _examples(self, rows: list[dict[str, Any]]) -> list[Example]:
        records = [Record(source="request", line=i + 1, fields=f) for i, f in enumerate(rows)]
        return self.task.parse_for_prediction(records, "the request")

    def from_texts(self, texts: list[str]) -> list[Example]:
        """Inputs of the task's own endpoint (``/v1/classify``), each a row as the task lays a bare text out."""
        return self._examples([self.task.input_fields(t) for t in texts])

    def from_messages(self, messages: list[dict[str, str]]) -> Example:
        """A chat request: the conversation, or its last user message, as the task reads chats."""
        if messages[-1]["role"] == "assistant":
            raise UserError("messages: the last message must be from the user (the model answers it)")
        return self._examples([self.task.chat_fields(messages)])[0]

    def from_prompt(self, prompt: str) -> Example:
        """A completion request; a generation run formats it the way its training rows were laid out."""
        return self.from_texts([prompt])[0]

    def check_prompt_lengths(self, examples: list[Example], max_tokens: int) -> None:
        """Refuse inputs (the text, or the messages' contents) longer than ``max_tokens`` for a generating task.

        Generation time grows with the prompt and the offline path does not truncate it, so one
        long prompt would hold the batch for every other caller; a classifier truncates to
        ``train.max_length`` itself and needs no check.
        """
        if self.task.predicts_labels:
            return
        for i, e in enumerate(examples):
            n = self.count_tokens("\n".join(m["content"] for m in e.messages) if e.messages else e.text)
            if n > max_tokens:
                raise UserError(f"input {i}: the input is {n} tokens; this server accepts at most {max_tokens} "
                                "(the run was tuned on prompts up to train.max_length); shorten the text")

    # -- the model (worker thread only) -----------------------------------------------
    def predict(self, examples: list[Example]) -> list[dict[str, Any]]:
        return self.task.predict(self.loaded.model, examples)

    # -- outputs ------------------------------------------------------------------------
    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generated_tokens(self, prediction: dict[str, Any]) -> int:
        """Tokens the model generated for one prediction (0 for a classifier); worker thread only."""
        raw = "" if self.task.predicts_labels else self.task.answer_text(prediction)
        if not isinstance(raw, str) or not raw:
            return 0
        return len(self.task.tokenizer(raw, add_special_tokens=False)["input_ids"])

    def answer(self, prediction: dict[str, Any], max_tokens: int | None) -> Answer:
        """The prediction as chat/completion text: the label, the extracted JSON, or the generated text."""
        text = self.task.answer_text(prediction)
        if self.task.predicts_labels:
            return Answer(text, 1, "stop")
        ids = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        limit = self.task.settings.eval.max_new_tokens
        if max_tokens is not None and len(ids) > max_tokens:
            # greedy decoding is prefix-stable: the first k tokens of a longer answer are the k-token answer
            return Answer(self.tokenizer.decode(ids[:max_tokens], skip_special_tokens=True), max_tokens, "length")
        return Answer(text, len(ids), "length" if len(ids) >= limit else "stop")

    def prompt_tokens(self, example: Example) -> int:
        """Tokens the model reads for ``example``: the chat-templated prompt for a decoder (what ``generate``
        and the label scorer feed it, system prompt and instruction included), an encoder's input with its
        special tokens, truncated to ``train.max_length`` as the classifier truncates it."""
        if self.task.model_kind == "encoder":
            ids = self.tokenizer(example.text, truncation=True, max_length=self.task.settings.max_length)
            return len(ids["input_ids"])
        return self.count_tokens(prompt_text(self.tokenizer, self.task.prompt_messages(example)))

    @property
    def forwards_per_item(self) -> int:
        """Forward passes one input costs at most: one for an encoder, one per new token for a decoder."""
        return 1 if self.task.model_kind == "encoder" else 1 + self.task.settings.eval.max_new_tokens


    # -- generated answers (tasks that ``generate``: the server's own decode loop) ------
    @property
    def decodes_itself(self) -> bool:
        """Whether the server decodes this run's answers in its continuous batch instead of calling ``predict``."""
        return self.task.generates and self.task.model_kind == "decoder" and not prompt_learning(self.loaded.model)

    def new_decode_batch(self) -> DecodeBatch:
        """The decode batch of the worker thread, with a tokenizer of its own (see ``__init__``)."""
        tok = copy.deepcopy(self.task.tokenizer)
        return DecodeBatch(self.loaded.model, tok, stop_token_ids(tok), pad_id(tok))

    def prompt_ids(self, example: Example) -> list[int]:
        """The tokens ``predict`` would feed the model for ``example``."""
        return prompt_ids(self.tokenizer, self.task.prompt_messages(example))

    def sampling(self, max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 seed: int | None = None, stop: tuple[str, ...] = ()) -> Sampling:
        """A request's decoding choices; unset ones are offline ``predict``'s (greedy, ``eval.max_new_tokens``)."""
        limit = self.task.settings.eval.max_new_tokens
        return Sampling(max_new_tokens=min(max_tokens or limit, limit), temperature=temperature or 0.0,
                        top_p=1.0 if top_p is None else top_p, seed=seed, stop=stop)
