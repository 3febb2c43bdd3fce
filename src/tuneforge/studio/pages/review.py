"""Review: blind side-by-side rating of two runs' answers on their shared test items.

The pairs and their key come from ``evaluate/review.py``; the studio keeps a review as one JSON file
under ``RUNS/.studio/reviews/`` (the key stays there, never in the page), and every rating appends
its preference row to ``<review>.preferences.jsonl``, which a DPO or reward-model recipe reads as
``data.train`` (``prompt``, ``chosen``, ``rejected``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tuneforge.errors import UserError
from tuneforge.evaluate.review import BlindPair, blind_pairs, preference_row, win_rate, winner
from tuneforge.files import write_json_atomic, write_jsonl_atomic
from tuneforge.studio.context import Studio, form, studio
from tuneforge.studio.pages.compare import scored, test_fingerprint
from tuneforge.studio.runs import list_runs, run_dir
from tuneforge.studio.security import run_name

NAV = ("/review", "Review")
router = APIRouter()


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)


def _path(st: Studio, review: str) -> Path:
    return st.ws.reviews / f"{run_name(review)}.json"


def load(st: Studio, review: str) -> dict[str, Any]:
    path = _path(st, review)
    if not path.is_file():
        raise UserError(f"no review {review!r}")
    return json.loads(path.read_text(encoding="utf-8"))


def create(st: Studio, a: str, b: str, n: int) -> str:
    """A new review of runs ``a`` and ``b`` on their first ``n`` shared test items, sides drawn at random."""
    if a == b:
        raise UserError("pick two different runs to review")
    folders = [run_dir(st.root, a), run_dir(st.root, b)]
    if test_fingerprint(folders[0]) != test_fingerprint(folders[1]):
        raise UserError(f"{a} and {b} were not tested on the same items (data/fingerprints.json differs)")
    ra, rb = scored(folders[0]), scored(folders[1])
    k = min(max(n, 1), len(ra.test))
    review = f"{a}-vs-{b}-{secrets.token_hex(3)}"
    pairs = blind_pairs([e.text for e in ra.test[:k]], [_as_text(x) for x in ra.answers[:k]],
                        [_as_text(x) for x in rb.answers[:k]], seed=secrets.randbits(32))
    write_json_atomic(_path(st, review), {"a": a, "b": b, "pairs": [asdict(p) for p in pairs], "ratings": {}})
    return review


def rate(st: Studio, review: str, index: int, choice: str) -> None:
    """Record one rating and rewrite the review's preference file from all of its ratings."""
    data = load(st, review)
    pairs = [BlindPair(**p) for p in data["pairs"]]
    if not 0 <= index < len(pairs):
        raise UserError(f"review {review} has no item {index}")
    winner(pairs[index], choice)  # an unknown choice fails before anything is saved
    data["ratings"][str(index)] = choice
    write_json_atomic(_path(st, review), data)
    rows = [preference_row(pairs[int(i)], c, review=review, item=int(i)) for i, c in sorted(
        data["ratings"].items(), key=lambda kv: int(kv[0]))]
    write_jsonl_atomic(preferences_file(st, review), (r for r in rows if r is not None))


def preferences_file(st: Studio, review: str) -> Path:
    return st.ws.reviews / f"{run_name(review)}.preferences.jsonl"


@router.get("/review", response_class=HTMLResponse)
def review_page(request: Request, id: str = "") -> HTMLResponse:
    st = studio(request)
    done = [r for r in list_runs(st.root) if r.state == "complete"]
    reviews = sorted(p.stem for p in st.ws.reviews.glob("*.json"))
    if not id:
        return st.page(request, "review.html", runs=done, reviews=reviews, review=None)
    data = load(st, id)
    pairs = [BlindPair(**p) for p in data["pairs"]]
    ratings = data["ratings"]
    pending = [p for p in pairs if str(p.index) not in ratings]
    stats = win_rate([winner(pairs[int(i)], c) for i, c in ratings.items()])
    return st.page(request, "review.html", runs=done, reviews=reviews, review=id, data=data,
                   pair=pending[0] if pending else None, left=len(pending), stats=stats,
                   prefs=preferences_file(st, id).relative_to(st.root))


@router.post("/review")
async def new_review(request: Request) -> RedirectResponse:
    fields = await form(request)
    try:
        n = int(fields.get("n", "20"))
    except ValueError:
        raise UserError("n: give a whole number of items") from None
    review = create(studio(request), fields.get("a", ""), fields.get("b", ""), n)
    return RedirectResponse(f"/review?id={review}", status_code=303)


@router.post("/review/{review}/rate")
async def rate_pair(request: Request, review: str) -> RedirectResponse:
    fields = await form(request)
    try:
        index = int(fields.get("index", ""))
    except ValueError:
        raise UserError("index: not an item number") from None
    rate(studio(request), review, index, fields.get("choice", ""))
    return RedirectResponse(f"/review?id={review}", status_code=303)
