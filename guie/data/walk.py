"""The one rule for what a folder of images holds, used by every reader that walks folders.

imagefolder (and the demo data), ObjectNet's class folders and guie-smoke ``--images`` all read a
folder's images through :func:`walk_images`. The rule:

- **Sub-folders** are read to any depth; an image belongs to the folder the caller walked
  (an imagefolder class folder), wherever below it it sits.
- **Symbolic links** are followed, to files and to folders, wherever they point
  (``catA/more -> /elsewhere/``). Each folder is read once per walk, by its identity on disk
  (``st_dev``, ``st_ino``): a link back to a folder above it (a loop) or a second link to a folder
  already read is left out, and so is a second path to a file already read (a link or hard link
  to the same image), so no image counts twice. Readers that walk several class folders share
  one :class:`Seen`, so this holds across the classes of a dataset too (``class0-again -> class0``
  at the top is left out, not read as a second class).
- **Hidden and operating-system litter is never an image**: names starting with ``.``
  (``.ipynb_checkpoints/``, ``.DS_Store``, macOS ``._*`` resource forks, ``.git/``), ``__MACOSX/``
  (macOS zip archives), ``Thumbs.db``, ``ehthumbs.db`` and ``desktop.ini`` (Windows Explorer),
  ``$RECYCLE.BIN/`` and ``System Volume Information/`` (Windows drives). Litter folders are not
  entered.
- **Files** count when their extension is an image format PIL reads (guie.data.records.IMAGE_EXTENSIONS).

Everything left out comes back with its reason (one entry per folder not entered, not one per
file inside it), so guie-data, guie-train's data.json and guie-smoke report it.
"""
from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from guie.data.records import is_image_file

HIDDEN_FOLDER = "hidden folder, not read"
HIDDEN_FILE = "hidden file"
LITTER = "operating-system litter, not an image"
BROKEN_LINK = "broken symbolic link"
LINK_LOOP = "symbolic link loop"
FOLDER_READ = "folder already read through another link"
FILE_READ = "file already read through another link"
NOT_READABLE = "folder cannot be read"
NOT_A_FILE = "not a regular file"
NOT_AN_IMAGE = "not an image file extension"

LITTER_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini"})  # matched without regard to case
LITTER_FOLDERS = frozenset({"__macosx", "$recycle.bin", "system volume information"})


def left_out(name: str, is_dir: bool) -> str | None:
    """Why an entry called ``name`` is never read as (or for) an image, or None when it may be."""
    if name.startswith("."):
        return HIDDEN_FOLDER if is_dir else HIDDEN_FILE
    if name.lower() in (LITTER_FOLDERS if is_dir else LITTER_FILES):
        return LITTER
    return None


def never_read(name: str) -> bool:
    """True for a name that is hidden or operating-system litter, as a file or as a folder."""
    return left_out(name, True) is not None or left_out(name, False) is not None


def folder_entries(folder: str | Path) -> tuple[list[tuple[Path, os.stat_result]], list[tuple[Path, str]]]:
    """One level of the rule: the entries of ``folder`` that may be read, in name order, each with its
    ``os.stat`` through any link; and the entries left out with their reason (hidden, litter, broken
    link, link loop). A folder that cannot be listed is one left-out entry itself."""
    kept: list[tuple[Path, os.stat_result]] = []
    skipped: list[tuple[Path, str]] = []
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError as exc:
        return kept, [(Path(folder), f"{NOT_READABLE} ({type(exc).__name__})")]
    for entry in entries:
        path = Path(entry.path)
        try:
            is_link = entry.is_symlink()
            info = os.stat(entry.path)  # follows links
        except OSError as exc:
            skipped.append((path, LINK_LOOP if exc.errno == errno.ELOOP else
                            BROKEN_LINK if is_link else f"{NOT_READABLE} ({type(exc).__name__})"))
            continue
        reason = left_out(entry.name, stat.S_ISDIR(info.st_mode))
        if reason:
            skipped.append((path, reason))
        else:
            kept.append((path, info))
    return kept, skipped


@dataclass
class Seen:
    """The folders and files (by ``st_dev, st_ino``) one reading has already taken: share one across the
    :func:`walk_images` calls of one dataset (its class folders), so a link at any level to something
    already read is left out once, not read as a second class."""

    folders: set[tuple[int, int]] = field(default_factory=set)
    files: set[tuple[int, int]] = field(default_factory=set)


def walk_images(root: str | Path, seen: Seen | None = None) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The image files below ``root`` by the module's rule, in path order, and what was left out.

    Returns ``(images, skipped)``: the images as paths below ``root`` (through the links, not
    resolved), and ``(path, reason)`` for every entry left out, reasons being this module's
    constants (a folder that cannot be read gets ``NOT_READABLE`` with the error's name). ``seen``:
    what earlier walks of the same dataset read (updated); ``root`` itself among them is left out
    whole as ``FOLDER_READ``.
    """
    images: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    root = Path(root)
    try:
        st = os.stat(root)
    except OSError as exc:
        return images, [(root, f"{NOT_READABLE} ({type(exc).__name__})")]
    seen = Seen() if seen is None else seen
    if (st.st_dev, st.st_ino) in seen.folders:
        return images, [(root, FOLDER_READ)]
    seen_folders, seen_files = seen.folders, seen.files
    seen_folders.add((st.st_dev, st.st_ino))

    def visit(folder: Path) -> None:
        entries, left = folder_entries(folder)
        skipped.extend(left)
        for path, info in entries:
            identity = (info.st_dev, info.st_ino)
            if stat.S_ISDIR(info.st_mode):
                if identity in seen_folders:
                    skipped.append((path, LINK_LOOP if _is_above(path, info) else FOLDER_READ))
                    continue
                seen_folders.add(identity)
                visit(path)
            elif not stat.S_ISREG(info.st_mode):
                skipped.append((path, NOT_A_FILE))
            elif not is_image_file(path):
                skipped.append((path, NOT_AN_IMAGE))
            elif info.st_ino and identity in seen_files:
                skipped.append((path, FILE_READ))
            else:
                if info.st_ino:  # 0 where a file system has no inode numbers: nothing to compare
                    seen_files.add(identity)
                images.append(path)

    visit(root)
    return images, skipped


def _is_above(path: Path, target: os.stat_result) -> bool:
    """Whether the folder ``path`` links to is one of the folders it sits in (a loop)."""
    for parent in path.parents:
        try:
            st = os.stat(parent)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            return True
    return False
