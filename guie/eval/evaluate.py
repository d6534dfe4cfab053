"""guie-eval end to end: models x tasks -> embeddings -> exact k-NN (faiss) -> mP@5, P@1, mAP@5 per task and domain.

The result is one JSON-ready dict (see :func:`evaluate`), which guie.eval.report turns into
the terminal table, JSON, CSV, Markdown and the bar chart, and guie-train stores in eval.json.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from guie.data.records import unique_name
from guie.distributed import DistContext
from guie.errors import GuieError, did_you_mean
from guie.eval.retrieval_rows import TaskRetrieval, retrieval_by_class
from guie.eval.tasks import RetrievalTask, TaskOptions, build_task, build_tasks
from guie.eval.uned import (
    REFUSED_OPTIONS,
    UnedTask,
    build_uned_task,
    evaluate_uned,
    gallery_retrieval,
    is_uned_spec,
)
from guie.paths import feature_cache_dir
from guie.retrieval.knn import knn
from guie.retrieval.metrics import calibrated_precision_per_query, map_at_k, precision_at_1
from guie.version import __version__

K = 5
METRICS = (f"mP@{K}", "P@1", f"mAP@{K}")


@dataclass(frozen=True)
class EvalSettings:
    """Task drawing (see guie.eval.tasks) and embedding options."""

    seed: int = 0
    query_frac: float = 0.2
    max_classes: int | None = None
    max_queries: int | None = None
    batch_size: int = 64
    workers: int | None = None
    device: str = "auto"
    distractors: int = 0
    task_weights: dict[str, float] | None = None  # task name -> weight of the task mean; None: equal weights
    uned_split: str = "test"  # the UnED split whose protocol uned: tasks follow (test or val)
    cache_dir: str | None = None  # feature cache of run folders' backbones; None: guie-train's default folder

    def task_options(self) -> TaskOptions:
        return TaskOptions(self.seed, self.query_frac, self.max_classes, self.max_queries, self.distractors).validate()


def parse_task_weights(text: str | None) -> dict[str, float] | None:
    """``--task-weights name=w,...`` as {name: weight}; None for None or ''. Weights are finite and >= 0.

    Raises GuieError on a malformed item, a repeated name, a negative or non-numeric weight, or all zeros.
    """
    if not text:
        return None
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            weight = float(value)
        except ValueError:
            weight = float("nan")
        if not sep or not name or not math.isfinite(weight) or weight < 0:
            raise GuieError(f"--task-weights item {item!r} must be TASK=WEIGHT with a weight of 0 or more, "
                            "e.g. sop=2,food101=1")
        if name in weights:
            raise GuieError(f"--task-weights names task {name!r} twice")
        weights[name] = weight
    if not sum(weights.values()) > 0:
        raise GuieError("--task-weights are all 0; give at least one task a positive weight")
    return weights


def check_task_weights(weights: dict[str, float] | None, task_names: Sequence[str]) -> None:
    """Every weight names a task and every task has a weight; raises GuieError otherwise."""
    if weights is None:
        return
    for name in weights:
        if name not in task_names:
            raise GuieError(f"--task-weights names {name!r}, which is not a task here{did_you_mean(name, task_names)}; "
                            f"tasks: {', '.join(task_names)}")
    missing = [t for t in task_names if t not in weights]
    if missing:
        raise GuieError(f"--task-weights gives no weight to {', '.join(missing)}; give every task one "
                        "(0 leaves a task out of the mean)")


def build_eval_tasks(specs: Sequence[str], settings: EvalSettings) -> list[RetrievalTask | UnedTask]:
    """One task per spec, in order, named uniquely: ``uned:`` specs follow UnED's protocol
    (guie.eval.uned), the others guie.eval.tasks' rule. Raises GuieError for --max-classes or
    --distractors with a UnED task (they would change its protocol)."""
    options = settings.task_options()
    if not any(is_uned_spec(spec) for spec in specs):
        return build_tasks(list(specs), options)
    if settings.max_classes is not None or settings.distractors:
        raise GuieError(REFUSED_OPTIONS)
    tasks: list[RetrievalTask | UnedTask] = []
    used: set[str] = set()
    for spec in specs:
        task = (build_uned_task(spec, settings.uned_split, settings.max_queries, settings.seed) if is_uned_spec(spec)
                else build_task(spec, options))
        task.name = unique_name(task.name, used)
        tasks.append(task)
    return tasks


def score_retrieval(ids: np.ndarray, query_labels: list[str], index_labels: list[str]) -> dict[str, float]:
    """mP@5 (the host's calibrated precision), P@1 and mAP@5 from k-NN index positions."""
    per_query = calibrated_precision_per_query(ids, query_labels, index_labels, K)
    return {f"mP@{K}": float(per_query.mean()), "P@1": precision_at_1(ids, query_labels, index_labels),
            f"mAP@{K}": map_at_k(ids, query_labels, index_labels, K)}


def evaluate_task(task: RetrievalTask, vectors: np.ndarray, position: dict[str, int],
                  keep: Callable[[TaskRetrieval], None] | None = None, model: str = "") -> dict[str, Any]:
    """Scores of one model on one task; ``vectors[position[path]]`` is an image's embedding. ``keep``, when
    given, receives the task's per-query retrieval (:class:`TaskRetrieval`, labelled with ``model``)."""
    xq = vectors[[position[r.path] for r in task.query]]
    xb = vectors[[position[r.path] for r in task.index]]
    query_labels = [r.class_key for r in task.query]
    index_labels = [r.class_key for r in task.index]
    sims, ids = knn(xb, xq, K)
    if keep is not None:
        keep(retrieval_by_class(task.name, model, [r.path for r in task.query], query_labels,
                                [r.path for r in task.index], index_labels, sims, ids))
    result: dict[str, Any] = {**score_retrieval(ids, query_labels, index_labels),
                              "queries": len(task.query), "index": len(task.index)}
    domains = sorted({r.domain for r in task.query})
    if len(domains) > 1:
        query_domains = np.array([r.domain for r in task.query])
        result["domains"] = []
        for domain in domains:
            rows = np.flatnonzero(query_domains == domain)
            scores = score_retrieval(ids[rows], [query_labels[i] for i in rows], index_labels)
            result["domains"].append({"domain": domain, **scores, "queries": len(rows)})
    return result


def mean_over_tasks(results: list[dict[str, Any]], weights: dict[str, float] | None = None) -> dict[str, Any]:
    """The mean of each metric over tasks: unweighted, or sum(w_t * m_t) / sum(w_t) with ``weights`` by task name."""
    if weights is None:
        return {**{m: float(np.mean([r[m] for r in results])) for m in METRICS}, "tasks": len(results)}
    w = np.array([weights[r["task"]] for r in results], dtype=np.float64)
    return {**{m: float(np.dot(w, [r[m] for r in results]) / w.sum()) for m in METRICS}, "tasks": len(results),
            "weights": {r["task"]: weights[r["task"]] for r in results}}


def evaluate(models: Sequence[str | Path], task_specs: Sequence[str], settings: EvalSettings = EvalSettings(),
             log: Callable[[str], None] = print, retrievals: list[TaskRetrieval] | None = None,
             dist: DistContext | None = None) -> dict[str, Any] | None:
    """Evaluate every model on every task; returns the report dict. ``retrievals``, when given, gets one
    :class:`TaskRetrieval` per model and task (their per-query results, e.g. for guie.eval.gallery).

    Keys: ``k``, ``settings``, ``models`` (name, path, kind), ``tasks`` (name, spec, rule,
    sizes, dropped queries and skipped rows with reasons), ``results`` (one per model and
    task: mP@5, P@1, mAP@5, queries, index, and ``domains`` when a task has several),
    ``mean`` (per model, over tasks), ``warnings``. A UnED task's result also holds ``uned`` (both
    settings, per domain and mean; see guie.eval.uned.evaluate_uned); its mP@5, P@1 and mAP@5 are the
    common setting's means of mMP@5, R@1 and mAP@5. Run folders' backbone features come from the
    feature cache (``settings.cache_dir``). Under torchrun (``dist`` of several ranks) every rank
    computes its share of the missing features; rank 0 scores and returns the report, the other
    ranks return None.
    """
    started = time.perf_counter()
    tasks = build_eval_tasks(task_specs, settings)  # data errors surface before torch loads
    check_task_weights(settings.task_weights, [t.name for t in tasks])
    from guie.eval.embed import embed_with_models, resolve_models

    refs = resolve_models(models)
    paths_wanted: set[str] = set()
    for task in tasks:
        if isinstance(task, UnedTask):
            sizes, wanted = f"{task.queries} queries, a common index of {task.index_size} images", task.paths()
        else:
            sizes = f"{len(task.query)} queries, {len(task.index)} index images"
            wanted = {r.path for r in (*task.query, *task.index)}
        log(f"task {task.name} ({task.spec}): {sizes}; {task.rule}"
            + (f"; {len(task.dropped)} queries dropped ({task.dropped[0][1]})" if task.dropped else ""))
        paths_wanted |= wanted
    paths = sorted(paths_wanted)
    position = {p: i for i, p in enumerate(paths)}
    emb = embed_with_models(refs, paths, settings.device, settings.batch_size, settings.workers, log,
                            cache_dir=feature_cache_dir(settings.cache_dir), dist=dist)
    if emb is None:  # a torchrun rank other than 0: its share of the features is in the cache
        return None
    bad_paths = {paths[i]: why for i, why in emb.bad.items()}
    if bad_paths:
        log(f"skipping {len(bad_paths)} unreadable images (listed in the report)")
    tasks = [task.without(bad_paths) for task in tasks]
    results = []
    for ref in refs:
        for task in tasks:
            if isinstance(task, UnedTask):
                row, found = evaluate_uned(task, emb.vectors[ref.name], position)
                results.append({"model": ref.name, "task": task.name, **row})
                if retrievals is not None:
                    retrievals.append(gallery_retrieval(task.name, ref.name, found["common"]))
                continue
            if not task.query or not task.index:
                raise GuieError(f"task {task.name!r} has no usable queries or index left after dropping "
                                f"{len(bad_paths)} unreadable images; fix the image files")
            results.append({"model": ref.name, "task": task.name,
                            **evaluate_task(task, emb.vectors[ref.name], position,
                                            None if retrievals is None else retrievals.append, ref.name)})
    means = [{"model": ref.name, **mean_over_tasks([r for r in results if r["model"] == ref.name],
                                                    settings.task_weights)} for ref in refs]
    for warning in emb.warnings:
        log(f"warning: {warning}")
    return {
        "guie_version": __version__,
        "k": K,
        "settings": asdict(settings),
        "models": [ref.describe() for ref in refs],
        "tasks": [task.summary() for task in tasks],
        "results": results,
        "mean": means,
        "unreadable_images": [{"path": p, "reason": why} for p, why in sorted(bad_paths.items())],
        "warnings": emb.warnings,
        "seconds": round(time.perf_counter() - started, 2),
    }
