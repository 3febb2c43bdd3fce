"""Blind human review of two systems' answers on the same test items, and what the ratings say.

Metrics are proxies; for generation the last word is a person reading both answers. A fair comparison hides
which system wrote which answer and puts each one on the left as often as on the right, since raters favour
a side (position bias; Zheng et al. 2023, https://arxiv.org/abs/2306.05685, section 3.3). So:

- ``make_sheet`` draws ``n`` items, shuffles sides per item with a seed, and keeps the *key* (which system is
  on which side) apart from the sheet the raters see;
- ``write_sheet`` writes that sheet as a CSV and as one self-contained HTML form (no network, no server:
  the page saves the filled CSV itself), and the key as JSON;
- ``read_ratings`` reads filled sheets (one per rater), ``summarise`` turns them into win / tie / loss of
  system A against B with a bootstrap interval, and Cohen's kappa between every two raters
  (Cohen 1960; equals ``sklearn.metrics.cohen_kappa_score``), and ``preference_pairs`` writes the majority
  verdict of each item as a ``prompt``/``chosen``/``rejected`` row that DPO and reward-model training read.

Nothing here needs a model; a browser page can call the same functions (``sheet_html`` renders the form).
"""

from __future__ import annotations

import csv
import html
import io
import json
import random
from collections import Counter
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Any, Literal

from tuneforge.data.readers import Record
from tuneforge.errors import DataError, UserError
from tuneforge.evaluate.metrics import bootstrap_ci
from tuneforge.files import write_json_atomic, write_text_atomic
from tuneforge.run.folder import RunDir
from tuneforge.run.splits import load_saved_split

#: what a rater may write in the ``preferred`` column, and what it means
CHOICES = {"1": "left", "left": "left", "2": "right", "right": "right", "tie": "tie", "=": "tie", "0": "tie"}
SHEET_FIELDS = ("row", "input", "answer_1", "answer_2", "preferred", "comment")


@dataclass
class ReviewItem:
    """One test item and the answer of each system (``answers[0]`` is system A's)."""

    item: str
    prompt: str | list[dict[str, str]]
    answers: tuple[str, str]
    reference: str | None = None


@dataclass
class Sheet:
    """What raters see (``rows``) and what they must not (``key``: for each row, which system is on the left)."""

    systems: tuple[str, str]
    rows: list[dict[str, str]]
    key: dict[str, dict[str, Any]]


# ----------------------------------------------------------------------------- reading runs
def shown_prompt(fields: dict[str, Any]) -> str | list[dict[str, str]]:
    """The input of a saved test row as the model saw it: the conversation before the answer, or the prompt."""
    messages = fields.get("messages")
    if isinstance(messages, list) and messages:
        return [m for m in messages[:-1] if isinstance(m, dict)]
    for name in ("prompt", "instruction", "text", "question"):
        if isinstance(fields.get(name), str):
            extra = fields.get("input") if name == "instruction" else None
            return fields[name] + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
    return json.dumps(fields, ensure_ascii=False)


def prompt_text(prompt: str | list[dict[str, str]]) -> str:
    if isinstance(prompt, str):
        return prompt
    return "\n\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in prompt)


def _predictions(run: RunDir, side: str) -> list[str]:
    path = run.predictions / f"{side}.jsonl"
    if not path.is_file():
        raise UserError(f"{run.root}: no {side} predictions ({path}); a finished run with a test split holds them"
                        + (" (base ones need eval.base: true)" if side == "base" else ""))
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line.strip()]
    shown = [r.get("raw", r["prediction"]) for r in rows]  # the text a user saw (extraction keeps it as raw)
    return [s if isinstance(s, str) else json.dumps(s, ensure_ascii=False) for s in shown]


def _test_rows(run: RunDir) -> list[Record]:
    if not (run.data / "test.jsonl").is_file():
        raise UserError(f"{run.root}: not a finished tuneforge run with a test split (no data/test.jsonl)")
    return load_saved_split(run.data, "test")


