"""Readers shared by the dataset adapters: CSV files with named columns, whitespace lists, JSON lists.

Each reader turns a malformed file into a one-line GuieError naming the file and the fix; rows
that are individually unusable are left to the adapter, which reports them as skipped.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from guie.errors import GuieError

IMAGE_NOT_FOUND = "image file not found"


def read_csv_rows(path: Path, required: Sequence[str], what: str,
                  fix: str = "pass the file as published") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)`` of a CSV file whose header names at least ``required`` columns;
    problems are one-line GuieErrors ending with ``fix``."""
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in required if c not in columns]
            if missing:
                raise GuieError(
                    f"{what} {str(path)!r} lacks column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
                    f"{fix}, with header {','.join(required)}"
                )
            reader.fieldnames = columns
            for line, row in enumerate(reader, start=2):
                yield line, {k: (v or "").strip() for k, v in row.items() if k is not None}
    except UnicodeDecodeError as exc:
        raise GuieError(f"{what} {str(path)!r} is not UTF-8 text ({exc.reason}); {fix}") from None
    except csv.Error as exc:
        raise GuieError(f"{what} {str(path)!r} is malformed CSV ({exc}); {fix}") from None


def read_lines(path: Path, what: str) -> list[str]:
    """The lines of a text list file, trailing whitespace removed."""
    try:
        return [line.rstrip("\r\n") for line in path.read_text(encoding="utf-8").splitlines()]
    except UnicodeDecodeError as exc:
        raise GuieError(f"{what} {str(path)!r} is not UTF-8 text ({exc.reason}); pass the file as published") from None


def _read_json(path: Path, what: str, kind: type, described: str) -> Any:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise GuieError(f"{what} {str(path)!r} is not valid JSON ({exc}); pass the file as published") from None
    if not isinstance(data, kind):
        raise GuieError(f"{what} {str(path)!r} holds a {type(data).__name__}, not {described}; "
                        "pass the file as published")
    return data


def read_json_list(path: Path, what: str) -> list[Any]:
    """A JSON file holding a list (of objects)."""
    return _read_json(path, what, list, "a list of entries")


def read_json_dict(path: Path, what: str) -> dict[str, Any]:
    """A JSON file holding one object."""
    return _read_json(path, what, dict, "an object")


def where(path: Path, line: int | str) -> str:
    """A short location for a skipped row: ``file.txt:12``."""
    return f"{path.name}:{line}"
