"""What a source spec holds, for guie-data: images, classes, splits, domains, and skipped rows by reason."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from guie.data.records import SourceData


def _counts(pairs: list[tuple[str, str]]) -> dict[str, dict[str, int]]:
    images: Counter[str] = Counter()
    classes: dict[str, set[str]] = defaultdict(set)
    for group, class_key in pairs:
        images[group] += 1
        classes[group].add(class_key)
    return {g: {"images": images[g], "classes": len(classes[g])} for g in sorted(images)}


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
    """A JSON-ready summary of one loaded source."""
    return {
        "spec": data.spec,
        "domain": data.domain,
        "images": len(data.records),
        "classes": len({r.class_key for r in data.records}),
        "splits": _counts([(r.split, r.class_key) for r in data.records]),
        "domains": _counts([(r.domain, r.class_key) for r in data.records]),
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
    if summary["skipped"]:
        lines.append(f"  skipped  {summary['skipped']} rows:")
        for why, entry in summary["skipped_reasons"].items():
            lines.append(f"    {entry['count']} x {why} (e.g. {', '.join(entry['examples'])})")
    else:
        lines.append("  skipped  0 rows")
    return "\n".join(lines)
