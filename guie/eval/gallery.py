"""guie-eval --gallery N: what each model retrieves, as static pages to open in any browser.

Per task, the rows shown are, for each model, the N queries with the lowest score under that model
(mP@5 per query; equal scores in a seeded order), then N seeded random queries among the rest; every
row shows the query and one strip per model with its top k, so two runs compare side by side on the
same queries. Written under ``OUT/gallery/``:

- ``index.html``: every task with each model's queries, index size, mP@5 and P@1, linking the pages;
- ``<task>.html``: the task's summary, then its rows (thumbnail, rank, similarity, label and file name
  of each result, framed green when relevant and red when not; the query's n_q and score);
- ``<task>.png``: the task's first rows as one picture;
- ``thumbs/``: one JPEG per image file shown (THUMB_PX at most), referenced by relative paths, so the
  folder can be moved, zipped or opened on another machine; each picture links its original file.

The rows, with each result's relevance, go into report.json under ``"gallery"`` (:func:`write_gallery`'s
return value). The folder is written beside the target and swapped in whole: a failure leaves the
earlier gallery as it was. Reads only :class:`guie.eval.retrieval_rows.TaskRetrieval`, whatever built
the task.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from guie.artifacts import GALLERY_DIR, GALLERY_INDEX, GALLERY_THUMBS
from guie.errors import GuieError
from guie.eval.gallery_html import index_page, task_page
from guie.eval.retrieval_rows import TaskRetrieval
from guie.eval.thumbnails import (
    HIT_RGB,
    MISS_RGB,
    QUERY_RGB,
    SheetRow,
    SheetTile,
    draw_sheet,
    thumb_name,
    write_thumbnail,
)

DEFAULT_ROWS = 8  # queries per section when a caller does not say (guie-train --eval TASKS with --wandb)
SHEET_ROWS = 4  # the first rows of the page, drawn in <task>.png


def _rng(seed: int, task: str, purpose: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(f"{task}/{purpose}".encode("utf-8", "surrogateescape"))])


def select_queries(retrievals: Sequence[TaskRetrieval], n: int, seed: int) -> list[tuple[str, str | None, list[int]]]:
    """The rows of one task, as sections ``(kind, model, query positions)``: ("lowest", model, ...) per
    model, its ``n`` lowest-scoring queries, lowest first, equal scores in an order seeded by ``seed`` and
    the task; then ("random", None, ...), ``n`` seeded random queries not in any lowest section (fewer
    when the task has fewer left). ``retrievals`` are one task's, one per model, on the same queries."""
    first = retrievals[0]
    q = len(first.query_paths)
    tiebreak = np.empty(q, dtype=np.int64)
    tiebreak[_rng(seed, first.task, "ties").permutation(q)] = np.arange(q)
    sections: list[tuple[str, str | None, list[int]]] = []
    lowest: set[int] = set()
    for r in retrievals:
        worst = np.lexsort((tiebreak, r.scores))[:n].tolist()
        sections.append(("lowest", r.model, worst))
        lowest.update(worst)
    rest = [i for i in _rng(seed, first.task, "random").permutation(q).tolist() if i not in lowest]
    sections.append(("random", None, rest[:n]))
    return sections


def _check_same_queries(task: str, retrievals: Sequence[TaskRetrieval]) -> None:
    first = retrievals[0]
    for r in retrievals[1:]:
        if list(r.query_paths) != list(first.query_paths) or list(r.index_paths) != list(first.index_paths):
            raise ValueError(f"task {task}: models {first.model} and {r.model} were evaluated on different queries "
                             "or index images; the gallery compares models on the same ones")


def page_stem(task: str, used: set[str]) -> str:
    """A file name stem for ``task`` (letters, digits, '.', '_' and '-'), unique among ``used`` (added)."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", task).strip("-.") or "task"
    name, n = stem, 2
    while name.lower() in used:
        name, n = f"{stem}-{n}", n + 1
    used.add(name.lower())
    return name


class _Thumbs:
    """Thumbnails under ``folder``, each image file written once; ``ref(path)`` gives (relative file, problem)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.done: dict[str, tuple[str, str | None]] = {}

    def ref(self, path: str) -> tuple[str, str | None]:
        if path not in self.done:
            name = thumb_name(path)
            self.done[path] = (f"{GALLERY_THUMBS}/{name}", write_thumbnail(path, self.folder / name))
        return self.done[path]


def _image_entry(path: str, label: str, thumbs: _Thumbs) -> dict[str, Any]:
    thumb, problem = thumbs.ref(path)
    return {"path": path, "name": Path(path).name, "label": label, "thumb": thumb, "unreadable": problem}


