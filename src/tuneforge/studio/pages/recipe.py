"""Recipe and launch: a form generated from the recipe's JSON Schema beside a YAML view, validated as you type
with the CLI's own messages (the same ``load_recipe``), a dry run that shows the preflight, and train (the queue).

A recipe written here is saved under ``RUNS/.studio/recipes/<hash>/recipe.yaml`` and validated by
``load_recipe`` from that file, exactly as ``tuneforge train`` would read it; the studio adds one rule
of its own: the recipe's data files and its ``output`` must lie under the runs root.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import yaml
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse

from tuneforge import api
from tuneforge.errors import ConfigError, UserError
from tuneforge.recipe import Recipe, json_schema, load_recipe, load_yaml, parse_overrides
from tuneforge.studio.context import Studio, json_body, studio
from tuneforge.studio.schema_form import sections
from tuneforge.studio.security import inside, model_ref, run_name

NAV = ("/recipe", "New run")
router = APIRouter()
STARTER = """task: classification
model: minilm-l6
method: {name: full}
data: {train: TRAIN_FILE}
train: {epochs: 1, lr: 1.0e-4, batch_size: 16}
output: OUTPUT
"""


def merged(text: str, overrides: list[str]) -> dict[str, Any]:
    """The YAML text with the form's ``key=value`` values merged in (the CLI's ``--set`` parser)."""
    raw = load_yaml(text, "recipe.yaml") if text.strip() else {}
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError("recipe.yaml: a recipe must be a mapping of sections (task:, model:, data: ...)")
    return _deep_merge(raw, parse_overrides([o for o in overrides if o.split("=", 1)[-1] != ""]))


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def save(st: Studio, text: str) -> Path:
    """The recipe in a file of its own, named by its content, so the same text is the same file."""
    folder = st.ws.recipes / hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def check_paths(st: Studio, recipe: Recipe) -> None:
    """The studio's own rule: data and output under the runs root, the output one run folder there."""
    out = inside(st.root, recipe.output)
    if out.parent != st.root:
        raise UserError(f"output: {recipe.output} must be a folder directly under the runs root {st.root}")
    run_name(out.name)
    model_ref(st.root, recipe.model)
    data = recipe.data
    for split in ("train", "validation", "test"):
        value = getattr(data, split, None) if data is not None else None
        if value is not None:
            inside(st.root, value)


def validated(st: Studio, text: str) -> tuple[Path, Recipe]:
    path = save(st, text)
    recipe = load_recipe(path)
    check_paths(st, recipe)
    return path, recipe


def _relative(st: Studio, message: str) -> str:
    return message.replace(str(st.ws.recipes) + "/", "").replace(str(st.root) + "/", "")


@router.get("/recipe", response_class=HTMLResponse)
def recipe_page(request: Request, train: str = "", task: str = "", method: str = "full") -> HTMLResponse:
    st = studio(request)
    text = STARTER.replace("OUTPUT", str(st.root / "my-run"))
    if train:
        text = text.replace("TRAIN_FILE", str(inside(st.root, train)))
    if task:
        text = text.replace("task: classification", f"task: {task}")
    return st.page(request, "recipe.html", sections=sections(json_schema(), method), text=text)


@router.post("/api/recipe/validate")
async def validate(request: Request) -> JSONResponse:
    """The merged YAML, and the CLI's message for it (``ok`` when it would train)."""
    st = studio(request)
    body = await json_body(request)
    raw = merged(str(body.get("yaml", "")), [str(s) for s in body.get("set", [])])
    text = yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)
    try:
        validated(st, text)
    except UserError as err:
        return JSONResponse({"ok": False, "yaml": text, "error": _relative(st, str(err))})
    return JSONResponse({"ok": True, "yaml": text, "error": None})


@router.post("/api/recipe/dry-run")
async def dry_run(request: Request) -> JSONResponse:
    """``tuneforge train --dry-run`` in the studio: the preflight, nothing trained."""
    st = studio(request)
    body = await json_body(request)
    path, _ = validated(st, str(body.get("yaml", "")))
    lines: list[str] = []
    api.train(path, dry_run=True, echo=lines.append)
    return JSONResponse({"output": "\n".join(lines)})


@router.post("/api/recipe/train")
async def train(request: Request) -> JSONResponse:
    """Put the recipe in the queue; it trains as ``tuneforge train RECIPE`` when the runs before it are done."""
    st = studio(request)
    body = await json_body(request)
    path, recipe = validated(st, str(body.get("yaml", "")))
    out = inside(st.root, recipe.output)
    job = st.queue.submit(path, out, resume=False)
    return JSONResponse({"job": job.id, "run": out.name, "url": f"/runs/{out.name}"})
