"""Export and serve a run: buttons over ``api.export`` and ``tuneforge serve`` (a process of its own, on loopback)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from tuneforge import api
from tuneforge.errors import UserError
from tuneforge.studio.context import form, studio
from tuneforge.studio.runs import row_for, run_dir

NAV = None
router = APIRouter()
FORMATS = ("hf", "gguf", "onnx")
_SERVERS: dict[str, tuple[subprocess.Popen[bytes], int]] = {}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serving(name: str) -> int | None:
    proc = _SERVERS.get(name)
    if proc is None or proc[0].poll() is not None:
        _SERVERS.pop(name, None)
        return None
    return proc[1]


@router.get("/runs/{name}/deploy", response_class=HTMLResponse)
def deploy_page(request: Request, name: str, exported: str = "") -> HTMLResponse:
    st = studio(request)
    folder = run_dir(st.root, name)
    files = sorted(p.name for p in (folder / "export").iterdir()) if (folder / "export").is_dir() else []
    return st.page(request, "deploy.html", row=row_for(folder, None), formats=FORMATS, exported=exported,
                   files=files, port=serving(name))


@router.post("/runs/{name}/export")
async def export(request: Request, name: str) -> RedirectResponse:
    """``tuneforge export RUN -o RUN/export-FORMAT --overwrite``, and the page lists what it wrote."""
    st = studio(request)
    folder = run_dir(st.root, name)
    fmt = (await form(request)).get("format", "hf")
    if fmt not in FORMATS:
        raise UserError(f"format: one of {', '.join(FORMATS)}")
    out = api.export(folder, folder / "export", overwrite=True, format=fmt)
    return RedirectResponse(f"/runs/{name}/deploy?exported={Path(out).name}", status_code=303)


@router.post("/runs/{name}/serve")
def serve(request: Request, name: str) -> RedirectResponse:
    """``tuneforge serve RUN --port P`` on loopback; a second press stops it."""
    folder = run_dir(studio(request).root, name)
    if serving(name) is not None:
        proc, _ = _SERVERS.pop(name)
        proc.terminate()
        return RedirectResponse(f"/runs/{name}/deploy", status_code=303)
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tuneforge", "serve", str(folder), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    _SERVERS[name] = (proc, port)
    return RedirectResponse(f"/runs/{name}/deploy", status_code=303)
