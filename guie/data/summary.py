"""What a source spec holds, for guie-data: images, classes, splits, domains, and skipped rows by reason."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from guie.data.records import SourceData


def _tally(data: SourceData) -> dict[str, Any]:
    """Images and distinct classes per split, per domain, per domain and split, and in all, in one pass.

    A record counts towards every class it belongs to (``SourceData.labels_of``); equal labels in two
    domains are two classes.
    """
    images: Counter[tuple[str, str]] = Counter()
    labels: dict[tuple[str, str], set[str]] = defaultdict(set)
    for i, r in enumerate(data.records):
        images[r.domain, r.split] += 1
        labels[r.domain, r.split].update(data.labels_of(i))
    by_domain: dict[str, set[str]] = defaultdict(set)
    for (domain, _), held in labels.items():
        by_domain[domain] |= held
    splits = sorted({s for _, s in images})
    domain_splits = {d: {s: {"images": images[d, s], "classes": len(labels[d, s])}
                         for s in splits if (d, s) in images} for d in sorted(by_domain)}
    return {
        "classes": sum(len(held) for held in by_domain.values()),
        "splits": {s: {"images": sum(images[d, s] for d in by_domain if (d, s) in images),
                       "classes": sum(len(labels[d, s]) for d in by_domain if (d, s) in labels)} for s in splits},
        "domains": {d: {"images": sum(c["images"] for c in domain_splits[d].values()),
                        "classes": len(by_domain[d])} for d in sorted(by_domain)},
        "domain_splits": domain_splits,
    }


def skipped_reasons(skipped: list[tuple[str, str]], examples: int = 3) -> dict[str, dict[str, Any]]:
    """``{reason: {"count": n, "examples": [first paths]}}`` of ``(path, reason)`` pairs, most frequent first."""
    reasons: dict[str, dict[str, Any]] = {}
    for where, why in skipped:
        entry = reasons.setdefault(why, {"count": 0, "examples": []})
        entry["count"] += 1
        if len(entry["examples"]) < examples:
            entry["examples"].append(where)
    return dict(sorted(reasons.items(), key=lambda kv: -kv[1]["count"]))


def format_skipped(skipped: list[tuple[str, str]], examples: int = 2) -> str:
    """One line of ``(path, reason)`` pairs: ``3 x hidden folder, not read (e.g. a, b); 1 x ...``."""
    return "; ".join(f"{entry['count']} x {why} (e.g. {', '.join(entry['examples'])})"
                     for why, entry in skipped_reasons(skipped, examples).items())


def summarize_source(data: SourceData, examples: int = 3) -> dict[str, Any]:
    """A JSON-ready summary of one loaded source: images, classes, and both per split, per domain and per
    domain and split (``domain_splits``); skipped rows grouped by reason with a few examples."""
    tally = _tally(data)
    return {
        "spec": data.spec,
        "domain": data.domain,
        "images": len(data.records),
        "classes": tally["classes"],
        "splits": tally["splits"],
        "domains": tally["domains"],
        "domain_splits": tally["domain_splits"],
        "skipped": len(data.skipped),
        "skipped_reasons": skipped_reasons(data.skipped, examples),
    }


def format_summary(summary: dict[str, Any]) -> str:
    """The text block guie-data prints for one source."""

    def groups(counts: dict[str, dict[str, int]]) -> str:
        return ", ".join(f"{name} {c['images']} ({c['classes']} classes)" for name, c in counts.items())

    lines = [f"{summary['spec']}  (domain {summary['domain']})",
             f"  images   {summary['images']}",
             f"  classes  {summary['classes']}",
             f"  splits   {groups(summary['splits'])}"]
    if len(summary["domains"]) > 1:
        lines.append(f"  domains  {groups(summary['domains'])}")
        if len(summary["splits"]) > 1:
            width = max(len(d) for d in summary["domain_splits"])
            lines += [f"    {d.ljust(width)}  {groups(c)}" for d, c in summary["domain_splits"].items()]
    if summary["skipped"]:
        lines.append(f"  skipped  {summary['skipped']} rows:")
        for why, entry in summary["skipped_reasons"].items():
            lines.append(f"    {entry['count']} x {why} (e.g. {', '.join(entry['examples'])})")
    else:
        lines.append("  skipped  0 rows")
    return "\n".join(lines)
