"""Text-generation metrics beyond BLEU and chrF: all ROUGE variants, METEOR, BERTScore.

Registered in ``METRICS`` like the others (``refs`` first, ``preds`` second). ROUGE and METEOR wrap
their reference implementations (Google's ``rouge-score``; NLTK's METEOR). BERTScore is written out
here because the ``bert-score`` package is a heavy optional dependency with its own model download
logic; it follows that package's algorithm exactly (same tokenisation with special tokens, same
layer, greedy cosine matching in which [CLS]/[SEP] can be matched but carry no weight) and a test
checks it equals ``bert_score.BERTScorer`` on the same encoder.
"""

from __future__ import annotations

from typing import Any

import torch

from tuneforge.evaluate.metrics import METRICS, References, TextMetric, alternatives, check_pairs

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")


def rouge(refs: References, preds: list[str]) -> dict[str, float]:
    """Mean ROUGE-1/2/L/Lsum F-measures (Lin, 2004) on a 0-1 scale, via ``rouge_score`` with the Porter stemmer.

    An item with several references takes, for each variant, its best reference (``score_multi``).

    ROUGE-Lsum is the summary-level LCS: sentences are the lines of the text (split on ``\\n``), as
    in ``rouge_score``; put one sentence per line to get the number summarisation papers report.
    """
    from rouge_score import rouge_scorer

    n = check_pairs(refs, preds)
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for r, p in zip(refs, preds):
        scores = scorer.score_multi(alternatives(r), p)
        for name in ROUGE_TYPES:
            totals[name] += scores[name].fmeasure
    return {name: totals[name] / n for name in ROUGE_TYPES}


@METRICS.register("rouge_1", config=TextMetric(per_item=True))
def rouge_1(refs: References, preds: list[str]) -> float:
    """Mean ROUGE-1 F-measure (unigram overlap), the first of ``rouge``'s values, for selecting by name."""
    return rouge(refs, preds)["rouge1"]


@METRICS.register("rouge_2", config=TextMetric(per_item=True))
def rouge_2(refs: References, preds: list[str]) -> float:
    """Mean ROUGE-2 F-measure (bigram overlap), for selecting by name."""
    return rouge(refs, preds)["rouge2"]


@METRICS.register("rouge_lsum", config=TextMetric(per_item=True))
def rouge_lsum(refs: References, preds: list[str]) -> float:
    """Mean summary-level ROUGE-L F-measure (sentences = lines), for selecting by name."""
    return rouge(refs, preds)["rougeLsum"]


class _NoSynonyms:
    """Stands in for NLTK's WordNet reader when the WordNet corpus is not installed: no synsets for any word.

    NLTK downloads WordNet at run time (``nltk.download("wordnet")``), which tuneforge never does.
    Without it METEOR keeps its exact and Porter-stem matching stages and loses only the synonym
    stage, so scores are a lower bound of full METEOR; ``meteor`` says which was used.
    """

    @staticmethod
    def synsets(word: str) -> list[Any]:
        return []


def _wordnet() -> tuple[Any, bool]:
    """NLTK's WordNet reader if its corpus is on disk, else the no-synonym stand-in; and whether it is real."""
    import nltk

    try:
        nltk.data.find("corpora/wordnet")
    except LookupError:
        try:
            nltk.data.find("corpora/wordnet.zip")
        except LookupError:
            return _NoSynonyms(), False
    from nltk.corpus import wordnet

    return wordnet, True


@METRICS.register("meteor", config=TextMetric(value="score", per_item=True))
def meteor(refs: References, preds: list[str]) -> dict[str, Any]:
    """Mean METEOR (Banerjee and Lavie, 2005) on a 0-1 scale, by NLTK, with the settings it reports in.

    Tokenised with NLTK's regex ``wordpunct_tokenize`` (needs no downloaded model), lower-cased,
    alpha=0.9, beta=3, gamma=0.5. ``synonyms`` is ``True`` when WordNet synonym matching ran and
    ``False`` when WordNet is not installed (``python -m nltk.downloader wordnet`` turns it on).
    A reference may be a list of alternatives; the best-matching one counts.
    """
    from nltk.tokenize import wordpunct_tokenize
    from nltk.translate.meteor_score import meteor_score

    n = check_pairs(refs, preds)
    wordnet, real = _wordnet()
    total = 0.0
    for ref, pred in zip(refs, preds):
        total += meteor_score([wordpunct_tokenize(a) for a in alternatives(ref)], wordpunct_tokenize(pred),
                              wordnet=wordnet)
    return {"score": total / n, "synonyms": real}


