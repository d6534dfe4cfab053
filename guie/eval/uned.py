"""UnED evaluation by the paper's protocol: ``guie-eval MODEL --task uned:ROOT [--uned-split test|val]``.

The protocol, as the official code defines it (``dataset_infos.DATASET_INFO``'s ``knn`` entries and
``knn_utils.compute_knn_metrics``, github.com/nikosips/Universal-Image-Embeddings):

* **Queries and index** (:data:`PROTOCOL`): on the test split, each domain's ``test`` images are the
  queries; the index is the same ``test`` images with the query itself left out (cars, sop, inat,
  food2k, rp2k) or the domain's ``index`` split (inshop, gldv2, met). On the val split, ``val`` against
  itself (query left out), except met's ``val`` against ``small_index``.
* **Relevance**: an index image is relevant to a query when its label is one of the query's labels
  (``class_id`` may be a list) *and* it belongs to the query's domain. n_q is the number of such
  images in the index, less the query itself when it is left out.
* **Metrics** per domain: R@1 (the first neighbour is relevant), mMP@5 (relevant images among the
  first min(n_q, 5), divided by min(n_q, 5): the GUIE host's mP@5) and mAP@5 (the sum of P@r over the
  relevant ranks r <= 5, divided by min(n_q, 5)); each a mean over the domain's queries.
* **Settings**: ``separate``, each domain's queries against its own index; ``common``, every domain's
  queries against all the domains' indexes merged into one (the official README's standard
  protocol; 1,397,126 images on the test split), relevance and n_q still per domain. The headline is
  the unweighted mean over domains of the common setting.

Where guie differs, on purpose: the query is left out of its own index by identity (its own index
entry is removed from its neighbour list), where the official code drops rank 1. The two agree
whenever rank 1 is the query itself; they differ when another index image is as similar as the query
(an identical image filed under another class): dropping rank 1 then removes that image and counts
the query itself as a relevant hit. A query with no relevant index image (n_q = 0) is dropped and
reported, as guie-eval does on every task (the official code divides by zero there; UDON's code
scores it 0). Per-domain figures are not rounded (the official code rounds each to 3 decimals
before averaging). k-NN is exact, through :func:`guie.retrieval.knn.knn`.

:func:`retrieve` keeps, per setting and domain, every query's neighbour positions, similarities,
relevance and n_q (:class:`Retrieval`), for the report and for anything that shows the neighbours.
"""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from guie.data.records import Record
from guie.data.uned import DOMAIN_SEPARATOR, DOMAINS, IMAGE_FOLDERS, PREFIX, parse_root, read_uned
from guie.errors import GuieError
from guie.eval.retrieval_rows import TaskRetrieval
from guie.eval.tasks import NO_MATCH
from guie.retrieval.knn import knn
from guie.retrieval.metrics import average_precision_from_hits, precision_from_hits

K = 5
UNED_SPLITS = ("test", "val")
SETTINGS = ("separate", "common")
METRICS = (f"mMP@{K}", "R@1", f"mAP@{K}")
_SEPARATE_INDEX = ("inshop", "gldv2", "met")
# split -> domain -> (query split, index split); equal names: the query is left out of its own index.
PROTOCOL: dict[str, dict[str, tuple[str, str]]] = {
    "test": {d: ("test", "index" if d in _SEPARATE_INDEX else "test") for d in DOMAINS},
    "val": {d: ("val", "small_index" if d == "met" else "val") for d in DOMAINS},
}
REFUSED_OPTIONS = ("--max-classes and --distractors change UnED's fixed queries and index; leave them out for "
                   "uned: tasks (--max-queries N samples each domain's queries against the full index)")


def is_uned_spec(spec: str) -> bool:
    """True for a ``uned:...`` task spec."""
    return spec.partition(":")[0] == PREFIX


