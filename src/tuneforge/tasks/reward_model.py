"""Scalar reward models: a decoder or an encoder with a one-output head, trained on human preferences.

The head is ``AutoModelForSequenceClassification`` with ``num_labels=1``: for Llama-type decoders it reads
the hidden state of the last real token (the end-of-turn token that closes the answer), for BERT-type
encoders the pooled [CLS] state. Pairs train with the Bradley-Terry loss (Ouyang et al. 2022,
https://arxiv.org/abs/2203.02155, eq. 1); rankings as all their implied pairs or with the Plackett-Luce
listwise likelihood (``reward.rankings``). The report gives held-out pair accuracy with a bootstrap
interval and the mean reward margin; ``tuneforge predict`` writes each row's reward.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import PreTrainedModel

from tuneforge.data.feedback import Feedback
from tuneforge.data.readers import Record
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.answers import Group, collate_groups, trim_messages
from tuneforge.preference.losses import bradley_terry_loss, plackett_luce_loss
from tuneforge.recipe import RewardConfig, TaskSection
from tuneforge.tasks.base import TASKS, Encoded, Example, MetricInputs, end_of_turn, pad_id
from tuneforge.tasks.preference import FeedbackTask, feedback_examples, implied_pairs, ranked

Messages = list[dict[str, str]]


@TASKS.register("reward_model", config=TaskSection("reward", RewardConfig))
class RewardModel(FeedbackTask):
    name = "reward_model"
    headline = ("pair_accuracy", "reward_margin")
    per_item_metrics = ("pair_accuracy",)
    validation_metrics = ("pair_accuracy", "reward_margin")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cfg = self.settings.own or RewardConfig()

    @property
    def head(self) -> str:
        return "sequence_classification"

    # -- data -------------------------------------------------------------------------
    def parse(self, records: list[Record], what: str) -> list[Example]:
        examples = feedback_examples(self, records, what)
        bad = [f"{e.where}: binary feedback (completion + label) has no pair to compare; a reward model trains "
               "on pairs or rankings (binary feedback trains a policy with preference.loss: kto)"
               for e in examples if e.target.label is not None]
        if bad:
            raise DataError(f"{len(bad)} bad row(s) in {what}; fix them and re-run (nothing was trained)", bad)
        return examples

    def fit_schema(self, train: list[Example]) -> None:
        self.schema = {"labels": ["reward"], "rankings": self.cfg.rankings}  # one output: the reward

    def encode_answer(self, messages: Messages, answer: str) -> Encoded:
        """Prompt and answer as the model reads them; the prompt's oldest turns give way first.

        A decoder reads the chat-templated conversation closed by the end-of-turn token (its last token is
        where the head reads the reward); an encoder reads ``[CLS] prompt [SEP] answer [SEP]``.
        """
        max_length = self.settings.max_length
        encoder = self.model_kind == "encoder"
        tok = self.tokenizer
        answer_ids = tok(answer if encoder else answer + end_of_turn(tok), add_special_tokens=False)["input_ids"]
        extra = 3 if encoder else 0
        budget = max(max_length - extra - len(answer_ids), max_length // 2)
        prompt_ids, cut = trim_messages(tok, messages, budget)
        answer_ids = answer_ids[: max_length - extra - len(prompt_ids)]
        if encoder:
            cls, sep = tok.cls_token_id, tok.sep_token_id
            if cls is None or sep is None:
                raise ConfigError("the encoder's tokenizer has no [CLS]/[SEP] tokens to frame prompt and answer")
            ids = [cls, *prompt_ids, sep, *answer_ids, sep]
        else:
            ids = prompt_ids + answer_ids
        return Encoded(input_ids=ids, labels=0, truncated=cut, n_answer=len(answer_ids))

    def _groups(self, fb: Feedback) -> list[Group]:
        seqs = [self.encode_answer(fb.messages, r) for r in fb.responses]
        if self.cfg.rankings == "plackett_luce" or len(seqs) == 2:
            return [Group.of(seqs)]
        return implied_pairs(seqs)

    # -- training ---------------------------------------------------------------------
    def rewards(self, model: PreTrainedModel, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """One scalar per sequence ``(S,)``."""
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        return out.logits[:, 0].float()  # (S,)

    def loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *,
             training: bool = False) -> tuple[torch.Tensor, int]:
        """Summed listwise (Plackett-Luce; Bradley-Terry for pairs) loss and the number of groups."""
        r = self.rewards(model, batch)  # (S,)
        b = int(batch["labels"].numel())
        k = int(batch["rank"].max()) + 1
        grid = r.new_zeros(b, k)  # (B, K): rewards best first
        mask = torch.zeros(b, k, dtype=torch.bool, device=r.device)
        grid = grid.index_put((batch["group"], batch["rank"]), r)
        mask[batch["group"], batch["rank"]] = True
        if k == 2 and bool(mask.all()):
            losses = bradley_terry_loss(grid[:, 0], grid[:, 1])
        else:
            losses = plackett_luce_loss(grid, mask)
        return losses.sum(), b

    # -- prediction and scoring -------------------------------------------------------
    @torch.no_grad()
    def score_answers(self, model: PreTrainedModel, pairs: list[tuple[Messages, str]]) -> list[float]:
        """The reward of each (prompt messages, answer)."""
        encoded = [self.encode_answer(m, a) for m, a in pairs]
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out: list[float] = []
        size = self.settings.eval.batch_size
        for start in range(0, len(encoded), size):
            batch = collate_groups([Group.of([e]) for e in encoded[start : start + size]], pad_id(self.tokenizer))
            out.extend(self.rewards(model, {k: v.to(device) for k, v in batch.items()}).tolist())
        model.train(was_training)
        return out

    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        flat = [(e.target.messages, r) for e in examples for r in e.target.responses]
        scores = self.score_answers(model, flat)
        preds, pos = [], 0
        for e in examples:
            n = len(e.target.responses)
            values = scores[pos : pos + n]
            pos += n
            preds.append({"prediction": values[0] if e.target.kind == "single" else values})
        return preds

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        return {"pair_accuracy": [ranked([v[i] - v[j] for i in range(len(v)) for j in range(i + 1, len(v))])
                                  for v in (p["prediction"] for p in predictions)]}

    def metric_inputs(self, reads: str, examples: list[Example],
                      predictions: list[dict[str, Any]]) -> MetricInputs | None:
        """Mean reciprocal rank reads, per row of ranked answers (best first), the best one as the relevant item
        and the answers ordered by predicted reward; binary feedback rows rank nothing."""
        rows = [(e, p["prediction"]) for e, p in zip(examples, predictions) if isinstance(p["prediction"], list)]
        if reads != "rankings" or len(rows) != len(examples):
            return None
        relevant = [{"0"} for _ in rows]
        order = [[str(i) for i in sorted(range(len(v)), key=v.__getitem__, reverse=True)] for _, v in rows]
        return (relevant, order), {}

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        items = self.item_scores(examples, predictions)["pair_accuracy"]
        margins = [v[i] - v[j] for v in (p["prediction"] for p in predictions)
                   for i in range(len(v)) for j in range(i + 1, len(v))]
        return {"pair_accuracy": sum(items) / max(len(items), 1),
                "reward_margin": sum(margins) / max(len(margins), 1),
                "reward_mean": sum(sum(p["prediction"]) for p in predictions) / max(
                    sum(len(p["prediction"]) for p in predictions), 1),
                "pairs": len(margins)}
