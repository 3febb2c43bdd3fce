"""Classification: text to one of N labels.

Two ways, chosen by the model: an encoder gets a classification head (cross-entropy over the
labels); a decoder is trained to answer with the label and predicts by scoring every label's
log-probability after the prompt, so it can never answer outside the label set and every
prediction comes with a probability.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
from pydantic import BaseModel
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from tuneforge.data.readers import Record
from tuneforge.data.validate import Problems, require_field, require_text
from tuneforge.errors import ConfigError, DataError
from tuneforge.evaluate.metrics import accuracy, confusion_matrix, macro_f1, per_class
from tuneforge.tasks.base import (
    IGNORE, TASKS, Encoded, Example, MetricInputs, Task, encode_prompt_answer, end_of_turn, fill_placeholders, pad_id,
    prompt_text,
)
from tuneforge.tasks.decoding import answer_logprobs, options_logprobs
from tuneforge.tasks.distillation import distillation_loss_sum

#: rows per label an imprinted head reads at most: a mean of 256 rows is within noise of the mean of all of them
HEAD_INIT_ROWS = 256

#: logit scales tried for an imprinted head (``Classification.init_head``)
TEMPERATURES = (1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)

DEFAULT_INSTRUCTION = "Classify the text into one of these labels: {labels}. Answer with the label only."


class Classified(BaseModel):
    """One result of /v1/classify: the label, its probability and every label's."""

    label: str
    confidence: float
    probabilities: dict[str, float]


