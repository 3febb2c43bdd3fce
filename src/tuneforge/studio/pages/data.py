"""Data: upload a file or point to one under the runs root, see its audit, preview the templated model inputs,
and start a recipe from it.

An upload is size-limited while it streams, must have an extension a registered reader knows, and
is read back with ``read_records`` (the reader every run uses), so a file the studio accepts is a
file a run can read; a file that fails is deleted and the reader's message shown.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from tuneforge.data.audit import AuditOptions, audit_files
from tuneforge.data.audit_page import render_html
from tuneforge.data.readers import READERS, read_records
from tuneforge.errors import UserError
from tuneforge.models.loading import load_tokenizer
from tuneforge.models.resolve import resolve_model
from tuneforge.recipe import recipe_from_dict
from tuneforge.studio.context import studio
from tuneforge.studio.security import inside, model_ref
from tuneforge.tasks.base import get_task

NAV = ("/data", "Data")
router = APIRouter()
PREVIEW_ROWS = 3
_FILE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")


def data_files(root: Path) -> list[Path]:
    """Data files under the runs root (uploads and run splits), by extension a reader knows."""
    exts = {f".{n}" for n in READERS.names()}
    found = [p for p in root.rglob("*") if p.is_file() and p.suffix in exts and "checkpoints" not in p.parts
             and "predictions" not in p.parts and p.name not in ("metrics.jsonl",)]
    return sorted(found)[:200]


def accept_upload(dest: Path, chunks: list[bytes]) -> int:
    """Write the upload and read it back as every run reads data; a file that does not read is removed."""
    dest.write_bytes(b"".join(chunks))
    try:
        rows = read_records(dest)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    if not rows:
        dest.unlink(missing_ok=True)
        raise UserError(f"{dest.name} holds no rows")
    return len(rows)


@router.get("/data", response_class=HTMLResponse)
def data_page(request: Request, file: str = "", task: str = "classification", model: str = "") -> HTMLResponse:
    st = studio(request)
    chosen = inside(st.root, file) if file else None
    if chosen is not None and not chosen.is_file():
        raise UserError(f"{file} is not a file under the runs root")
    preview = templated_preview(chosen, task, model_ref(st.root, model)) if chosen is not None and model else None
    return st.page(request, "data.html", files=[p.relative_to(st.root) for p in data_files(st.root)],
                   file=file, chosen=chosen, task=task, model=model, preview=preview,
                   extensions=", ".join(sorted(READERS.names())), limit_mb=st.max_upload_bytes / (1 << 20))


@router.post("/api/data/upload")
async def upload(request: Request, name: str) -> JSONResponse:
    """The raw file as the request body (``fetch(url, {body: file})``): no multipart parser, a hard size cap."""
    st = studio(request)
    if not _FILE.match(name) or Path(name).suffix.lstrip(".") not in READERS.names():
        raise UserError(f"{name!r}: give a plain file name ending in one of .{', .'.join(sorted(READERS.names()))}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > st.max_upload_bytes:
            raise UserError(f"{name} is larger than the studio's upload limit of "
                            f"{st.max_upload_bytes / (1 << 20):.0f} MB (tuneforge studio --max-upload-mb)")
        chunks.append(chunk)
    dest = st.ws.uploads / name
    rows = accept_upload(dest, chunks)
    return JSONResponse({"file": str(dest.relative_to(st.root)), "rows": rows})


@router.get("/data/audit.html", response_class=HTMLResponse)
def audit(request: Request, file: str) -> HTMLResponse:
    """``tuneforge data audit FILE`` as a page (the same checks and the same renderer)."""
    st = studio(request)
    path = inside(st.root, file)
    return HTMLResponse(render_html(audit_files([path], options=AuditOptions())))


def templated_preview(path: Path, task: str, model: str) -> list[dict[str, Any]]:
    """The first rows as the model will see them: the task's encoding decoded, the answer tokens apart."""
    resolved = resolve_model(model)
    tokenizer = load_tokenizer(resolved.path)
    recipe = recipe_from_dict({"task": task, "model": model, "data": {"train": str(path)}, "output": "preview"},
                              source="the preview", check_files=False)
    task_obj = get_task(recipe, tokenizer, resolved.kind)
    examples = task_obj.parse(read_records(path), str(path))
    task_obj.fit_schema(examples)
    out = []
    for example in examples[:PREVIEW_ROWS]:
        enc = task_obj.encode(example)
        if isinstance(enc.labels, list):
            prompt = [t for t, lab in zip(enc.input_ids, enc.labels) if lab == -100]
            answer = [t for t, lab in zip(enc.input_ids, enc.labels) if lab != -100]
        else:
            prompt, answer = enc.input_ids, []
        out.append({"where": example.where, "prompt": tokenizer.decode(prompt), "answer": tokenizer.decode(answer),
                    "label": None if isinstance(enc.labels, list) else enc.labels, "tokens": len(enc.input_ids),
                    "truncated": enc.truncated})
    return out
