"""File names as the file system gives them: bytes, which need not be UTF-8 text.

A disk written by an older Windows or macOS tool can hold a folder named with the Latin-1 bytes
``caf\\xe9``. Python hands such a name over as ``str`` with each undecodable byte carried as a lone
surrogate (``'caf\\udce9'``, PEP 383 "surrogateescape"); the file opens fine under that name, but
``str.encode()``, a strict UTF-8 stream and a UTF-8 CSV file all refuse it. guie keeps such names
as they are (the images stay readable and keep their identity) and goes through this module
wherever a name becomes bytes or is shown:

- :func:`name_bytes`: the name's bytes, for hashing and seeding (the same bytes as plain UTF-8
  for every valid name, so seeds and cache keys of ordinary names do not change).
- :func:`shown`: the name as one printable line, undecodable bytes as ``\\xNN`` (as ``repr`` of
  the name's bytes writes them) and control characters escaped, for messages and report lines;
  :func:`escape_undecodable` the same for a block of text (a CSV or Markdown report) that carries names,
  and :func:`display_text` for a terminal line (guie.cli.common.echo), where names quoted by ``repr``
  (``'caf\\udce9'``) show their bytes the same way (``'caf\\xe9'``).

JSON files (config.json, data.json, the cache journal) keep the exact name: Python's ``json``
writes a lone surrogate as the escape ``\\udce9`` and reads it back unchanged.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

ENCODING = "utf-8"
ERRORS = "surrogateescape"
# repr() of such a name writes each carried byte 0xNN as the escape \udcNN (a lone surrogate U+DC80..U+DCFF)
_REPR_ESCAPE = re.compile(r"\\udc([89a-fA-F][0-9a-fA-F])")


def name_bytes(name: str | os.PathLike) -> bytes:
    """The bytes of a file name (or any text holding one), as the file system stores them.

    UTF-8, with the surrogate escapes of undecodable bytes turned back into those bytes; never
    raises for a name Python got from the file system.
    """
    return os.fspath(name).encode(ENCODING, ERRORS)


def is_text(name: str | os.PathLike) -> bool:
    """True when the name is valid UTF-8 text (no undecodable bytes)."""
    try:
        os.fspath(name).encode(ENCODING)
    except UnicodeEncodeError:
        return False
    return True


def escape_undecodable(text: str) -> str:
    """``text`` (which may hold names) as valid UTF-8 text: each undecodable byte of a name as ``\\xNN``,
    everything else (newlines included) unchanged. For text files and lines that carry names."""
    return name_bytes(text).decode(ENCODING, "backslashreplace")


def display_text(text: str) -> str:
    """A message line for the terminal: undecodable bytes as ``\\xNN``, also where the message quotes a
    name with ``repr`` (which writes them ``\\udcNN``), so every message shows a name's bytes alike."""
    return _REPR_ESCAPE.sub(r"\\x\1", escape_undecodable(text))


def shown(name: str | os.PathLike) -> str:
    """``name`` as printable text for a message: valid names unchanged, each undecodable byte as
    ``\\xNN`` (``caf\\xe9``), and non-printable characters (newline, tab, ...) escaped as repr does."""
    text = escape_undecodable(os.fspath(name))
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def nearest_text_folder(folder: str | os.PathLike) -> Path:
    """``folder``, or its nearest parent whose path is valid text.

    torch's C++ file functions (``torch.jit.save``/``load``, ``torch.export``) take a path only as UTF-8
    text, so a temporary folder they write into is made here, then its files are moved into ``folder``.
    """
    path = Path(os.path.abspath(folder))
    return next(p for p in (path, *path.parents) if is_text(p))
