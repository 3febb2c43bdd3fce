"""The regression gate: golden cases declared in the recipe (``eval.golden``) that a model must pass.

``tuneforge eval`` checks every case against the base and the tuned model and reports what the tune
fixed (failed on base, passes tuned) and broke (passed on base, fails tuned); ``tuneforge export``
checks the tuned model again and refuses to export one that fails, unless forced.

What is checked is the model's answer as a user would see it: the predicted label for
classification, the raw generated text for extraction and generation (``json_schema`` checks the
first JSON object in it, found as the extraction metrics find it). Schemas are validated with the
``jsonschema`` package (Draft 2020-12).
"""

from __future__ import annotations

import json
import re
from typing import Any

from tuneforge.data.readers import Record
from tuneforge.evaluate.metrics import parse_json_object
from tuneforge.recipe import GoldenCase
from tuneforge.tasks.base import Task

#: openings and phrases of a refusal, as instruction-tuned models word them (English)
REFUSAL = re.compile(
    r"\b(i\s*(?:can(?:'|no)?t|cannot|won'?t|will not|am not able to|'m not able to|am unable to|'m unable to)"
    r"|i'?m sorry|i apologi[sz]e|sorry, but|as an ai|not (?:able|allowed|appropriate) to|i must decline"
    r"|i do not (?:feel comfortable|condone)|i don'?t (?:feel comfortable|condone))",
    re.IGNORECASE,
)


def check_answer(case: GoldenCase, answer: str) -> list[str]:
    """The failed checks of one case, each as a short reason; an empty list means the case passes."""
    failures = []
    if case.exact is not None and answer.strip() != case.exact.strip():
        failures.append(f"exact: expected {case.exact!r}")
    if case.regex is not None and not re.search(case.regex, answer):
        failures.append(f"regex: {case.regex!r} not found")
    if case.json_schema is not None:
        failures += _schema_failures(case.json_schema, answer)
    for needle in case.must_contain or []:
        if needle.casefold() not in answer.casefold():
            failures.append(f"must_contain: {needle!r} missing")
    for needle in case.must_not_contain or []:
        if needle.casefold() in answer.casefold():
            failures.append(f"must_not_contain: {needle!r} stated")
    if case.must_refuse and not REFUSAL.search(answer):
        failures.append("must_refuse: the answer is not a refusal")
    return failures


def _schema_failures(schema: dict[str, Any], answer: str) -> list[str]:
    from jsonschema import Draft202012Validator

    obj = parse_json_object(answer)
    if obj is None:
        try:
            obj = json.loads(answer)
        except json.JSONDecodeError:
            return ["json_schema: the answer holds no JSON value"]
    errors = sorted(Draft202012Validator(schema).iter_errors(obj), key=lambda e: list(e.path))
    return [f"json_schema: {'/'.join(map(str, e.path)) or '(root)'}: {e.message}" for e in errors[:3]]


def answers(task: Task, model: Any, cases: list[GoldenCase]) -> list[str]:
    """The model's answer to each case's input, as text."""
    records = [Record(source="eval.golden", line=i + 1, fields=task.input_fields(c.input)) for i, c in enumerate(cases)]
    examples = task.parse_for_prediction(records, "recipe eval.golden")
    out = []
    for p in task.predict(model, examples):
        shown = p.get("raw", p["prediction"])
        out.append(shown if isinstance(shown, str) else json.dumps(shown, ensure_ascii=False))
    return out


def run_cases(task: Task, model: Any, cases: list[GoldenCase]) -> list[dict[str, Any]]:
    """One row per case: its name, the answer, the failed checks and whether it passed."""
    rows = []
    for i, (case, answer) in enumerate(zip(cases, answers(task, model, cases))):
        failures = check_answer(case, answer)
        rows.append({"case": case.name or f"case {i + 1}", "input": case.input, "answer": answer,
                     "failures": failures, "passed": not failures})
    return rows


def gate(tuned: list[dict[str, Any]], base: list[dict[str, Any]] | None) -> dict[str, Any]:
    """Summary: pass counts, and which cases the tune fixed and broke relative to the base model."""
    out: dict[str, Any] = {"passed": all(r["passed"] for r in tuned), "tuned": tuned,
                           "n_passed": sum(r["passed"] for r in tuned), "n_cases": len(tuned)}
    if base is not None:
        out["base"] = base
        out["fixed"] = [t["case"] for t, b in zip(tuned, base) if t["passed"] and not b["passed"]]
        out["broken"] = [t["case"] for t, b in zip(tuned, base) if b["passed"] and not t["passed"]]
    return out


def golden_markdown(result: dict[str, Any]) -> str:
    md = ["", "## Regression gate (eval.golden)", "",
          f"Tuned model: {result['n_passed']}/{result['n_cases']} cases pass"
          + ("." if result["passed"] else " — export is refused until they pass (or `--force`)."), ""]
    if "base" in result:
        md.append(f"Fixed by the tune: {', '.join(result['fixed']) or 'none'}; broken by the tune: "
                  f"{', '.join(result['broken']) or 'none'}.")
        md.append("")
    md += ["| case | base | tuned | why the tuned answer fails |", "|---|---|---|---|"]
    base = result.get("base") or [None] * len(result["tuned"])
    for t, b in zip(result["tuned"], base):
        md.append(f"| {t['case']} | {'-' if b is None else ('pass' if b['passed'] else 'fail')} | "
                  f"{'pass' if t['passed'] else 'fail'} | {'; '.join(t['failures']) or '-'} |")
    return "\n".join(md) + "\n"
