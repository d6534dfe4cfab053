"""Readers shared by the dataset adapters: CSV files with named columns, whitespace lists, JSON lists.

Text files are read as the tools that make them save them: a UTF-8 byte-order mark (Excel's
"CSV UTF-8") or a UTF-16 one (Excel's "Unicode Text") is honoured, CRLF line ends are fine,
and a CSV file's delimiter is whichever of ``,`` ``;`` tab ``|`` makes its header name the
columns asked for (Excel writes ``;`` in many locales). Header names are matched without regard
to case or surrounding spaces; rows of empty cells (trailing blank lines) are ignored.

Each reader turns a malformed file into a one-line GuieError naming the file, showing what was
found in a visible form (``repr``), and ending with the fix; rows that are individually
unusable are left to the adapter, which reports them as skipped.
"""
from __future__ import annotations

import codecs
import csv
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from guie.errors import GuieError

IMAGE_NOT_FOUND = "image file not found"
# One GLDv2 train_clean.csv cell lists every image of a landmark: thousands of ids, past csv's 128 KiB default.
csv.field_size_limit(2**31 - 1)
DELIMITERS = (",", ";", "\t", "|")
_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))


def text_encoding(path: Path) -> str:
    """The file's encoding by its byte-order mark: UTF-16 when it has one, else UTF-8 (mark or not)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    return next((enc for bom, enc in _BOMS if head.startswith(bom)), "utf-8-sig")


def _not_text(path: Path, what: str, encoding: str, fix: str) -> GuieError:
    """The first undecodable line of ``path``, shown as bytes, in a one-line error."""
    name = "UTF-16" if encoding == "utf-16" else "UTF-8"
    with open(path, "rb") as fh:
        data = fh.read()
    try:
        data.decode(encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        start = data.rfind(b"\n", 0, exc.start) + 1
        end = data.find(b"\n", exc.start)
        raw = data[start:end if end >= 0 else len(data)].rstrip(b"\r")
        shown = raw if len(raw) <= 80 else raw[:80] + b"..."
        return GuieError(f"{what} {str(path)!r} is not {name} text: line {line} holds {shown!r} "
                         f"({exc.reason} at byte {exc.start - start + 1} of the line); {fix}")
    return GuieError(f"{what} {str(path)!r} is not {name} text; {fix}")


def _open_text(path: Path) -> tuple[Any, str]:
    encoding = text_encoding(path)
    return open(path, newline="", encoding=encoding), encoding


def _columns(header_line: str, delimiter: str) -> list[str]:
    return [c.strip().lower() for c in next(csv.reader([header_line], delimiter=delimiter), [])]


def _pick_delimiter(header_line: str, required: Sequence[str]) -> tuple[str, list[str]]:
    """The delimiter under which the header names most of ``required`` (``,`` on a tie) and its columns."""
    best: tuple[int, str, list[str]] | None = None
    for delimiter in DELIMITERS:
        columns = _columns(header_line, delimiter)
        score = sum(1 for c in required if c in columns)
        if best is None or score > best[0]:
            best = (score, delimiter, columns)
    assert best is not None
    if best[0] == 0:  # no column asked for is there: show the header as a sniffer splits it
        try:
            delimiter = csv.Sniffer().sniff(header_line, delimiters="".join(DELIMITERS)).delimiter
            return delimiter, _columns(header_line, delimiter)
        except csv.Error:
            pass
    return best[1], best[2]


def describe_columns(columns: Sequence[str]) -> str:
    """Header names as found, quoted so that invisible characters show: ``'path', 'label'``."""
    return ", ".join(repr(c) for c in columns) if columns else "no header line"


def read_csv_rows(path: Path, required: Sequence[str], what: str,
                  fix: str = "pass the file as published") -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line number, row)`` of a CSV file whose header names at least ``required`` columns.

    Row keys are the lower-cased header names, values stripped; rows whose cells are all empty
    are not yielded. Problems are one-line GuieErrors ending with ``fix``.
    """
    fh, encoding = _open_text(path)
    try:
        with fh:
            header_line = fh.readline()
            delimiter, columns = _pick_delimiter(header_line, required)
            missing = [c for c in required if c not in columns]
            if missing:
                raise GuieError(f"{what} {str(path)!r} lacks column(s) {', '.join(missing)} "
                                f"(found: {describe_columns(columns)}); {fix}, with header {','.join(required)}")
            reader = csv.reader(fh, delimiter=delimiter)
            for cells in reader:
                values = [c.strip() for c in cells]
                if not any(values):
                    continue
                row = {name: (values[i] if i < len(values) else "") for i, name in enumerate(columns) if name}
                yield reader.line_num + 1, row
    except UnicodeDecodeError:
        raise _not_text(path, what, encoding, fix) from None
    except csv.Error as exc:
        raise GuieError(f"{what} {str(path)!r} is malformed CSV ({exc}); {fix}") from None


def csv_columns(path: Path, wanted: Sequence[str], what: str, fix: str = "pass the file as published") -> list[str]:
    """The lower-cased header names of a CSV file, split as read_csv_rows would split them for ``wanted``."""
    fh, encoding = _open_text(path)
    try:
        with fh:
            header_line = fh.readline()
    except UnicodeDecodeError:
        raise _not_text(path, what, encoding, fix) from None
    return _pick_delimiter(header_line, wanted)[1]


def read_lines(path: Path, what: str, fix: str = "pass the file as published") -> list[str]:
    """The lines of a text list file (byte-order mark and CRLF removed)."""
    encoding = text_encoding(path)
    try:
        return path.read_text(encoding=encoding).splitlines()
    except UnicodeDecodeError:
        raise _not_text(path, what, encoding, fix) from None


def _read_json(path: Path, what: str, kind: type, described: str) -> Any:
    fix = "pass the file as published"
    encoding = text_encoding(path)
    try:
        data = json.loads(path.read_text(encoding=encoding))
    except UnicodeDecodeError:
        raise _not_text(path, what, encoding, fix) from None
    except json.JSONDecodeError as exc:
        raise GuieError(f"{what} {str(path)!r} is not valid JSON ({exc}); {fix}") from None
    if not isinstance(data, kind):
        raise GuieError(f"{what} {str(path)!r} holds a {type(data).__name__}, not {described}; {fix}")
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
