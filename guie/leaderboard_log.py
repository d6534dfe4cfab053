"""leaderboard.jsonl: one JSON line per Kaggle submission of a model, kept beside the model.

guie-submit appends a line when it submits and completes it when Kaggle scores it (or reports an
error); guie-eval --leaderboard reads the latest scored line of each model. The file lives in the
run folder a package came from, or in the guie-package BUILD folder when the package came from a
bare export (submission.zip, saved_model.pt or an export folder); its name and both places are
``guie.artifacts``' (LEADERBOARD_FILE, leaderboard_files, leaderboard_path).

A line holds at least ``competition``, ``kernel`` (owner/slug), ``kernel_version`` (int or null),
``submission_ref`` (Kaggle's submission id), ``submitted_at`` (UTC, ISO 8601), ``status``
(``pending``, ``complete`` or ``error``), ``public_score`` and ``private_score`` (floats or null),
``model_sha256`` (of the submitted saved_model.pt). Lines written by hand need only ``status``,
a score and, for ordering, ``submitted_at``. Nothing from the environment (credentials included)
is ever written here. Each change rewrites the whole file atomically (guie.fileio), so a crash
leaves either the old file or the new one.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from guie.errors import GuieError
from guie.fileio import write_text

STATUSES = ("pending", "complete", "error")
RECORD_KEYS = ("competition", "kernel", "kernel_version", "submission_ref", "submitted_at", "status",
               "public_score", "private_score", "model_sha256")


def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a leaderboard.jsonl in file order; [] when the file does not exist.

    Blank lines are skipped. Raises GuieError naming the line when one is not a JSON object.
    """
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise GuieError(f"{str(path)!r} line {number} is not JSON ({exc}); fix or remove that line") from None
        if not isinstance(record, dict):
            raise GuieError(f"{str(path)!r} line {number} is not a JSON object; each line holds one submission")
        records.append(record)
    return records


def write_records(path: str | Path, records: list[dict[str, Any]]) -> None:
    """Replace ``path`` with ``records``, one compact JSON object per line, atomically."""
    write_text(path, "".join(json.dumps(r, sort_keys=False) + "\n" for r in records))


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    """Add ``record`` as the last line of ``path`` (created when missing), atomically."""
    write_records(path, [*read_records(path), record])


def update_record(path: str | Path, submission_ref: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """Apply ``changes`` to the (last) line of ``submission_ref`` and rewrite the file atomically; returns the line.

    Raises GuieError when no line has that submission_ref.
    """
    records = read_records(path)
    for record in reversed(records):
        if str(record.get("submission_ref")) == str(submission_ref):
            record.update(changes)
            write_records(path, records)
            return record
    raise GuieError(f"{str(path)!r} has no submission {submission_ref}")


def score_value(value: Any) -> float | None:
    """A score as a float, or None when absent or not a finite number (Kaggle sends scores as strings)."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def latest_scored(records: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recent record with status ``complete`` and a public or private score, or None.

    Most recent by ``submitted_at`` (ISO 8601 strings compare in time order), ties and missing
    dates by position in the file (later lines are newer).
    """
    scored = [(str(r.get("submitted_at") or ""), i, r) for i, r in enumerate(records)
              if r.get("status") == "complete"
              and (score_value(r.get("public_score")) is not None or score_value(r.get("private_score")) is not None)]
    return max(scored, key=lambda item: item[:2])[2] if scored else None