@TASKS.register("classification")
class Classification(Task):
    name = "classification"
    headline = ("accuracy", "macro_f1")
    per_item_metrics = ("accuracy",)
    validation_metrics = ("accuracy", "macro_f1", "log_loss")
    lower_is_better = ("log_loss",)
    predicts_labels = True
    serve_route = "/v1/classify"
    serve_result_model = Classified
    slice_noun = "classes"

    @property
    def head(self) -> str:
        return "sequence_classification" if self.model_kind == "encoder" else "causal_lm"

    @property
    def labels(self) -> list[str]:
        return self.schema["labels"]

    def parse(self, records: list[Record], what: str) -> list[Example]:
        cfg = self.settings.data
        problems = Problems()
        examples = []
        for rec in records:
            text = require_text(rec, cfg.text_field, problems)
            label = require_field(rec, cfg.label_field, problems)
            if label is not None and (not isinstance(label, (str, int, bool)) or str(label).strip() == ""):
                problems.add(rec, f"field {cfg.label_field!r} must be a non-empty string or integer label")
                label = None
            if text is not None and label is not None:
                examples.append(Example(where=rec.where(), text=self.clip(text), target=str(label).strip()))
        problems.raise_if_any(what)
        self.report_clipped(what)
        return examples

    def fit_schema(self, train: list[Example]) -> None:
        declared = self.settings.data.labels
        seen = sorted({e.target for e in train})
        labels = list(declared) if declared else seen
        if len(labels) < 2:
            raise DataError(f"classification needs at least 2 labels; the training data has {labels}")
        self.schema = {"labels": labels, "train_counts": dict(Counter(e.target for e in train))}

    def with_placeholder(self, fields: dict[str, Any]) -> dict[str, Any]:
        fields.setdefault(self.settings.data.label_field, self.schema.get("labels", [""])[0])
        return fields

    def stratify_key(self) -> Callable[[Record], str] | None:
        field = self.settings.data.label_field
        return lambda record: str(record.fields.get(field))

    def check_against_schema(self, examples: list[Example], what: str) -> None:
        known = set(self.labels)
        bad = [f"{e.where}: unknown label {e.target!r} (known: {', '.join(self.labels)})" for e in examples
               if e.target not in known]
        if bad:
            raise DataError(f"{len(bad)} bad row(s) in {what}; fix them or list the label in data.labels", bad)

    # -- formatting -------------------------------------------------------------------
    def _messages(self, text: str) -> list[dict[str, str]]:
        instruction = self.settings.prompt.instruction or DEFAULT_INSTRUCTION
        system = self.settings.prompt.system
        messages = [] if system is None else [{"role": "system", "content": system}]
        user = fill_placeholders(instruction, labels=", ".join(self.labels)) + "\n\nText: " + text
        return messages + [{"role": "user", "content": user}]

    def prompt_messages(self, example: Example) -> list[dict[str, str]]:
        return self._messages(example.text)

    def encode(self, example: Example) -> Encoded:
        max_length = self.settings.max_length
        if self.model_kind == "encoder":
            ids = self.tokenizer(example.text, truncation=True, max_length=max_length)["input_ids"]
            full = len(self.tokenizer(example.text)["input_ids"])
            return Encoded(input_ids=ids, labels=self.labels.index(example.target), truncated=full > max_length)
        return encode_prompt_answer(self.tokenizer, self._messages(example.text), example.target, max_length)

    def collate(self, batch: list[Encoded]) -> dict[str, torch.Tensor]:
        if self.model_kind != "encoder":
            return super().collate(batch)
        padded = self.tokenizer.pad({"input_ids": [e.input_ids for e in batch]}, return_tensors="pt")
        padded["labels"] = torch.tensor([e.labels for e in batch], dtype=torch.long)
        if all(e.soft is not None for e in batch):
            padded["soft_labels"] = torch.tensor([e.soft for e in batch], dtype=torch.float)  # (B, n_labels)
        return dict(padded)

    def loss(self, model: PreTrainedModel, batch: dict[str, torch.Tensor], *,
             training: bool = False) -> tuple[torch.Tensor, int]:
        if self.model_kind != "encoder":
            return super().loss(model, batch, training=training)
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "soft_labels")}
        logits = model(**inputs).logits.float()  # (B, n_labels)
        smoothing = self.settings.label_smoothing if training else 0.0
        loss = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="sum", label_smoothing=smoothing)
        if training and "soft_labels" in batch and self.settings.distill is not None:
            cfg = self.settings.distill
            soft = distillation_loss_sum(logits, batch["soft_labels"], cfg.temperature)
            loss = cfg.alpha * soft + (1 - cfg.alpha) * loss
        return loss, int(batch["labels"].numel())

    # -- a new head's start ------------------------------------------------------------
    @torch.no_grad()
    def init_head(self, model: PreTrainedModel, examples: list[Example]) -> dict[str, float]:
        """Start an encoder's new label head as a nearest-class-mean classifier over the features it reads.

        Weight imprinting (Qi et al. 2018, https://arxiv.org/abs/1712.07136): each label's weight row is the
        normalised mean of its training examples' features, centred on the mean of all of them (encoder
        features share a large common direction that says nothing about the label), so the untrained model
        already votes like a centroid classifier and fine-tuning starts from there instead of from chance.
        The temperature (logit scale) is the one of a small grid that gives the training rows the lowest
        leave-one-out cross-entropy (each row scored against its own class's mean without it): fitted on the
        rows the means contain, it comes out far too confident, and a confident start that is wrong on a fifth of
        the rows sends large gradients into the body that undo the start. Returns what was done, for the report.
        """
        head = label_layer(model, len(self.labels))
        examples = per_class_sample(examples, HEAD_INIT_ROWS)
        feats: list[torch.Tensor] = []
        handle = head.register_forward_pre_hook(lambda _m, inputs: feats.append(inputs[0].detach().float()))
        try:
            self._encoder_probs(model, [e.text for e in examples], self.settings.eval.batch_size)
        finally:
            handle.remove()
        x = torch.cat(feats)  # (N, H): what the head reads
        y = torch.tensor([self.labels.index(e.target) for e in examples])  # (N,)
        centre = x.mean(0)  # (H,)
        xc = x - centre
        scale = x.norm(dim=-1).mean().clamp_min(1e-6)  # of x, not x - centre: dropout's noise scales with x
        present = [k for k in range(len(self.labels)) if bool((y == k).any())]
        means = torch.zeros(len(self.labels), x.shape[1])  # (K, H); a label with no rows keeps a zero row
        for k in present:
            means[k] = torch.nn.functional.normalize(xc[y == k].mean(0), dim=0)
        unit = means / scale  # (K, H): logits = temperature x (x - centre) . mean_k / mean |x|
        held_out = xc @ unit.T  # (N, K)
        sums = torch.zeros_like(means).index_add_(0, y, xc)  # (K, H)
        sizes = torch.bincount(y, minlength=len(self.labels))  # (K,)
        loo = (sums[y] - xc) / (sizes[y] - 1).clamp_min(1).unsqueeze(-1)  # (N, H): own class's mean without the row
        own = (xc * torch.nn.functional.normalize(loo, dim=-1)).sum(-1) / scale  # (N,)
        held_out[torch.arange(len(y)), y] = torch.where(sizes[y] > 1, own, held_out[torch.arange(len(y)), y])
        # leave-one-out: a row's own class mean without it, so the scale is not fitted to rows the means contain
        temperature = min(TEMPERATURES, key=lambda t: float(torch.nn.functional.cross_entropy(t * held_out, y)))
        weight = temperature * unit
        head.weight.copy_(weight.to(head.weight))
        bias = -(weight @ centre)  # (K,): w . (x - centre) = w . x + bias
        if head.bias is not None:  # a head without a bias cannot centre: its logits keep the common direction
            head.bias.copy_(bias.to(head.bias))
        logits = x @ weight.T + (bias if head.bias is not None else 0.0)  # (N, K)
        train_acc = float((logits.argmax(-1) == y).float().mean())
        return {"temperature": temperature, "train_accuracy": train_acc, "labels_with_rows": len(present)}

    # -- prediction -------------------------------------------------------------------
    def label_probabilities(self, model: PreTrainedModel, texts: list[str]) -> list[list[float]]:
        """P(label | text) for every label, in ``self.labels`` order."""
        bs = self.settings.eval.batch_size
        if self.model_kind == "encoder":
            return self._encoder_probs(model, texts, bs)
        return self._decoder_probs(model, texts)

    def _decoder_probs(self, model: PreTrainedModel, texts: list[str]) -> list[list[float]]:
        return self.decoder_label_probs(model, [self._messages(text) for text in texts])

    def decoder_label_probs(self, model: PreTrainedModel, prompts: list[list[dict[str, str]]]) -> list[list[float]]:
        """Score every label after each chat prompt (sharing the prompt's cache) and normalise over the labels.

        Takes whole conversations so that few-shot and retrieval baselines can put examples before the query.
        """
        tok = self.tokenizer
        options = [tok(label + end_of_turn(tok), add_special_tokens=False)["input_ids"] for label in self.labels]
        budget = self.settings.max_length - max(len(o) for o in options)
        was_training = model.training
        model.eval()
        shared_cache = not getattr(model, "active_peft_config", None) or not model.active_peft_config.is_prompt_learning
        prompts_ids = [tok(prompt_text(tok, m), add_special_tokens=False)["input_ids"][-max(budget, 1) :]
                       for m in prompts]
        if shared_cache:  # prompts batched by length, each prompt's cache shared by its labels
            scored = options_logprobs(model, prompts_ids, options, pad_id(tok), self.settings.eval.batch_size,
                                      self.settings.eval.dtype)
        else:  # soft prompts own the cache's first positions: score each label as a full sequence
            scored = []
            for prompt in tqdm(prompts_ids, desc="classify", leave=False):
                encoded = [Encoded(prompt + o, [IGNORE] * len(prompt) + o, n_answer=len(o)) for o in options]
                pairs = answer_logprobs(model, tok, encoded, len(options), self.settings.eval.dtype)
                scored.append([s for s, _ in pairs])
        out = [torch.softmax(torch.tensor(scores), dim=0).tolist() for scores in scored]
        model.train(was_training)
        return out

    @torch.no_grad()
    def _encoder_probs(self, model: PreTrainedModel, texts: list[str], bs: int) -> list[list[float]]:
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        out: list[list[float]] = []
        max_length = self.settings.max_length
        for start in range(0, len(texts), bs):
            enc = self.tokenizer(texts[start : start + bs], truncation=True, max_length=max_length, padding=True,
                                 return_tensors="pt")
            logits = model(**{k: v.to(device) for k, v in enc.items()}).logits  # (B, n_labels)
            out.extend(torch.softmax(logits.float(), dim=-1).tolist())
        model.train(was_training)
        return out

    def predict(self, model: PreTrainedModel, examples: list[Example]) -> list[dict[str, Any]]:
        probs = self.label_probabilities(model, [e.text for e in examples])
        preds = []
        for p in probs:
            best = max(range(len(p)), key=p.__getitem__)
            preds.append({"prediction": self.labels[best], "confidence": p[best],
                          "probabilities": dict(zip(self.labels, p))})
        return preds

    def score(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, Any]:
        refs = [e.target for e in examples]
        preds = [p["prediction"] for p in predictions]
        labels = self.labels
        nll = [-math.log(max(p["probabilities"].get(r, 0.0), 1e-12)) for r, p in zip(refs, predictions)]
        return {
            "accuracy": accuracy(refs, preds),
            "macro_f1": macro_f1(refs, preds, labels=labels),
            "log_loss": sum(nll) / max(1, len(nll)),
            "per_class": per_class(refs, preds, labels=labels),
            "confusion_matrix": confusion_matrix(refs, preds, labels=labels),
        }

    def item_scores(self, examples: list[Example], predictions: list[dict[str, Any]]) -> dict[str, list[float]]:
        return {"accuracy": [float(e.target == p["prediction"]) for e, p in zip(examples, predictions)]}

    def metric_inputs(self, reads: str, examples: list[Example],
                      predictions: list[dict[str, Any]]) -> MetricInputs | None:
        """ROC and PR areas read each item's probabilities of the labels that occur in the test items (a label
        with no test item has no area)."""
        if reads != "probabilities":
            return None
        refs = [e.target for e in examples]
        present = [label for label in self.labels if label in set(refs)]
        rows = [[float(p["probabilities"].get(label, 0.0)) for label in present] for p in predictions]
        return (refs, rows), {"labels": present}

    # -- serving, distillation and the model card -------------------------------------
    def serve_result(self, prediction: dict[str, Any]) -> dict[str, Any]:
        return {"label": prediction["prediction"], "confidence": prediction["confidence"],
                "probabilities": prediction["probabilities"]}

    def check_teacher(self, teacher: Task) -> None:
        if teacher.schema.get("labels") != self.schema.get("labels"):
            raise ConfigError(f"distill.teacher: the teacher's labels {teacher.schema.get('labels')} differ from "
                              f"the student's {self.schema.get('labels')}")

    def distill_targets(self, examples: list[Example],
                        outputs: list[dict[str, Any]]) -> tuple[list[Example], list[list[float]] | None]:
        """The true labels stay (mixed in by ``1 - distill.alpha``); the teacher adds its label distribution."""
        soft = [[float(o["probabilities"][label]) for label in self.labels] for o in outputs]
        assert all(math.isclose(sum(s), 1.0, abs_tol=1e-3) for s in soft)
        return examples, soft

    @classmethod
    def card_purpose(cls, schema: dict[str, Any]) -> str:
        labels = schema.get("labels", [])
        return f"assigns one of {len(labels)} labels ({', '.join(f'`{x}`' for x in labels)}) to a text"

    @classmethod
    def reference_field(cls, data: dict[str, Any]) -> str | None:
        return str(data["label_field"])

    @classmethod
    def is_wrong(cls, reference: Any, prediction: Any) -> bool:
        return str(reference) != str(prediction)


def label_layer(model: torch.nn.Module, n_labels: int) -> torch.nn.Linear:
    """The last linear layer that maps features to ``n_labels`` logits: the head a new label set trains."""
    layers = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m.out_features == n_labels]
    if not layers:
        raise ConfigError(f"train.head_init: this model has no linear layer with {n_labels} outputs to start "
                          "as the label head; set train.head_init: random")
    return layers[-1]


def per_class_sample(examples: list[Example], most: int) -> list[Example]:
    """The first ``most`` examples of each label, in their order (the training split is already shuffled)."""
    seen: Counter[str] = Counter()
    kept = []
    for e in examples:
        seen[e.target] += 1
        if seen[e.target] <= most:
            kept.append(e)
    return kept
