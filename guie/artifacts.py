"""The files every stage writes, what a path on disk is, and the one way to open each.

Names: every file and folder name of the chain is spelled once, here (the model card and the
notebook's text may say them in prose). What a path is: :func:`identify`, which every command
taking a model path goes through. Opening: :func:`extract_saved_model` (the one unzip of a
submission.zip), :func:`load_torchscript` (the one TorchScript loader), :func:`read_report`
(verify.json, eval.json, config.json, uploaded.json as dicts); a run's model.pt is read by
``guie.model.model_file.read_model_file``, which finds it through :func:`identify`.

The file rules are the archives' own layouts, as torch 2.14.1 writes them (tests/test_artifacts.py
makes each with the real tool):

- ``torch.jit.save``: a zip whose entries all sit under one top folder ``R/`` (torch's
  PyTorchStreamReader requires one), holding ``R/data.pkl`` (the pickled module),
  ``R/constants.pkl`` and ``R/code/``. torch itself takes a zip for TorchScript when it holds
  ``constants.pkl`` (``torch.serialization._is_torchscript_zip``); guie asks for ``data.pkl`` too.
- ``torch.save``: the same one-folder zip with ``R/data.pkl`` and no ``R/constants.pkl``.
- ``torch.export.save``: ``R/archive_format`` holding ``pt2`` (torch.export's ``is_pt2_package``);
  torch 2.1 to 2.5 wrote ``serialized_exported_program.json`` at the zip's root instead.
- ``submission.zip``: ``saved_model.pt`` at the zip's root and nothing else (the host's layout,
  DESIGN.md); the file inside is checked when it is taken out (:func:`extract_saved_model`).

A run folder holds config.json or model.pt; an export folder saved_model.pt, submission.zip or
saved_model.pt2; a guie-package build folder dataset/dataset-metadata.json or
kernel/kernel-metadata.json. This module imports only the standard library at import time
(torch inside the loader), so every stage may use it.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import re
import tempfile
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guie.errors import GuieError
from guie.fileio import file_sha256
from guie.fsnames import is_text

if TYPE_CHECKING:
    import torch

# ---- names ---------------------------------------------------------------------------------------------------------

# A guie-train run folder (guie.train.run writes it).
RUN_CONFIG = "config.json"  # the resolved run configuration
RUN_MODEL = "model.pt"  # the finished run's model file (guie.model.model_file)
RUN_CHECKPOINT = "checkpoint.pt"  # the last finished epoch, for --resume
RUN_METRICS = "metrics.jsonl"  # one line per epoch
RUN_DATA_REPORT = "data.json"  # what the data sources held and what was skipped
RUN_CLASSES = "classes.json"  # the class map
RUN_EVAL = "eval.json"  # the run's own evaluation
SWEEP_CONFIG = "sweep.json"  # a class-count sweep's folder: its config and counts
SWEEP_RUN_PREFIX = "classes-"  # a sweep's run folders: SWEEP/classes-N
SWEEP_REPORT_DIR = "report"  # the sweep's comparison report

# guie-export's output folder (RUN/export by default; BUILD/export for a packaged run folder).
EXPORT_DIR = "export"
SAVED_MODEL = "saved_model.pt"  # the TorchScript submission file
SAVED_PROGRAM = "saved_model.pt2"  # a torch.export program (guie-export --program)
SUBMISSION_ZIP = "submission.zip"  # saved_model.pt at its root, nothing else
VERIFY_REPORT = "verify.json"  # the export's checks; guie-compat adds its matrix
EXPORT_STAGING_PREFIX = ".guie-export-"  # the export's temporary folder beside OUT's files (guie.fileio.staging_folder)

# guie-eval --out (guie.eval.report, guie.eval.gallery).
GALLERY_DIR = "gallery"  # --gallery N: index.html, one page and one PNG per task, thumbs/
GALLERY_INDEX = "index.html"
GALLERY_THUMBS = "thumbs"  # one JPEG per image shown

# guie-submit's record of a model's Kaggle scores (guie.leaderboard_log).
LEADERBOARD_FILE = "leaderboard.jsonl"

# A guie-package BUILD folder.
DATASET_DIR = "dataset"  # the Kaggle dataset: saved_model.pt, README.md, dataset-metadata.json
KERNEL_DIR = "kernel"  # the Kaggle notebook and kernel-metadata.json
SMOKE_DIR = "smoke"  # guie-smoke's report
MODEL_CARD = "README.md"  # the dataset's description
UPLOAD_RECORD = "uploaded.json"  # what was last uploaded from BUILD
NOTEBOOK_LOG = "notebook.log"  # the log of a failed Kaggle notebook run
DATASET_METADATA = "dataset-metadata.json"  # what `kaggle datasets create -p` reads
OLD_DATASET_METADATA = "datapackage.json"  # the name older kaggle clients wrote
DATASET_METADATA_NAMES = (DATASET_METADATA, OLD_DATASET_METADATA)  # the client reads the first that exists
KERNEL_METADATA = "kernel-metadata.json"  # what `kaggle kernels push -p` reads
PACKAGE_STAGING_PREFIX = ".guie-package-"  # guie-package's temporary folder inside BUILD

# Files named by the stage that wrote them: a model so named is called after its folder.
GENERIC_NAMES = frozenset({RUN_MODEL, SAVED_MODEL, SAVED_PROGRAM, SUBMISSION_ZIP})
LEGACY_PROGRAM_ENTRY = "serialized_exported_program.json"  # torch.export.save of torch 2.1 to 2.5

# ---- kinds ---------------------------------------------------------------------------------------------------------

RUN_FOLDER = "run folder"
CHECKPOINT = "checkpoint"  # a torch.save archive, e.g. a run's model.pt
TORCHSCRIPT = "TorchScript file"
PROGRAM = "torch.export program"
SUBMISSION = "submission.zip"
EXPORT_FOLDER = "export folder"
BUILD_FOLDER = "package build folder"
KINDS = (RUN_FOLDER, CHECKPOINT, TORCHSCRIPT, PROGRAM, SUBMISSION, EXPORT_FOLDER, BUILD_FOLDER)


@dataclass(frozen=True)
class Artifact:
    """What a path is: its ``kind`` (one of KINDS), the path, and the model file a loader opens.

    ``model_file`` is RUN/model.pt for a run folder, the export's saved_model.pt (else its
    submission.zip, else its saved_model.pt2) for an export folder, BUILD/dataset/saved_model.pt for
    a build folder, and the path itself for a file; ``model_kind`` says which of CHECKPOINT,
    TORCHSCRIPT, PROGRAM or SUBMISSION that file is (a run folder's model.pt is not opened here).
    """

    kind: str
    path: Path
    model_file: Path
    model_kind: str

    @property
    def folder(self) -> Path:
        """The folder the artifact is (a folder kind) or lies in (a file)."""
        return self.path if self.path.is_dir() else self.path.parent

    @property
    def run_folder(self) -> Path | None:
        """The guie-train run folder this is or belongs to (a model.pt beside a config.json), else None."""
        if self.kind == RUN_FOLDER:
            return self.path
        if self.kind == CHECKPOINT and self.path.name == RUN_MODEL and (self.path.parent / RUN_CONFIG).is_file():
            return self.path.parent
        return None

    @property
    def name(self) -> str:
        """A display name: the folder's name for a folder or a file named by its stage (saved_model.pt, ...),
        else the file's stem."""
        if self.path.is_dir():
            return self.path.resolve().name
        return self.path.resolve().parent.name if self.path.name in GENERIC_NAMES else self.path.stem


# ---- what a command takes, and the words of its refusals -----------------------------------------------------------


@dataclass(frozen=True)
class Takes:
    """The kinds a command takes as a model path, and how its refusals read.

    A refusal is one line, ``WORDING[situation]`` (or the command's own ``wording`` for it) filled
    with ``path``, ``quoted`` (the path in quotes), ``noun`` (what the command takes, in a few
    words), ``passes`` (what to pass instead), ``files`` (what a folder it takes holds) and
    ``hint`` (what else the folder is). Situations: the refused kinds, and "missing", "not-zip",
    "bad-zip", "zip-without-model", "zip-with-more", "folder", "unfinished-run", "empty-build".
    ``wording`` replaces a template where a command has always said it otherwise (guie-package's
    checkpoint and folder lines, guie-export's empty folder: their tests pin those words).
    """

    kinds: frozenset[str]
    noun: str
    passes: str
    files: str
    wording: Mapping[str, str] = field(default_factory=dict)


WORDING = {
    "missing": "{path} does not exist; {passes}",
    "not-zip": "{path} is not {noun} (not a zip archive); {passes}",
    "bad-zip": "{path} is not a readable zip archive ({reason}); {passes}",
    "zip-without-model": "{path} holds no saved_model.pt at its root and is no torch archive (found: {found}); "
                         "a submission.zip holds saved_model.pt at its root and nothing else",
    "zip-with-more": "{path} holds {names}; a submission.zip holds only saved_model.pt at its root",
    "folder": "{path} holds no {files}{hint}; {passes}",
    "unfinished-run": "run folder {path} has no model.pt (its training did not finish); finish it with "
                      "guie-train --resume --out {path}",
    "empty-build": "build folder {path} has no dataset/saved_model.pt; build it again with guie-package",
    RUN_FOLDER: "{path} holds no {files}{hint}; {passes}",
    CHECKPOINT: "{path} is a torch checkpoint (torch.save), not TorchScript (torch.jit.save); export the run with "
                "guie-export and pass its saved_model.pt",
    TORCHSCRIPT: "{path} is a TorchScript file (torch.jit.save), not {noun}; {passes}",
    PROGRAM: "{path} is a torch.export program (guie-export --program), not {noun}: it loads with torch.export.load "
             "in the torch that made it or newer; {passes}",
    SUBMISSION: "{path} is a submission.zip, not {noun}; {passes}",
    EXPORT_FOLDER: "{path} is an export folder, not {noun}; {passes}",
    BUILD_FOLDER: "{path} is a guie-package build folder, not {noun}; {passes}",
}

ANYTHING = Takes(frozenset(KINDS), "a file guie writes",
                 "pass a guie-train run folder or its model.pt, a saved_model.pt, a saved_model.pt2, a submission.zip, "
                 "an export folder or a guie-package build folder", "model.pt, saved_model.pt or submission.zip")
# guie-compat: a TorchScript file to load in other torch releases.
TAKES_TORCHSCRIPT = Takes(frozenset({TORCHSCRIPT, SUBMISSION, EXPORT_FOLDER}), "a TorchScript file",
                          "pass a saved_model.pt, a submission.zip or an export folder",
                          "saved_model.pt or submission.zip")
# guie-eval: a model it embeds with, eagerly (run folder, model.pt) or as the host did (TorchScript).
TAKES_EVAL_MODEL = Takes(frozenset({RUN_FOLDER, CHECKPOINT, TORCHSCRIPT, SUBMISSION, EXPORT_FOLDER}), "a model file",
                         "pass a guie-train run folder, its model.pt, a TorchScript saved_model.pt or a submission.zip",
                         "model.pt or saved_model.pt")
# guie-package: a SOURCE to ship (a run folder is exported on the way).
TAKES_PACKAGE_SOURCE = Takes(
    frozenset({RUN_FOLDER, TORCHSCRIPT, SUBMISSION, EXPORT_FOLDER}),
    "a submission.zip, an export folder (saved_model.pt) or a guie-train run folder (model.pt + config.json)",
    "pass one of those", "saved_model.pt, submission.zip or model.pt",
    wording={"folder": "{path} is not {noun}; {passes}",
             CHECKPOINT: "{path} is a torch checkpoint, not TorchScript (torch.jit.save); export the run with "
                         "guie-export and package its saved_model.pt"})
# guie-export and the model.pt reader: a finished guie-train run.
TAKES_RUN = Takes(
    frozenset({RUN_FOLDER, CHECKPOINT}), "a guie model file", "pass a guie-train run folder or its model.pt", "model.pt",
    wording={"folder": "no model.pt in {quoted}; pass a finished guie-train run folder (a killed run finishes with "
                       "guie-train --resume --out RUN)"})


def refusal(situation: str, path: Path, takes: Takes, **details: str) -> GuieError:
    """The one-line GuieError for ``path`` in ``situation`` (a kind ``takes`` does not take, or one of the
    situations named in :class:`Takes`), worded for ``takes``."""
    template = takes.wording.get(situation) or WORDING[situation]
    return GuieError(template.format(path=path, quoted=repr(str(path)), noun=takes.noun, passes=takes.passes,
                                     files=takes.files, **{"hint": "", **details}))


# ---- what a path is ------------------------------------------------------------------------------------------------


def archive_root(names: list[str]) -> str | None:
    """The one top folder every entry of a torch archive sits under, or None when there is none."""
    if not names or "/" not in names[0]:
        return None
    root = names[0].split("/", 1)[0]
    return root if all(name.startswith(root + "/") for name in names) else None


def archive_kind(archive: zipfile.ZipFile) -> str | None:
    """TORCHSCRIPT, CHECKPOINT or PROGRAM by the open zip's layout (module docstring), else None.

    The one test of what a torch file is: every other check in guie asks this function."""
    names = archive.namelist()
    root = archive_root(names)
    if root is not None:
        present = set(names)
        if f"{root}/data.pkl" in present and f"{root}/constants.pkl" in present:
            return TORCHSCRIPT
        if f"{root}/archive_format" in present and archive.read(f"{root}/archive_format").strip() == b"pt2":
            return PROGRAM
        if f"{root}/data.pkl" in present:
            return CHECKPOINT
    if LEGACY_PROGRAM_ENTRY in names:
        return PROGRAM
    return None


def file_kind(path: Path, takes: Takes = ANYTHING) -> str:
    """What the file ``path`` is: TORCHSCRIPT, CHECKPOINT, PROGRAM or SUBMISSION. Raises the GuieError of
    ``takes`` when it is none of them (not a zip, unreadable, a zip of something else, a zip holding more
    than saved_model.pt)."""
    if not zipfile.is_zipfile(path):
        raise refusal("not-zip", path, takes)
    try:
        with zipfile.ZipFile(path) as zf:
            kind = archive_kind(zf)
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise refusal("bad-zip", path, takes, reason=str(exc)) from None
    if kind is not None:
        return kind
    if SAVED_MODEL not in names:
        raise refusal("zip-without-model", path, takes, found=", ".join(names[:5]) or "nothing")
    if not is_submission_layout(names):
        raise refusal("zip-with-more", path, takes, names=str(names))
    return SUBMISSION


def is_submission_layout(names: list[str]) -> bool:
    """Whether a zip whose entries are ``names`` (``ZipFile.namelist()``, in order) has the submission.zip
    layout: ``saved_model.pt`` at its root and nothing else, once (the host's layout, DESIGN.md). The one
    rule guie-compat and guie-package (through :func:`identify`) and guie-smoke's zip-layout check apply;
    the file inside is checked when it is taken out (:func:`extract_saved_model`)."""
    return names == [SAVED_MODEL]


def folder_kind(folder: Path) -> str | None:
    """RUN_FOLDER, EXPORT_FOLDER or BUILD_FOLDER by the names the folder holds, else None."""
    if (folder / RUN_CONFIG).is_file() or (folder / RUN_MODEL).is_file():
        return RUN_FOLDER
    if any((folder / name).is_file() for name in (SAVED_MODEL, SUBMISSION_ZIP, SAVED_PROGRAM)):
        return EXPORT_FOLDER
    if any((folder / DATASET_DIR / name).is_file() for name in DATASET_METADATA_NAMES) \
            or (folder / KERNEL_DIR / KERNEL_METADATA).is_file():
        return BUILD_FOLDER
    return None


def _folder_hint(folder: Path) -> str:
    if (folder / EXPORT_DIR / SAVED_MODEL).is_file():
        return f" (a run folder: its export is {folder / EXPORT_DIR})"
    return " (a guie-train run folder: export it with guie-export first)" if folder_kind(folder) == RUN_FOLDER else ""


def identify(path: str | Path, takes: Takes = ANYTHING) -> Artifact:
    """What ``path`` is, for a command that takes ``takes``: an :class:`Artifact`.

    A run's model.pt (beside its config.json) stands for its run folder when the command takes run
    folders but not checkpoints (guie-package). The model file inside a folder is classified too (a
    run folder's model.pt is left to its reader). Raises GuieError, one line saying what the path is
    and what to pass instead, when it is missing, none of the kinds, or a kind ``takes`` refuses.
    """
    path = Path(path)
    if path.is_dir():
        kind = folder_kind(path)
    elif path.is_file():
        kind = file_kind(path, takes)
    else:
        raise refusal("missing", path, takes)
    if kind == CHECKPOINT and CHECKPOINT not in takes.kinds and RUN_FOLDER in takes.kinds \
            and path.name == RUN_MODEL and (path.parent / RUN_CONFIG).is_file():
        path, kind = path.parent, RUN_FOLDER
    if kind is None:
        raise refusal("folder", path, takes, hint=_folder_hint(path))
    if kind not in takes.kinds:
        raise refusal(kind, path, takes, hint=_folder_hint(path) if kind == RUN_FOLDER else "")
    if kind == RUN_FOLDER:
        if not (path / RUN_MODEL).is_file():
            raise refusal("unfinished-run", path, takes)
        return Artifact(kind, path, path / RUN_MODEL, CHECKPOINT)
    if kind == EXPORT_FOLDER:
        model = next(path / n for n in (SAVED_MODEL, SUBMISSION_ZIP, SAVED_PROGRAM) if (path / n).is_file())
        inner = file_kind(model, takes)
        if inner not in (TORCHSCRIPT, SUBMISSION, PROGRAM) or (inner == PROGRAM and PROGRAM not in takes.kinds):
            raise refusal(inner, model, takes)
        return Artifact(kind, path, model, inner)
    if kind == BUILD_FOLDER:
        model = path / DATASET_DIR / SAVED_MODEL
        if not model.is_file():
            raise refusal("empty-build", path, takes)
        inner = file_kind(model, takes)
        if inner != TORCHSCRIPT:
            raise refusal(inner, model, takes)
        return Artifact(kind, path, model, inner)
    return Artifact(kind, path, path, kind)


# ---- opening -------------------------------------------------------------------------------------------------------


def read_report(path: str | Path) -> dict[str, Any]:
    """The JSON object a stage wrote (verify.json, eval.json, config.json, uploaded.json, ...), or {} when the
    file is absent, unreadable or holds something else: what is not known is left out, never guessed."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def extract_saved_model(archive: Path, folder: Path) -> Path:
    """Take saved_model.pt out of the submission.zip ``archive`` (its layout checked by :func:`identify`)
    into ``folder``; the file taken out must be TorchScript. Returns its path. Raises GuieError naming what
    the file inside is otherwise."""
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(archive) as zf:
        model = Path(zf.extract(SAVED_MODEL, folder))
    inner = None
    if zipfile.is_zipfile(model):
        with zipfile.ZipFile(model) as zf:
            inner = archive_kind(zf)
    if inner != TORCHSCRIPT:
        what = {CHECKPOINT: "a torch checkpoint (torch.save)", PROGRAM: "a torch.export program"}.get(
            inner or "", "no torch archive" if zipfile.is_zipfile(model) else "not a zip archive")
        raise GuieError(f"{archive} holds a saved_model.pt that is {what}, not TorchScript (torch.jit.save); "
                        "make the submission.zip with guie-export")
    return model


def saved_model_sha256(path: str | Path) -> str | None:
    """SHA-256 of the saved_model.pt ``path`` stands for (the file, the one in an export or build folder, or
    the one inside a submission.zip, read without unpacking), as guie-submit records it; None for anything
    else (a run folder, a model.pt, a path that is no guie file)."""
    try:
        artifact = identify(path)
    except GuieError:
        return None
    if artifact.model_kind == TORCHSCRIPT:
        return file_sha256(artifact.model_file)
    if artifact.model_kind == SUBMISSION:
        digest = hashlib.sha256()
        with zipfile.ZipFile(artifact.model_file) as zf, zf.open(SAVED_MODEL) as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()
    return None


def friendly_load_error(text: str) -> str:
    """torch's load errors without the internal-assert preamble: 'Attempted to read a PyTorch file with
    version 10, but the maximum supported version for reading is 9' instead of an INTERNAL ASSERT line."""
    m = re.search(r"Attempted to read a PyTorch file with version \d+, but the maximum supported version "
                  r"for reading is \d+", text)
    return f"RuntimeError: {m[0]}" if m else text


@contextlib.contextmanager
def quiet_jit() -> Iterator[None]:
    """Silence torch's "torch.jit.* is deprecated" FutureWarnings: TorchScript is the format the host
    loads, on purpose, and the warning would only confuse the user reading guie's output."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*TorchScript.*deprecated")
        yield


class TorchScriptLoadError(GuieError):
    """This torch could not load a TorchScript file; ``reason`` is torch's error in one line."""

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


def load_torchscript(path: str | Path, device: str | torch.device = "cpu", *, shown_as: str | Path | None = None,
                     fix: str = "export it again with guie-export") -> torch.jit.ScriptModule:
    """``torch.jit.load`` of the TorchScript file ``path`` (or the one in a submission.zip or export folder),
    quietly, on CPU, then moved to ``device``; in eval mode.

    Raises GuieError (from :func:`identify`) when ``path`` is not TorchScript, and TorchScriptLoadError,
    "SHOWN does not load in this torch VERSION (torch's error); FIX", when this torch cannot load it."""
    import torch

    artifact = identify(path, TAKES_TORCHSCRIPT)
    shown = shown_as if shown_as is not None else path
    try:
        with contextlib.ExitStack() as stack:
            model = artifact.model_file
            if artifact.model_kind == SUBMISSION:
                tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="guie-load-")))
                model = extract_saved_model(model, tmp)
            with quiet_jit():
                if is_text(model):
                    module = torch.jit.load(str(model), map_location="cpu")
                else:  # torch's C++ takes a path only as UTF-8 text: hand it the open file instead
                    module = torch.jit.load(stack.enter_context(open(model, "rb")), map_location="cpu")
    except GuieError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch reports foreign, damaged or newer-format files many ways
        reason = friendly_load_error((str(exc).strip().splitlines() or [type(exc).__name__])[0])[:300]
        raise TorchScriptLoadError(f"{shown} does not load in this torch {torch.__version__} ({reason}); {fix}",
                                   reason) from None
    return module.eval().to(device)


