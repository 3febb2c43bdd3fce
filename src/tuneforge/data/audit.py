"""``tuneforge data audit``: find what is wrong with a data set before anything trains on it.

Each check is a function in ``CHECKS`` that looks at one data set and returns a ``Finding``: how
many rows it flags, how bad that is (``error`` must be fixed, ``warning`` should be looked at,
``info`` describes the data), a one-line summary, and every flagged row as ``file:line`` with its
text and a note. Train/test leakage compares two data sets and is run for every file against
``--test``. ``audit_files`` returns an ``AuditReport``; the CLI prints its table and writes
``audit.json`` and a self-contained ``audit.html`` (see :mod:`tuneforge.data.audit_page`).

Rows are read with the project's readers, so a row that does not parse is itself a finding
rather than a crash. A row's *text* is its ``text_field`` for classification data, or the
contents of its turns for chat, prompt/completion, alpaca and preference rows
(:mod:`tuneforge.data.convert` reads them all into one conversation type).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from tuneforge.extras import require
from tuneforge.data import dedup, pii
from tuneforge.data.convert import Conversation, detect_format, read_conversation
from tuneforge.data.readers import MalformedRows, Record, read_records
from tuneforge.errors import DataError
from tuneforge.registry import Registry

Severity = Literal["ok", "info", "warning", "error"]
_CHAT_FORMATS = ("messages", "openai", "openai_preference", "prompt_completion", "alpaca", "preference")


class AuditOptions(BaseModel):
    """What the audit looks at; every field has a CLI flag of the same name."""

    model_config = ConfigDict(extra="forbid")

    text_field: str = "text"
    label_field: str = "label"
    model: str | None = None
    """Registry name or folder whose tokenizer measures lengths; ``None`` skips the token checks."""
    max_length: int = Field(128, ge=1)
    """The ``train.max_length`` you plan to use: rows longer than this get truncated."""
    near_threshold: float = Field(0.8, gt=0, le=1)
    """Jaccard similarity of word 3-grams from which two rows count as near duplicates."""
    neighbours: Literal["tfidf", "minilm"] = "tfidf"
    """Embedding for the label-noise check."""
    k: int = Field(10, ge=2)
    """Neighbours consulted per row by the label-noise check."""
    phone_region: str = "US"
    """Region used to read phone numbers written without a +country prefix."""


@dataclass
class Finding:
    check: str
    title: str
    severity: Severity
    count: int
    summary: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class Dataset:
    """One file, read and prepared once for every check."""

    path: str
    records: list[Record]
    texts: list[str | None]
    labels: list[str | None]
    conversations: list[Conversation | None]
    conversation_errors: dict[int, str]
    malformed: list[str]

    def where(self, i: int) -> str:
        return self.records[i].where()

    def row(self, i: int, note: str = "", **extra: Any) -> dict[str, Any]:
        return {"where": self.where(i), "text": self.texts[i], "note": note, **extra}

    def text_indices(self) -> list[int]:
        return [i for i, t in enumerate(self.texts) if t]


@dataclass
class AuditReport:
    files: list[str]
    options: dict[str, Any]
    findings: dict[str, list[Finding]]
    """file -> its findings, plus ``"leakage"`` for the cross-file check."""
    seconds: float
    rows: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"files": self.files, "rows": self.rows, "options": self.options, "seconds": round(self.seconds, 2),
                "findings": {k: [asdict(f) for f in v] for k, v in self.findings.items()}}

    def flagged(self, check: str, file: str | None = None) -> list[dict[str, Any]]:
        """Every row that ``check`` flagged (in ``file``, or in any file)."""
        return [r for k, fs in self.findings.items() if file in (None, k) for f in fs if f.check == check for r in f.rows]


# ----------------------------------------------------------------------------- reading
def load_dataset(path: Path | str, opts: AuditOptions) -> Dataset:
    malformed: list[str] = []
    try:
        records = read_records(Path(path))
    except MalformedRows as err:
        records, malformed = err.records, err.problems
    texts: list[str | None] = []
    labels: list[str | None] = []
    convs: list[Conversation | None] = []
    errors: dict[int, str] = {}
    for i, rec in enumerate(records):
        f = rec.fields
        conv = None
        fmt = detect_format(f)
        if opts.text_field not in f and fmt in _CHAT_FORMATS:
            try:
                conv = read_conversation(rec, fmt)
            except DataError as err:
                errors[i] = str(err).split(": ", 1)[-1]
        convs.append(conv)
        if isinstance(f.get(opts.text_field), str):
            texts.append(f[opts.text_field])
        elif conv is not None:
            texts.append("\n".join([m["content"] for m in conv.messages] + ([conv.rejected] if conv.rejected else [])))
        elif fmt in _CHAT_FORMATS:  # malformed chat: audit whatever strings it holds
            texts.append("\n".join(string_values(f)) or None)
        else:
            texts.append(None)
        label = f.get(opts.label_field)
        labels.append(str(label).strip() if isinstance(label, (str, int, bool)) and str(label).strip() else None)
    return Dataset(str(path), records, texts, labels, convs, errors, malformed)


def string_values(value: Any) -> list[str]:
    """Every string inside a JSON value, depth first (the text of a chat row, for example)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for v in value.values() for s in string_values(v)]
    if isinstance(value, list):
        return [s for v in value for s in string_values(v)]
    return []


