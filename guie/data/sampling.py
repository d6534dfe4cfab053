"""Class downsampling and held-out splits: documented, seeded rules over records."""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from guie.data.records import Record
from guie.errors import GuieError
from guie.fsnames import name_bytes


@dataclass
class SampleReport:
    """What class sampling kept and dropped."""

    classes_available: int
    classes_eligible: int
    classes_kept: int
    images_kept: int
    images_capped: int


def group_by_class(records: list[Record]) -> dict[str, list[Record]]:
    """Records grouped by ``class_key``, each group sorted by path."""
    groups: dict[str, list[Record]] = defaultdict(list)
    for rec in records:
        groups[rec.class_key].append(rec)
    return {key: sorted(group, key=lambda r: r.path) for key, group in groups.items()}


def sample_classes(
    records: list[Record],
    num_classes: int | None,
    min_per_class: int = 1,
    max_per_class: int | None = None,
    seed: int = 0,
    domain_max_per_class: dict[str, int] | None = None,
) -> tuple[list[Record], SampleReport]:
    """Keep ``num_classes`` classes and cap each one's images.

    The rule: drop classes with fewer than ``min_per_class`` images; order the rest by image
    count, most first, breaking ties by a seeded shuffle; keep the first ``num_classes``
    (all when None). Because the order does not depend on ``num_classes``, a sweep's smaller
    class sets are subsets of its larger ones. Classes with more than ``max_per_class``
    images (or their domain's entry in ``domain_max_per_class``) keep a seeded random subset.
    Records come back grouped by class, in rank order.
    """
    groups = group_by_class(records)
    eligible = [key for key, group in groups.items() if len(group) >= min_per_class]
    rng = random.Random(seed)
    tie_break = {key: rng.random() for key in sorted(eligible)}
    ranked = sorted(eligible, key=lambda k: (-len(groups[k]), tie_break[k]))
    if num_classes is not None:
        if num_classes < 1:
            raise GuieError(f"--classes must be at least 1, got {num_classes}")
        if num_classes > len(ranked):
            raise GuieError(
                f"--classes {num_classes} asks for more classes than the data has: {len(ranked)} classes "
                f"with at least {min_per_class} images (of {len(groups)} in all); "
                f"use --classes {len(ranked)} or less, or lower --min-per-class"
            )
        ranked = ranked[:num_classes]
    kept: list[Record] = []
    capped = 0
    caps = domain_max_per_class or {}
    for key in ranked:
        group = groups[key]
        cap = caps.get(group[0].domain, max_per_class)
        if cap is not None and len(group) > cap:
            capped += len(group) - cap
            group = sorted(random.Random(name_bytes(f"{seed}/{key}")).sample(group, cap), key=lambda r: r.path)
        kept.extend(group)
    report = SampleReport(len(groups), len(eligible), len(ranked), len(kept), capped)
    return kept, report


def holdout_split(records: list[Record], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split record indices into (train, held-out) per class.

    Each class with at least two images puts ``round(fraction * n)`` of them (at least one,
    and never all) into the held-out set, chosen by a seeded shuffle; single-image classes
    stay in training. Every held-out image thus has at least one image of its class in training.
    """
    if not 0.0 < fraction < 1.0:
        raise GuieError(f"--holdout-frac must be between 0 and 1, got {fraction}")
    by_class: dict[str, list[int]] = defaultdict(list)
    for i, rec in enumerate(records):
        by_class[rec.class_key].append(i)
    train: list[int] = []
    held: list[int] = []
    for key in sorted(by_class):
        idx = by_class[key]
        if len(idx) < 2:
            train.extend(idx)
            continue
        order = list(idx)
        random.Random(name_bytes(f"{seed}/holdout/{key}")).shuffle(order)
        n_held = min(max(1, round(fraction * len(idx))), len(idx) - 1)
        held.extend(order[:n_held])
        train.extend(order[n_held:])
    return sorted(train), sorted(held)