@dataclass
class DomainSets:
    """One domain's queries and index under the protocol, queries with no relevant index image removed.

    ``query_labels[i]`` are all labels of ``query[i]``; ``query_self[i]`` is the query's own position
    in ``index`` when it is left out of its own index, else -1; ``n_relevant[i]`` is its n_q.
    """

    domain: str
    query_split: str
    index_split: str
    query: list[Record]
    query_labels: list[tuple[str, ...]]
    query_self: np.ndarray  # (Q,) int64
    n_relevant: np.ndarray  # (Q,) int64
    index: list[Record]
    dropped: list[tuple[str, str]] = field(default_factory=list)  # (query path, reason)
    sampled_from: int | None = None  # usable queries before --max-queries sampled them

    @property
    def left_out(self) -> bool:
        return self.query_split == self.index_split

    def subset(self, rows: list[int], sampled_from: int | None = None) -> DomainSets:
        """These sets with only the queries at ``rows``; the index is unchanged."""
        return DomainSets(self.domain, self.query_split, self.index_split, [self.query[i] for i in rows],
                          [self.query_labels[i] for i in rows], self.query_self[rows], self.n_relevant[rows],
                          self.index, list(self.dropped), sampled_from)

    def without(self, bad_paths: dict[str, str]) -> DomainSets:
        """These sets without the images in ``bad_paths`` (path -> reason); n_q recounted, unmatched dropped."""
        keep = np.array([r.path not in bad_paths for r in self.index], dtype=bool)
        new_position = np.cumsum(keep) - 1
        rows = [i for i, r in enumerate(self.query) if r.path not in bad_paths]
        lost = [(r.path, bad_paths[r.path]) for r in self.query if r.path in bad_paths]
        self_pos = self.query_self[rows]
        self_pos = np.where(self_pos >= 0, new_position[np.maximum(self_pos, 0)], -1)
        return finish_sets(self.domain, self.query_split, self.index_split, [self.query[i] for i in rows],
                           [self.query_labels[i] for i in rows], self_pos,
                           [r for r, k in zip(self.index, keep, strict=True) if k], self.dropped + lost,
                           self.sampled_from)


def finish_sets(domain: str, query_split: str, index_split: str, query: list[Record],
                query_labels: list[tuple[str, ...]], query_self: np.ndarray, index: list[Record],
                dropped: list[tuple[str, str]], sampled_from: int | None = None) -> DomainSets:
    """DomainSets with n_q counted (index images of one of the query's labels, less its own entry) and the
    queries whose n_q is 0 moved to ``dropped``."""
    counts = Counter(r.label for r in index)
    n = np.array([sum(counts[label] for label in labels) for labels in query_labels], dtype=np.int64)
    n -= (query_self >= 0).astype(np.int64)  # its own entry, relevant to itself
    ok = n > 0
    lost = [(r.path, NO_MATCH) for r, good in zip(query, ok, strict=True) if not good]
    rows = np.flatnonzero(ok)
    return DomainSets(domain, query_split, index_split, [query[i] for i in rows], [query_labels[i] for i in rows],
                      query_self[rows], n[rows], index, dropped + lost, sampled_from)


@dataclass
class UnedTask:
    """A UnED evaluation: one split's protocol over the chosen domains (in the official order)."""

    name: str
    spec: str
    split: str
    domains: list[DomainSets]
    seed: int = 0
    max_queries: int | None = None
    skipped_rows: int = 0  # info-file entries the adapter skipped (missing images, malformed)
    skipped_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def rule(self) -> str:
        pairs = ", ".join(f"{d.domain} {d.query_split} vs {d.index_split}" + (" (query left out)" if d.left_out
                                                                              else "") for d in self.domains)
        rule = f"UnED {self.split} protocol: {pairs}; separate and common (merged) index"
        if self.max_queries is not None:
            rule += (f"; at most {self.max_queries} queries per domain sampled (seed {self.seed}): sampled figures, "
                     "not the benchmark's")
        return rule

    @property
    def queries(self) -> int:
        return sum(len(d.query) for d in self.domains)

    @property
    def index_size(self) -> int:
        """Images in the common index."""
        return sum(len(d.index) for d in self.domains)

    @property
    def dropped(self) -> list[tuple[str, str]]:
        return [item for d in self.domains for item in d.dropped]

    def paths(self) -> set[str]:
        """Every image the task embeds."""
        return {r.path for d in self.domains for r in (*d.query, *d.index)}

    def without(self, bad_paths: dict[str, str]) -> UnedTask:
        """This task without the images in ``bad_paths``; raises GuieError when a domain keeps no query."""
        if not bad_paths:
            return self
        task = UnedTask(self.name, self.spec, self.split, [d.without(bad_paths) for d in self.domains], self.seed,
                        self.max_queries, self.skipped_rows, dict(self.skipped_reasons))
        check_domains(task)
        return task

    def summary(self) -> dict[str, Any]:
        """The task's entry in the report's ``tasks`` (the keys of RetrievalTask.summary, plus the protocol)."""
        reasons = Counter(why for _, why in self.dropped)
        query_classes = {(d.domain, label) for d in self.domains for labels in d.query_labels for label in labels}
        return {
            "name": self.name, "spec": self.spec, "rule": self.rule,
            "queries": self.queries, "index": self.index_size,
            "query_classes": len(query_classes),
            "index_classes": len({r.class_key for d in self.domains for r in d.index}),
            "domains": [d.domain for d in self.domains],
            "dropped_queries": len(self.dropped), "dropped_reasons": dict(reasons),
            "dropped_examples": [{"path": p, "reason": why} for p, why in self.dropped[:20]],
            "skipped_rows": self.skipped_rows, "skipped_reasons": self.skipped_reasons,
            "distractors": 0,
            "uned_split": self.split,
            "protocol": {d.domain: {"query_split": d.query_split, "index_split": d.index_split,
                                    "query_left_out": d.left_out, "queries": len(d.query), "index": len(d.index)}
                         for d in self.domains},
        }