# ----------------------------------------------------------------------------- checks
Check = Callable[[Dataset, AuditOptions], Finding | None]
CHECKS: Registry[Check] = Registry("audit check")


@CHECKS.register("fields")
def check_fields(data: Dataset, opts: AuditOptions) -> Finding:
    """Rows that do not parse, rows without a text, and fields missing, null or empty in some rows."""
    rows = [{"where": p.split(": ", 1)[0], "text": None, "note": p.split(": ", 1)[-1]} for p in data.malformed]
    keys = Counter(k for r in data.records for k in r.fields)
    common = [k for k, n in keys.items() if n >= len(data.records) / 2]
    per_field: dict[str, dict[str, int]] = {}
    for i, rec in enumerate(data.records):
        notes = []
        for k in common:
            state = _field_state(rec.fields, k)
            if state:
                per_field.setdefault(k, Counter())[state] += 1
                notes.append(f"{k}: {state}")
        if not data.texts[i] or not data.texts[i].strip():
            notes.append("no text to train on")
        if notes:
            rows.append(data.row(i, "; ".join(dict.fromkeys(notes))))
    severity: Severity = "error" if rows else "ok"
    summary = (f"{len(rows)} rows with missing, null or empty fields" if rows else "every row has every field")
    return Finding("fields", "Empty and missing fields", severity, len(rows), summary, rows,
                   {"fields": dict(keys), "problems": {k: dict(v) for k, v in per_field.items()}})


def _field_state(fields: dict[str, Any], key: str) -> str | None:
    """``missing``, ``null`` or ``empty`` (blank string, empty list or object), else ``None``."""
    if key not in fields:
        return "missing"
    value = fields[key]
    if value is None:
        return "null"
    if isinstance(value, str) and not value.strip() or isinstance(value, (list, dict)) and not value:
        return "empty"
    return None


@CHECKS.register("exact_duplicates")
def check_exact_duplicates(data: Dataset, opts: AuditOptions) -> Finding:
    idx = data.text_indices()
    groups = dedup.exact_groups([data.texts[i] for i in idx])
    rows = []
    conflicting = 0
    for g in groups:
        members = [idx[i] for i in g.rows]
        labels = {data.labels[i] for i in members}
        conflicting += len(labels) > 1
        for i in members[1:]:
            note = f"same text as {data.where(members[0])}" + (f" (labels differ: {', '.join(map(str, sorted(labels, key=str)))})" if len(labels) > 1 else "")
            rows.append(data.row(i, note, duplicate_of=data.where(members[0])))
    summary = f"{len(rows)} rows repeat an earlier row ({len(groups)} groups, {conflicting} with conflicting labels)"
    return Finding("exact_duplicates", "Exact duplicates", "warning" if rows else "ok", len(rows), summary, rows,
                   {"groups": len(groups), "conflicting_labels": conflicting})


