"""The report of a run as a page: the run's own report (``evaluate/report_page.render_html``) framed."""

from __future__ import annotations

import json

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from tuneforge.errors import UserError
from tuneforge.evaluate.report_page import render_html
from tuneforge.run.folder import RunDir
from tuneforge.studio.context import studio
from tuneforge.studio.runs import row_for, run_dir

NAV = None
router = APIRouter()


@router.get("/runs/{name}/report", response_class=HTMLResponse)
def report_page(request: Request, name: str) -> HTMLResponse:
    st = studio(request)
    folder = run_dir(st.root, name)
    if not RunDir(folder).report_json.is_file():
        raise UserError(f"run {name} has no report yet (it is written when the run finishes)")
    return st.page(request, "report.html", row=row_for(folder, None))


@router.get("/runs/{name}/report.html", response_class=HTMLResponse)
def report_body(request: Request, name: str) -> HTMLResponse:
    """The report rendered by the same function that writes ``report.html`` in the run folder."""
    run = RunDir(run_dir(studio(request).root, name))
    if not run.report_json.is_file():
        raise UserError(f"run {name} has no report yet")
    return HTMLResponse(render_html(json.loads(run.report_json.read_text(encoding="utf-8"))))