def _bertscore_pair(hyp: torch.Tensor, ref: torch.Tensor, hyp_w: torch.Tensor,
                    ref_w: torch.Tensor) -> tuple[float, float, float]:
    """Greedy cosine matching of one pair; ``hyp`` ``(H, D)``, ``ref`` ``(R, D)``, weights ``(H,)``/``(R,)``."""
    hyp = torch.nn.functional.normalize(hyp, dim=-1)
    ref = torch.nn.functional.normalize(ref, dim=-1)
    sim = hyp @ ref.T  # (H, R)
    if hyp_w.sum() == 0 or ref_w.sum() == 0:
        return 0.0, 0.0, 0.0  # an empty sentence: bert-score also reports 0
    p = float((sim.max(dim=1).values * hyp_w).sum() / hyp_w.sum())
    r = float((sim.max(dim=0).values * ref_w).sum() / ref_w.sum())
    return p, r, (2 * p * r / (p + r) if p + r else 0.0)


def bertscore_items(refs: References, preds: list[str], *, encoder_path: str | None = None,
                    layer: int | None = None) -> list[dict[str, float]]:
    """Per-item BERTScore ``{"precision", "recall", "f1"}`` (Zhang et al., 2020, https://arxiv.org/abs/1904.09675).

    Every token's embedding (layer ``layer`` of the encoder, default its last) is matched to the most
    similar token of the other sentence; precision averages over the prediction's tokens, recall over
    the reference's. No IDF weighting and no baseline rescaling (bert-score's defaults). An item with
    several references keeps the one of highest F1 (bert-score's multi-reference rule).
    """
    from tuneforge.evaluate.embed import get_encoder

    check_pairs(refs, preds)
    enc = get_encoder(encoder_path)
    layer = enc.n_layers if layer is None else layer
    tok = enc.tokenizer
    special = {tok.cls_token_id, tok.sep_token_id}
    out = []
    for ref, pred in zip(refs, preds):
        hyp_ids = _encode(tok, pred)
        hyp_e = enc.token_embeddings(hyp_ids, layer)
        hyp_w = torch.tensor([0.0 if t in special else 1.0 for t in hyp_ids])
        best = None
        for alt in alternatives(ref):
            ref_ids = _encode(tok, alt)
            ref_w = torch.tensor([0.0 if t in special else 1.0 for t in ref_ids])
            p, r, f = _bertscore_pair(hyp_e, enc.token_embeddings(ref_ids, layer), hyp_w, ref_w)
            if best is None or f > best[2]:
                best = (p, r, f)
        assert best is not None  # alternatives() is never empty
        out.append({"precision": best[0], "recall": best[1], "f1": best[2]})
    return out


def _encode(tokenizer: Any, text: str) -> list[int]:
    """bert-score's ``sent_encode``: stripped text with special tokens, truncated to the model's maximum."""
    text = text.strip()
    if not text:
        return tokenizer.build_inputs_with_special_tokens([])
    return tokenizer.encode(text, add_special_tokens=True, max_length=tokenizer.model_max_length, truncation=True)


@METRICS.register("bertscore", config=TextMetric(value="f1", per_item=True))
def bertscore(refs: References, preds: list[str], *, encoder_path: str | None = None,
              layer: int | None = None) -> dict[str, Any]:
    """Mean BERTScore precision, recall and F1 with the embedded MiniLM encoder (or ``encoder_path``)."""
    items = bertscore_items(refs, preds, encoder_path=encoder_path, layer=layer)
    n = len(items)
    return {"precision": sum(i["precision"] for i in items) / n, "recall": sum(i["recall"] for i in items) / n,
            "f1": sum(i["f1"] for i in items) / n, "encoder": encoder_path or "minilm-l6",
            "layer": layer if layer is not None else "last"}