@CHECKS.register("near_duplicates")
def check_near_duplicates(data: Dataset, opts: AuditOptions) -> Finding:
    idx = data.text_indices()
    groups = dedup.near_groups([data.texts[i] for i in idx], threshold=opts.near_threshold)
    rows = []
    for g in groups:
        members = [idx[i] for i in g.rows]
        for i in members[1:]:
            rows.append(data.row(i, f"near-identical to {data.where(members[0])} (Jaccard >= {g.similarity:.2f})",
                                 duplicate_of=data.where(members[0])))
    summary = f"{len(rows)} rows nearly repeat another ({len(groups)} groups, MinHash Jaccard >= {opts.near_threshold})"
    return Finding("near_duplicates", "Near duplicates", "warning" if rows else "ok", len(rows), summary, rows,
                   {"groups": len(groups)})


@CHECKS.register("labels")
def check_labels(data: Dataset, opts: AuditOptions) -> Finding | None:
    """Label distribution, imbalance (largest / smallest class) and rare labels (< 1% of rows or < 5 rows)."""
    labelled = [(i, lab) for i, lab in enumerate(data.labels) if lab is not None]
    if not labelled:
        return None
    counts = Counter(lab for _, lab in labelled)
    ratio = max(counts.values()) / min(counts.values())
    rare = {lab for lab, n in counts.items() if n < max(5, 0.01 * len(labelled))}
    rows = [data.row(i, f"rare label {lab!r} ({counts[lab]} rows)") for i, lab in labelled if lab in rare]
    severity: Severity = "warning" if rare or ratio > 10 else "info"
    summary = (f"{len(counts)} labels, largest/smallest = {ratio:.1f}"
               + (f"; rare: {', '.join(sorted(rare))}" if rare else ""))
    return Finding("labels", "Label distribution", severity, len(rows), summary, rows,
                   {"counts": dict(counts.most_common()), "imbalance_ratio": round(ratio, 2), "rare": sorted(rare)})


@CHECKS.register("mojibake")
def check_mojibake(data: Dataset, opts: AuditOptions) -> Finding:
    """Text that was decoded with the wrong codec (``EspaÃ±ol``): rows that ``ftfy.fix_encoding`` would change.

    Only ``fix_encoding`` is asked, not ``fix_text``: curly quotes and ligatures are not damage.
    Rows holding U+FFFD are flagged too: there the original bytes are gone and nothing can repair them.
    """
    ftfy = require("ftfy", "tuneforge data audit")

    rows = []
    for i in data.text_indices():
        text = data.texts[i]
        fixed = ftfy.fix_encoding(text)
        if fixed != text:
            rows.append(data.row(i, "double-encoded text (mojibake)", fixed=fixed))
        elif "\ufffd" in text:
            rows.append(data.row(i, "U+FFFD replacement character: bytes were lost when decoding; "
                                    "re-export the source as UTF-8", fixed=None))
    summary = f"{len(rows)} rows with encoding damage that ftfy can repair" if rows else "no encoding damage"
    return Finding("mojibake", "Encoding damage (mojibake)", "warning" if rows else "ok", len(rows), summary, rows)