def items_from_runs(run_a: Path | str, run_b: Path | str | None = None) -> tuple[tuple[str, str], list[ReviewItem]]:
    """The two systems' answers on the same test items: run A's tuned model against run B's, or against run A's
    base model when no run B is given. Runs scored on different test items cannot be compared item by item."""
    a = RunDir(run_a)
    rows = _test_rows(a)
    if run_b is None:
        systems, answers = (f"{a.root.name}:tuned", f"{a.root.name}:base"), (_predictions(a, "tuned"),
                                                                           _predictions(a, "base"))
    else:
        b = RunDir(run_b)
        if [r.fields for r in _test_rows(b)] != [r.fields for r in rows]:
            raise UserError(f"{a.root} and {b.root} were scored on different test items; review needs the same ones "
                            "(give both recipes the same data.test)")
        systems, answers = (f"{a.root.name}:tuned", f"{b.root.name}:tuned"), (_predictions(a, "tuned"),
                                                                            _predictions(b, "tuned"))
    if not len(rows) == len(answers[0]) == len(answers[1]):
        raise UserError(f"{a.root}: {len(rows)} test rows but {len(answers[0])}/{len(answers[1])} predictions")
    items = [ReviewItem(item=r.where(), prompt=shown_prompt(r.fields), answers=(x, y))
             for r, x, y in zip(rows, *answers)]
    return systems, items


# ----------------------------------------------------------------------------- the sheet
def make_sheet(systems: tuple[str, str], items: list[ReviewItem], n: int, seed: int = 0) -> Sheet:
    """Draw ``n`` items (all when fewer) and put system A on a random side of each, both seeded."""
    if n < 1:
        raise UserError(f"-n {n}: review at least one item")
    rng = random.Random(seed)
    picked = [items[i] for i in sorted(rng.sample(range(len(items)), min(n, len(items))))]
    pairs = blind_pairs([prompt_text(it.prompt) for it in picked], [it.answers[0] for it in picked],
                        [it.answers[1] for it in picked], rng=rng)
    rows, key = [], {}
    for number, (it, pair) in enumerate(zip(picked, pairs), start=1):
        row = str(number)
        rows.append({"row": row, "input": pair.prompt, "answer_1": pair.left, "answer_2": pair.right,
                     "preferred": "", "comment": ""})
        left_is, right_is = (systems[0], systems[1]) if pair.left_is == "a" else (systems[1], systems[0])
        key[row] = {"left": left_is, "right": right_is, "item": it.item, "prompt": it.prompt,
                    "answers": dict(zip(systems, it.answers))}
    return Sheet(systems, rows, key)


