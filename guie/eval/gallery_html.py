"""The gallery's HTML: static pages with inline CSS, no script and no network asset.

Every file name and label goes through :func:`esc` (HTML-escaped; a name holding bytes that are not
UTF-8 shown as Python's repr). Pictures are relative paths into ``thumbs/``; each links its original
file by absolute ``file://`` URI, which opens it at full size on the machine that holds it.
Markup the tests read: ``section.row`` per query row (``data-section``, ``data-query``), ``div.strip``
per model (``data-model``), ``figure.result`` with class ``hit`` or ``miss`` per result.
"""
from __future__ import annotations

import html
import os
from pathlib import Path
from typing import Any

from guie.artifacts import GALLERY_INDEX
from guie.eval.thumbnails import HIT_RGB, MISS_RGB, QUERY_RGB, THUMB_PX, shown_text


def esc(text: Any) -> str:
    """``text`` made safe for HTML text and attribute values."""
    return html.escape(shown_text(str(text)), quote=True)


def file_uri(path: str) -> str:
    """The ``file://`` URI of ``path`` (absolute; any bytes percent-encoded)."""
    return Path(os.path.abspath(path)).as_uri()


def _rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]}, {c[1]}, {c[2]})"


CSS = f"""
body {{ font: 13px/1.35 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 16px 20px; color: #222; }}
h1 {{ font-size: 20px; margin: 0 0 6px; }} h2 {{ font-size: 16px; margin: 22px 0 4px; }}
p.note {{ color: #555; max-width: 70em; margin: 4px 0; }}
table.summary {{ border-collapse: collapse; margin: 8px 0; }}
table.summary th, table.summary td {{ padding: 3px 12px; border-bottom: 1px solid #ddd; text-align: right; }}
table.summary th:first-child, table.summary td:first-child {{ text-align: left; }}
section.row {{ display: flex; gap: 14px; align-items: flex-start; border-top: 1px solid #ddd; padding: 8px 0; }}
.strips {{ display: flex; flex-direction: column; gap: 6px; }}
.strip {{ display: flex; gap: 6px; align-items: flex-start; }}
.who {{ width: 130px; font-size: 12px; overflow-wrap: anywhere; padding-top: 4px; }}
.who b {{ display: block; }}
figure {{ margin: 0; width: {THUMB_PX + 4}px; border: 4px solid #eee; background: #fff; }}
figure img {{ display: block; width: {THUMB_PX}px; height: {THUMB_PX}px; margin: 2px; object-fit: contain;
  background: #f3f3f3; image-rendering: pixelated; }}
figcaption {{ font-size: 11px; padding: 2px 3px; overflow-wrap: anywhere; }}
figcaption .label {{ font-weight: 600; }}
figcaption .name {{ color: #666; }}
figcaption .why {{ color: #a00; }}
figure.query {{ border-color: {_rgb(QUERY_RGB)}; }}
figure.hit {{ border-color: {_rgb(HIT_RGB)}; }}
figure.miss {{ border-color: {_rgb(MISS_RGB)}; }}
.empty {{ width: {THUMB_PX + 12}px; color: #888; font-size: 11px; padding-top: 50px; text-align: center; }}
img.sheet {{ max-width: min(100%, 720px); border: 1px solid #ddd; }}
"""

HOW_TO_READ = ("Each row is one query (blue frame, with its n_q: the index images of its class) and, per model, "
               "its top {k} with rank, cosine similarity, class label and file name. Green frame: a relevant "
               "result, red: not. The score is the host's calibrated precision: only the first min(n_q, {k}) "
               "results count. Click a picture to open the original file.")


def _head(title: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f"<style>{CSS}</style></head><body>\n")


def _figure(item: dict[str, Any], css: str, first_line: str) -> str:
    why = f'<br><span class="why">cannot decode: {esc(item["unreadable"])}</span>' if item["unreadable"] else ""
    alt = f"{item['label']} {item['name']}"
    return (f'<figure class="{css}"><a href="{esc(file_uri(item["path"]))}"><img src="{esc(item["thumb"])}" '
            f'alt="{esc(alt)}" width="{THUMB_PX}" height="{THUMB_PX}"></a><figcaption>{first_line}<br>'
            f'<span class="label">{esc(item["label"])}</span><br><span class="name">{esc(item["name"])}</span>'
            f"{why}</figcaption></figure>")