def file_format_version(path: Path) -> int | None:
    """The TorchScript archive's file-format version (``<root>/.data/version``, or ``<root>/version`` in
    files from torch before 1.13). It is the highest operator version in the graph: PyTorch 1.11 reads up
    to 9. None when the archive has no version record. Raises GuieError when ``path`` is not a zip archive."""
    try:
        with zipfile.ZipFile(path) as zf:
            for name in zf.namelist():
                parts = name.split("/")
                if parts[-1] == "version" and (len(parts) == 2 or (len(parts) == 3 and parts[1] == ".data")):
                    return int(zf.read(name).decode().strip())
    except zipfile.BadZipFile:
        raise GuieError(f"{path} is not a TorchScript archive (not a zip file); export it with guie-export") from None
    except ValueError:
        raise GuieError(f"{path} has an unreadable version record; export it again with guie-export") from None
    return None


# ---- where a model's scores live -----------------------------------------------------------------------------------


def leaderboard_files(model_path: str | Path) -> list[Path]:
    """Where a model's leaderboard.jsonl may be: its folder (a run or export folder), else the folder holding
    the model file, and for a file in a guie-package BUILD/dataset folder also BUILD. Only existing files."""
    path = Path(model_path)
    folder = path if path.is_dir() else path.parent
    places = [folder / LEADERBOARD_FILE]
    if any((folder / name).is_file() for name in DATASET_METADATA_NAMES):
        places.append(folder.parent / LEADERBOARD_FILE)
    return [p for p in places if p.is_file()]


def leaderboard_path(build: str | Path, model_sha256: str | None) -> Path:
    """leaderboard.jsonl of BUILD: in the run folder BUILD was packaged from, else in BUILD itself.

    guie-package exports a run folder SOURCE into BUILD/export, whose verify.json names the run folder
    or its model file (``source``) and the exported file's ``sha256``; it counts only when that hash is
    the packaged model's (an export folder left from an earlier package does not).
    """
    build = Path(build)
    verify = read_report(build / EXPORT_DIR / VERIFY_REPORT)
    source = verify.get("source")
    if model_sha256 and isinstance(source, str) and verify.get("sha256") == model_sha256:
        run = Path(source) if Path(source).is_dir() else Path(source).parent
        if run.is_dir():
            return run / LEADERBOARD_FILE
    return build / LEADERBOARD_FILE
