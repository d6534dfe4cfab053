"""The guie-eval report: a terminal table, and report.json, report.csv, report.md and report.png in a folder.

One model gives one row per task (sub-domain rows indented below their task) and a mean
row; several models give the same rows per model plus a comparison matrix (models x
tasks, mP@5) and one grouped bar chart, e.g. for a class-count sweep.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from guie.fileio import atomic_open, atomic_path, write_json, write_text

REPORT_FILES = ("report.json", "report.csv", "report.md", "report.png")


def _metric_names(report: dict[str, Any]) -> list[str]:
    k = report.get("k", 5)
    return [f"mP@{k}", "P@1", f"mAP@{k}"]


def long_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model x task, then its sub-domains, then the model's mean; the CSV's rows."""
    metrics = _metric_names(report)
    specs = {t["name"]: t["spec"] for t in report["tasks"]}
    rows: list[dict[str, Any]] = []
    for model in [m["name"] for m in report["models"]]:
        for res in [r for r in report["results"] if r["model"] == model]:
            rows.append({"model": model, "task": res["task"], "domain": "", "spec": specs.get(res["task"], ""),
                         "queries": res["queries"], "index": res["index"], **{m: res[m] for m in metrics}})
            for dom in res.get("domains", []):
                rows.append({"model": model, "task": res["task"], "domain": dom["domain"],
                             "spec": specs.get(res["task"], ""), "queries": dom["queries"], "index": res["index"],
                             **{m: dom[m] for m in metrics}})
        mean = next(m for m in report["mean"] if m["model"] == model)
        rows.append({"model": model, "task": "mean", "domain": "", "spec": f"mean over {mean['tasks']} tasks",
                     "queries": "", "index": "", **{m: mean[m] for m in metrics}})
    return rows


def _table(headers: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i >= numeric_from else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _display_rows(report: dict[str, Any], with_model: bool) -> tuple[list[str], list[list[str]], int]:
    metrics = _metric_names(report)
    headers = (["model"] if with_model else []) + ["task", "queries", "index", *metrics]
    n_tasks = len(report["tasks"])
    out = []
    for row in long_rows(report):
        if row["task"] == "mean":
            name = f"mean ({n_tasks} task{'s' if n_tasks != 1 else ''})"
        else:
            name = f"  {row['domain']}" if row["domain"] else row["task"]
        cells = [name, str(row["queries"]), str(row["index"]), *(f"{row[m]:.4f}" for m in metrics)]
        out.append(([row["model"]] if with_model else []) + cells)
    return headers, out, len(headers) - 2 - len(metrics)


def comparison_matrix(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the models x tasks mP@5 matrix (with the mean as last column)."""
    metric = _metric_names(report)[0]
    tasks = [t["name"] for t in report["tasks"]]
    headers = [f"{metric} by model", *tasks, "mean"]
    rows = []
    for model in [m["name"] for m in report["models"]]:
        by_task = {r["task"]: r[metric] for r in report["results"] if r["model"] == model}
        mean = next(m for m in report["mean"] if m["model"] == model)[metric]
        rows.append([model, *(f"{by_task[t]:.4f}" for t in tasks), f"{mean:.4f}"])
    return headers, rows


def format_table(report: dict[str, Any]) -> str:
    """The terminal table (one model: task rows; several: per-model rows plus the comparison matrix)."""
    several = len(report["models"]) > 1
    headers, rows, numeric_from = _display_rows(report, several)
    lines = _table(headers, rows, numeric_from)
    if several:
        h, r = comparison_matrix(report)
        lines += [""] + _table(h, r, 1)
    return "\n".join(lines)


def _markdown_table(headers: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    def cell(c: str) -> str:
        c = c.replace("|", "\\|")
        return "&nbsp;&nbsp;" + c[2:] if c.startswith("  ") else c  # keep sub-domain rows indented

    align = ["---:" if i >= numeric_from else ":---" for i in range(len(headers))]
    return ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"] + \
        ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]


def format_markdown(report: dict[str, Any]) -> str:
    """report.md: the tables as Markdown, then each task's rule and what was dropped."""
    several = len(report["models"]) > 1
    headers, rows, numeric_from = _display_rows(report, several)
    k = report.get("k", 5)
    models = ", ".join(f"`{m['name']}` ({m['kind']}, {m['path']})" for m in report["models"])
    lines = [f"# guie-eval report (k={k})", "", f"Models: {models}", ""]
    lines += _markdown_table(headers, rows, numeric_from)
    if several:
        h, r = comparison_matrix(report)
        lines += ["", *_markdown_table(h, r, 1)]
    lines += ["", "## Tasks", ""]
    for t in report["tasks"]:
        lines.append(f"- **{t['name']}** `{t['spec']}`: {t['queries']} queries ({t['query_classes']} classes), "
                     f"{t['index']} index images ({t['index_classes']} classes); {t['rule']}.")
        if t["dropped_queries"]:
            why = ", ".join(f"{n} {r}" for r, n in t["dropped_reasons"].items())
            lines.append(f"  Dropped queries: {t['dropped_queries']} ({why}).")
        if t["skipped_rows"]:
            why = ", ".join(f"{n} {r}" for r, n in t["skipped_reasons"].items())
            lines.append(f"  Rows skipped by the adapter: {t['skipped_rows']} ({why}).")
    if report.get("unreadable_images"):
        lines += ["", f"Unreadable images skipped: {len(report['unreadable_images'])} (listed in report.json)."]
    for w in report.get("warnings", []):
        lines += ["", f"Warning: {w}"]
    lines += ["", f"mP@{k} is the host's calibrated precision: for a query with n relevant index images only the "
                  f"first min(n, {k}) results count. Exact k-NN (faiss) on L2-normalised embeddings.", ""]
    return "\n".join(lines)


def write_csv(report: dict[str, Any], path: str | Path) -> None:
    rows = long_rows(report)
    with atomic_open(path) as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6f}" if isinstance(v, float) else v) for k, v in row.items()})


def plot_chart(report: dict[str, Any], path: str | Path) -> None:
    """A grouped bar chart of mP@5 per task (and the mean), one bar per model, written as PNG with Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metric = _metric_names(report)[0]
    models = [m["name"] for m in report["models"]]
    groups = [t["name"] for t in report["tasks"]] + ["mean"]
    values = {}
    for model in models:
        by_task = {r["task"]: r[metric] for r in report["results"] if r["model"] == model}
        by_task["mean"] = next(m for m in report["mean"] if m["model"] == model)[metric]
        values[model] = [by_task[g] for g in groups]
    width = 0.8 / len(models)
    fig = Figure(figsize=(max(6.0, 0.9 * len(groups) * max(1.0, 0.6 * len(models)) + 2), 4.5), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for j, model in enumerate(models):
        xs = [i - 0.4 + width * (j + 0.5) for i in range(len(groups))]
        bars = ax.bar(xs, values[model], width=width * 0.95, label=model)
        if len(groups) * len(models) <= 40:
            ax.bar_label(bars, labels=[f"{v:.3f}" for v in values[model]], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), groups, rotation=30 if len(groups) > 6 else 0, ha="right" if len(groups) > 6 else "center")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per task" + (" by model" if len(models) > 1 else f" ({models[0]})"))
    ax.axvline(len(groups) - 1.5, color="0.7", linewidth=0.8, linestyle="--")
    if len(models) > 1:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.csv, report.md and report.png into ``out_dir``; returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name.split(".")[1]: out / name for name in REPORT_FILES}
    write_json(paths["json"], report)
    write_csv(report, paths["csv"])
    write_text(paths["md"], format_markdown(report))
    plot_chart(report, paths["png"])
    return paths
