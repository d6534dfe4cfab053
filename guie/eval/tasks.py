"""Retrieval tasks: query and index sets built from one data source spec, by a documented rule.

Which images are queries and which form the index:

1. **The dataset's own retrieval split**, when it has one: records of split ``query`` are the
   queries; the index is the ``gallery`` (or ``index``) records, or, when there are none,
   the ``train`` records (DeepFashion In-shop: query vs gallery; The Met: test queries vs
   the exhibit database).
2. **Otherwise a seeded split per class** of the dataset's ``test`` split when it has one
   (SOP Ebay_test.txt, Food-101 meta/test.txt, Products-10K test, ObjectNet), else of all
   its images (GLDv2, imagefolder, csv). Each class with at least two images puts
   ``round(query_frac * n)`` of them (at least one, never all; default 20%) into the
   queries, chosen by a shuffle seeded with ``seed`` and the class; the rest go to the
   index. Single-image classes stay in the index as distractors. This is the rule of
   ``guie-train --eval holdout`` (:func:`guie.data.sampling.holdout_split`).

Options, applied in this order: ``max_classes`` keeps a seeded sample of that many classes
(queries and index alike; under rule 1 sampled among the query classes); ``max_queries``
keeps a seeded sample of that many queries (the index is unchanged); ``distractors`` adds that
many seeded images to the index, drawn from the source's images that are in neither set and
whose class is never queried (so also the classes ``max_classes`` left out, and other splits).
Classes are ``domain/label``, so equal labels in two domains never match. A query left with no
index image of its class is dropped and reported: mP@5 is undefined for it.

Why distractors: the host's index held 200,000 images for 5,000 queries, most of them unrelated
to any query. Images of never-queried classes cannot be relevant to a query, so they change no
query's n_q; they only compete for the top 5, as the host's index did.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from guie.data import load_source
from guie.data.records import Record
from guie.data.sampling import holdout_split
from guie.errors import GuieError

QUERY_SPLIT = "query"
INDEX_SPLITS = ("gallery", "index")
NO_MATCH = "no index image of its class"


@dataclass(frozen=True)
class TaskOptions:
    """How query and index sets are drawn where the dataset does not define them."""

    seed: int = 0
    query_frac: float = 0.2
    max_classes: int | None = None
    max_queries: int | None = None
    distractors: int = 0

    def validate(self) -> TaskOptions:
        if not 0.0 < self.query_frac < 1.0:
            raise GuieError(f"--query-frac must be between 0 and 1, got {self.query_frac}")
        if self.max_classes is not None and self.max_classes < 1:
            raise GuieError(f"--max-classes must be at least 1, got {self.max_classes}")
        if self.max_queries is not None and self.max_queries < 1:
            raise GuieError(f"--max-queries must be at least 1, got {self.max_queries}")
        if self.distractors < 0:
            raise GuieError(f"--distractors must be 0 or more, got {self.distractors}")
        return self


@dataclass
class RetrievalTask:
    """Queries and index of one task, with what was left out and why."""

    name: str
    spec: str
    rule: str
    query: list[Record]
    index: list[Record]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (query path, reason)
    skipped_rows: int = 0  # rows the source adapter skipped
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    distractors: int = 0  # index images added from never-queried classes

    def without(self, bad_paths: dict[str, str]) -> RetrievalTask:
        """This task without the images in ``bad_paths`` (path -> reason), re-dropping unmatched queries."""
        if not bad_paths:
            return self
        dropped = list(self.dropped) + [(r.path, bad_paths[r.path]) for r in self.query if r.path in bad_paths]
        index = [r for r in self.index if r.path not in bad_paths]
        query, lost = drop_unmatched([r for r in self.query if r.path not in bad_paths], index)
        return RetrievalTask(self.name, self.spec, self.rule, query, index, dropped + lost, self.skipped_rows,
                             dict(self.skipped_reasons), self.distractors)

    def summary(self) -> dict[str, Any]:
        reasons: dict[str, int] = {}
        for _, why in self.dropped:
            reasons[why] = reasons.get(why, 0) + 1
        return {
            "name": self.name, "spec": self.spec, "rule": self.rule,
            "queries": len(self.query), "index": len(self.index),
            "query_classes": len({r.class_key for r in self.query}),
            "index_classes": len({r.class_key for r in self.index}),
            "domains": sorted({r.domain for r in self.query}),
            "dropped_queries": len(self.dropped), "dropped_reasons": reasons,
            "dropped_examples": [{"path": p, "reason": why} for p, why in self.dropped[:20]],
            "skipped_rows": self.skipped_rows, "skipped_reasons": self.skipped_reasons,
            "distractors": self.distractors,
        }


def drop_unmatched(query: list[Record], index: list[Record]) -> tuple[list[Record], list[tuple[str, str]]]:
    """Split ``query`` into queries with at least one index image of their class, and the rest with a reason."""
    index_classes = {r.class_key for r in index}
    kept = [r for r in query if r.class_key in index_classes]
    lost = [(r.path, NO_MATCH) for r in query if r.class_key not in index_classes]
    return kept, lost


def _sample_classes(records: list[Record], among: list[Record], n: int | None, seed: int) -> list[Record]:
    if n is None:
        return records
    classes = sorted({r.class_key for r in among})
    if n >= len(classes):
        return records
    keep = set(random.Random(f"{seed}/eval-classes").sample(classes, n))
    return [r for r in records if r.class_key in keep]


def split_query_index(records: list[Record], options: TaskOptions) -> tuple[list[Record], list[Record], str]:
    """Queries, index and a one-line description of the rule used (see the module docstring)."""
    splits = {r.split for r in records}
    if QUERY_SPLIT in splits:
        index_splits = [s for s in INDEX_SPLITS if s in splits] or ["train"]
        records = _sample_classes(records, [r for r in records if r.split == QUERY_SPLIT], options.max_classes,
                                  options.seed)
        query = [r for r in records if r.split == QUERY_SPLIT]
        index = [r for r in records if r.split in index_splits]
        return query, index, f"dataset split: {QUERY_SPLIT} vs {'+'.join(index_splits)}"
    pool_name = "the test split" if "test" in splits else "all images"
    pool = [r for r in records if r.split == "test"] if "test" in splits else list(records)
    pool = _sample_classes(pool, pool, options.max_classes, options.seed)
    index_pos, query_pos = holdout_split(pool, options.query_frac, options.seed)
    rule = (f"seeded split of {pool_name}: {options.query_frac:g} of each class's images as queries "
            f"(seed {options.seed})")
    return [pool[i] for i in query_pos], [pool[i] for i in index_pos], rule


def add_distractors(records: list[Record], query: list[Record], index: list[Record], n: int, seed: int,
                    spec: str) -> list[Record]:
    """``n`` seeded records of ``records`` that are neither queries nor in ``index`` and whose class no query has.

    Raises GuieError when fewer than ``n`` such images exist.
    """
    if n == 0:
        return []
    used = {r.path for r in (*query, *index)}
    queried = {r.class_key for r in query}
    candidates = sorted({r.path: r for r in records if r.path not in used and r.class_key not in queried}.values(),
                        key=lambda r: r.path)
    if len(candidates) < n:
        raise GuieError(f"task {spec!r} has only {len(candidates)} images of never-queried classes outside its "
                        f"index; --distractors {n} needs {n} (lower it, or sample fewer classes with --max-classes)")
    return random.Random(f"{seed}/eval-distractors").sample(candidates, n)


def build_task(spec: str, options: TaskOptions = TaskOptions(), name: str | None = None) -> RetrievalTask:
    """Read ``spec`` with its adapter and form the task's query and index sets."""
    options.validate()
    source = load_source(spec)
    query, index, rule = split_query_index(source.records, options)
    query, dropped = drop_unmatched(query, index)
    if options.max_queries is not None and len(query) > options.max_queries:
        keep = sorted(random.Random(f"{options.seed}/eval-queries").sample(range(len(query)), options.max_queries))
        query = [query[i] for i in keep]
        rule += f"; {options.max_queries} queries sampled"
    if options.max_classes is not None:
        rule += f"; at most {options.max_classes} classes sampled"
    extra = add_distractors(source.records, query, index, options.distractors, options.seed, spec)
    if extra:
        index = index + extra
        rule += f"; {len(extra)} distractor images of never-queried classes added to the index"
    reasons: dict[str, int] = {}
    for _, why in source.skipped:
        reasons[why] = reasons.get(why, 0) + 1
    task = RetrievalTask(name or source.domain, spec, rule, query, index, dropped, len(source.skipped), reasons,
                         len(extra))
    if not task.query:
        raise GuieError(f"task {spec!r} has no usable query ({len(dropped)} dropped: {NO_MATCH}; rule: {rule}); "
                        "each query class needs at least one more image of its class in the index")
    if not task.index:
        raise GuieError(f"task {spec!r} has an empty index (rule: {rule}); check the dataset's splits")
    return task


def build_tasks(specs: list[str], options: TaskOptions = TaskOptions()) -> list[RetrievalTask]:
    """One task per spec, named after the source's domain (made unique with -2, -3, ...)."""
    if not specs:
        raise GuieError("no task given; pass --task PREFIX:PATH (e.g. --task food101:/data/food-101)")
    tasks: list[RetrievalTask] = []
    used: set[str] = set()
    for spec in specs:
        task = build_task(spec, options)
        name, n = task.name, 2
        while name in used:
            name, n = f"{task.name}-{n}", n + 1
        used.add(name)
        task.name = name
        tasks.append(task)
    return tasks