@CHECKS.register("language")
def check_language(data: Dataset, opts: AuditOptions) -> Finding:
    """Language mix by ``py3langid`` (langid.py's model); rows confidently in another language than most are flagged."""
    langid = require("py3langid.langid", "tuneforge data audit")

    ident = langid.LanguageIdentifier.from_model_file(langid.MODEL_FILE, norm_probs=True)
    found = {i: ident.classify(data.texts[i]) for i in data.text_indices()}
    confident = Counter(lang for lang, p in found.values() if p >= 0.8)
    main = confident.most_common(1)[0][0] if confident else None
    rows = [data.row(i, f"looks like {lang!r} (p={p:.2f}); most rows are {main!r}", language=lang)
            for i, (lang, p) in found.items() if main and lang != main and p >= 0.8]
    mix = {**dict(confident.most_common()), "uncertain": sum(p < 0.8 for _, p in found.values())}
    summary = f"mostly {main!r}; {len(rows)} rows confidently in another language"
    return Finding("language", "Language mix", "info", len(rows), summary, rows, {"languages": mix})


@CHECKS.register("pii")
def check_pii(data: Dataset, opts: AuditOptions) -> Finding:
    rows = []
    kinds: Counter[str] = Counter()
    for i in data.text_indices():
        spans = pii.find_pii(data.texts[i], region=opts.phone_region)
        if spans:
            kinds.update(s.kind for s in spans)
            rows.append(data.row(i, ", ".join(f"{s.kind}: {s.value}" for s in spans), pii=[asdict(s) for s in spans]))
    names = "" if pii.names_available else "; person names not checked (no offline name finder installed)"
    summary = (f"{len(rows)} rows hold personal data ({', '.join(f'{k} {n}' for k, n in kinds.items())})"
               if rows else "no e-mails, phones, cards, IBANs or addresses") + names
    return Finding("pii", "Personal data", "warning" if rows else "ok", len(rows), summary, rows,
                   {"kinds": dict(kinds), "names_checked": pii.names_available})


CLOSE = {"tfidf": 0.3, "minilm": 0.6}


@CHECKS.register("label_noise")
def check_label_noise(data: Dataset, opts: AuditOptions) -> Finding | None:
    """Rows whose label no close neighbour shares while most neighbours agree on another label.

    A row is a candidate when at least 5 of its ``k`` nearest neighbours are close (cosine at least
    ``CLOSE[embedder]``: 0.3 for sparse TF-IDF, whose cosines run low; 0.6 for MiniLM),
    none of them has its label, and at least 80% of them share one other label. That is the
    k-nearest-neighbour disagreement rule used by confident-learning style audits, tuned to flag
    few rows: it finds candidates for a person to look at, not errors.
    """
    from tuneforge.data.embed import embed, nearest_neighbours

    idx = [i for i in data.text_indices() if data.labels[i] is not None]
    if len(idx) < opts.k + 1 or len({data.labels[i] for i in idx}) < 2:
        return None
    vectors = embed([data.texts[i] for i in idx], opts.neighbours)
    nbr, sims = nearest_neighbours(vectors, opts.k)
    rows = []
    for a, i in enumerate(idx):
        close = [data.labels[idx[b]] for b, s in zip(nbr[a], sims[a]) if s >= CLOSE[opts.neighbours]]
        if len(close) < 5:
            continue
        counts = Counter(close)
        top, n = counts.most_common(1)[0]
        if counts[data.labels[i]] == 0 and n / len(close) >= 0.8:
            rows.append(data.row(i, f"labelled {data.labels[i]!r}; {n}/{len(close)} close neighbours say {top!r}",
                                 label=data.labels[i], suggested=top))
    summary = f"{len(rows)} rows whose neighbours ({opts.neighbours}, k={opts.k}) disagree with their label"
    return Finding("label_noise", "Label-noise candidates", "warning" if rows else "ok", len(rows), summary, rows)


