"""Metrics (pure functions in the ``METRICS`` registry) and the before/after report."""

from tuneforge.evaluate import metrics_extra  # noqa: F401  (registers AUCs, MCC, QA and ranking metrics)
from tuneforge.evaluate import metrics_text  # noqa: F401  (registers ROUGE, METEOR, BERTScore)
from tuneforge.evaluate.metrics import METRICS

__all__ = ["METRICS"]
