"""What every task shares: the example type, the task interface, and decoder prompt formatting.

A task knows three things: how to turn records into examples (validating each row), how to turn
an example into tensors for training, and how to predict and score. It never trains: the one
loop in ``tuneforge.train.loop`` does, calling ``Task.loss`` on each batch.
"""

from __future__ import annotations

import inspect
import logging
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from tuneforge.tasks.packing import collate_packed
from tuneforge.data.readers import Record
from tuneforge.errors import ConfigError, DataError, UserError
from tuneforge.recipe import (DataConfig, DistillConfig, EvalConfig, PromptConfig, Recipe,
                              SpeedConfig, task_sections)
from tuneforge.registry import Registry
from tuneforge.accel.fused_loss import linear_cross_entropy_sum

log = logging.getLogger("tuneforge")
IGNORE = -100  # label id that cross-entropy skips: prompt and padding positions


@dataclass
class Conversation:
    """A whole chat to train on: ``messages`` as the template reads them, the indices of the assistant turns that
    carry loss, and the ``tools`` the row declares (rendered by templates that know tools)."""

    messages: list[dict[str, Any]]
    trained: tuple[int, ...]
    tools: list[dict[str, Any]] | None = None
    #: the final answer as text, the reference that evaluation compares a generation with
    answer: str = ""


@dataclass
class Example:
    """One validated row. ``messages`` is the prompt for decoders; ``text`` the input for encoders."""

    where: str
    text: str
    target: Any
    messages: list[dict[str, str]] = field(default_factory=list)
    #: every acceptable answer when the data gives several (generation's ``data.references_field``); scores use
    #: them all, training learns ``target``
    references: list[str] | None = None
    #: the whole chat when more than the last answer is trained (or tools shape it); None for one prompt and answer
    conversation: Conversation | None = None


@dataclass
class Encoded:
    """Token ids of one example; ``n_answer`` counts the positions that carry loss."""

    input_ids: list[int]
    labels: list[int] | int
    truncated: bool = False
    n_answer: int = 1
    #: a teacher's label distribution, for distillation into a classifier
    soft: list[float] | None = None


@dataclass(frozen=True)
class TaskSettings:
    """The parts of a recipe that a task reads, and no more.

    Why not the whole recipe: a task that held it read the method's, the server's and the training loop's
    sections and grew decisions that belonged to them. A task gets the row layout (``data``), the prompt, the
    evaluation settings, the few training settings that shape its examples and losses, and its own section;
    ``from_recipe`` is the one place that picks them out.
    """

    data: DataConfig | None
    prompt: PromptConfig
    eval: EvalConfig
    #: longest tokenised example (inputs are cut to it)
    max_length: int
    #: the training loss's label smoothing (validation reports the plain loss)
    label_smoothing: float
    #: the run's seed (RL's sampling stream and policy update)
    seed: int
    #: the speed section's packing and loss-chunking choices, which change how batches are built and scored
    speed: SpeedConfig
    #: the task's own recipe section (registered with it as a ``TaskSection``: ``preference``, ``reward``,
    #: ``rl``), None without one
    own: Any = None
    #: distillation into this task (a classifier learns the teacher's soft labels), None when the run does not distil
    distill: DistillConfig | None = None
    #: the method's name: a task whose loss needs the adapter-off reference refuses methods without one
    method: str = "full"
    #: whether code the recipe names (an RL reward function) may run
    allow_code: bool = False

    @classmethod
    def from_recipe(cls, recipe: Recipe) -> TaskSettings:
        section = task_sections().get(recipe.task or "")
        return cls(data=recipe.data, prompt=recipe.prompt, eval=recipe.eval, max_length=recipe.train.max_length,
                   label_smoothing=recipe.train.label_smoothing, seed=recipe.train.seed, speed=recipe.train.speed,
                   own=getattr(recipe, section, None) if section else None, distill=recipe.distill,
                   method=recipe.method.name, allow_code=recipe.allow_code)


#: what a selected metric that reads more than text is called with: per-item argument lists (resampled together
#: for intervals) and fixed keyword arguments (the label set)
MetricInputs = tuple[tuple[list[Any], ...], dict[str, Any]]

#: a judge's scores of (prompt messages, answer) pairs: one reward each
JudgeFn = Callable[[list[list[dict[str, str]]], list[str]], list[float]]


