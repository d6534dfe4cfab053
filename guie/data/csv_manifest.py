"""Adapter for ``csv:FILE``: columns path,label[,domain][,split].

Relative paths resolve against the CSV's folder and may not leave it (such rows are
skipped); absolute paths are taken as written.
"""
from __future__ import annotations

from pathlib import Path

from guie.data.listfiles import read_csv_rows
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
    rows = read_csv_rows(csv_path, REQUIRED_COLUMNS, "CSV manifest",
                         fix="save it as UTF-8 CSV with columns path,label and optionally domain,split")
    for line, row in rows:
        where = f"{file}:{line}"
        rel, label = row.get("path", ""), row.get("label", "")
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
        records.append(Record(str(path), label, row.get("domain") or default_domain, row.get("split") or "train"))
    return SourceData(spec, default_domain, records, skipped)
