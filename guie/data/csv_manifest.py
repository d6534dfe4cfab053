"""Adapter for ``csv:FILE``: columns path,label[,domain][,split].

Relative paths resolve against the CSV's folder and may not leave it (such rows are
skipped); absolute paths are taken as written.
"""
from __future__ import annotations

import csv
from pathlib import Path

from guie.data.records import Record, SourceData, register_source
from guie.errors import GuieError

REQUIRED_COLUMNS = ("path", "label")


@register_source("csv", "a CSV manifest with columns path,label[,domain][,split]")
def load_csv_manifest(file: str, spec: str) -> SourceData:
    csv_path = Path(file)
    if not csv_path.is_file():
        raise GuieError(f"CSV manifest {file!r} does not exist; pass a CSV file with columns path,label[,domain]")
    base = csv_path.resolve().parent
    default_domain = csv_path.stem
    records: list[Record] = []
    skipped: list[tuple[str, str]] = []
    try:
        with open(csv_path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise GuieError(
                    f"CSV manifest {file!r} lacks column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
                    "its header must name path,label and optionally domain,split"
                )
            reader.fieldnames = columns
            for line, row in enumerate(reader, start=2):
                where = f"{file}:{line}"
                rel = (row.get("path") or "").strip()
                label = (row.get("label") or "").strip()
                if not rel or not label:
                    skipped.append((where, "empty path or label"))
                    continue
                path = Path(rel)
                try:
                    if not path.is_absolute():
                        path = (base / path).resolve()
                        if not path.is_relative_to(base):
                            skipped.append((where, f"relative path leaves the CSV's folder: {rel}"))
                            continue
                    exists = path.is_file()
                except (OSError, ValueError):  # e.g. a NUL byte or an over-long name
                    skipped.append((where, "not a valid file path"))
                    continue
                if not exists:
                    skipped.append((where, f"image not found: {rel}"))
                    continue
                domain = (row.get("domain") or "").strip() or default_domain
                split = (row.get("split") or "").strip() or "train"
                records.append(Record(str(path), label, domain, split))
    except UnicodeDecodeError as exc:
        raise GuieError(f"CSV manifest {file!r} is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV") from None
    except csv.Error as exc:
        raise GuieError(f"CSV manifest {file!r} is malformed ({exc}); fix the file") from None
    return SourceData(spec, default_domain, records, skipped)