def check_domains(task: UnedTask) -> None:
    """Raise GuieError when a domain has no usable query or an empty index (its images are missing)."""
    for d in task.domains:
        if d.query and d.index:
            continue
        others = [x.domain for x in task.domains if x is not d]
        skip = (f" or leave {d.domain} out: {PREFIX}:ROOT:{DOMAIN_SEPARATOR.join(others)}" if others else "")
        raise GuieError(f"UnED {d.domain} has no usable {d.query_split} query against its {d.index_split} index "
                        f"({len(d.dropped)} queries dropped, {task.skipped_rows} info-file entries skipped in all); "
                        f"put its images in images/{IMAGE_FOLDERS[d.domain]}{skip}")


def build_uned_task(spec: str, split: str = "test", max_queries: int | None = None, seed: int = 0,
                    name: str = PREFIX) -> UnedTask:
    """Read the protocol's info files of ``spec`` (``uned:ROOT`` or ``uned:ROOT:cars+sop``) for ``split``
    and form each domain's queries and index.

    Only the splits the protocol names are read. ``max_queries`` keeps a seeded sample of that many of
    each domain's usable queries (the index is unchanged). Raises GuieError for an unknown split, an
    index image listed under several classes (the official code cannot count those either), or a
    domain left without queries.
    """
    if split not in PROTOCOL:
        raise GuieError(f"--uned-split must be one of {', '.join(UNED_SPLITS)}, got {split!r}")
    if max_queries is not None and max_queries < 1:
        raise GuieError(f"--max-queries must be at least 1, got {max_queries}")
    text = spec.partition(":")[2]
    _, domains = parse_root(text)
    protocol = {d: PROTOCOL[split][d] for d in domains}
    source = read_uned(text, spec, {d: sorted(set(pair)) for d, pair in protocol.items()})
    positions: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(source.records):
        positions.setdefault((r.domain, r.split), []).append(i)
    sets = []
    for domain, (query_split, index_split) in protocol.items():
        index_pos = positions.get((domain, index_split), [])
        multi = [i for i in index_pos if i in source.label_sets]
        if multi:
            first = source.records[multi[0]]
            raise GuieError(f"UnED info file {domain}/{index_split}.json lists {len(multi)} index image(s) under "
                            f"several classes (e.g. {first.path!r}: {', '.join(source.label_sets[multi[0]])}); its "
                            "index images have one class each; pass the info files as published")
        query_pos = positions.get((domain, query_split), [])
        index = [source.records[i] for i in index_pos]
        query = [source.records[i] for i in query_pos]
        left_out = query_split == index_split
        query_self = np.arange(len(query), dtype=np.int64) if left_out else np.full(len(query), -1, np.int64)
        domain_sets = finish_sets(domain, query_split, index_split, query,
                                  [source.labels_of(i) for i in query_pos], query_self, index, [])
        usable = len(domain_sets.query)
        if max_queries is not None and usable > max_queries:
            rows = sorted(random.Random(f"{seed}/uned-queries/{domain}").sample(range(usable), max_queries))
            domain_sets = domain_sets.subset(rows, sampled_from=usable)
        sets.append(domain_sets)
    task = UnedTask(name, spec, split, sets, seed, max_queries, len(source.skipped),
                    dict(Counter(why for _, why in source.skipped)))
    check_domains(task)
    return task


