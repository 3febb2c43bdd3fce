"""The typed recipe: one YAML file (or Python object) that describes a whole run.

Why pydantic with ``extra="forbid"``: a typo such as ``learning_rate`` for ``lr`` must stop the run
with the key path and the file, not be ignored (axolotl's most reported footgun). Defaults live
here and nowhere else; components receive their section object. The ``method`` section is a
discriminated union on ``name`` so that method-only keys (``r``, ``alpha``...) live with their
method; a new method adds its section class to ``MethodConfig`` beside its module in
``tuneforge.methods``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneforge.errors import ConfigError

TaskName = Literal["classification", "extraction", "generation"]


class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# ----------------------------------------------------------------------------- methods
class FullMethod(Section):
    """Every weight trains."""

    name: Literal["full"] = "full"


class LoraMethod(Section):
    """Low-rank adapters through peft (Hu et al. 2021, https://arxiv.org/abs/2106.09685)."""

    name: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, description="rank of the update matrices")
    alpha: float = Field(32.0, gt=0, description="scaling numerator: the update is scaled by alpha / r")
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt, or 'all-linear' for every linear layer but the head"
    )


class FreezeMethod(Section):
    """Feature extraction: the body is frozen, the head (and optionally the last k blocks) train."""

    name: Literal["freeze"] = "freeze"
    trainable_layers: int = Field(0, ge=0, description="how many of the top transformer blocks also train")
    train_embeddings: bool = False


MethodConfig = Annotated[Union[FullMethod, LoraMethod, FreezeMethod], Field(discriminator="name")]


# ----------------------------------------------------------------------------- data
class SplitConfig(Section):
    """How to carve validation/test out of ``train`` when they are not given as files."""

    validation: float = Field(0.1, ge=0, lt=1)
    test: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    stratify: bool = True


