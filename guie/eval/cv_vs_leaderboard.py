"""guie-eval --leaderboard: which CV task tracks the Kaggle leaderboard.

Each model's latest scored submission comes from the leaderboard.jsonl beside it (see
guie.leaderboard_log; guie-submit writes it): in the run folder, or the folder holding the
saved_model.pt / submission.zip (and, for a file in a guie-package BUILD/dataset folder, BUILD;
``guie.artifacts.leaderboard_files`` knows those places).
Across the models with a score, for each task and for the (possibly weighted) task mean, the report
gives the Spearman rank correlation and the Pearson correlation between the models' mP@5 and their
leaderboard score: the private score when every scored model has one, else the public score (the
report names which). With fewer than 3 scored models there is no correlation, and the report says so.

Formulas: ``scipy.stats.spearmanr`` (Pearson correlation of the ranks, ties given their average rank)
and ``scipy.stats.pearsonr``. A constant column gives no coefficient (null in report.json).
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

from guie.artifacts import leaderboard_files, saved_model_sha256
from guie.fileio import atomic_path
from guie.leaderboard_log import latest_scored, read_records, score_value

MIN_MODELS = 3
SCORES = ("private_score", "public_score")


def model_score(model_path: str | Path) -> dict[str, Any] | None:
    """The latest scored submission of the model at ``model_path``, or None: the record's submission_ref,
    submitted_at, public_score and private_score (floats or None) and the file it came from.

    For a TorchScript model, lines recorded for another model file (a different ``model_sha256``) are
    skipped: the folder may hold a newer model than the one that was scored."""
    sha = saved_model_sha256(model_path)
    for place in leaderboard_files(model_path):
        records = read_records(place)
        if sha is not None:
            records = [r for r in records if r.get("model_sha256") in (None, sha)]
        record = latest_scored(records)
        if record is not None:
            return {"file": str(place), "submission_ref": record.get("submission_ref"),
                    "submitted_at": record.get("submitted_at"),
                    "public_score": score_value(record.get("public_score")),
                    "private_score": score_value(record.get("private_score"))}
    return None


def _coefficient(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def correlation(cv: list[float], lb: list[float]) -> dict[str, Any]:
    """Spearman and Pearson correlation of two equal-length score lists (n >= 3); None where undefined."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's ConstantInputWarning: reported as null instead
        spearman = stats.spearmanr(cv, lb)[0]
        pearson = stats.pearsonr(cv, lb)[0]
    return {"spearman": _coefficient(spearman), "pearson": _coefficient(pearson), "n": len(cv)}


def attach_leaderboard(report: dict[str, Any]) -> dict[str, Any]:
    """Add ``report["leaderboard"]``: the score used, each model's LB scores, and the CV-LB correlations.

    ``leaderboard`` = {"score": "private_score" | "public_score" | None, "models": [{"model", "lb",
    "public_score", "private_score", "submission_ref", "submitted_at", "file"}, ...],
    "correlation": [{"task": NAME or "mean", "spearman", "pearson", "n"}, ...], "note": str}.
    Returns ``report`` (changed in place).
    """
    metric = f"mP@{report.get('k', 5)}"
    rows = []
    for model in report["models"]:
        found = model_score(model["path"])
        rows.append({"model": model["name"], **(found or {"public_score": None, "private_score": None})})
    scored = [r for r in rows if r["public_score"] is not None or r["private_score"] is not None]
    score = None
    if scored:
        score = "private_score" if all(r["private_score"] is not None for r in scored) else "public_score"
        scored = [r for r in scored if r[score] is not None]
    for row in rows:
        row["lb"] = row.get(score) if score else None
    board: dict[str, Any] = {"score": score, "models": rows, "correlation": []}
    if len(scored) < MIN_MODELS:
        board["note"] = (f"{len(scored)} model{'s' if len(scored) != 1 else ''} with a leaderboard score; "
                         f"a correlation needs at least {MIN_MODELS}, so none is given")
    else:
        names = [r["model"] for r in scored]
        lb = [r[score] for r in scored]
        for task in [t["name"] for t in report["tasks"]]:
            cv = {r["model"]: r[metric] for r in report["results"] if r["task"] == task}
            board["correlation"].append({"task": task, **correlation([cv[n] for n in names], lb)})
        mean = {m["model"]: m[metric] for m in report["mean"]}
        board["correlation"].append({"task": "mean", **correlation([mean[n] for n in names], lb)})
        board["note"] = (f"{metric} against the {score.replace('_', ' ')} across {len(scored)} models "
                         f"({'private scores' if score == 'private_score' else 'public scores: not every model has a private one'})")
    report["leaderboard"] = board
    return report


def format_correlation(report: dict[str, Any]) -> list[str]:
    """Lines for the terminal and report.md: the note, then task, Spearman, Pearson, n."""
    board = report.get("leaderboard")
    if not board:
        return []
    lines = [f"CV vs leaderboard: {board['note']}"]
    if board["correlation"]:
        def fmt(v: float | None) -> str:
            return "-" if v is None else f"{v:+.3f}"

        width = max(len("task"), *(len(c["task"]) for c in board["correlation"]))
        lines.append(f"{'task'.ljust(width)}  spearman  pearson  n")
        lines += [f"{c['task'].ljust(width)}  {fmt(c['spearman']).rjust(8)}  {fmt(c['pearson']).rjust(7)}  {c['n']}"
                  for c in board["correlation"]]
    return lines


def plot_scatter(report: dict[str, Any], path: str | Path) -> None:
    """One scatter plot per task and for the mean: mP@5 (x) against the LB score (y), a point per scored
    model, labelled, with the coefficients in the title. PNG, written atomically with Agg."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    board = report["leaderboard"]
    metric = f"mP@{report.get('k', 5)}"
    scored = [r for r in board["models"] if r["lb"] is not None]
    groups = [t["name"] for t in report["tasks"]] + ["mean"]
    coef = {c["task"]: c for c in board["correlation"]}
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig = Figure(figsize=(4.2 * cols, 3.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    for i, group in enumerate(groups):
        ax = fig.add_subplot(rows, cols, i + 1)
        if group == "mean":
            cv = {m["model"]: m[metric] for m in report["mean"]}
        else:
            cv = {r["model"]: r[metric] for r in report["results"] if r["task"] == group}
        xs, ys = [cv[r["model"]] for r in scored], [r["lb"] for r in scored]
        ax.scatter(xs, ys)
        for r, x, y in zip(scored, xs, ys, strict=True):
            ax.annotate(r["model"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
        c = coef.get(group)
        if c is None:
            title = group
        else:
            rho, r_ = ("-" if c[k] is None else f"{c[k]:+.2f}" for k in ("spearman", "pearson"))
            title = f"{group}: Spearman {rho}, Pearson {r_}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(metric, fontsize=8)
        ax.set_ylabel(str(board["score"] or "LB score").replace("_", " "), fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
