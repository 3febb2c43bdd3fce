"""Preference tuning of a decoder policy: DPO, IPO, KTO (with the reference), SimPO, ORPO (without).

Data are pairs, rankings (trained as every implied pair) or, for KTO, binary feedback (pairs and rankings
also train KTO: the best answer is desirable, the others are not). The loss is chosen from
``tuneforge.preference.losses.LOSSES`` by ``preference.loss``; the reference is the same network with its
adapter switched off. Evaluation on held-out rows reports:

- ``pair_accuracy``: how often the loss's implicit reward (``beta * (logp - ref)`` for DPO/IPO/KTO,
  ``beta * mean logp`` for SimPO, the log odds for ORPO) ranks the better answer higher (ties count 1/2;
  binary rows: the reward's sign agrees with the label), with a bootstrap interval;
- ``reward_margin``: the mean implicit-reward gap, better minus worse;
- ``logp_accuracy``: the same ranking by the policy's own summed log-probability;
- ``kl_to_reference``: the exact per-token KL(policy || reference) over the vocabulary on the held-out
  answers (teacher-forced), mean per token;
- ``win_rate``: on ``eval.judge_prompts`` held-out prompts, how often a reward model from another run
  (``eval.judge``) prefers the tuned model's greedy answer to the reference model's.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

import torch
from transformers import PreTrainedModel

from tuneforge.data.feedback import Feedback, hh_to_messages, is_hh, parse_all, prompt_preview
from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems, require_text
from tuneforge.errors import ConfigError, DataError
from tuneforge.tasks.answers import (
    Group, adapter_off, check_reference, collate_groups, encode_answers, fit_messages, group_sequence_logps,
    group_token_logps, per_row, token_kl,
)
from tuneforge.preference.losses import LOSSES, SequenceScores
from tuneforge.preference.meter import Meter
from tuneforge.recipe import PreferenceConfig, TaskSection
from tuneforge.tasks.base import TASKS, Encoded, Example, Task, pad_id, without_ddp
from tuneforge.infer.precision import weights_in
from tuneforge.tasks.decoding import generate


def feedback_examples(task: Task, records: list[Record], what: str) -> list[Example]:
    """Records as examples whose target is a :class:`Feedback` (shared by the preference tasks)."""
    cfg = task.settings.data
    parsed = parse_all(records, what, prompt_field=cfg.prompt_field, completion_field=cfg.completion_field,
                       label_field=cfg.label_field)
    return [Example(where=r.where(), text=prompt_preview(fb.messages), target=fb, messages=fb.messages)
            for r, fb in parsed]


def ranked(flags: list[float]) -> float:
    """1 when better > worse, 1/2 on a tie, else 0."""
    return sum(1.0 if f > 0 else 0.5 if f == 0 else 0.0 for f in flags) / max(len(flags), 1)


def implied_pairs(seqs: list[Encoded]) -> list[Group]:
    """Every (better, worse) pair of a best-first list: K(K-1)/2 groups of two."""
    return [Group.of([seqs[i], seqs[j]]) for i in range(len(seqs)) for j in range(i + 1, len(seqs))]


class FeedbackTask(Task):
    """What the preference tasks share: a row trains as one or more :class:`Group` s of answer sequences."""

    cacheable = False  # a Group holds its answer sequences, which the JSON cache does not

    @abstractmethod
    def _groups(self, fb: Feedback) -> list[Group]: ...

    def encode(self, example: Example) -> Encoded:
        return self._groups(example.target)[0]

    def encode_many(self, examples: list[Example]) -> list[Encoded]:
        return [g for e in examples for g in self._groups(e.target)]

    def collate(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        return collate_groups(batch, pad_id(self.tokenizer))  # type: ignore[arg-type]

    def parse_for_prediction(self, records: list[Record], what: str) -> list[Example]:
        """Rows to score (``tuneforge predict``): ``prompt`` + ``completion``, or any feedback row."""
        cfg = self.settings.data
        problems = Problems()
        examples = []
        for rec in records:
            if any(k in rec.fields for k in ("chosen", "rejected", "responses")):
                examples.extend(feedback_examples(self, [rec], what))
                continue
            prompt = require_text(rec, cfg.prompt_field, problems)
            answer = require_text(rec, cfg.completion_field, problems)
            if prompt is not None and answer is not None:
                msgs = hh_to_messages(prompt) if is_hh(prompt) else [{"role": "user", "content": prompt}]
                examples.append(Example(where=rec.where(), text=prompt, messages=msgs,
                                        target=Feedback(messages=msgs, responses=[answer], kind="single")))
        problems.raise_if_any(what)
        return examples


@TASKS.register("preference", config=TaskSection("preference", PreferenceConfig))
class Preference(FeedbackTask):
    name = "preference"
    headline = ("pair_accuracy", "reward_margin", "logp_accuracy", "kl_to_reference", "win_rate")
    per_item_metrics = ("pair_accuracy", "logp_accuracy", "win_rate")
    validation_metrics = ("pair_accuracy", "reward_margin")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.model_kind != "decoder":
            raise ConfigError("task preference trains a decoder (text generation) model; an encoder learns "
                              "preferences as task: reward_model")
        self.cfg = self.settings.own or PreferenceConfig()
        self.spec = LOSSES.get(self.cfg.loss)
        if self.spec.needs_reference:
            check_reference(self.settings.method, f"preference.loss {self.cfg.loss}")
        self.meter = Meter()
        self._judge: Any = None

    # -- data -------------------------------------------------------------------------
    def parse(self, records: list[Record], what: str) -> list[Example]:
        examples = feedback_examples(self, records, what)
        if self.spec.pairwise:
            bad = [f"{e.where}: binary feedback (completion + label) trains with preference.loss: kto, not "
                   f"{self.cfg.loss}" for e in examples if e.target.label is not None]
            if bad:
                raise DataError(f"{len(bad)} bad row(s) in {what}; fix them and re-run (nothing was trained)", bad)
        return examples

    def fit_schema(self, train: list[Example]) -> None:
        kinds: dict[str, int] = {}
        for e in train:
            kinds[e.target.kind] = kinds.get(e.target.kind, 0) + 1
        self.schema = {"loss": self.cfg.loss, "rows": kinds}

    def _groups(self, fb: Feedback) -> list[Group]:
        """Training units of one row: every implied pair, or (KTO) single answers flagged good or bad."""
        seqs = encode_answers(self.tokenizer, fb.messages, fb.responses, self.settings.max_length)
        if self.spec.pairwise:
            return implied_pairs(seqs)
        if fb.label is not None:
            return [Group.of(seqs, desirable=fb.label)]
        return [Group.of([s], desirable=i == 0) for i, s in enumerate(seqs)]

    # -- training ---------------------------------------------------------------------
    def _scores(self, model: PreTrainedModel, batch: dict[str, torch.Tensor],
                reference: bool) -> tuple[SequenceScores, SequenceScores | None]:
        """Policy (and reference) scores, reordered so a pairwise batch is (all chosen, all rejected)."""
        order = torch.argsort(batch["rank"] * batch["labels"].numel() + batch["group"])  # (S,)
        logp, tokens = group_sequence_logps(model, batch)  # (S,), (S,)
        policy = SequenceScores(logp[order], tokens[order])
        if not reference:
            return policy, None
        with adapter_off(model):
            ref_logp, _ = group_sequence_logps(model, batch)
        return policy, SequenceScores(ref_logp[order], tokens[order])

    def loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *,
             training: bool = False) -> tuple[torch.Tensor, int]:
        """Summed per-example preference loss and the number of examples (the loop divides by the step's)."""
        policy, ref = self._scores(model, batch, self.spec.needs_reference)
        desirable = batch["labels"] > 0.5  # (B,)
        losses = self.spec.loss(policy, ref, desirable, self.cfg)  # (B,)
        if training:
            with torch.no_grad():
                reward = self.spec.reward(policy, ref, self.cfg)  # (S,)
                b = desirable.numel()
                if self.spec.pairwise:
                    margin = reward[:b] - reward[b:]
                    ties = (margin == 0).float() * 0.5  # the first step's zero margins count 1/2, as in the report
                    self.meter.add("reward_accuracy", float(((margin > 0).float() + ties).mean()), b)
                    self.meter.add("reward_margin", float(margin.mean()), b)
                else:
                    sign = desirable.float() * 2 - 1
                    self.meter.add("reward_accuracy", float(((reward * sign) > 0).float().mean()), b)
        return losses.sum(), int(batch["labels"].numel())

    def step_metrics(self) -> dict[str, float]:
        return self.meter.pop()

    # -- evaluation -------------------------------------------------------------------
    def _has_reference(self, model: PreTrainedModel) -> bool:
        return hasattr(without_ddp(model), "disable_adapter")

    @torch.no_grad()
    def _answer_scores(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, list[float]]]:
        """Per example and answer (best first): policy and reference log-probabilities, tokens, summed KL.

        Batches hold whole examples (about ``eval.batch_size`` answers), so each prompt runs once.
        """
        groups = [Group.of(encode_answers(self.tokenizer, e.target.messages, e.target.responses,
                                          self.settings.max_length)) for e in examples]
        out: list[dict[str, list[float]]] = [{"logp": [], "ref": [], "tokens": [], "kl": []} for _ in examples]
        reference = self._has_reference(model)
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        per_batch = max(1, self.settings.eval.batch_size // max(len(g.sequences) for g in groups)) if groups else 1
        order = sorted(range(len(groups)), key=lambda i: max(len(x.input_ids) for x in groups[i].sequences))
        for start in range(0, len(order), per_batch):  # similar lengths together: little padding
            idx = order[start : start + per_batch]
            collated = collate_groups([groups[i] for i in idx], pad_id(self.tokenizer))
            batch = {k: v.to(device) for k, v in collated.items()}
            n = batch["input_ids"].shape[0]
            picked, rows, logp_v = group_token_logps(model, batch)  # (N,), (N,), (N, V)
            sums, counts = per_row(picked, rows, n)
            ref_sums, kl_sums = torch.zeros(n), torch.zeros(n)
            if reference:
                with adapter_off(model):
                    ref_picked, _, ref_v = group_token_logps(model, batch)
                ref_sums, _ = per_row(ref_picked, rows, n)
                kl_sums, _ = per_row(token_kl(logp_v, ref_v), rows, n)
            for k, g in enumerate(batch["group"].tolist()):
                scores = out[idx[g]]
                scores["logp"].append(float(sums[k]))
                scores["ref"].append(float(ref_sums[k]))
                scores["tokens"].append(float(counts[k]))
                scores["kl"].append(float(kl_sums[k]))
        model.train(was_training)
        return out

    def _rewards(self, s: dict[str, list[float]], reference: bool) -> list[float]:
        policy = SequenceScores(torch.tensor(s["logp"]), torch.tensor(s["tokens"]))
        ref = SequenceScores(torch.tensor(s["ref"]), policy.tokens) if reference else None
        if self.spec.needs_reference and ref is None:
            return [0.0] * len(s["logp"])
        return self.spec.reward(policy, ref, self.cfg).tolist()

    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        reference = self._has_reference(model)
        with weights_in(model, self.settings.eval.dtype, "score"):  # in eval.dtype (tuneforge.infer.precision)
            scores = self._answer_scores(model, examples)
        preds = [{**s, "prediction": self._rewards(s, reference)} for s in scores]
        for e, p in zip(examples, preds):
            if e.target.kind == "single":  # `tuneforge predict` on prompt + completion rows: one implicit reward
                p["prediction"] = p["prediction"][0]
        if not any(e.target.kind == "single" for e in examples):  # held-out feedback, not rows to score
            self._generate(model, examples, preds, reference)
        return preds

    def _generate(self, model: PreTrainedModel, examples: list[Example], preds: list[dict[str, Any]],
                  reference: bool) -> None:
        """Greedy answers of the tuned and the reference model on the first held-out prompts, judged."""
        ev = self.settings.eval
        chosen = examples[: ev.judge_prompts]
        if not chosen or not reference:
            return
        budget = self.settings.max_length
        prompts = [fit_messages(self.tokenizer, e.target.messages, budget) for e in chosen]
        tuned = generate(model, self.tokenizer, prompts, max_new_tokens=ev.max_new_tokens,
                         batch_size=ev.batch_size, desc="generate (tuned)", dtype=ev.dtype)
        with adapter_off(model):
            base = generate(model, self.tokenizer, prompts, max_new_tokens=ev.max_new_tokens,
                            batch_size=ev.batch_size, desc="generate (reference)", dtype=ev.dtype)
        judged = self._judge_scores(prompts, tuned, base)
        for k, (t, b) in enumerate(zip(tuned, base)):
            preds[k]["raw"] = t
            preds[k]["reference_answer"] = b
            if judged is not None:
                preds[k]["judge"] = [judged[0][k], judged[1][k]]

    def _judge_scores(self, prompts: list[list[dict[str, str]]], tuned: list[str],
                      base: list[str]) -> tuple[list[float], list[float]] | None:
        if self.settings.eval.judge is None:
            return None
        if self._judge is None:
            self._judge = self.judge(self.settings.eval.judge)
        return self._judge(prompts, tuned), self._judge(prompts, base)

    def _item(self, e: Example, p: dict[str, Any], key: str) -> float:
        values = p[key]
        if e.target.label is not None:  # binary row: the sign of the reward should match the label
            return ranked([values[0] * (1 if e.target.label else -1)]) if key == "prediction" else 0.5
        return ranked([values[i] - values[j] for i in range(len(values)) for j in range(i + 1, len(values))])

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        pairs = [(e, p) for e, p in zip(examples, predictions) if e.target.label is None]
        out = {"pair_accuracy": [self._item(e, p, "prediction") for e, p in zip(examples, predictions)],
               "logp_accuracy": [self._item(e, p, "logp") for e, p in pairs]}
        judged = [p["judge"] for p in predictions if "judge" in p]
        if judged:
            out["win_rate"] = [ranked([t - b]) for t, b in judged]
        return out

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        items = self.item_scores(examples, predictions)
        margins = [p["prediction"][i] - p["prediction"][j] for e, p in zip(examples, predictions)
                   if e.target.label is None for i in range(len(p["prediction"]))
                   for j in range(i + 1, len(p["prediction"]))]
        tokens = sum(sum(p["tokens"]) for p in predictions)
        out: dict[str, Any] = {
            "pair_accuracy": sum(items["pair_accuracy"]) / max(len(items["pair_accuracy"]), 1),
            "reward_margin": sum(margins) / max(len(margins), 1),
            "logp_accuracy": sum(items["logp_accuracy"]) / max(len(items["logp_accuracy"]), 1),
            "kl_to_reference": sum(sum(p["kl"]) for p in predictions) / max(tokens, 1),
            "pairs": len(margins),
        }
        judged = [p["judge"] for p in predictions if "judge" in p]
        if judged:
            out["win_rate"] = sum(items["win_rate"]) / len(judged)
            out["judge_reward_tuned"] = sum(t for t, _ in judged) / len(judged)
            out["judge_reward_reference"] = sum(b for _, b in judged) / len(judged)
        side = [(e, p) for e, p in zip(examples, predictions) if "raw" in p][: self.settings.eval.samples]
        out["side_by_side"] = [{"where": e.where, "prompt": e.text, "reference_model": p["reference_answer"],
                                "tuned": p["raw"], **({"judge": p["judge"]} if "judge" in p else {})}
                               for e, p in side]
        return out
