"""The typed recipe: one YAML file (or Python object) that describes a whole run.

Why pydantic with ``extra="forbid"``: a typo such as ``learning_rate`` for ``lr`` must stop the run
with the key path and the file, not be ignored (axolotl's most reported footgun). Defaults live
here and nowhere else; components receive their section object. The ``method`` section is a
discriminated union on ``name`` so that method-only keys (``r``, ``alpha``...) live with their
method. The names a recipe may use (``task``, ``method``, ``preference.loss``, ``rl.algorithm``) are those
in the registries after the plug-ins load (``use_registries``): a plug-in's task or method validates like a
built-in one, and nothing here lists them.
"""

from __future__ import annotations

import glob
import math
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo

from tuneforge.errors import ConfigError
from tuneforge.registry import load_plugins, registry

#: upper bounds that only catch typos and overflows (``1e30`` epochs would loop for ever, an int beyond 64 bits
#: cannot reach torch); no real run comes near them
MAX_EPOCHS = 100_000
MAX_STEPS = 10**10
MAX_BATCH = 1_000_000
MAX_LENGTH = 10_000_000
MAX_INT = 2**63 - 1

class Section(BaseModel):
    """Base of every recipe section: unknown keys are errors, and so are NaN and infinite numbers."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# ----------------------------------------------------------------------------- methods
class MethodSection(Section):
    """Base of every method's section. Each method defines its own beside its code (``tuneforge.methods.lora``
    holds ``LoraMethod``), with ``name: Literal["lora"] = "lora"``, and registers it:
    ``@METHODS.register("lora", config=LoraMethod)``. The recipe's ``method`` field is the union of the
    registered sections, told apart by ``name``."""

    name: str


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
    format: Literal["auto", "text", "prompt_completion", "messages", "sharegpt", "alpaca"] = Field(
        "auto", description="input layout for generation data; 'auto' picks it from the fields of the first row"
    )
    text_field: str = "text"
    label_field: str = "label"
    target_field: str = Field("attributes", description="extraction: the field that holds the JSON object")
    prompt_field: str = "prompt"
    completion_field: str = "completion"
    messages_field: str = "messages"
    references_field: str | None = Field(None, description="generation: a field holding every acceptable answer "
                                         "(a list "
                                         "of strings); scores use all of them (multi-reference BLEU, best-reference "
                                         "ROUGE-L/METEOR/BERTScore); training still learns the completion")
    labels: list[str] | None = Field(None, description="classification: the label set; default = labels seen in train")
    fields: list[str] | None = Field(None, description="extraction: the object's keys; default = keys seen in train")
    split: SplitConfig = SplitConfig()
    max_train_rows: int | None = Field(None, ge=1, description="use only the first N training rows (after splitting)")
    max_test_rows: int | None = Field(None, ge=1, description="score only the first N test rows")
    cache: bool = Field(True,
                        description="keep the tokenised examples on disk by fingerprint and reuse them on a rerun "
                        "(TUNEFORGE_CACHE sets the folder)")

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
    absent_fields: Literal["null", "omit"] = Field(
        "null", description="extraction answers: write every field, null when absent, or leave absent ones out "
        "(shorter answers when most fields are absent, as with many slot types)")


# ----------------------------------------------------------------------------- training
class EarlyStopping(Section):
    metric: str = Field("loss", description="'loss' (validation loss) or a task metric such as accuracy")
    patience: int = Field(3, ge=1, description="evaluations without improvement before stopping")
    min_delta: float = Field(0.0, ge=0)


class PrivacyConfig(Section):
    """DP-SGD (Abadi et al. 2016, https://arxiv.org/abs/1607.00133): per-example clipping plus Gaussian noise.

    The noise is calibrated with Opacus' RDP accountant so that the whole run spends at most
    ``target_epsilon`` at ``delta``; the report states what was spent.
    """

    target_epsilon: float = Field(8.0, gt=0, description="privacy budget for the whole run")
    delta: float | None = Field(None, gt=0, lt=1, description="default: 1 / (10 x training rows)")
    max_grad_norm: float = Field(1.0, gt=0, description="per-example gradient clipping norm")
    noise_multiplier: float | None = Field(None, gt=0, description="set it directly instead of target_epsilon")


class SpeedConfig(Section):
    """How a step runs, not what it computes: packing, token-capped micro-batches and the CPU speed forms.

    Every key here leaves the update the same (up to float rounding) and changes only time and memory,
    which is why they live apart from the optimisation keys of ``train``; ``tuneforge.accel`` applies them.
    """

    packing: bool = Field(False, description="decoder tasks: pack each micro-batch's examples into rows of max_length "
                          "tokens, attention kept inside each example (no compute on padding)")
    pack_width: int | None = Field(None, ge=8, description="packing: tokens per packed row (default max_length); "
                                   "wider rows leave less padding at the end of each row but attention covers the "
                                   "whole row, so keep it near a micro-batch's tokens")
    micro_batch_tokens: int | None = Field(
        None, ge=8, description="split each optimizer step's examples (batch_size x grad_accum) into micro-batches "
        "of at most this many tokens instead of grad_accum micro-batches of batch_size examples: the same update, "
        "with peak memory set by the token cap rather than by the longest micro-batch (at least max_length)")
    compact_activations: bool = Field(
        False, description="keep the activations each transformer block saves for backward in bfloat16 (the "
        "forward still computes in float32; attention's own saved tensors stay float32): less activation memory "
        "for slightly rounded gradients")
    fused_lora: bool = Field(
        True, description="LoRA layers: run each layer's forward and backward as one fused function (the adapter's "
        "product accumulated into the frozen output, no extra passes over the layer's output); the same arithmetic "
        "as peft's")
    frozen_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto", description="LoRA: dtype of the frozen base weights while training (restored exactly afterwards); "
        "auto is bfloat16 on CPUs with AMX (measured faster, same loss) and unchanged elsewhere; activations, "
        "adapters and the loss stay float32")
    compile: bool = Field(False, description="torch.compile each transformer block (regional compilation: one "
                          "compiled block serves them all); needs a C++ compiler on CPU")
    loss_chunk: int | None = Field(1024, ge=1, description="decoder tasks: answer positions per chunk of the fused "
                                   "linear + cross-entropy, so the full logits never exist; null computes them at once")


#: the keys that moved from ``train`` into ``train.speed``; the flat form is still read, with a warning
SPEED_KEYS = ("packing", "pack_width", "micro_batch_tokens", "compact_activations", "fused_lora", "frozen_dtype",
              "compile", "loss_chunk")


class TrainConfig(Section):
    epochs: float | None = Field(None, gt=0, le=MAX_EPOCHS)
    max_steps: int | None = Field(None, ge=1, le=MAX_STEPS, description="optimizer steps; overrides epochs when set")
    lr: float = Field(1e-4, gt=0, le=10, description="peak learning rate (AdamW)")
    batch_size: int = Field(8, ge=1, le=MAX_BATCH)
    grad_accum: int = Field(1, ge=1, le=MAX_BATCH, description="micro-batches per optimizer step")
    warmup_steps: int | None = Field(None, ge=0)
    warmup_fraction: float = Field(0.06, ge=0, lt=1, description="used when warmup_steps is not set")
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float | None = Field(1.0, gt=0)
    max_length: int = Field(256, ge=8, le=MAX_LENGTH)
    seed: int = 0
    eval_every: int | None = Field(None, ge=1, description="validate every N optimizer steps; default once per epoch")
    early_stopping: EarlyStopping | None = None
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    gradient_checkpointing: bool = False
    attention: Literal["sdpa", "eager", "flash_attention_2"] = Field(
        "sdpa", description="attention kernel: sdpa (PyTorch scaled-dot-product, default), eager, or "
        "flash_attention_2 (CUDA, needs the flash-attn package)")
    speed: SpeedConfig = Field(default_factory=SpeedConfig,
                               description="packing, micro-batch token cap and the speed forms (tuneforge.accel)")
    keep_checkpoints: int = Field(2, ge=1, description="most recent checkpoints kept (the best one is always "
                                  "kept); two, so a resume can fall back to the previous one if the newest does not "
                                  "verify")
    label_smoothing: float = Field(0.0, ge=0, lt=1,
                                   description="spread this much target mass over the vocabulary/labels")
    dropout: float | None = Field(None, ge=0, lt=1, description="override every dropout probability of the model")
    privacy: PrivacyConfig | None = Field(None, description="train with differential privacy (DP-SGD)")
    report_to: list[Literal["tensorboard", "mlflow", "wandb", "trackio"]] = Field(
        default_factory=list, description="experiment trackers that also receive the run's metrics, through "
        "accelerate (offline where the tracker has an offline mode); see tuneforge.run.tracking")
    head_init: Literal["random", "class_mean"] = Field(
        "random", description="encoder classification: start the new label head at random, or as a "
        "nearest-class-mean classifier over the body's features (chosen when the recipe leaves out method/train)")
    time_budget: float = Field(300.0, gt=0, le=10**7, description="seconds of training the chosen steps must fit "
                               "when the recipe leaves the steps to tuneforge (no epochs or max_steps given); "
                               "the preflight's measured throughput turns it into steps")

    @model_validator(mode="before")
    @classmethod
    def _flat_speed_keys(cls, data: Any) -> Any:
        """Move the pre-``speed`` flat keys (``train.packing`` ...) into ``train.speed``, with a warning."""
        if not isinstance(data, dict):
            return data
        flat = [k for k in SPEED_KEYS if k in data]
        if not flat:
            return data
        data = dict(data)
        speed = data.get("speed")
        if isinstance(speed, SpeedConfig):
            speed = speed.model_dump(exclude_unset=True)
        if not isinstance(speed, dict | None):
            return data  # let the field's own validation name the bad speed section
        speed = dict(speed or {})
        both = [k for k in flat if k in speed]
        if both:
            raise ValueError(f"{', '.join(both)} given both in train and in train.speed; keep train.speed only")
        speed.update({k: data.pop(k) for k in flat})
        data["speed"] = speed
        warnings.warn(f"tuneforge: train.{', train.'.join(flat)}: these keys moved into train.speed (the flat "
                      "form is deprecated)", FutureWarning, stacklevel=2)
        return data

    @model_validator(mode="after")
    def _default_epochs(self) -> TrainConfig:
        if self.epochs is None and self.max_steps is None:
            self.epochs = 3.0
            self.model_fields_set.discard("epochs")  # a default, not the user's: tuneforge may still choose it
        speed = self.speed
        if speed.pack_width is not None and speed.pack_width < self.max_length:
            raise ValueError(f"speed.pack_width ({speed.pack_width}) must be at least max_length ({self.max_length}): "
                             "a packed row has to hold the longest example")
        if speed.compact_activations and self.gradient_checkpointing:
            raise ValueError("compact_activations and gradient_checkpointing both cut activation memory and do "
                             "not combine (checkpointing saves no block activations to compact); pick one")
        if speed.micro_batch_tokens is not None and speed.micro_batch_tokens < self.max_length:
            raise ValueError(f"speed.micro_batch_tokens ({speed.micro_batch_tokens}) must be at least max_length "
                             f"({self.max_length}): a micro-batch has to hold the longest example")
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
    must_contain: list[str] | None = Field(None, description="phrases the answer must mention (case-insensitive)")
    must_not_contain: list[str] | None = Field(None, description="phrases the answer must not mention: facts the "
                                               "input does not hold, banned claims (case-insensitive)")
    must_refuse: bool = False

    @model_validator(mode="after")
    def _has_a_check(self) -> GoldenCase:
        if self.exact is None and self.regex is None and self.json_schema is None and not self.must_contain \
                and not self.must_not_contain and not self.must_refuse:
            raise ValueError("give at least one of exact, regex, json_schema, must_contain, must_not_contain, "
                             "must_refuse")
        if self.regex is not None:
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


#: the dtypes a decoder can generate and score in (``tuneforge.infer.precision``)
EvalDtype = Literal["auto", "float32", "bfloat16"]


class EvalConfig(Section):
    base: bool = Field(True, description="also score the untouched base model on the same test split")
    batch_size: int = Field(16, ge=1)
    max_new_tokens: int = Field(128, ge=1)
    samples: int = Field(5, ge=0, description="examples written into the report side by side")
    slice_by: list[str] = Field(default_factory=list,
                                description="data fields to break test scores down by in the error analysis")
    golden: list[GoldenCase] = Field(default_factory=list,
                                     description="regression-gate cases checked by `tuneforge eval` and `export`")
    judge: Path | None = Field(None, description="preference: a finished reward_model run folder (trained on other "
                               "data) that judges tuned against reference generations for the win rate")
    judge_prompts: int = Field(32, ge=0, description="preference: held-out prompts generated on for the win rate")
    baselines: list[str] = Field(default_factory=lambda: ["knn", "tfidf"], description="tasks that predict labels: "
                                 "cheap baselines scored on the same test items and compared with the fine-tune "
                                 "(knn over the base model's own embeddings, tfidf + logistic regression); [] for none")
    metrics: list[str] = Field(default_factory=list, description="registered text metrics (rouge_1, chrf, bertscore "
                               "...) the report adds for tasks whose predictions are text, on base and tuned")
    dtype: EvalDtype = Field("auto", description="decoder tasks: dtype the model generates and scores in (restored "
                             "exactly afterwards); auto scores in bfloat16 on CPUs with AMX or AVX-512-BF16 (measured "
                             "5x faster) and otherwise, and for generation, keeps the model as loaded")


class DistillConfig(Section):
    """Knowledge distillation from a finished run (Hinton et al. 2015, https://arxiv.org/abs/1503.02531).

    Classification students learn the teacher's label distribution softened by ``temperature``
    (mixed with the true labels by ``alpha``); extraction and generation students learn the
    teacher's own outputs instead of the references (sequence-level KD, Kim & Rush 2016,
    https://arxiv.org/abs/1606.07947). The teacher may be any model and tokenizer.
    """

    teacher: Path = Field(description="a finished tuneforge run folder (the fine-tuned teacher)")
    temperature: float = Field(2.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the teacher's soft labels (1 - alpha: true labels)")


class EWCConfig(Section):
    """Elastic weight consolidation (Kirkpatrick et al. 2017, https://arxiv.org/abs/1612.00796)."""

    weight: float = Field(1000.0, gt=0, description="lambda: strength of the pull back to the pre-trained weights")
    batches: int = Field(8, ge=1, description="general-text batches the diagonal Fisher is estimated from")


class RehearsalConfig(Section):
    """Mix general text into training (experience replay) so the model keeps practising it."""

    fraction: float = Field(0.1, gt=0, lt=1, description="share of training sequences drawn from the general text")


class ForgettingConfig(Section):
    """Measure and guard against catastrophic forgetting (decoder models).

    ``measure`` scores general-text perplexity and a general-knowledge probe before and after
    training and writes the change into the report. The built-in general text is an excerpt of the
    Python reference documentation (PSF licence) and the probe 40 hand-written questions; point
    ``general_text`` (.txt or .jsonl with ``text``) and ``probe`` (.jsonl with question, choices,
    answer) at your own to measure what matters to you.
    """

    measure: bool = True
    general_text: Path | None = None
    probe: Path | None = None
    max_chunks: int = Field(64, ge=1, description="general-text chunks of train.max_length tokens to score")
    ewc: EWCConfig | None = None
    rehearsal: RehearsalConfig | None = None


class MixingConfig(Section):
    """How a multi-task run samples its tasks (Raffel et al. 2020, T5, section 3.5.2)."""

    strategy: Literal["proportional", "equal", "temperature"] = Field(
        "proportional", description="by data size, the same for every task, or size^(1/temperature)")
    temperature: float = Field(2.0, ge=1, description="temperature sampling: 1 = proportional, large = equal")


# ----------------------------------------------------------------------------- preference tuning
class PreferenceConfig(Section):
    """Policy training from preferences (``task: preference``); see ``tuneforge.preference.losses``.

    ``dpo`` (Rafailov et al. 2023, https://arxiv.org/abs/2305.18290), ``ipo`` (Azar et al. 2023,
    https://arxiv.org/abs/2310.12036) and ``kto`` (Ethayarajh et al. 2024, https://arxiv.org/abs/2402.01306)
    compare with the reference model (the same network, adapter off); ``simpo`` (Meng et al. 2024,
    https://arxiv.org/abs/2405.14734) and ``orpo`` (Hong et al. 2024, https://arxiv.org/abs/2403.07691) need none.
    """

    loss: str = Field("dpo", description="a registered preference loss (tuneforge.preference.losses.LOSSES)")
    beta: float = Field(0.1, gt=0, description="dpo/kto: KL strength; ipo: tau; simpo: reward scale; orpo: lambda")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="dpo: assumed share of flipped labels (cDPO)")
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: target reward margin gamma")
    kto_desirable_weight: float = Field(1.0, gt=0)
    kto_undesirable_weight: float = Field(1.0, gt=0)


class RewardConfig(Section):
    """Scalar reward models (``task: reward_model``): Bradley-Terry on pairs, or Plackett-Luce on rankings."""

    rankings: Literal["pairs", "plackett_luce"] = Field(
        "pairs", description="a ranking of K trains as its K(K-1)/2 implied pairs, or as one listwise likelihood")


class RLConfig(Section):
    """On-policy RL from a reward (``task: rl``): GRPO (Shao et al. 2024, https://arxiv.org/abs/2402.03300)
    or RLOO (Ahmadian et al. 2024, https://arxiv.org/abs/2402.14740) advantages, or PPO (Schulman et al. 2017,
    https://arxiv.org/abs/1707.06347) with a value head and GAE; KL to the reference."""

    task: Literal["extraction", "generation"] = Field("extraction",
                                                      description="the task whose data and prompts are used")
    reward: str = Field("json_fields", description="a registered reward (see tuneforge.tasks.rewards), "
                        "'module:function', or a finished reward_model run folder")
    algorithm: str = Field("grpo", description="a registered policy update (tuneforge.tasks.rl.ALGORITHMS): grpo, "
                           "rloo or ppo")
    group_size: int = Field(4, ge=2, le=64, description="completions sampled per prompt")
    beta: float = Field(0.04, ge=0, description="weight of the KL to the reference (adapter off)")
    temperature: float = Field(1.0, gt=0)
    max_new_tokens: int = Field(64, ge=1)
    ppo_epochs: int = Field(4, ge=1, le=64, description="ppo: passes over each rollout")
    ppo_minibatches: int = Field(2, ge=1, le=256, description="ppo: optimizer steps per pass (the rollout's "
                                 "completions split this many ways); a rollout serves epochs x minibatches steps")
    ppo_clip: float = Field(0.2, gt=0, lt=1, description="ppo: clip range of the probability ratio and the values")
    gamma: float = Field(1.0, gt=0, le=1, description="ppo: discount per token")
    lam: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda")
    value_lr: float = Field(1.0e-3, gt=0, description="ppo: learning rate of the value head (its own AdamW)")


@dataclass(frozen=True)
class TaskSection:
    """What a task with settings of its own registers as its config: the recipe key of its section and the
    section's class (``@TASKS.register("rl", config=TaskSection("rl", RLConfig))``). The recipe takes that key
    once the task is registered (``use_registries``), so a plug-in task gets a validated section of its own, as
    the built-in ones have; a section given to another task is an error."""

    key: str
    model: type[Section]


def task_sections() -> dict[str, str]:
    """Task name -> the recipe key of its own section, for every registered task that has one."""
    return {name: cfg.key for name, cfg in registry("task").configs().items()}


#: keys a stage or a multi-task entry may not set: the chain or the run decides them
COMPOSED_ONLY = ("model", "output", "stages", "tasks", "mixing", "allow_hub")


class Recipe(Section):
    """A whole run. Paths inside are resolved by ``load_recipe``.

    ``stages`` chains runs, each starting from the previous one's weights (continued pre-training, then
    supervised fine-tuning; or transfer from a related task). ``tasks`` trains one model on a mixture of
    tasks. Each entry of either holds a ``name`` and recipe sections that override the top level.
    """

    task: str | None = Field(None, description="a registered task (see tuneforge.tasks)")
    model: str = Field(description="registry name (see `tuneforge models`) or a local Hugging Face folder")
    allow_hub: bool = Field(False, description="let `model` be a hub id and download it (needs a network)")
    allow_code: bool = Field(False, description="let Python code this recipe names run when training or scoring "
                             "needs it (rl.reward: module:function); the same as --allow-code")
    method: MethodSection = Field(default_factory=lambda: registry("method").config("full")(),
                                  description="the fine-tuning method's section, chosen by its name")
    data: DataConfig | None = None
    stages: list[dict[str, Any]] | None = Field(None,
                                                description="run these in order, each from the last one's weights")
    tasks: list[dict[str, Any]] | None = Field(None, description="multi-task: train one model on all of these")
    mixing: MixingConfig = MixingConfig()
    prompt: PromptConfig = PromptConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    model_layers: int | None = Field(None, ge=1, description="keep only the first N transformer blocks "
                                     "(a smaller student for distillation)")
    distill: DistillConfig | None = None
    forgetting: ForgettingConfig | None = None
    preference: PreferenceConfig | None = Field(None, description="task preference: the loss and its settings")
    reward: RewardConfig | None = Field(None, description="task reward_model: how rankings train")
    rl: RLConfig | None = Field(None, description="task rl: reward, sampling and KL")
    output: Path = Path("runs/run")

    @model_validator(mode="after")
    def _task_and_data_unless_composed(self) -> Recipe:
        if self.stages is not None and self.tasks is not None:
            raise ValueError("a recipe has stages or tasks, not both (a stage may itself be a multi-task run "
                             "in a later version)")
        for task, section in task_sections().items():
            if getattr(self, section) is not None and self.task not in (None, task):
                raise ValueError(f"the {section} section applies to task {task}, not {self.task}")
        composed = self.stages if self.stages is not None else self.tasks
        if composed is None:
            missing = [k for k in ("task", "data") if getattr(self, k) is None]
            if missing:
                raise ValueError(f"{' and '.join(missing)} required (or give stages: / tasks:)")
            return self
        if not composed:
            raise ValueError("stages/tasks must list at least one entry")
        names = [entry.get("name") for entry in composed]
        if not all(isinstance(n, str) and n.replace("-", "").replace("_", "").isalnum() for n in names):
            raise ValueError("every stage/task needs a name made of letters, digits, - and _")
        if len(set(names)) != len(names):
            raise ValueError(f"stage/task names must be unique, got {names}")
        for entry in composed:
            bad = [k for k in entry if k in COMPOSED_ONLY]
            if bad:
                raise ValueError(f"{entry['name']}: {bad} cannot be set per stage/task (the chain decides them)")
        return self


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
        parts = key.split(".")
        if not sep or not all(part.strip() for part in parts):
            raise ConfigError(f"override {item!r} must look like section.key=value")
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: {part!r} was set to a value by an earlier --set, "
                                  "so it has no keys to set")
        node[parts[-1]] = load_yaml(value, f"override {item!r}", lines=False)
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
    _check_values(raw, source)
    use_registries()
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    if check_files and recipe.data is not None:
        _resolve_data_paths(recipe, source, base_dir)
    entries = recipe.stages or recipe.tasks or []
    for i, entry in enumerate(entries):  # every entry is checked now, not when it runs
        full = composed_recipe(raw, i, source=source, base_dir=base_dir, check_files=check_files)
        for key in ("data", "distill", "forgetting", "eval"):  # keep the resolved (absolute) paths
            if key in entry:
                entry[key] = getattr(full, key).model_dump(mode="json")
    return recipe


def composed_recipe(raw: dict[str, Any], index: int, *, source: str = "<recipe>", base_dir: Path | None = None,
                    check_files: bool = True, model: str | None = None) -> Recipe:
    """The full recipe of stage (or multi-task entry) ``index``: the top level with the entry merged in.

    Its output is a sub-folder of the run (``stages/NN-name`` or ``tasks/name``); ``model`` replaces the
    base model (a stage starts from the previous stage's exported weights).
    """
    kind = "stages" if raw.get("stages") is not None else "tasks"
    entry = dict(raw[kind][index])
    name = entry.pop("name")
    entry.pop("weight", None)
    top = {k: v for k, v in raw.items() if k not in ("stages", "tasks", "mixing")}
    if "method" in entry:  # a method section replaces the top level's: its keys depend on its name
        top.pop("method", None)
    merged = _merge(top, entry)
    out = Path(str(raw.get("output", "runs/run")))
    merged["output"] = str(out / kind / (f"{index + 1:02d}-{name}" if kind == "stages" else name))
    if model is not None:
        merged["model"] = model
    return recipe_from_dict(merged, source=f"{source} ({kind}[{index}] {name!r})", base_dir=base_dir,
                            check_files=check_files)


_DATASET_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def _resolve_data_paths(recipe: Recipe, source: str, base_dir: Path | None) -> None:
    """Relative data paths are tried against the working directory first, then the recipe's folder.

    A split may name a file, a folder, a glob pattern or a hub dataset name (``owner/name``, no extension);
    ``tuneforge.data.sources`` reads each. A name stays as written: it is looked up in the local Hugging
    Face cache when the data is read, before anything trains.
    """
    for key in ("train", "validation", "test"):
        path: Path | None = getattr(recipe.data, key)
        if path is None:
            continue
        candidates = [path] if path.is_absolute() else [Path.cwd() / path] + ([base_dir / path] if base_dir else [])
        found = next((c for c in candidates if c.exists()), None)
        if found is None and any(ch in str(path) for ch in "*?["):  # a glob: the first base where it matches
            found = next((c for c in candidates if glob.glob(str(c), recursive=True)), None)
            if found is not None:
                setattr(recipe.data, key, Path(os.path.abspath(found)))
                continue
        if found is None and _DATASET_NAME.match(str(path)) and not path.suffix:
            continue  # a hub dataset name
        if found is None:
            tried = ", ".join(str(c) for c in candidates)
            raise ConfigError(f"{source}: data.{key}: file not found: {path} (looked at {tried}; a split may also "
                              "be a folder, a glob pattern or a dataset name in the local Hugging Face cache)")
        setattr(recipe.data, key, found.resolve())
    for section, key in (("distill", "teacher"), ("forgetting", "general_text"), ("forgetting", "probe"),
                         ("eval", "judge")):
        owner = getattr(recipe, section)
        path = getattr(owner, key) if owner is not None else None
        if path is None or path.is_absolute():
            continue
        candidates = [Path.cwd() / path] + ([base_dir / path] if base_dir else [])
        found = next((c for c in candidates if c.exists()), None)
        if found is None:
            looked = ", ".join(map(str, candidates))
            raise ConfigError(f"{source}: {section}.{key}: not found: {path} (looked at {looked})")
        setattr(owner, key, found.resolve())


def load_recipe(path: Path | str, overrides: list[str] | None = None) -> Recipe:
    """Read, merge ``a.b=c`` overrides into, and validate a YAML recipe."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"recipe file not found: {path}")
    if not path.is_file():
        raise ConfigError(f"recipe path is not a file: {path}")
    raw = load_yaml(read_utf8(path), str(path))
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections (task:, model:, data: ...), "
                          f"got a YAML {type(raw).__name__}")
    raw = _merge(raw or {}, parse_overrides(overrides or []))
    return recipe_from_dict(raw, source=str(path), base_dir=path.parent)


def read_utf8(path: Path) -> str:
    """The file as text; bytes that are not UTF-8 are a ``ConfigError`` naming the line."""
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 ({err.reason} at byte {err.start}); "
                          "re-save the file as UTF-8") from None


class StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error.

    YAML says keys are unique, but PyYAML keeps the last one silently: ``lr: 1e-3`` further down a
    long recipe would quietly win over the ``lr`` a user is looking at. Keys brought in by a merge
    (``<<: *base``) may still be overridden, as YAML intends.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.setdefault(key, key_node.start_mark.line)
            except TypeError:  # an unhashable key: the base class reports it
                continue
            if first != key_node.start_mark.line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r} (first given on line {first + 1}); keep one",
                    key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def load_yaml(text: str, source: str, *, lines: bool = True) -> Any:
    """Parse YAML text with ``StrictLoader``; anything it cannot read is a ``ConfigError`` naming ``source``."""
    try:
        return yaml.load(text, Loader=StrictLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None and lines else source
        raise ConfigError(f"{where}: not valid YAML ({_yaml_problem(err)})") from None
    except RecursionError:
        raise ConfigError(f"{source}: not valid YAML (nested too deeply)") from None
    except (ValueError, OverflowError) as err:  # e.g. a date such as 2024-13-45
        raise ConfigError(f"{source}: not valid YAML (a value cannot be read: {err})") from None


def _yaml_problem(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None)
    context = getattr(err, "context", None)
    text = problem or str(err)
    return f"{text} {context}" if context and problem and context not in problem else text


def _check_values(raw: Any, source: str) -> None:
    """Refuse values no recipe key can use, naming their key path: NaN and infinite numbers, integers
    beyond 64 bits and text that is not valid Unicode (a lone surrogate from a ``\\ud800`` escape).

    Walked without recursion, so a recipe nested thousands deep is refused here rather than overflowing.
    """
    stack: list[tuple[str, Any, int]] = [("", raw, 0)]
    while stack:
        path, value, depth = stack.pop()
        if depth > 64:
            raise ConfigError(f"{source}: {path or '(top level)'}: nested too deeply")
        where = f"{source}: {path or '(top level)'}"
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{where}: {value} is not a usable number; give a finite value")
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT:
            raise ConfigError(f"{where}: {value} is too large")
        if isinstance(value, str) and _has_surrogate(value):
            raise ConfigError(f"{where}: the text holds a lone surrogate (an escape such as \\ud800 that is not "
                              "a character); remove it")
        if isinstance(value, dict):
            for key, item in value.items():
                if isinstance(key, str) and _has_surrogate(key):
                    raise ConfigError(f"{where}: a key holds a lone surrogate; remove it")
                stack.append((f"{path}.{key}" if path else str(key), item, depth + 1))
        elif isinstance(value, (list, tuple)):
            stack.extend((f"{path}[{i}]", item, depth + 1) for i, item in enumerate(value))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe, every default spelled out, as written into each run folder."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)


def json_schema() -> dict[str, Any]:
    """JSON Schema of the recipe, for editors and documentation: every registered method's section, one of."""
    use_registries()
    return Recipe.model_json_schema()


# ----------------------------------------------------------------------------- registered names
@dataclass(frozen=True)
class NamedField:
    """A recipe field whose allowed values are the names in one registry (the closed lists they replace)."""

    owner: type[Section]
    field: str
    kind: str
    #: a list of names rather than one
    many: bool = False
    #: only names registered with a config (the metrics a report can compute on text)
    configured: bool = False

    def names(self) -> tuple[str, ...]:
        reg = registry(self.kind)
        return tuple(reg.configs()) if self.configured else tuple(reg.names())


NAMED_FIELDS = (
    NamedField(PreferenceConfig, "loss", "preference loss"),
    NamedField(RLConfig, "algorithm", "rl algorithm"),
    NamedField(EvalConfig, "metrics", "metric", many=True, configured=True),
)
_BUILT: dict[str, Any] = {}
#: ``Literal`` and ``Union`` used on values known only at run time (the registered names and sections)
ANY_OF: Any = Literal
ONE_OF: Any = Union


def use_registries() -> None:
    """Load the plug-ins, then make the recipe accept exactly what the registries hold.

    The ``method`` field becomes the discriminated union of every registered method's section and the
    name fields (``task``, ``preference.loss``, ``rl.algorithm``, ``eval.metrics``) the literals of their
    registries' names, so a typo fails with the known names and the key path, as a closed list did.
    Rebuilt only when a registry changed since the last call (a plug-in registered late, in a test).
    """
    load_plugins()
    methods = registry("method").configs()
    tasks = tuple(registry("task").names())
    own = registry("task").configs()
    names = [named.names() for named in NAMED_FIELDS]
    key = (tuple(methods.items()), tasks, tuple(own.items()), tuple(names))
    if _BUILT.get("key") == key:
        return
    _task_sections(own)
    for name, section in methods.items():
        _check_method_section(name, section)
    for named, allowed in zip(NAMED_FIELDS, names):  # the sections first: Recipe's rebuild takes them in
        _retype(named.owner, named.field, list[ANY_OF[allowed]] if named.many else ANY_OF[allowed])
    sections = tuple(methods.values())
    _retype(Recipe, "method", ONE_OF[sections], discriminator="name" if len(sections) > 1 else None)
    _retype(Recipe, "task", ANY_OF[tasks] | None)
    _BUILT["key"] = key


def _task_sections(own: dict[str, Any]) -> None:
    """Give the recipe a key for each registered task's own section; drop the keys of tasks no longer registered
    (a test's plug-in, unloaded)."""
    added: dict[str, str] = _BUILT.setdefault("task_keys", {})
    for name, section in own.items():
        if not (isinstance(section, TaskSection) and issubclass(section.model, Section)):
            raise TypeError(f"task {name!r} must register with config=TaskSection(<recipe key>, <a Section "
                            f"subclass>), got {section!r}")
        if section.key in Recipe.model_fields and section.key not in added:
            continue  # a built-in section, declared on Recipe itself
        optional: Any = section.model | None
        Recipe.model_fields[section.key] = FieldInfo.from_annotated_attribute(
            optional, Field(None, description=f"task {name}: its own settings"))
        added[section.key] = name
    for stale in [k for k, name in added.items() if name not in own]:
        del Recipe.model_fields[stale], added[stale]
    Recipe.model_rebuild(force=True)


def _retype(model: type[Section], field: str, annotation: Any, discriminator: str | None = None) -> None:
    """Give ``model.field`` a new type, keeping its default and description, and rebuild the validator."""
    info = FieldInfo.from_annotated_attribute(annotation, model.model_fields[field])
    info.discriminator = discriminator
    model.model_fields[field] = info
    model.model_rebuild(force=True)


def _check_method_section(name: str, section: Any) -> None:
    ok = isinstance(section, type) and issubclass(section, MethodSection)
    if not ok or section.model_fields["name"].default != name:
        raise TypeError(f"method {name!r} must register with config=<a MethodSection subclass whose "
                        f"name is Literal[{name!r}] = {name!r}>, got {section!r}")
