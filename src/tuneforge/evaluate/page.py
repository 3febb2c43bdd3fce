"""A self-contained HTML page: inline CSS, figures as base64 PNG ``<img>`` tags, no script, no network.

One file a user can mail or open from disk, that renders the same everywhere. Text is escaped.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}th,td{border:1px solid #ddd;padding:.3em .6em;
text-align:left;vertical-align:top}th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
figure{display:inline-block;margin:.5em 1em .5em 0}figcaption{font-size:.85em;color:#555}
.note{color:#555;font-size:.9em}code{background:#f4f4f4;padding:0 .2em}
"""


def esc(text: object) -> str:
    return html.escape(str(text))


def table(rows: Sequence[Sequence[object]]) -> str:
    """First row is the header. Cells that look numeric are right-aligned."""
    head = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
    body = []
    for row in rows[1:]:
        cells = []
        for c in row:
            text = str(c)
            numeric = text.replace(".", "", 1).replace("-", "", 1).replace("+", "", 1).replace("%", "").isdigit()
            cells.append(f'<td class="num">{esc(text)}</td>' if numeric else f"<td>{esc(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{esc(caption)}">'
            f'<figcaption>{esc(caption)}</figcaption></figure>')


def paragraph(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{esc(text)}</p>' if cls else f"<p>{esc(text)}</p>"


def page(title: str, sections: Sequence[tuple[str, str]]) -> str:
    """``sections`` are (heading, inner HTML) pairs; an empty heading puts the body right under the title."""
    parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>",
             f"<style>{_CSS}</style></head><body><h1>{esc(title)}</h1>"]
    for heading, body in sections:
        parts.append((f"<h2>{esc(heading)}</h2>" if heading else "") + body)
    parts.append("</body></html>")
    return "\n".join(parts)