class Task(ABC):
    """Base class of tasks. Subclasses are registered in ``TASKS`` under their ``name``."""

    #: opens a finished reward_model run as a judge (win rate, RL reward); handed in by the run layer that
    #: builds the task (``tuneforge.run.loading.build_task``), so a task never imports the run layer
    open_judge: Callable[[Path], JudgeFn] | None = None

    name: ClassVar[str]
    headline: ClassVar[tuple[str, ...]]
    #: per-item scores (name -> list of floats) that bootstrap confidence intervals are drawn from
    per_item_metrics: ClassVar[tuple[str, ...]] = ()
    #: scalar scores that early stopping may watch (besides the validation loss)
    validation_metrics: ClassVar[tuple[str, ...]] = ()
    #: how prediction results should be compared: higher is better unless named here
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    #: whether ``encode_many`` gives plain rows the on-disk cache can hold (ids, labels, flags); a task whose
    #: encodings carry more (answer groups) or whose encoding keeps state (prompt indices) says no
    cacheable: ClassVar[bool] = True
    #: whether a prediction is one label of a fixed set, with its confidence and per-label probabilities: what
    #: label baselines, active learning, label drift, calibration and confusion tables need; a served answer is
    #: then that label (one token, never cut), and the input needs no length check (scoring truncates it)
    predicts_labels: ClassVar[bool] = False
    #: whether ``predict`` is "generate an answer to ``prompt_messages``, then ``from_answer``": the server then
    #: decodes such answers itself, token by token, in its continuously batched decode loop
    generates: ClassVar[bool] = False
    #: the task's own endpoint beside the OpenAI-compatible ones (``/v1/classify``), or None for none
    serve_route: ClassVar[str | None] = None
    #: the pydantic model of one result on ``serve_route`` (what ``serve_result`` returns)
    serve_result_model: ClassVar[type[BaseModel] | None] = None
    #: what the report's per-slice table (``per_class`` / ``per_field``) lists, named in the model card
    slice_noun: ClassVar[str] = "fields"

    def judge(self, run_dir: Path) -> JudgeFn:
        """The reward-model run ``run_dir`` as a judge, opened by the run layer that built this task."""
        if self.open_judge is None:
            raise ConfigError(f"{run_dir}: this {self.name} task was built without a way to open a judge run; "
                              "build it with tuneforge.run.loading.build_task")
        return self.open_judge(run_dir)

    def __init__(self, settings: TaskSettings, tokenizer: PreTrainedTokenizerBase, model_kind: str) -> None:
        self.settings = settings
        self.tokenizer = tokenizer
        self.model_kind = model_kind
        self.schema: dict[str, Any] = {}
        self._clipped = 0
        if settings.speed.packing and model_kind != "decoder":
            raise ConfigError("train.speed.packing applies to decoder models; "
                              "an encoder classifier has nothing to pack")

    def configure(self, settings: TaskSettings) -> None:
        """Take new settings after the run layer filled in its choices (batch sizes, label smoothing); a task that
        wraps another passes them on."""
        self.settings = settings

    # -- data -------------------------------------------------------------------------
    @abstractmethod
    def parse(self, records: list[Record], what: str) -> list[Example]:
        """Validate every record; raise one ``DataError`` that lists each bad row."""

    def clip(self, text: str, *, keep_end: bool | None = None) -> str:
        """``text`` bounded by ``clip_text`` before any tokenizer sees it; the rows cut are counted.

        ``keep_end`` defaults to the model's own truncation side: the end for decoder prompts, the
        start for encoder inputs (an answer keeps its start: pass ``keep_end=False``).
        """
        keep = self.model_kind == "decoder" if keep_end is None else keep_end
        out = clip_text(text, self.settings.max_length, keep_end=keep)
        if out is not text:
            self._clipped += 1
        return out

    def report_clipped(self, what: str) -> None:
        """One warning for every text that ``clip`` cut while parsing ``what``, not one per row."""
        if self._clipped:
            limit = self.settings.max_length * CHARS_PER_TOKEN
            log.warning("tuneforge: warning: %d text(s) in %s are longer than %s characters (train.max_length x %d) "
                        "and were cut to that length before tokenising; the model sees at most train.max_length "
                        "tokens of a row anyway", self._clipped, what, f"{limit:,}", CHARS_PER_TOKEN)
        self._clipped = 0

    def fit_schema(self, train: list[Example]) -> None:
        """Learn what the task needs from the training split (label set, object fields)."""

    def check_against_schema(self, examples: list[Example], what: str) -> None:
        """Refuse rows that the trained model could not represent (for example unknown labels)."""

    @property
    def head(self) -> str:
        return "causal_lm"

    @abstractmethod
    def encode(self, example: Example) -> Encoded: ...

    def encode_many(self, examples: list[Example]) -> list[Encoded]:
        """Training sequences for ``examples``: one each, unless the task packs them (language modelling)."""
        return [self.encode(e) for e in examples]

    def collate(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        speed = self.settings.speed
        if speed.packing:
            width = speed.pack_width or speed.micro_batch_tokens or self.settings.max_length
            return collate_packed(batch, pad_id=pad_id(self.tokenizer), max_tokens=width)
        return collate_causal(batch, pad_id=pad_id(self.tokenizer))

    def loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *,
             training: bool = False) -> tuple[torch.Tensor, int]:
        """Summed answer-token cross-entropy and the number of tokens it covers.

        ``training`` adds the training-only terms (label smoothing); validation reports the plain loss.
        """
        smoothing = self.settings.label_smoothing if training else 0.0
        return causal_loss_sum(model, batch, label_smoothing=smoothing, chunk=self.settings.speed.loss_chunk)

    # -- prediction and scoring -------------------------------------------------------
    @abstractmethod
    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        """One dict per example, with at least ``prediction`` (JSON-serialisable)."""

    @abstractmethod
    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        """Task metrics; headline values are floats at the top level."""

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        """Per-example values of the per-item metrics (for bootstrap intervals)."""
        return {}

    def label_probabilities(self, model: PreTrainedModel, texts: list[str]) -> list[list[float]]:
        """P(label | text) for every label of a task that ``predicts_labels`` (active learning, the synthetic-data
        label check); the other tasks have no labels to give."""
        raise NotImplementedError(f"task {self.name} predicts no labels")

    def metric_inputs(self, reads: str, examples: list[Example],
                      predictions: list[dict[str, Any]]) -> MetricInputs | None:
        """The arguments of a selected metric that reads ``reads`` (``TextMetric.reads``: ``probabilities``,
        ``rankings``), or None where this task's predictions hold no such thing (the report says so)."""
        return None

    def extra_eval(self, model: PreTrainedModel, examples: list[Example]) -> dict[str, Any]:
        """Metrics computed from the model directly rather than from predictions (perplexity)."""
        return {}

    def step_metrics(self) -> dict[str, float]:
        """Training metrics gathered by ``loss`` since the last call (RL: reward, KL, response length).

        The loop merges them into each step's line of metrics.jsonl; most tasks have none.
        """
        return {}

    @property
    def data_name(self) -> str:
        """The task whose row layout this task reads (RL reads its ``rl.task``'s)."""
        return self.name

    def prompt_messages(self, example: Example) -> list[dict[str, str]]:
        """The chat prompt a decoder answers for ``example`` (on-policy RL samples from it)."""
        return example.messages

    # -- inputs to predict on (``tuneforge predict``, the server, golden cases) ---------------
    def parse_for_prediction(self, records: list[Record], what: str) -> list[Example]:
        """Rows to predict on, which need no target: each gets a stand-in target (``with_placeholder``) so that
        the task's own validation of the input runs, and one ``DataError`` lists every bad row."""
        filled = [Record(source=r.source, line=r.line, fields=self.with_placeholder(dict(r.fields))) for r in records]
        try:
            return self.parse(filled, what)
        except DataError as err:
            raise DataError(f"{len(err.problems)} bad row(s) in {what}; fix them and re-run (nothing was predicted)",
                            err.problems) from None

    def with_placeholder(self, fields: dict[str, Any]) -> dict[str, Any]:
        """``fields`` with a stand-in target where the row has none; a task whose rows hold no target keeps them."""
        return fields

    def input_fields(self, text: str) -> dict[str, Any]:
        """The row that a bare input text stands for (a served text or prompt, a golden case's input)."""
        return {self.settings.data.text_field: text}

    def chat_fields(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        """The row that a chat request stands for: by default its last user message as the input text."""
        return self.input_fields(last_user_message(messages))

    # -- answers as served ------------------------------------------------------------
    def from_answer(self, raw: str) -> dict[str, Any]:
        """The prediction made of one generated answer (a task that ``generates`` parses it here)."""
        return {"prediction": raw}

    def answer_text(self, prediction: dict[str, Any]) -> Any:
        """The answer as the model wrote it (an OpenAI-style reply's text): the raw generation where the
        prediction was parsed from one, else the prediction itself."""
        return prediction.get("raw", prediction["prediction"])

    def serve_result(self, prediction: dict[str, Any]) -> dict[str, Any]:
        """One prediction as a result of ``serve_route``, in the fields of ``serve_result_model``."""
        raise NotImplementedError(f"task {self.name} has no endpoint of its own")

    # -- distillation -----------------------------------------------------------------
    def check_distill(self) -> None:
        """Refuse a ``distill`` section before the teacher is asked, where the task has nothing it could teach."""

    def check_teacher(self, teacher: Task) -> None:
        """Refuse a teacher whose answers this student could not learn from (the task itself is checked already)."""

    def distill_targets(self, examples: list[Example],
                        outputs: list[dict[str, Any]]) -> tuple[list[Example], list[list[float]] | None]:
        """Examples to train on given the teacher's predictions ``outputs``, and soft labels where the task has them.

        By default the student learns the teacher's answers (sequence-level distillation, Kim and Rush 2016,
        https://arxiv.org/abs/1606.07947); an unparseable answer (``None``) teaches nothing, so that row keeps
        its reference.
        """
        relabelled = [Example(where=e.where, text=e.text, messages=e.messages,
                              target=e.target if o["prediction"] is None else o["prediction"])
                      for e, o in zip(examples, outputs)]
        return relabelled, None

    # -- splitting and the model card (read from a run folder: no model, no instance) ---
    def stratify_key(self) -> Callable[[Record], str] | None:
        """What a stratified split (``data.split.stratify``) keeps in the same proportion in every split, as a
        function of a row; None: the task's rows have no such key, and the split is a plain shuffle."""
        return None

    @classmethod
    def answers_task(cls, recipe: dict[str, Any]) -> type[Task]:
        """The task whose rows and answers a run of this task holds (RL: its ``rl.task``'s)."""
        return cls

    @classmethod
    def card_purpose(cls, schema: dict[str, Any]) -> str:
        """What the model does, for the model card's "Intended use" ("This model ...")."""
        return "answers prompts with free text in the style of its training answers"

    @classmethod
    def reference_field(cls, data: dict[str, Any]) -> str | None:
        """The row field whose value a correct prediction equals, for the model card's failure examples;
        None where an answer is not simply right or wrong (free text, perplexity, rewards)."""
        return None

    @classmethod
    def is_wrong(cls, reference: Any, prediction: Any) -> bool:
        """Whether a saved prediction misses its reference (``reference_field``'s value)."""
        return bool(reference != prediction)


TASKS: Registry[type[Task]] = Registry("task")


def last_user_message(messages: list[dict[str, str]]) -> str:
    """The last non-blank user message of a chat: what a task that reads one text answers."""
    users = [m["content"] for m in messages if m["role"] == "user" and m["content"].strip()]
    if not users:
        raise UserError("messages: send at least one non-empty user message")
    return users[-1]


# ----------------------------------------------------------------------------- decoder formatting
FALLBACK_TEMPLATE = (
    "{% for m in messages %}### {{ m['role'] | capitalize }}:\n{{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)


def fill_placeholders(template: str, **values: str) -> str:
    """``template`` with each ``{name}`` of ``values`` replaced; every other brace is kept as written.

    Not ``str.format``: a user's instruction may well hold braces (a JSON example such as
    ``{"colour": "red"}``), which ``format`` reads as fields and fails on with a KeyError.
    """
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)] if m.group(1) in values else m.group(0), template)


