"""The guie-eval report: a terminal table, and report.json, report.csv, report.md and report.png in a folder.

One model gives one row per task (sub-domain rows indented below their task) and a mean
row; several models give the same rows per model plus a comparison matrix (models x
tasks, mP@5) and one grouped bar chart, e.g. for a class-count sweep.
"""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from guie.eval.cv_vs_leaderboard import format_correlation, plot_scatter
from guie.fileio import atomic_open, atomic_path, write_json, write_text
from guie.fsnames import escape_undecodable

REPORT_FILES = ("report.json", "report.csv", "report.md", "report.png")


LB_KEYS = ("public_score", "private_score")
LB_HEADERS = ("LB public", "LB private")


def _lb_scores(report: dict[str, Any], model: str) -> dict[str, Any]:
    """A model's leaderboard scores ({} without --leaderboard; None where it has none)."""
    board = report.get("leaderboard")
    if not board:
        return {}
    row = next((r for r in board["models"] if r["model"] == model), {})
    return {k: row.get(k) for k in LB_KEYS}


def _fmt_score(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _mean_label(report: dict[str, Any], n_tasks: int) -> str:
    weighted = any("weights" in m for m in report["mean"])
    return f"{'weighted ' if weighted else ''}mean ({n_tasks} task{'s' if n_tasks != 1 else ''})"


def _metric_names(report: dict[str, Any]) -> list[str]:
    k = report.get("k", 5)
    return [f"mP@{k}", "P@1", f"mAP@{k}"]


def long_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per model x task, then its sub-domains, then the model's mean; the CSV's rows. With
    --leaderboard, every row has public_score and private_score, filled on the mean row."""
    metrics = _metric_names(report)
    specs = {t["name"]: t["spec"] for t in report["tasks"]}
    rows: list[dict[str, Any]] = []
    blank = {k: "" for k in LB_KEYS} if report.get("leaderboard") else {}
    for model in [m["name"] for m in report["models"]]:
        for res in [r for r in report["results"] if r["model"] == model]:
            rows.append({"model": model, "task": res["task"], "domain": "", "spec": specs.get(res["task"], ""),
                         "queries": res["queries"], "index": res["index"], **{m: res[m] for m in metrics}, **blank})
            for dom in res.get("domains", []):
                rows.append({"model": model, "task": res["task"], "domain": dom["domain"],
                             "spec": specs.get(res["task"], ""), "queries": dom["queries"], "index": res["index"],
                             **{m: dom[m] for m in metrics}, **blank})
        mean = next(m for m in report["mean"] if m["model"] == model)
        lb = {k: ("" if v is None else v) for k, v in _lb_scores(report, model).items()}
        rows.append({"model": model, "task": "mean", "domain": "", "spec": f"mean over {mean['tasks']} tasks"
                     + (" (weighted)" if "weights" in mean else ""),
                     "queries": "", "index": "", **{m: mean[m] for m in metrics}, **lb})
    return rows


def _table(headers: list[str], rows: list[list[str]], numeric_from: int) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i >= numeric_from else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


def _display_rows(report: dict[str, Any], with_model: bool) -> tuple[list[str], list[list[str]], int]:
    metrics = _metric_names(report)
    lb = bool(report.get("leaderboard"))
    headers = (["model"] if with_model else []) + ["task", "queries", "index", *metrics] + \
        (list(LB_HEADERS) if lb else [])
    n_tasks = len(report["tasks"])
    out = []
    for row in long_rows(report):
        if row["task"] == "mean":
            name = _mean_label(report, n_tasks)
        else:
            name = f"  {row['domain']}" if row["domain"] else row["task"]
        cells = [name, str(row["queries"]), str(row["index"]), *(f"{row[m]:.4f}" for m in metrics)]
        if lb:
            cells += ["" if row["task"] != "mean" else _fmt_score(row[k] if row[k] != "" else None) for k in LB_KEYS]
        out.append(([row["model"]] if with_model else []) + cells)
    return headers, out, len(headers) - 2 - len(metrics) - (len(LB_KEYS) if lb else 0)


def comparison_matrix(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Headers and rows of the models x tasks mP@5 matrix (with the mean as last column)."""
    metric = _metric_names(report)[0]
    tasks = [t["name"] for t in report["tasks"]]
    lb = bool(report.get("leaderboard"))
    headers = [f"{metric} by model", *tasks, "mean", *(LB_HEADERS if lb else ())]
    rows = []
    for model in [m["name"] for m in report["models"]]:
        by_task = {r["task"]: r[metric] for r in report["results"] if r["model"] == model}
        mean = next(m for m in report["mean"] if m["model"] == model)[metric]
        scores = _lb_scores(report, model)
        rows.append([model, *(f"{by_task[t]:.4f}" for t in tasks), f"{mean:.4f}",
                     *(_fmt_score(scores[k]) for k in LB_KEYS if lb)])
    return headers, rows


UNED_HEADERS = ["domain", "queries", "sep. index", "sep. mMP@5", "sep. R@1", "sep. mAP@5", "common index",
                "common mMP@5", "common R@1", "common mAP@5"]
UNED_METRICS = ("mMP@5", "R@1", "mAP@5")


def uned_title(result: dict[str, Any]) -> str:
    """The line above a UnED table: split, model, task, the headline, and whether queries were sampled."""
    uned = result["uned"]
    mean = uned["common"]["mean"]
    sampled = uned.get("sampled")
    return (f"UnED {uned['split']} split, {result['model']} on {result['task']}: common index mean over "
            f"{mean['domains']} domains mMP@5 {mean['mMP@5']:.4f}, R@1 {mean['R@1']:.4f}"
            + (f" (sampled: at most {sampled['max_queries']} queries per domain, not the benchmark's figures)"
               if sampled else ""))


def uned_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per UnED domain, both settings side by side, then the mean over domains (UNED_HEADERS)."""
    sep, common = result["uned"]["separate"], result["uned"]["common"]
    rows = []
    for domain in [d for d in common if d != "mean"]:
        s, c = sep[domain], common[domain]
        rows.append([domain, str(c["queries"]), str(s["index"]), *(f"{s[m]:.4f}" for m in UNED_METRICS),
                     str(c["index"]), *(f"{c[m]:.4f}" for m in UNED_METRICS)])
    rows.append([f"mean ({common['mean']['domains']} domains)", "", "",
                 *(f"{sep['mean'][m]:.4f}" for m in UNED_METRICS), "",
                 *(f"{common['mean'][m]:.4f}" for m in UNED_METRICS)])
    return rows


def format_table(report: dict[str, Any]) -> str:
    """The terminal table (one model: task rows; several: per-model rows plus the comparison matrix), then
    each UnED result's per-domain table of both settings."""
    several = len(report["models"]) > 1
    headers, rows, numeric_from = _display_rows(report, several)
    lines = _table(headers, rows, numeric_from)
    if several:
        h, r = comparison_matrix(report)
        lines += [""] + _table(h, r, 1)
    for res in report["results"]:
        if "uned" in res:
            lines += ["", uned_title(res), *_table(UNED_HEADERS, uned_rows(res), 1)]
    if report.get("leaderboard"):
        lines += [""] + format_correlation(report)
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
    uned_results = [res for res in report["results"] if "uned" in res]
    if uned_results:
        lines += ["", "## UnED", ""]
        for res in uned_results:
            lines += [uned_title(res) + ".", "", *_markdown_table(UNED_HEADERS, uned_rows(res), 1), ""]
        lines += ["'sep.': each domain's queries against its own index; 'common': against all domains' indexes "
                  "merged (the benchmark's standard protocol), relevance and n_q still per domain. mMP@5 is the "
                  "host's mP@5, R@1 is P@1; the task row above shows the common means."]
    board = report.get("leaderboard")
    if board:
        lines += ["", "## CV against the leaderboard", "", board["note"] + "."]
        if board["correlation"]:
            def fmt(v: Any) -> str:
                return "-" if v is None else f"{v:+.3f}"

            lines += ["", *_markdown_table(["task", "Spearman", "Pearson", "models"],
                                           [[c["task"], fmt(c["spearman"]), fmt(c["pearson"]), str(c["n"])]
                                            for c in board["correlation"]], 1)]
    lines += ["", "## Tasks", ""]
    for t in report["tasks"]:
        lines.append(f"- **{t['name']}** `{t['spec']}`: {t['queries']} queries ({t['query_classes']} classes), "
                     f"{t['index']} index images ({t['index_classes']} classes); {t['rule']}.")
        weights = next((m["weights"] for m in report["mean"] if "weights" in m), None)
        if weights:
            lines.append(f"  Weight in the mean: {weights.get(t['name'], 0):g}.")
        if t["dropped_queries"]:
            why = ", ".join(f"{n} {r}" for r, n in t["dropped_reasons"].items())
            lines.append(f"  Dropped queries: {t['dropped_queries']} ({why}).")
        if t["skipped_rows"]:
            why = ", ".join(f"{n} {r}" for r, n in t["skipped_reasons"].items())
            lines.append(f"  Rows skipped by the adapter: {t['skipped_rows']} ({why}).")
    gallery = report.get("gallery")
    if gallery:
        n = gallery["rows_per_section"]
        lines += ["", f"Retrieval gallery: [{gallery['index']}]({gallery['index']}) (per task, each model's {n} "
                      f"lowest-scoring queries and {n} random ones, with every model's top {k})."]
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


def _shown(value: Any) -> Any:
    """``value`` with every string as valid text: a name's undecodable bytes as ``\\xNN`` (guie.fsnames)."""
    if isinstance(value, str):
        return escape_undecodable(value)
    if isinstance(value, dict):
        return {_shown(k): _shown(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_shown(v) for v in value]
    return value


def write_report(report: dict[str, Any], out_dir: str | Path) -> dict[str, Path]:
    """Write report.json, report.csv, report.md and report.png into ``out_dir`` (with --leaderboard and a
    scored model also leaderboard.png, key "scatter"); returns their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {name.split(".")[1]: out / name for name in REPORT_FILES}
    board = report.get("leaderboard")
    write_json(paths["json"], report)  # names exact (see guie.fsnames); the CSV, Markdown and charts show them
    report = _shown(report)
    if board and any(r["lb"] is not None for r in board["models"]):
        paths["scatter"] = out / "leaderboard.png"
        plot_scatter(report, paths["scatter"])
    write_csv(report, paths["csv"])
    write_text(paths["md"], format_markdown(report))
    plot_chart(report, paths["png"])
    return paths