def _task_entry(retrievals: Sequence[TaskRetrieval], n: int, seed: int, thumbs: _Thumbs) -> dict[str, Any]:
    first = retrievals[0]
    k = first.k
    metric = f"mP@{k}"
    rows = []
    for kind, by, positions in select_queries(retrievals, n, seed):
        for i in positions:
            strips = []
            for r in retrievals:
                results = []
                for rank in range(k):
                    j = int(r.neighbours[i, rank])
                    if j < 0:
                        continue
                    results.append({"rank": rank + 1, **_image_entry(r.index_paths[j], r.index_labels[j], thumbs),
                                    "similarity": round(float(r.similarities[i, rank]), 4),
                                    "relevant": bool(r.relevant[i, rank])})
                strips.append({"model": r.model, "score": float(r.scores[i]), "results": results})
            query = {**_image_entry(first.query_paths[i], first.query_labels[i], thumbs),
                     "position": i, "n_q": int(first.n_relevant[i])}
            rows.append({"section": kind, "by": by, "query": query, "strips": strips})
    return {"task": first.task, "k": k, "metric": metric, "queries": len(first.query_paths),
            "index": len(first.index_paths),
            "models": [{"model": r.model, metric: r.mean_precision, "P@1": r.precision_at_1} for r in retrievals],
            "rows": rows}


def _sheet_rows(entry: dict[str, Any], folder: Path) -> list[SheetRow]:
    metric = entry["metric"]
    out = []
    for row in entry["rows"][:SHEET_ROWS]:
        q = row["query"]
        query = SheetTile(folder / q["thumb"], ("query, n_q " + str(q["n_q"]), q["label"], q["name"]), QUERY_RGB)
        strips = tuple(
            (f"{s['model']}\n{metric} {s['score']:.2f}",
             tuple(SheetTile(folder / t["thumb"], (f"#{t['rank']}  {t['similarity']:.3f}", t["label"], t["name"]),
                             HIT_RGB if t["relevant"] else MISS_RGB) for t in s["results"]))
            for s in row["strips"])
        out.append(SheetRow(query, strips))
    return out


def _check_replaceable(target: Path) -> None:
    if target.exists() and (not target.is_dir() or (any(target.iterdir()) and not (target / GALLERY_INDEX).is_file())):
        raise GuieError(f"{str(target)!r} exists and is not a gallery guie-eval wrote (no {GALLERY_INDEX}); "
                        "pass another --out")


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` (an earlier gallery or nothing) by ``new`` with renames."""
    if target.exists():
        trash = Path(tempfile.mkdtemp(prefix=".guie-gallery-old-", dir=target.parent))
        target.rename(trash / target.name)
        new.rename(target)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        new.rename(target)


def write_gallery(retrievals: Sequence[TaskRetrieval], folder: str | Path, n: int, seed: int = 0,
                  report_dir: str | Path | None = None) -> dict[str, Any]:
    """Write the gallery of ``retrievals`` (one per model and task; tasks in the order first seen) into
    ``folder`` (see the module docstring), replacing an earlier gallery there; ``n`` queries per section.

    Returns the report entry: ``folder`` and ``index`` (relative to ``report_dir``, default the folder's
    parent), ``rows_per_section``, ``seed`` and ``tasks``, each with its page, png, queries, index, the
    models' mP@k and P@1, and its rows (section, the model whose lowest scores chose it, the query with its
    n_q, and per model the score and results: rank, path, label, similarity, relevant, thumbnail).
    Raises GuieError when ``n`` < 1, there is nothing to show, or ``folder`` holds something else.
    """
    if n < 1:
        raise GuieError(f"--gallery must be at least 1 (queries per section), got {n}")
    if not retrievals:
        raise GuieError("the gallery has no retrieval to show; evaluate at least one model on one task")
    folder = Path(folder)
    by_task: dict[str, list[TaskRetrieval]] = {}
    for r in retrievals:
        by_task.setdefault(r.task, []).append(r)
    _check_replaceable(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".guie-gallery-{uuid.uuid4().hex[:12]}"
    tmp.mkdir()  # with the umask's mode, unlike mkdtemp's 0700: the gallery is for others to open too
    try:
        (tmp / GALLERY_THUMBS).mkdir()
        thumbs = _Thumbs(tmp / GALLERY_THUMBS)
        used: set[str] = {Path(GALLERY_INDEX).stem.lower()}
        entries = []
        for task, group in by_task.items():
            _check_same_queries(task, group)
            entry = _task_entry(group, n, seed, thumbs)
            stem = page_stem(task, used)
            entry["page"], entry["png"] = f"{stem}.html", f"{stem}.png"
            (tmp / entry["page"]).write_text(task_page(entry, seed), encoding="utf-8")
            draw_sheet(_sheet_rows(entry, tmp), f"{task}: {entry['metric']} per query (green: relevant, red: not)",
                       entry["k"], tmp / entry["png"])
            entries.append(entry)
        (tmp / GALLERY_INDEX).write_text(index_page(entries, n, seed), encoding="utf-8")
        _swap_in(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    base = Path(report_dir) if report_dir is not None else folder.parent
    rel = Path(os.path.relpath(folder, base))
    return {"folder": rel.as_posix(), "index": (rel / GALLERY_INDEX).as_posix(), "rows_per_section": n,
            "seed": seed, "tasks": entries}


def attach_gallery(report: dict[str, Any], retrievals: Sequence[TaskRetrieval], out_dir: str | Path, n: int,
                   seed: int = 0) -> Path:
    """:func:`write_gallery` into ``out_dir/gallery`` (the folder of report.json), its entry stored as
    ``report["gallery"]``; returns the path of its index.html. Raises as write_gallery."""
    report["gallery"] = write_gallery(retrievals, Path(out_dir) / GALLERY_DIR, n, seed, report_dir=out_dir)
    return Path(out_dir) / report["gallery"]["index"]