_PLACEHOLDER = re.compile(r"\{(\w+)\}")

#: generous bound on characters per token: tokens of real text average 3 to 5 characters, so a text cut to
#: ``max_length x CHARS_PER_TOKEN`` characters still fills the token window, and one row cannot make the
#: tokenizer hold megabytes of text (a 30 MB row took 6.5 GB)
CHARS_PER_TOKEN = 32


def clip_text(text: str, max_length: int, *, keep_end: bool) -> str:
    """``text`` cut to ``max_length x CHARS_PER_TOKEN`` characters before it is tokenised.

    ``keep_end``: keep the last characters (decoder prompts lose their oldest tokens first), else
    the first ones (encoders truncate on the right). The tokens a model sees are the same as
    without the cut, since truncation to ``max_length`` tokens would drop the rest anyway.
    """
    limit = max_length * CHARS_PER_TOKEN
    if len(text) <= limit:
        return text
    return text[-limit:] if keep_end else text[:limit]


def pad_id(tokenizer: PreTrainedTokenizerBase) -> int:
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    if tokenizer.eos_token_id is not None:
        return int(tokenizer.eos_token_id)
    raise ConfigError("the tokenizer has neither a pad nor an eos token; set one in the model folder")


def end_of_turn(tokenizer: PreTrainedTokenizerBase) -> str:
    """The token that closes an assistant turn, appended to every answer so tuned models stop.

    ChatML templates close turns with ``<|im_end|>``; other templates with the eos token.
    """
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    if "<|im_end|>" in template:
        return "<|im_end|>"
    if "<|eot_id|>" in template:
        return "<|eot_id|>"
    if tokenizer.eos_token is None:
        raise ConfigError("the tokenizer has no eos token, so a tuned model could not learn to stop")
    return tokenizer.eos_token


