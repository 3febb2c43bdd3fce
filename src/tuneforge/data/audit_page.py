"""The audit as one self-contained HTML page: inline CSS, no script, no external file.

Every value from the data is escaped (``html.escape``): a data set may hold markup, and the page
must show it, not run it. Each finding lists its first ``MAX_ROWS`` rows; ``audit.json`` has all.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tuneforge.data.audit import AuditReport, Finding

MAX_ROWS = 50

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;width:100%}
th,td{border:1px solid #ccc;padding:.3em .5em;text-align:left;vertical-align:top;font-size:.9em}
th{background:#f3f3f3}
.error{background:#fdd}.warning{background:#fff3cd}.info{background:#e7f1ff}.ok{background:#e6f6e6}
code,pre{font-family:ui-monospace,monospace;white-space:pre-wrap;word-break:break-word}
details{margin:.5em 0 1em}summary{cursor:pointer;font-weight:600}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _finding(f: Finding) -> str:
    parts = [f"<details{' open' if f.severity in ('error', 'warning') and f.rows else ''}>",
             f"<summary><span class='{f.severity}'>{_e(f.severity)}</span> {_e(f.title)}: {_e(f.summary)}</summary>"]
    stats = {k: v for k, v in f.stats.items() if k != "seconds"}
    if stats:
        parts.append(f"<pre>{_e(json.dumps(stats, indent=1, ensure_ascii=False, default=str))}</pre>")
    if f.rows:
        extra = sorted({k for r in f.rows for k in r if k not in ("where", "text", "note", "pii")})
        head = "".join(f"<th>{_e(h)}</th>" for h in ["where", "text", "note", *extra])
        body = "".join(
            "<tr>" + f"<td><code>{_e(r['where'])}</code></td><td><code>{_e(r.get('text'))}</code></td>"
            f"<td>{_e(r.get('note'))}</td>" + "".join(f"<td>{_e(r.get(k))}</td>" for k in extra) + "</tr>"
            for r in f.rows[:MAX_ROWS])
        more = f"<p>... and {len(f.rows) - MAX_ROWS} more in audit.json</p>" if len(f.rows) > MAX_ROWS else ""
        parts.append(f"<table><tr>{head}</tr>{body}</table>{more}")
    parts.append("</details>")
    return "".join(parts)


def render_html(report: AuditReport) -> str:
    summary_rows = "".join(
        f"<tr class='{f.severity}'><td>{_e(Path(k).name)}</td><td>{_e(f.check)}</td><td>{_e(f.severity)}</td>"
        f"<td>{f.count}</td><td>{_e(f.summary)}</td></tr>"
        for k, fs in report.findings.items() for f in fs)
    sections = "".join(
        f"<h2>{_e(k if k == 'leakage' else Path(k).name)}</h2>"
        + (f"<p><code>{_e(k)}</code>, {report.rows[k]} rows</p>" if k in report.rows else "")
        + "".join(_finding(f) for f in fs)
        for k, fs in report.findings.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>tuneforge data audit</title>"
        f"<style>{_CSS}</style></head><body><h1>Data audit</h1>"
        f"<p>{len(report.files)} file(s), audited in {report.seconds:.1f} s. Options: "
        f"<code>{_e(json.dumps(report.options))}</code></p>"
        "<table><tr><th>file</th><th>check</th><th>severity</th><th>rows</th><th>summary</th></tr>"
        f"{summary_rows}</table>{sections}</body></html>\n"
    )