class DataConfig(Section):
    train: Path
    validation: Path | None = None
    test: Path | None = None
    format: Literal["auto", "text", "prompt_completion", "messages", "alpaca"] = Field(
        "auto", description="input layout for generation data; 'auto' picks it from the fields of the first row"
    )
    text_field: str = "text"
    label_field: str = "label"
    target_field: str = Field("attributes", description="extraction: the field that holds the JSON object")
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    labels: list[str] | None = Field(None, description="classification: the label set; default = labels seen in train")
    fields: list[str] | None = Field(None, description="extraction: the object's keys; default = keys seen in train")
    split: SplitConfig = SplitConfig()
    max_train_rows: int | None = Field(None, ge=1, description="use only the first N training rows (after splitting)")
    max_test_rows: int | None = Field(None, ge=1, description="score only the first N test rows")

    @field_validator("labels", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        """Integer labels in the data are read as text ("0", "1"), so declared ones are too."""
        if isinstance(value, list):
            return [str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in value]
        return value


class PromptConfig(Section):
    """The words around each example for decoder tasks. ``None`` picks the task's default."""

    system: str | None = None
    instruction: str | None = None


# ----------------------------------------------------------------------------- training
class EarlyStopping(Section):
    metric: str = Field("loss", description="'loss' (validation loss) or a task metric such as accuracy")
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(Section):
    epochs: float | None = Field(None, gt=0)
    max_steps: int | None = Field(None, ge=1, description="optimizer steps; overrides epochs when set")
    lr: float = Field(1e-4, gt=0, le=10, description="peak learning rate (AdamW)")
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    warmup_steps: int | None = Field(None, ge=0)
    warmup_fraction: float = Field(0.06, ge=0, lt=1, description="used when warmup_steps is not set")
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_length: int = Field(256, ge=8)
    seed: int = 0
    eval_every: int | None = Field(None, ge=1, description="validate every N optimizer steps; default once per epoch")
    early_stopping: EarlyStopping | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gradient_checkpointing: bool = False
    keep_checkpoints: int = Field(1, ge=1, description="most recent checkpoints kept (the best one is always kept)")

    @model_validator(mode="after")
    def _default_epochs(self) -> "TrainConfig":
        if self.epochs is None and self.max_steps is None:
            self.epochs = 3.0
        return self


class GoldenCase(Section):
    """One regression-gate case: an input and what the model's answer must satisfy (all given checks).

    ``exact``: the answer equals this text (ends stripped); ``regex``: ``re.search`` finds it;
    ``json_schema``: the answer holds a JSON object valid against this JSON Schema; ``must_contain``:
    every string appears (case-insensitive); ``must_refuse``: the answer is a refusal.
    """

    name: str | None = None
    input: str = Field(min_length=1)
    exact: str | None = None
    regex: str | None = None
    json_schema: dict[str, Any] | None = None
    must_contain: list[str] | None = None
    must_refuse: bool = False

    @model_validator(mode="after")
    def _has_a_check(self) -> "GoldenCase":
        if self.exact is None and self.regex is None and self.json_schema is None and not self.must_contain \
                and not self.must_refuse:
            raise ValueError("give at least one of exact, regex, json_schema, must_contain, must_refuse")
        if self.regex is not None:
            import re

            try:
                re.compile(self.regex)
            except re.error as err:
                raise ValueError(f"regex {self.regex!r} does not compile: {err}") from None
        if self.json_schema is not None:
            from jsonschema import Draft202012Validator
            from jsonschema.exceptions import SchemaError

            try:
                Draft202012Validator.check_schema(self.json_schema)
            except SchemaError as err:
                raise ValueError(f"json_schema is not a valid JSON Schema: {err.message}") from None
        return self


class EvalConfig(Section):
    base: bool = Field(True, description="also score the untouched base model on the same test split")
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    samples: int = Field(5, ge=0, description="examples written into the report side by side")
    slice_by: list[str] = Field(default_factory=list,
                                description="data fields to break test scores down by in the error analysis")
    golden: list[GoldenCase] = Field(default_factory=list,
                                     description="regression-gate cases checked by `tuneforge eval` and `export`")


class Recipe(Section):
    """A whole run. Paths inside are resolved by ``load_recipe``."""

    task: TaskName
    model: str = Field(description="registry name (see `tuneforge models`) or a local Hugging Face folder")
    allow_hub: bool = Field(False, description="let `model` be a hub id and download it (needs a network)")
    method: MethodConfig = FullMethod()
    data: DataConfig
    prompt: PromptConfig = PromptConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    output: Path = Path("runs/run")


# ----------------------------------------------------------------------------- loading
def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: the recipe is not valid:"]
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        if e["type"] == "extra_forbidden":
            msg = "unknown key (check the spelling; see `tuneforge train --help`)"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"]
        lines.append(f"  {path}: {msg}")
    return "\n".join(lines)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["train.lr=1e-3", "method.name=lora"]`` into a nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = out
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(value)
    return out


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def recipe_from_dict(raw: dict[str, Any], *, source: str = "<recipe>", base_dir: Path | None = None,
                     check_files: bool = True) -> Recipe:
    """Validate a plain dict into a ``Recipe`` and (with ``check_files``) find its data files."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    if check_files:
        _resolve_data_paths(recipe, source, base_dir)
    return recipe


def _resolve_data_paths(recipe: Recipe, source: str, base_dir: Path | None) -> None:
    """Relative data paths are tried against the working directory first, then the recipe's folder."""
    for key in ("train", "validation", "test"):
        path: Path | None = getattr(recipe.data, key)
        if path is None:
            continue
        candidates = [path] if path.is_absolute() else [Path.cwd() / path] + ([base_dir / path] if base_dir else [])
        found = next((c for c in candidates if c.is_file()), None)
        if found is None and any(c.exists() for c in candidates):
            raise ConfigError(f"{source}: data.{key}: {path} is not a file (give a .jsonl, .csv, .tsv, .json or .parquet file)")
        if found is None:
            tried = ", ".join(str(c) for c in candidates)
            raise ConfigError(f"{source}: data.{key}: file not found: {path} (looked at {tried})")
        setattr(recipe.data, key, found.resolve())


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Read, merge ``a.b=c`` overrides into, and validate a YAML recipe."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"recipe path is not a file: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: not valid YAML ({getattr(err, 'problem', err)})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections (task:, model:, data: ...), "
                          f"got a YAML {type(raw).__name__}")
    raw = _merge(raw or {}, parse_overrides(overrides or []))
    return recipe_from_dict(raw, source=str(path), base_dir=path.parent)


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe, every default spelled out, as written into each run folder."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the recipe, for editors and documentation."""
    return Recipe.model_json_schema()