def prompt_text(tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]]) -> str:
    """The chat-templated prompt, ending where the assistant's answer starts."""
    template = None if tokenizer.chat_template else FALLBACK_TEMPLATE
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=True
    )


def encode_prompt_answer(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], answer: str, max_length: int
) -> Encoded:
    """Prompt and answer are tokenised apart so the loss mask falls exactly on the answer tokens.

    The answer ends with the end-of-turn token. Over-long rows lose the end of their prompt's
    left part first (the answer is what we train on); a row whose prompt alone fills the window
    keeps no answer tokens and is reported by the preflight.
    """
    prompt_ids = tokenizer(prompt_text(tokenizer, messages), add_special_tokens=False)["input_ids"]
    answer_ids = tokenizer(answer + end_of_turn(tokenizer), add_special_tokens=False)["input_ids"]
    total = len(prompt_ids) + len(answer_ids)
    truncated = total > max_length
    if truncated:
        overflow = total - max_length
        keep_prompt = max(len(prompt_ids) - overflow, min(len(prompt_ids), max_length // 2))
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :]  # drop the oldest prompt tokens
        answer_ids = answer_ids[: max(0, max_length - len(prompt_ids))]
    ids = prompt_ids + answer_ids
    labels = [IGNORE] * len(prompt_ids) + list(answer_ids)
    return Encoded(input_ids=ids, labels=labels, truncated=truncated, n_answer=len(answer_ids))


def collate_causal(batch: list[Encoded], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a batch for training; padding carries no loss and no attention."""
    width = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)  # (B, T)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, T)
    for i, e in enumerate(batch):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def without_ddp(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP / FSDP wrapper (a peft model stays a peft model)."""
    return getattr(model, "module", model)


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside DDP and peft wrappers."""
    base = without_ddp(model)
    return base.get_base_model() if hasattr(base, "get_base_model") else base  # peft


def _accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    return "logits_to_keep" in inspect.signature(_unwrapped(model).forward).parameters


def virtual_tokens(model: torch.nn.Module) -> int:
    """Soft-prompt positions that a peft prompt-tuning model puts before the input (0 for anything else)."""
    config = getattr(model, "active_peft_config", None)
    if config is None or not config.is_prompt_learning or config.peft_type.value == "PREFIX_TUNING":
        return 0
    return int(config.num_virtual_tokens)


def model_inputs(batch: dict[str, torch.Tensor]) -> dict[str, Any]:
    """What the model itself reads from a batch: a packed batch has ``position_ids`` and no attention mask.

    ``use_cache=False``: a scoring forward needs no key/value cache, and transformers reads packed
    example boundaries from the position ids only when there is none.
    """
    return {"use_cache": False, **{k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}}


def _answer_positions(model: torch.nn.Module, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Which positions predict an answer token ``(B, P + T)`` bool, their targets ``(N,)`` and rows ``(N,)``."""
    keep = torch.zeros_like(labels, dtype=torch.bool)  # (B, T): position t predicts token t+1
    keep[:, :-1] = labels[:, 1:] != IGNORE
    targets = labels[:, 1:][keep[:, :-1]]  # (N,)
    rows = keep.nonzero()[:, 0]  # (N,)
    n_virtual = virtual_tokens(model)
    if n_virtual:  # soft prompt positions come first in the logits and never carry loss
        keep = torch.cat([keep.new_zeros(keep.shape[0], n_virtual), keep], dim=1)  # (B, P + T)
    return keep, targets, rows


def answer_logits(model: PreTrainedModel,
                  batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Logits only at the positions that predict an answer token: ``(N, V)``, targets ``(N,)``, rows ``(N,)``.

    Prompt positions never reach the vocabulary projection: with a boolean ``logits_to_keep``
    mask (transformers >= 5) the head runs on the N answer positions only, which saves the
    (B, T, V) logits tensor (the largest activation of a small model) and about a fifth of
    the forward FLOPs of SmolLM2 when two thirds of the tokens are prompt.
    """
    keep, targets, rows = _answer_positions(model, batch["labels"])
    if _accepts_logits_to_keep(model):
        out = model(**model_inputs(batch), logits_to_keep=keep)
        return out.logits.reshape(-1, out.logits.shape[-1]), targets, rows  # (N, V)
    out = model(**model_inputs(batch))
    return out.logits[keep], targets, rows  # (N, V)


def _fusable_head(model: torch.nn.Module) -> torch.nn.Module | None:
    """The output head when the chunked loss can take over from it, else None.

    It cannot under FSDP (the head's weight is a shard outside the wrapped forward), for prompt
    tuning (peft's forward adds the soft prompt) or without ``logits_to_keep`` support.
    """
    if "FullyShardedDataParallel" in type(model).__name__ or any(
            type(m).__name__.startswith("FSDP") for m in [model, without_ddp(model)]):
        return None
    if virtual_tokens(model) or not _accepts_logits_to_keep(model):
        return None
    return _unwrapped(model).get_output_embeddings()


@contextmanager
def _head_returns_hidden(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """Swap the output head for the identity for one forward, so "logits" are the final hidden states.

    Going through the model's own forward (rather than calling its body) keeps the DDP wrapper's
    gradient hooks and peft's forward in the path.
    """
    base = _unwrapped(model)
    head = base.get_output_embeddings()
    base.set_output_embeddings(torch.nn.Identity())
    try:
        yield head
    finally:
        base.set_output_embeddings(head)


def causal_loss_sum(model: PreTrainedModel, batch: dict[str, torch.Tensor],
                    label_smoothing: float = 0.0, chunk: int | None = None) -> tuple[torch.Tensor, int]:
    """Sum of next-token cross-entropy over answer tokens, and how many there were.

    With ``chunk``, the final hidden states at answer positions ``(N, H)`` go through the chunked
    linear + cross-entropy of ``train.fused_loss``, which never holds more than ``chunk`` rows of logits.
    """
    head = _fusable_head(model) if chunk is not None else None
    if head is not None:
        assert chunk is not None
        keep, targets, _ = _answer_positions(model, batch["labels"])
        with _head_returns_hidden(model):
            hidden = model(**model_inputs(batch), logits_to_keep=keep).logits  # (N, H)
        hidden = hidden.reshape(-1, hidden.shape[-1])
        return linear_cross_entropy_sum(hidden, head, targets, chunk=chunk, label_smoothing=label_smoothing), \
            int(targets.numel())
    logits, targets, _ = answer_logits(model, batch)
    if targets.numel() == 0:
        return logits.sum() * 0.0, 0
    loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum", label_smoothing=label_smoothing)
    return loss, int(targets.numel())


@torch.no_grad()
def mean_loss(model: torch.nn.Module, task: Task, encoded: list[Encoded], batch_size: int) -> float:
    """Answer-token cross-entropy averaged over every loss-bearing token of ``encoded``."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(encoded), batch_size):
        batch = {k: v.to(device) for k, v in task.collate(encoded[start : start + batch_size]).items()}
        loss, n = task.loss(model, batch)
        total, count = total + float(loss), count + n
    model.train(was_training)
    return total / max(count, 1)


def get_task(recipe: Recipe, tokenizer: PreTrainedTokenizerBase, model_kind: str) -> Task:
    """Build the recipe's task, checking that the model kind suits it."""
    import tuneforge.tasks  # noqa: F401  (registers the built-in tasks)

    cls = TASKS.get(recipe.task)
    return cls(TaskSettings.from_recipe(recipe), tokenizer, model_kind)