def _row(row: dict[str, Any], k: int, metric: str) -> str:
    q = row["query"]
    parts = [f'<section class="row" data-section="{esc(row["section"])}" data-query="{esc(q["path"])}">',
             _figure(q, "query", f"query &middot; n_q {q['n_q']}"), '<div class="strips">']
    for strip in row["strips"]:
        parts.append(f'<div class="strip" data-model="{esc(strip["model"])}"><div class="who"><b>'
                     f'{esc(strip["model"])}</b>{metric} {strip["score"]:.2f}</div>')
        for res in strip["results"]:
            parts.append(_figure(res, "result hit" if res["relevant"] else "result miss",
                                 f"#{res['rank']} &middot; {res['similarity']:.3f}"))
        parts += ['<div class="empty">no result</div>'] * (k - len(strip["results"]))
        parts.append("</div>")
    parts.append("</div></section>")
    return "".join(parts)


def _summary_table(entry: dict[str, Any]) -> str:
    metric = entry["metric"]
    lines = [f'<table class="summary"><tr><th>model</th><th>queries</th><th>index</th><th>{metric}</th>'
             "<th>P@1</th></tr>"]
    for m in entry["models"]:
        lines.append(f"<tr><td>{esc(m['model'])}</td><td>{entry['queries']}</td><td>{entry['index']}</td>"
                     f"<td>{m[metric]:.4f}</td><td>{m['P@1']:.4f}</td></tr>")
    lines.append("</table>")
    return "".join(lines)


def _section_title(kind: str, by: str | None, n: int, seed: int, metric: str, several: bool) -> str:
    """The heading of a section of ``n`` rows."""
    if kind == "lowest":
        under = f" under {esc(by)}" if several else ""
        return f"The {n} queries with the lowest {metric}{under} (equal scores in a seeded order)"
    return f"{n} random queries among the rest (seed {seed})"


def task_page(entry: dict[str, Any], seed: int) -> str:
    """The HTML page of one task's gallery entry (guie.eval.gallery): summary table, then its rows by section."""
    metric, k = entry["metric"], entry["k"]
    several = len(entry["models"]) > 1
    parts = [_head(f"{entry['task']}: retrieval gallery"), f'<p><a href="{GALLERY_INDEX}">all tasks</a></p>',
             f"<h1>{esc(entry['task'])}</h1>", _summary_table(entry),
             f'<p class="note">{esc(HOW_TO_READ.format(k=k))}</p>']
    current = None
    for row in entry["rows"]:
        key = (row["section"], row["by"])
        if key != current:
            current = key
            shown = sum(1 for r in entry["rows"] if (r["section"], r["by"]) == key)
            parts.append(f"<h2>{_section_title(row['section'], row['by'], shown, seed, metric, several)}</h2>")
        parts.append(_row(row, k, metric))
    parts.append("</body></html>\n")
    return "\n".join(parts)


def index_page(entries: list[dict[str, Any]], n: int, seed: int) -> str:
    """The gallery's index.html: one summary per task (each model's queries, index, mP@k, P@1), linking its
    page, with its PNG of the first rows."""
    parts = [_head("guie-eval retrieval gallery"), "<h1>Retrieval gallery</h1>",
             f'<p class="note">Per task and model: the {n} queries with the lowest score, then {n} random ones '
             f"(seed {seed}); every row shows each model's results for the same query.</p>"]
    for entry in entries:
        parts += [f'<h2><a href="{esc(entry["page"])}">{esc(entry["task"])}</a></h2>', _summary_table(entry),
                  f'<a href="{esc(entry["page"])}"><img class="sheet" src="{esc(entry["png"])}" '
                  f'alt="{esc(entry["task"])}: first rows"></a>']
    parts.append("</body></html>\n")
    return "\n".join(parts)