@CHECKS.register("lengths")
def check_lengths(data: Dataset, opts: AuditOptions) -> Finding | None:
    """Token lengths with the chosen model's tokenizer: outliers (beyond Q3 + 3 IQR) and rows over ``max_length``."""
    if opts.model is None:
        return None
    tokenizer = _tokenizer(opts.model)
    idx = data.text_indices()
    if not idx:
        return None
    lengths = np.array([len(ids) for ids in tokenizer([data.texts[i] for i in idx])["input_ids"]])
    q1, q3 = np.percentile(lengths, [25, 75])
    limit = q3 + 3 * (q3 - q1)
    rows = []
    for i, n in zip(idx, lengths.tolist()):
        notes = ([f"{n} tokens, over max_length {opts.max_length}: truncated"] if n > opts.max_length else [])
        notes += [f"{n} tokens: length outlier (> {limit:.0f})"] if n > limit else []
        if notes:
            rows.append(data.row(i, "; ".join(notes), tokens=n))
    truncated = int((lengths > opts.max_length).sum())
    stats = {"tokenizer": opts.model, "min": int(lengths.min()), "median": float(np.median(lengths)),
             "p95": float(np.percentile(lengths, 95)), "max": int(lengths.max()), "outlier_above": float(limit),
             "truncated_at_max_length": truncated, "max_length": opts.max_length}
    summary = (f"tokens median {stats['median']:.0f}, p95 {stats['p95']:.0f}, max {stats['max']}; "
               f"{truncated} rows over max_length {opts.max_length}")
    return Finding("lengths", "Token lengths", "warning" if truncated else "info", len(rows), summary, rows, stats)


@CHECKS.register("chat")
def check_chat(data: Dataset, opts: AuditOptions) -> Finding | None:
    """Chat rows: role and turn order, and what training would see at ``max_length`` with the model's template.

    The encoding is the one training uses (``tasks.base.encode_prompt_answer``), so a row flagged
    here is exactly a row that trains badly: its answer is cut off, it keeps no answer (loss)
    tokens, or its answer loses the end-of-turn token and the model never learns to stop.
    """
    chat = [i for i, c in enumerate(data.conversations) if c is not None] + sorted(data.conversation_errors)
    if not chat:
        return None
    rows = []
    counts: Counter[str] = Counter()
    for i, err in sorted(data.conversation_errors.items()):
        counts["turn_order"] += 1
        note = f"role/turn order: {err}"
        if _empty_answer(data.records[i].fields):
            counts["no_loss_tokens"] += 1
            note = "no loss tokens: the answer is empty; " + note
        rows.append(data.row(i, note))
    if opts.model is not None:
        from tuneforge.tasks.base import encode_prompt_answer, end_of_turn

        tokenizer = _tokenizer(opts.model)
        eot = tokenizer.convert_tokens_to_ids(end_of_turn(tokenizer))
        for i, conv in enumerate(data.conversations):
            if conv is None:
                continue
            enc = encode_prompt_answer(tokenizer, conv.prompt, conv.answer, opts.max_length)
            notes = []
            if enc.n_answer == 0:
                notes.append("no loss tokens: the prompt fills max_length")
                counts["no_loss_tokens"] += 1
            elif enc.truncated and enc.input_ids[-1] != eot:
                notes.append(f"answer cut off at max_length {opts.max_length}")
                counts["answer_cut_off"] += 1
            elif enc.truncated:
                notes.append(f"prompt truncated at max_length {opts.max_length}: its oldest tokens are dropped")
                counts["prompt_truncated"] += 1
            if enc.n_answer > 0 and enc.input_ids[-1] != eot:
                notes.append("answer does not end with the end-of-turn token")
                counts["missing_end_of_turn"] += 1
            if notes:
                rows.append(data.row(i, "; ".join(notes)))
    severity: Severity = "error" if rows else "ok"
    summary = (f"{len(chat)} chat rows; " + ", ".join(f"{k} {v}" for k, v in counts.items())
               + ("" if opts.model else "; pass --model to check truncation and end-of-turn"))
    return Finding("chat", "Chat structure and truncation", severity, len(rows), summary, rows, dict(counts))


def _empty_answer(fields: dict[str, Any]) -> bool:
    """A chat row whose final assistant turn is blank: training would see no answer token at all."""
    for key in ("messages", "preferred_output"):
        msgs = fields.get(key)
        if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
            return not str(msgs[-1].get("content") or "").strip()
    for key in ("completion", "output", "chosen"):
        if key in fields:
            return not str(fields[key] or "").strip()
    return False