def sheet_csv(rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=SHEET_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def sheet_html(rows: list[dict[str, str]], title: str = "Blind review") -> str:
    """One offline page: each item's input and two answers, a choice per item, and a button that saves the
    ratings as the same CSV layout ``read_ratings`` reads. No script or style is loaded from anywhere."""
    esc = html.escape
    cards = []
    for r in rows:
        n = esc(r["row"])
        choices = "".join(f'<label><input type="radio" name="p{n}" value="{v}"> {label}</label> '
                          for v, label in (("1", "answer 1 is better"), ("tie", "tie"), ("2", "answer 2 is better")))
        cards.append(f'<section data-row="{n}"><h2>Item {n}</h2><pre class="in">{esc(r["input"])}</pre>'
                     f'<div class="pair"><div><h3>Answer 1</h3><pre>{esc(r["answer_1"])}</pre></div>'
                     f'<div><h3>Answer 2</h3><pre>{esc(r["answer_2"])}</pre></div></div>'
                     f'<p>{choices}</p><p><input class="c" size="80" placeholder="comment (optional)"></p></section>')
    data = json.dumps(rows).replace("</", "<\\/")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{esc(title)}</title><style>
body{{font-family:sans-serif;max-width:70em;margin:auto}} pre{{white-space:pre-wrap;background:#f6f6f6;padding:.5em}}
.pair{{display:grid;grid-template-columns:1fr 1fr;gap:1em}} section{{border-bottom:1px solid #ccc;padding:1em 0}}
</style></head><body><h1>{esc(title)}</h1>
<p>Read the input, then both answers; pick the better one, or tie. The answers come in random order.</p>
<p>Your name: <input id="rater"></p>{''.join(cards)}
<p><button id="save">Save ratings (CSV)</button></p>
<script>
const rows = {data};
function q(s){{return '"' + String(s).replace(/"/g, '""') + '"';}}
document.getElementById('save').onclick = function() {{
  const rater = document.getElementById('rater').value || 'rater';
  let out = 'row,input,answer_1,answer_2,preferred,comment,rater\\n';
  for (const r of rows) {{
    const sec = document.querySelector('section[data-row="' + r.row + '"]');
    const pick = sec.querySelector('input[type=radio]:checked');
    out += [r.row, r.input, r.answer_1, r.answer_2, pick ? pick.value : '', sec.querySelector('.c').value, rater]
      .map(q).join(',') + '\\n';
  }}
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([out], {{type: 'text/csv'}}));
  a.download = 'ratings-' + rater + '.csv'; a.click();
}};
</script></body></html>
"""


def write_sheet(sheet: Sheet, out_dir: Path | str, key_path: Path | str | None = None) -> dict[str, Path]:
    """``sheet.csv`` and ``sheet.html`` for raters in ``out_dir``; the key in ``key_path`` (default
    ``out_dir/key.json``: move it away before sharing the folder)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "sheet.csv", "html": out / "sheet.html", "key": Path(key_path or out / "key.json")}
    write_text_atomic(paths["csv"], sheet_csv(sheet.rows))
    write_text_atomic(paths["html"], sheet_html(sheet.rows))
    write_json_atomic(paths["key"], {"systems": list(sheet.systems), "rows": sheet.key})
    return paths


# ----------------------------------------------------------------------------- ratings
@dataclass
class Rating:
    rater: str
    row: str
    #: the system the rater preferred, or "tie"
    verdict: str


def read_key(path: Path | str) -> tuple[tuple[str, str], dict[str, dict[str, Any]]]:
    raw = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(raw, dict) or "systems" not in raw or "rows" not in raw:
        raise DataError(f"{path}: not a review key (written by `tuneforge review export`)")
    a, b = raw["systems"]
    return (a, b), raw["rows"]


def read_ratings(paths: list[Path | str], key: dict[str, dict[str, Any]]) -> list[Rating]:
    """Every filled row of every sheet, decoded through the key into the system preferred; the rater is the
    ``rater`` column when there is one, else the file's name. Unknown rows or choices are errors, all at once."""
    ratings, problems = [], []
    for path in paths:
        text = Path(path).read_text(encoding="utf-8-sig")
        for line, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
            choice = (row.get("preferred") or "").strip().casefold()
            if not choice:
                continue
            where = f"{path}:{line}"
            if row.get("row") not in key:
                problems.append(f"{where}: row {row.get('row')!r} is not in the key")
            elif choice not in CHOICES:
                problems.append(f"{where}: preferred {choice!r}: write 1, 2 or tie")
            else:
                side = CHOICES[choice]
                verdict = "tie" if side == "tie" else key[row["row"]][side]
                ratings.append(Rating((row.get("rater") or "").strip() or Path(path).stem, row["row"], verdict))
    if problems:
        raise DataError(f"{len(problems)} bad rating(s):\n  " + "\n  ".join(problems[:20]))
    if not ratings:
        raise DataError("no ratings: every `preferred` cell is empty")
    return ratings


def cohen_kappa(a: list[str], b: list[str]) -> float:
    """Cohen's kappa of two raters' labels on the same items: (p_o - p_e) / (1 - p_e).

    >>> cohen_kappa(["x", "y", "x", "x"], ["x", "y", "y", "x"])
    0.5
    """
    if len(a) != len(b) or not a:
        raise ValueError("kappa needs two equally long, non-empty lists of labels")
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b)) / n
    ca, cb = Counter(a), Counter(b)
    expected = sum(ca[k] * cb[k] for k in set(ca) | set(cb)) / (n * n)
    return 1.0 if expected == 1 else (observed - expected) / (1 - expected)


def _majority(verdicts: list[str]) -> str:
    """The most given verdict of an item; a split vote between the systems is a tie."""
    top = Counter(verdicts).most_common()
    return "tie" if len(top) > 1 and top[0][1] == top[1][1] else top[0][0]


def summarise(ratings: list[Rating], systems: tuple[str, str]) -> dict[str, Any]:
    """Win / tie / loss of ``systems[0]`` against ``systems[1]`` over items (majority of raters per item), the
    share of wins counting a tie as half with its bootstrap interval, and Cohen's kappa for each pair of raters
    on the items both rated."""
    by_item: dict[str, list[str]] = {}
    for r in ratings:
        by_item.setdefault(r.row, []).append(r.verdict)
    verdicts = [_majority(v) for v in by_item.values()]
    a, b = systems
    rate = win_rate([None if v == "tie" else "a" if v == a else "b" for v in verdicts])
    out: dict[str, Any] = {"system_a": a, "system_b": b, "items": rate["n"], "wins": rate["wins"],
                           "ties": rate["ties"], "losses": rate["losses"], "score": rate["rate"],
                           "interval": rate["interval"]}
    raters = sorted({r.rater for r in ratings})
    given = {(r.rater, r.row): r.verdict for r in ratings}
    kappas = []
    for x, y in combinations(raters, 2):
        shared = sorted(row for (rater, row) in given if rater == x and (y, row) in given)
        if shared:
            kappas.append({"raters": [x, y], "items": len(shared),
                           "kappa": cohen_kappa([given[(x, s)] for s in shared], [given[(y, s)] for s in shared])})
    out["raters"], out["agreement"] = raters, kappas
    return out


def preference_pairs(ratings: list[Rating], key: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """One ``prompt``/``chosen``/``rejected`` row per item whose raters (by majority) preferred one answer."""
    by_item: dict[str, list[str]] = {}
    for r in ratings:
        by_item.setdefault(r.row, []).append(r.verdict)
    pairs = []
    for row, verdicts in sorted(by_item.items(), key=lambda kv: int(kv[0]) if kv[0].isdigit() else kv[0]):
        winner = _majority(verdicts)
        if winner == "tie":
            continue
        entry = key[row]
        loser = entry["right"] if entry["left"] == winner else entry["left"]
        pairs.append({"prompt": entry["prompt"], "chosen": entry["answers"][winner],
                      "rejected": entry["answers"][loser], "source": f"review row {row} ({len(verdicts)} rater(s))"})
    return pairs


def summary_text(summary: dict[str, Any]) -> str:
    lo, hi = summary["interval"]
    lines = [f"{summary['system_a']} vs {summary['system_b']} on {summary['items']} items: "
             f"{summary['wins']} wins, {summary['ties']} ties, {summary['losses']} losses; "
             f"score {summary['score']:.3f} (tie = half), 95% CI [{lo:.3f}, {hi:.3f}]"]
    lines += [f"Cohen's kappa {k['raters'][0]} / {k['raters'][1]}: {k['kappa']:.3f} on {k['items']} items"
              for k in summary["agreement"]]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- blind pairs and the win rate
# Shared by the sheet above and the studio, which rates in the browser one pair at a time: the same blindness
# (sides drawn by a seeded coin; the key kept apart), a rating becomes the same kind of preference row, and the
# win rate counts a tie as half, with the same bootstrap interval as every other figure.

Side = Literal["a", "b"]
Choice = Literal["left", "right", "tie"]
PAGE_CHOICES: tuple[str, ...] = ("left", "right", "tie")


@dataclass(frozen=True)
class BlindPair:
    """Item ``index``: what the rater sees (``left``, ``right``) and the key (``left_is``)."""

    index: int
    prompt: str
    left: str
    right: str
    left_is: Side

    def answer_of(self, side: Side) -> str:
        return self.left if side == self.left_is else self.right


def blind_pairs(prompts: list[str], answers_a: list[str], answers_b: list[str], *, seed: int = 0,
                rng: random.Random | None = None) -> list[BlindPair]:
    """One pair per item, system A on the left or the right by a coin seeded with ``seed`` (or drawn from
    ``rng``, which the sheet has already used to choose its items)."""
    if not len(prompts) == len(answers_a) == len(answers_b):
        raise UserError(f"review needs one answer of each system per item: {len(prompts)} items, "
                        f"{len(answers_a)} and {len(answers_b)} answers")
    rng = rng or random.Random(seed)
    pairs = []
    for i, (prompt, a, b) in enumerate(zip(prompts, answers_a, answers_b)):
        a_left = rng.random() < 0.5
        pairs.append(BlindPair(i, prompt, a if a_left else b, b if a_left else a, "a" if a_left else "b"))
    return pairs


def winner(pair: BlindPair, choice: str) -> Side | None:
    """Which system the rater preferred (None for a tie), by the hidden key."""
    if choice not in PAGE_CHOICES:
        raise UserError(f"a rating is one of {', '.join(PAGE_CHOICES)}, not {choice!r}")
    if choice == "tie":
        return None
    other: Side = "b" if pair.left_is == "a" else "a"
    return pair.left_is if choice == "left" else other


def preference_row(pair: BlindPair, choice: str, **meta: Any) -> dict[str, Any] | None:
    """The rating as a preference pair a DPO or reward-model recipe reads; None for a tie."""
    won = winner(pair, choice)
    if won is None:
        return None
    lost: Side = "b" if won == "a" else "a"
    return {"prompt": pair.prompt, "chosen": pair.answer_of(won), "rejected": pair.answer_of(lost), **meta}


def win_rate(winners: list[Side | None]) -> dict[str, Any]:
    """A's win rate over B (a tie counts half) with its 95% bootstrap interval, and the counts.

    >>> win_rate(["a", "a", None, "b"])["rate"]
    0.625
    """
    if not winners:
        return {"n": 0, "wins": 0, "ties": 0, "losses": 0, "rate": None, "interval": None}
    scores = [1.0 if w == "a" else 0.5 if w is None else 0.0 for w in winners]
    return {"n": len(scores), "wins": winners.count("a"), "ties": winners.count(None), "losses": winners.count("b"),
            "rate": sum(scores) / len(scores), "interval": list(bootstrap_ci(scores))}
