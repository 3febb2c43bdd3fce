"""Playground: one input, the base and the tuned model's answers side by side (``api.load_run`` both ways)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from tuneforge import api
from tuneforge.data.readers import Record
from tuneforge.errors import UserError
from tuneforge.studio.context import json_body, studio
from tuneforge.studio.runs import list_runs, run_dir

NAV = ("/playground", "Playground")
router = APIRouter()
MAX_INPUT = 20_000
_CACHE: OrderedDict[tuple[str, bool], Any] = OrderedDict()
_LOCK = threading.Lock()
CACHED_MODELS = 2  # a base and a tuned model: a laptop's memory holds two small models, not ten


def loaded(folder: Path, tuned: bool) -> Any:
    """The run's model, kept while it is among the last two used (loading takes seconds)."""
    key = (str(folder), tuned)
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
        model = api.load_run(folder, tuned=tuned)
        _CACHE[key] = model
        while len(_CACHE) > CACHED_MODELS:
            _CACHE.popitem(last=False)
        return model


def answer(folder: Path, text: str, *, tuned: bool) -> Any:
    """What ``tuneforge predict`` would write for this one input."""
    run = loaded(folder, tuned)
    record = Record("the playground input", 1, run.task.input_fields(text))
    examples = run.task.parse_for_prediction([record], "the playground input")
    return run.task.answer_text(run.task.predict(run.model, examples)[0])


@router.get("/playground", response_class=HTMLResponse)
def playground_page(request: Request, run: str = "") -> HTMLResponse:
    st = studio(request)
    done = [r for r in list_runs(st.root) if r.state == "complete"]
    return st.page(request, "playground.html", runs=done, chosen=run)


@router.post("/api/playground")
async def ask(request: Request) -> JSONResponse:
    st = studio(request)
    body = await json_body(request)
    text = str(body.get("text", ""))
    if not text.strip() or len(text) > MAX_INPUT:
        raise UserError(f"type an input (at most {MAX_INPUT} characters)")
    folder = run_dir(st.root, str(body.get("run", "")))
    return JSONResponse({"base": answer(folder, text, tuned=False), "tuned": answer(folder, text, tuned=True)})
