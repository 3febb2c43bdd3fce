"""One run, live: progress with ETA, the preflight, loss and validation curves, stop and resume."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from tuneforge.errors import UserError
from tuneforge.run.folder import RunDir
from tuneforge.studio.context import studio
from tuneforge.studio.live import preflight_lines, progress
from tuneforge.studio.queue import ACTIVE, Job
from tuneforge.studio.runs import RunRow, row_for, run_dir
from tuneforge.studio.security import inside, run_name

NAV = None
router = APIRouter()


def _log_tail(path: Path, limit: int = 4000) -> str:
    if not path.is_file():
        return ""
    text = path.read_bytes()[-limit:].decode("utf-8", errors="replace")
    return text.replace("\r", "\n")


def _folder(root: Path, name: str, job_of: Any) -> Path:
    """A run folder, or the folder a queued job will write (it does not exist until the run starts)."""
    path = inside(root, root / run_name(name))
    return path if job_of(path) is not None else run_dir(root, name)


def _row(folder: Path) -> RunRow:
    if RunDir(folder).status_file.is_file():
        return row_for(folder, None)
    return RunRow(folder.name, folder, "", "", "", "starting", {}, [], [], None, None)


@router.get("/runs/{name}", response_class=HTMLResponse)
def run_page(request: Request, name: str) -> HTMLResponse:
    st = studio(request)
    folder = _folder(st.root, name, st.queue.latest_for)
    job = st.queue.latest_for(folder)
    return st.page(request, "run.html", row=_row(folder), job=job, preflight=preflight_lines(folder),
                   log=_log_tail(st.ws.logs / job.log) if job else "", active=bool(job and job.state in ACTIVE))


@router.get("/api/runs/{name}/progress")
def run_progress(request: Request, name: str, after: int = 0) -> JSONResponse:
    st = studio(request)
    folder = _folder(st.root, name, st.queue.latest_for)
    job = st.queue.latest_for(folder)
    out: dict[str, Any] = progress(folder, after)
    out["job"] = {"id": job.id, "state": job.state} if job else None
    return JSONResponse(out)


@router.post("/runs/{name}/stop")
def stop_run(request: Request, name: str) -> RedirectResponse:
    st = studio(request)
    job = st.queue.latest_for(_folder(st.root, name, st.queue.latest_for))
    if job is None:
        raise UserError(f"run {name} was not started from this studio's queue; stop it where it runs (Ctrl-C)")
    st.queue.stop(job.id)
    return RedirectResponse(f"/runs/{name}", status_code=303)


def resume_recipe(folder: Path, job: Job | None) -> Path:
    """The recipe ``--resume`` is given: the one the run was started with (the run's own copy for a CLI run)."""
    if job is not None and Path(job.recipe).is_file():
        return Path(job.recipe)
    return RunDir(folder).recipe


@router.post("/runs/{name}/resume")
def resume_run(request: Request, name: str) -> RedirectResponse:
    st = studio(request)
    folder = run_dir(st.root, name)
    state = RunDir(folder).status().get("state")
    if state not in ("interrupted", "failed", "running"):
        raise UserError(f"run {name} is {state}; only an interrupted or failed run can be resumed")
    job = st.queue.latest_for(folder)
    st.queue.submit(resume_recipe(folder, job), folder, resume=True)
    return RedirectResponse(f"/runs/{name}", status_code=303)