@dataclass
class Retrieval:
    """One domain's queries searched in one setting's index: what the metrics are computed from.

    ``neighbours[i, r]`` is the position in ``index`` of query i's rank-r neighbour (its own entry left
    out; -1 where the index has fewer images), ``similarities`` the cosine, ``relevant`` whether it is
    relevant; ``n_relevant[i]`` is n_q. In the common setting ``index`` is the merged index, shared by
    every domain's Retrieval.
    """

    setting: str
    domain: str
    query: list[Record]
    query_labels: list[tuple[str, ...]]
    index: list[Record]
    neighbours: np.ndarray  # (Q, K) int64
    similarities: np.ndarray  # (Q, K) float32
    relevant: np.ndarray  # (Q, K) bool
    n_relevant: np.ndarray  # (Q,) int64

    def scores(self) -> dict[str, Any]:
        """{"queries", "index", "mMP@5", "R@1", "mAP@5"} for this domain and setting."""
        return {"queries": len(self.query), "index": len(self.index),
                f"mMP@{K}": float(precision_from_hits(self.relevant, self.n_relevant, K).mean()),
                "R@1": float(self.relevant[:, 0].mean()),
                f"mAP@{K}": float(average_precision_from_hits(self.relevant, self.n_relevant, K).mean())}


def search_leaving_out(index_vectors: np.ndarray, query_vectors: np.ndarray,
                       query_self: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The K nearest index positions and similarities ((Q, K) int64, float32) of each query, its own entry
    ``query_self[i]`` (-1: none) removed by identity: K + 1 are searched, the own entry (wherever it ranks)
    or else the last is dropped."""
    leave_out = bool((query_self >= 0).any())
    sims, ids = knn(index_vectors, query_vectors, K + 1 if leave_out else K)
    if leave_out:
        own = (ids == query_self[:, None]) & (query_self[:, None] >= 0)
        order = np.argsort(own, axis=1, kind="stable")  # the own entry moves last, the rest keep their ranks
        ids = np.take_along_axis(ids, order, axis=1)[:, :K]
        sims = np.take_along_axis(sims, order, axis=1)[:, :K]
    return ids, sims


def relevance(neighbours: np.ndarray, domain: str, query_labels: list[tuple[str, ...]],
              index_class: np.ndarray, class_ids: dict[tuple[str, str], int]) -> np.ndarray:
    """(Q, K) bool: neighbour ``neighbours[i, r]`` has one of query i's labels in the query's ``domain``.

    ``index_class[j]`` is index image j's class number in ``class_ids`` ((domain, label) -> int), so the
    domain takes part: equal labels in two domains never match.
    """
    width = max((len(labels) for labels in query_labels), default=1)
    wanted = np.full((len(query_labels), width), -1, dtype=np.int64)
    for i, labels in enumerate(query_labels):
        for j, label in enumerate(labels):
            wanted[i, j] = class_ids.get((domain, label), -1)
    got = np.where(neighbours >= 0, index_class[np.maximum(neighbours, 0)], -2)
    return (got[:, :, None] == wanted[:, None, :]).any(axis=2)


def _search(setting: str, sets: list[DomainSets], index: list[Record], offsets: list[int], vectors: np.ndarray,
            position: dict[str, int]) -> dict[str, Retrieval]:
    """Every domain of ``sets`` searched in ``index`` (domain d's own index starting at ``offsets[d]``)."""
    class_ids: dict[tuple[str, str], int] = {}
    index_class = np.array([class_ids.setdefault((r.domain, r.label), len(class_ids)) for r in index], np.int64)
    xb = vectors[[position[r.path] for r in index]]
    queries = [r for d in sets for r in d.query]
    own = np.concatenate([np.where(d.query_self >= 0, d.query_self + offset, -1) for d, offset in
                          zip(sets, offsets, strict=True)]) if sets else np.zeros(0, np.int64)
    ids, sims = search_leaving_out(xb, vectors[[position[r.path] for r in queries]], own)
    out = {}
    start = 0
    for d in sets:
        rows = slice(start, start + len(d.query))
        start += len(d.query)
        out[d.domain] = Retrieval(setting, d.domain, d.query, d.query_labels, index, ids[rows], sims[rows],
                                  relevance(ids[rows], d.domain, d.query_labels, index_class, class_ids),
                                  d.n_relevant)
    return out


def retrieve(task: UnedTask, vectors: np.ndarray, position: dict[str, int]) -> dict[str, dict[str, Retrieval]]:
    """setting -> domain -> Retrieval; ``vectors[position[path]]`` is an image's unit embedding (float32)."""
    separate: dict[str, Retrieval] = {}
    for d in task.domains:
        separate.update(_search("separate", [d], d.index, [0], vectors, position))
    merged = [r for d in task.domains for r in d.index]
    offsets = list(np.cumsum([0] + [len(d.index) for d in task.domains[:-1]]))
    return {"separate": separate, "common": _search("common", task.domains, merged, offsets, vectors, position)}


def guie_metrics(scores: dict[str, Any]) -> dict[str, float]:
    """The paper's names as guie-eval's: mMP@5 is the host's mP@5, R@1 is P@1."""
    return {f"mP@{K}": scores[f"mMP@{K}"], "P@1": scores["R@1"], f"mAP@{K}": scores[f"mAP@{K}"]}


def _with_mean(rows: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    mean = {m: float(np.mean([row[m] for row in rows.values()])) for m in METRICS}
    return {**rows, "mean": {**mean, "domains": len(rows)}}


def evaluate_uned(task: UnedTask, vectors: np.ndarray,
                  position: dict[str, int]) -> tuple[dict[str, Any], dict[str, dict[str, Retrieval]]]:
    """One model's result row for the report, and the retrievals behind it.

    The row has guie-eval's keys, from the common setting (mP@5 = mean mMP@5, P@1 = mean R@1, mAP@5,
    ``domains`` per domain), and ``uned``: ``{"split", "sampled", "separate": {<domain>: {"queries",
    "index", "mMP@5", "R@1", "mAP@5"}, ..., "mean": {..., "domains"}}, "common": {...}}``.
    """
    retrievals = retrieve(task, vectors, position)
    uned: dict[str, Any] = {"split": task.split,
                            "sampled": None if task.max_queries is None else
                            {"max_queries": task.max_queries, "seed": task.seed,
                             "from": {d.domain: d.sampled_from or len(d.query) for d in task.domains}}}
    for setting in SETTINGS:
        uned[setting] = _with_mean({d: r.scores() for d, r in retrievals[setting].items()})
    common = uned["common"]
    row: dict[str, Any] = {**guie_metrics(common["mean"]), "queries": task.queries, "index": task.index_size}
    if len(task.domains) > 1:
        row["domains"] = [{"domain": d, **guie_metrics(common[d]), "queries": common[d]["queries"]}
                          for d in retrievals["common"]]
    row["uned"] = uned
    return row, retrievals


def gallery_retrieval(task_name: str, model: str, common: dict[str, Retrieval]) -> TaskRetrieval:
    """The common setting of a UnED task as one :class:`TaskRetrieval` (what guie-eval --gallery shows): every
    domain's queries, in the official domain order, against the merged index they share.

    Labels read ``domain/class`` (``gldv2/12+gldv2/40`` for a query of two classes); relevance and n_q are
    the protocol's (same domain, one of the query's labels), each query's score is its mMP@5, and each
    query weighs 1 / (domains x its domain's queries), so the page's mP@5 and P@1 are the task's headline (the
    unweighted mean over domains). Raises ValueError when the domains do not share one merged index.
    """
    parts = list(common.values())
    index = parts[0].index
    if any(r.index is not index and r.index != index for r in parts[1:]):
        raise ValueError(f"UnED task {task_name}: the common setting's domains do not share one merged index")
    relevant = np.concatenate([r.relevant for r in parts]) if parts else np.zeros((0, K), bool)
    n_relevant = np.concatenate([r.n_relevant for r in parts]) if parts else np.zeros(0, np.int64)
    return TaskRetrieval(
        task_name, model,
        [q.path for r in parts for q in r.query],
        ["+".join(f"{r.domain}/{label}" for label in labels) for r in parts for labels in r.query_labels],
        [x.path for x in index], [f"{x.domain}/{x.label}" for x in index],
        np.concatenate([r.neighbours for r in parts]), np.concatenate([r.similarities for r in parts]),
        relevant, n_relevant, precision_from_hits(relevant, n_relevant, K).astype(np.float64),
        np.concatenate([np.full(len(r.query), 1.0 / (len(parts) * len(r.query))) for r in parts]))
