"""The runs page: the catalogue as a table (filter, sort, tag, promote) and the training queue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tuneforge.errors import UserError
from tuneforge.studio.context import form, studio
from tuneforge.studio.runs import RunRow, catalogued, list_runs, registry, run_dir

NAV = ("/", "Runs")
router = APIRouter()


def _sort_key(column: str) -> Any:
    """A registry of the sortable columns; the first headline metric sorts by its tuned value."""
    keys = {"name": lambda r: r.name, "task": lambda r: r.task, "model": lambda r: r.model,
            "method": lambda r: r.method, "state": lambda r: r.state, "duration": lambda r: r.seconds or 0.0,
            "headline": lambda r: (r.headline() or [{"tuned": float("-inf")}])[0]["tuned"]}
    if column not in keys:
        raise UserError(f"cannot sort by {column!r}; use one of {', '.join(keys)}")
    return keys[column]


def _matches(row: RunRow, text: str, tag: str) -> bool:
    hay = " ".join([row.name, row.task, row.model, row.method, row.state, *row.tags]).lower()
    return text.lower() in hay and (not tag or tag in row.tags)


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request, q: str = "", tag: str = "", sort: str = "name", desc: int = 0) -> HTMLResponse:
    st = studio(request)
    rows = [r for r in list_runs(st.root) if _matches(r, q, tag)]
    if sort != "name" or desc:
        rows.sort(key=_sort_key(sort), reverse=bool(desc))
    jobs = [j for j in reversed(st.queue.jobs)][:10]
    return st.page(request, "runs.html", rows=rows, q=q, tag=tag, sort=sort, desc=desc, jobs=jobs,
                   catalogue=registry() is not None)


@router.post("/runs/{name}/tag")
async def tag_run(request: Request, name: str) -> RedirectResponse:
    st = studio(request)
    fields = await form(request)
    tags = [t.strip() for t in fields.get("tags", "").split(",") if t.strip()]
    if not tags:
        raise UserError("give one or more tags, separated by commas")
    entry = catalogued(run_dir(st.root, name))
    reg = registry()
    assert reg is not None  # catalogued() refused a switched-off catalogue
    reg.tag(str(entry.id), tags, remove=fields.get("remove") == "1")
    return RedirectResponse("/", status_code=303)


@router.post("/runs/{name}/promote")
async def promote_run(request: Request, name: str) -> RedirectResponse:
    st = studio(request)
    fields = await form(request)
    target = fields.get("as", "").strip()
    if not target:
        raise UserError("name what the run is promoted as (for example intent-classifier)")
    entry = catalogued(run_dir(st.root, name))
    reg = registry()
    assert reg is not None
    reg.promote(str(entry.id), target, fields.get("note") or None)
    return RedirectResponse("/", status_code=303)