_TOKENIZERS: dict[str, Any] = {}


def _tokenizer(model: str) -> Any:
    if model not in _TOKENIZERS:
        from tuneforge.models.loading import load_tokenizer
        from tuneforge.models.resolve import resolve_model

        _TOKENIZERS[model] = load_tokenizer(resolve_model(model).path)
    return _TOKENIZERS[model]


def check_leakage(train: Dataset, test: Dataset, opts: AuditOptions) -> Finding:
    """Test rows that are in the training file too, exactly or nearly: a score on them measures memory."""
    ti = train.text_indices()
    si = test.text_indices()
    found = dedup.leaks([train.texts[i] for i in ti], [test.texts[j] for j in si], threshold=opts.near_threshold)
    rows = [test.row(si[j], f"{'same as' if sim == 1.0 else f'near (Jaccard {sim:.2f})'} {train.where(ti[i])}",
                     train_row=train.where(ti[i]), similarity=sim) for j, i, sim in found]
    summary = f"{len(rows)} of {len(si)} test rows also appear in {train.path}" if rows else "no test row is in train"
    return Finding("leakage", f"Train/test leakage ({Path(train.path).name} vs {Path(test.path).name})",
                   "error" if rows else "ok", len(rows), summary, rows)


# ----------------------------------------------------------------------------- entry point
def audit_files(files: list[Path | str], *, test: Path | str | None = None, options: AuditOptions | None = None,
                checks: list[str] | None = None, echo: Callable[[str], Any] | None = None) -> AuditReport:
    """Run every check (or those named in ``checks``) on each file, and leakage of each file against ``test``."""
    opts = options or AuditOptions()
    start = time.perf_counter()
    names = checks or CHECKS.names()
    for n in names:
        CHECKS.get(n)  # unknown names fail before any work
    paths = [str(f) for f in files] + ([str(test)] if test is not None and str(test) not in map(str, files) else [])
    datasets = {p: load_dataset(p, opts) for p in paths}
    findings: dict[str, list[Finding]] = {}
    for path, data in datasets.items():
        findings[path] = []
        for name in names:
            t = time.perf_counter()
            finding = CHECKS.get(name)(data, opts)
            if finding is not None:
                finding.stats["seconds"] = round(time.perf_counter() - t, 2)
                findings[path].append(finding)
                if echo:
                    echo(f"  {Path(path).name}: {name} ({finding.stats['seconds']:.1f}s)")
    if test is not None:
        findings["leakage"] = [check_leakage(datasets[str(f)], datasets[str(test)], opts)
                               for f in map(str, files) if f != str(test)]
    return AuditReport(paths, opts.model_dump(), findings, time.perf_counter() - start,
                       {p: len(d.records) for p, d in datasets.items()})


def render_table(report: AuditReport) -> str:
    """The terminal table: one line per check and file."""
    lines = [("file", "check", "severity", "rows", "summary")]
    for key, fs in report.findings.items():
        for f in fs:
            lines.append((Path(key).name, f.check, f.severity, str(f.count), f.summary))
    widths = [max(len(r[c]) for r in lines) for c in range(4)]
    out = ["  ".join(r[c].ljust(widths[c]) for c in range(4)) + "  " + r[4] for r in lines]
    out.insert(1, "-" * min(120, len(out[0])))
    return "\n".join(out)


def write_report(report: AuditReport, out_dir: Path | str) -> tuple[Path, Path]:
    """``audit.json`` and ``audit.html`` in ``out_dir``, written atomically."""
    from tuneforge.data.audit_page import render_html
    from tuneforge.files import write_json_atomic, write_text_atomic

    out = Path(out_dir)
    write_json_atomic(out / "audit.json", report.to_dict())
    write_text_atomic(out / "audit.html", render_html(report))
    return out / "audit.json", out / "audit.html"
