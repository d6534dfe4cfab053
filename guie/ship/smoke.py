"""guie-smoke: run a package's notebook in an emulated Kaggle, then check its submission.zip as the host would.

1. A temporary tree like Kaggle's: ``kaggle/input/<dataset slug>/`` holding the dataset folder's
   files (as Kaggle mounts it: without dataset-metadata.json, read-only) and ``kaggle/working/``,
   the notebook's working directory.
2. The kernel folder's notebook runs there with nbclient, on this interpreter, with ``/kaggle``
   redirected by the one mechanism the notebook honours: ``GUIE_KAGGLE_ROOT``. The kernel
   cannot import guie (the fresh runner's guard refuses it), since Kaggle has no guie. It talks to
   nbclient over IPC sockets in the work folder, or in a short private folder when that path is too
   long for a socket (a long ``TMPDIR``), or over TCP on 127.0.0.1 (see :func:`socket_folder`).
3. ``working/submission.zip`` is checked in a fresh ``python -I`` that cannot import guie either
   (guie.ship.host_check through guie.export.fresh): real images of mixed sizes and formats fed
   as the host did, plus guie-export's host-style test images, shape, dtype, finiteness, unit
   norm, determinism, batch independence, distinct outputs; then mP@5 here, on the same small
   labelled set (guie's handwritten digits, or ``--images``).

A failure raises SmokeFailure naming the check or the notebook cell. A problem with the inputs
(the metadata files, ``--images``) is a plain GuieError, found before anything runs or is written:
unreadable images in ``--images`` are skipped and listed, as guie-train and guie-eval do.
``BUILD/smoke/`` receives report.json and the executed notebook; the kernel and dataset folders
are never touched.
"""
from __future__ import annotations

import math
import os
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guie.artifacts import (
    DATASET_METADATA_NAMES,
    KERNEL_DIR,
    SMOKE_DIR,
    SUBMISSION_ZIP,
)
from guie.data.summary import format_skipped
from guie.errors import GuieError
from guie.export.fresh import child_env, kernel_argv
from guie.fileio import (
    OutOfSpace,
    SpaceProblem,
    space_problem_in_text,
    write_json,
    write_text,
    writing_into,
)
from guie.fsnames import name_bytes
from guie.ship.host_check import INPUT_CHECK, CheckFailed, run_checks
from guie.ship.metadata import read_build
from guie.ship.notebook import ROOT_ENV

KERNEL_NAME = "guie-smoke"
# The longest path of a Unix socket, in bytes: sockaddr_un.sun_path less its terminating zero
# (108 - 1 on Linux, 104 - 1 on macOS and the BSDs).
IPC_PATH_LIMIT = {"linux": 107, "darwin": 103, "freebsd": 103}
SMOKE_FULL_FIX = ("free space there or point TMPDIR at a disk with room (the emulated /kaggle tree holds the model "
                  "twice and the test images), then rerun")
DIGIT_SIZES = ((32, 32), (64, 64), (48, 80), (120, 72), (224, 224), (37, 53))  # (width, height)


class SmokeFailure(GuieError):
    """A smoke check failed (exit 1); usage problems stay plain GuieError (exit 2)."""

    exit_code = 1

    def __init__(self, check: str, detail: str) -> None:
        super().__init__(f"smoke check {check!r} failed: {detail}")
        self.check, self.detail = check, detail


@dataclass
class LabelledImages:
    paths: list[str]
    labels: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (path, reason), skipped
    left_out: list[tuple[str, str]] = field(default_factory=list)  # (path, reason): not images by guie.data.walk

    def split(self) -> tuple[list[int], list[int]]:
        """Per class: the first third (at least one) are queries, the rest the index."""
        by_label: dict[str, list[int]] = {}
        for i, label in enumerate(self.labels):
            by_label.setdefault(label, []).append(i)
        queries: list[int] = []
        index: list[int] = []
        for members in by_label.values():
            if len(members) < 2:
                continue
            n_query = max(1, math.ceil(len(members) / 3))
            queries += members[:n_query]
            index += members[n_query:]
        return queries, index


def digit_images(dest: Path, per_class: int = 6) -> LabelledImages:
    """Real handwritten digits at mixed sizes (incl. non-square) and formats (PNG, JPEG, greyscale)."""
    from PIL import Image

    from guie.data.demo import write_digits

    source = write_digits(dest / "digits-32", per_class=per_class)
    paths, labels = [], []
    k = 0
    for class_dir in sorted(p for p in source.iterdir() if p.is_dir()):
        for src in sorted(class_dir.glob("*.png")):
            width, height = DIGIT_SIZES[k % len(DIGIT_SIZES)]
            with Image.open(src) as img:
                img = img.convert("RGB").resize((width, height), Image.BICUBIC)
            target = dest / "images" / class_dir.name / src.stem
            target.parent.mkdir(parents=True, exist_ok=True)
            if k % 3 == 2:
                target = target.with_suffix(".jpg")
                img.save(target, quality=92)
            elif k % 5 == 4:
                target = target.with_suffix(".png")
                img.convert("L").save(target)
            else:
                target = target.with_suffix(".png")
                img.save(target)
            paths.append(str(target))
            labels.append(class_dir.name)
            k += 1
    return LabelledImages(paths, labels)


def folder_images(root: Path, per_class: int = 10, max_classes: int = 50) -> LabelledImages:
    """A user's imagefolder (one sub-folder per class), capped to keep the smoke run short.

    The folder is read as guie-train reads an imagefolder (guie.data.walk's rule: links followed once,
    hidden and operating-system litter left out and listed). Each image is opened as the host would
    open it; the ones that cannot be (truncated, corrupt, decompression bombs) are skipped and listed,
    and the next image of the class takes their place.
    """
    from guie.data.imagefolder import scan_class_folders
    from guie.data.images import image_problem

    records, left_out = scan_class_folders(root, domain="smoke")
    paths, labels, counts, unreadable = [], [], {}, []
    for rec in records:
        if counts.get(rec.label, 0) >= per_class or (rec.label not in counts and len(counts) >= max_classes):
            continue
        problem = image_problem(rec.path)
        if problem:
            unreadable.append((rec.path, problem))
            continue
        counts[rec.label] = counts.get(rec.label, 0) + 1
        paths.append(rec.path)
        labels.append(rec.label)
    if sum(1 for n in counts.values() if n >= 2) < 2:
        skipped = f"; skipped {len(unreadable)} unreadable: " + ", ".join(
            f"{p} ({why})" for p, why in unreadable[:3]) if unreadable else ""
        raise GuieError(f"--images {str(root)!r} needs at least two class sub-folders with two or more readable "
                        f"images each{skipped}")
    return LabelledImages(paths, labels, unreadable, left_out)


def kernel_env(root: Path, work: Path) -> dict[str, str]:
    """The notebook kernel's environment: this one without secrets (guie.export.fresh's rule), /kaggle redirected."""
    return child_env({ROOT_ENV: str(root), "IPYTHONDIR": str(work / "ipython"), "MPLBACKEND": "Agg",
                      "PYDEVD_DISABLE_FILE_VALIDATION": "1"})


def emulate_kaggle(work: Path, dataset_dir: Path, slug: str) -> Path:
    """``work/kaggle`` with ``input/<slug>/`` (the dataset's files, read-only folder) and ``working/``."""
    root = work / "kaggle"
    mounted = root / "input" / slug
    mounted.mkdir(parents=True)
    for item in sorted(dataset_dir.iterdir()):
        if item.name not in DATASET_METADATA_NAMES:  # the client uploads all but the metadata
            (mounted / item.name).symlink_to(item.resolve(), target_is_directory=item.is_dir())
    mounted.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)
    (root / "working").mkdir()
    return root


def _release(work: Path) -> None:
    for folder in work.rglob("*"):
        if folder.is_dir() and not folder.is_symlink():
            folder.chmod(folder.stat().st_mode | stat.S_IWUSR)
    shutil.rmtree(work, ignore_errors=True)


def ipc_limit() -> int:
    """The longest Unix socket path on this system, in bytes (IPC_PATH_LIMIT)."""
    return IPC_PATH_LIMIT.get(sys.platform, IPC_PATH_LIMIT["linux"])


def ipc_fits(folder: Path) -> bool:
    """Whether the kernel's IPC socket paths in ``folder`` fit the system's limit (:func:`ipc_limit`)."""
    return len(name_bytes(str(folder / "kernel-ipc"))) + len("-99") <= ipc_limit()


def socket_folder(work: Path) -> Path | None:
    """Where the notebook kernel's IPC sockets go: the private work folder when their paths fit the system's
    limit for a socket path; else a new private folder (mode 0700) in ``$XDG_RUNTIME_DIR``, ``/tmp`` or
    ``/var/tmp``, whichever is writable and short enough (a long ``TMPDIR``, an HPC job's scratch path,
    takes this); None when there is none, or on Windows (no IPC): then the kernel talks over TCP on
    127.0.0.1, Jupyter's default. A folder made here is the caller's to remove."""
    if os.name == "nt":
        return None
    if ipc_fits(work):
        return work
    for base in (os.environ.get("XDG_RUNTIME_DIR"), "/tmp", "/var/tmp"):
        if base and os.path.isdir(base) and os.access(base, os.W_OK | os.X_OK):
            candidate = Path(base) / "guie-smoke-XXXXXXXX"
            if ipc_fits(candidate):
                return Path(tempfile.mkdtemp(prefix="guie-smoke-", dir=base))
    return None


def _kernel_manager(work: Path, sockets: Path | None) -> Any:
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    spec_dir = work / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True)
    write_json(spec_dir / "kernel.json", {
        "argv": kernel_argv(),  # ipykernel on this interpreter, booted by the fresh runner with guie refused
        "display_name": "guie-smoke (this Python, without guie)",
        "language": "python",
    })
    specs = KernelSpecManager(kernel_dirs=[str(spec_dir.parent)])
    # IPC sockets in a private folder (see socket_folder): then no TCP port is opened for the kernel.
    transport, address = ("ipc", str(sockets / "kernel-ipc")) if sockets is not None else ("tcp", "127.0.0.1")
    return AsyncKernelManager(kernel_name=KERNEL_NAME, kernel_spec_manager=specs, transport=transport,
                              connection_file=str(work / "kernel-connection.json"), ip=address)


def summarise_error(text: str) -> str:
    """One line of an error message; of a multi-line one (TorchScript tracebacks) its last line."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return (lines[-1] if lines else "")[:300]


def _cell_name(nb: Any, index: int) -> str:
    cell = nb.cells[index]
    code_cells = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"]
    number = code_cells.index(index) + 1 if index in code_cells else index + 1
    return f"notebook cell '{cell.get('id', index)}' (code cell {number} of {len(code_cells)})"


def run_notebook(nb_path: Path, root: Path, work: Path, timeout: float, executed_path: Path | None) -> Any:
    """Execute the notebook in ``root/working`` (the kernel's IPC sockets where :func:`socket_folder` puts
    them, a folder it made removed afterwards); on failure, name the cell and its error."""
    sockets = socket_folder(work)
    try:
        return _run_notebook(nb_path, root, work, timeout, executed_path, sockets)
    finally:
        if sockets is not None and sockets != work:
            shutil.rmtree(sockets, ignore_errors=True)


def _run_notebook(nb_path: Path, root: Path, work: Path, timeout: float, executed_path: Path | None,
                  sockets: Path | None) -> Any:
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = nbformat.read(str(nb_path), as_version=4)
    current = {"index": 0}

    def on_cell_start(cell: Any, cell_index: int) -> None:
        current["index"] = cell_index

    client = NotebookClient(nb, km=_kernel_manager(work, sockets), kernel_name=KERNEL_NAME, timeout=int(timeout),
                            startup_timeout=120, shutdown_kernel="immediate", on_cell_start=on_cell_start,
                            resources={"metadata": {"path": str(root / "working")}})
    try:
        client.execute(env=kernel_env(root, work), cleanup_kc=True)
    except CellExecutionError as exc:
        evalue = summarise_error(exc.evalue)
        problem = space_problem_in_text(f"{exc.ename}: {exc.evalue}")
        if problem:  # this machine's temporary disk, not the package: Kaggle's working folder has room
            where = f"{problem.detail}, in {_cell_name(nb, current['index'])}"
            raise OutOfSpace(root / "working", SpaceProblem(problem.errno, where), SMOKE_FULL_FIX) from None
        raise SmokeFailure("notebook", f"{_cell_name(nb, current['index'])} raised {exc.ename}: {evalue}") from None
    except CellTimeoutError:
        raise SmokeFailure("notebook", f"{_cell_name(nb, current['index'])} ran past --timeout {timeout:.0f} s") from None
    except DeadKernelError:
        raise SmokeFailure("notebook", f"the kernel died during {_cell_name(nb, current['index'])} "
                                       "(out of memory?)") from None
    except RuntimeError as exc:  # kernel did not start
        raise SmokeFailure("notebook", f"the notebook kernel did not start: {summarise_error(exc)}") from None
    finally:
        if executed_path is not None:
            write_text(executed_path, nbformat.writes(nb) + "\n")
    return nb


def check_submission(zip_path: Path, images: LabelledImages, work: Path, timeout: float = 600.0) -> dict[str, Any]:
    """The host's view of ``zip_path`` (guie.ship.host_check, in a fresh interpreter without guie), then mP@5
    on ``images``. SmokeFailure naming the failed check; GuieError for an image that cannot be opened."""
    from guie.retrieval.knn import knn
    from guie.retrieval.metrics import mean_precision_at_k

    work.mkdir(parents=True, exist_ok=True)
    passed: list[str] = []
    try:
        view = run_checks(zip_path, images.paths, passed, work=work, timeout=timeout)
    except CheckFailed as exc:
        problem = space_problem_in_text(exc.detail)
        if problem:  # the fresh interpreter could not write its results: this machine's disk, not the package
            where = f"{problem.detail}, in the host check {exc.name!r}"
            raise OutOfSpace(work, SpaceProblem(problem.errno, where), SMOKE_FULL_FIX) from None
        if exc.name == INPUT_CHECK:  # the images, not the package
            raise GuieError(f"{exc.detail}; fix or remove that file") from None
        raise SmokeFailure(exc.name, exc.detail) from None
    queries, index = images.split()
    _, ids = knn(view.embeddings[index], view.embeddings[queries], k=5)
    score = mean_precision_at_k(ids, [images.labels[i] for i in queries], [images.labels[i] for i in index], k=5)
    return {"passed": passed, "failed": None, "torch_version": view.torch_version, "images": len(images.paths),
            "mP@5": score, "queries": len(queries), "index": len(index), "classes": len(set(images.labels))}


def run_smoke(build: str | Path, *, images: str | Path | None = None, min_mp5: float = 0.0,
              timeout: float = 600.0, keep: bool = False, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Emulate the host on BUILD (see the module docstring); return the report, raise SmokeFailure."""
    build = Path(build)
    # Every input is checked before anything runs or is written.
    folders = read_build(build)
    kernel = folders.kernel
    if (kernel.language, kernel.kernel_type) != ("python", "notebook"):
        raise GuieError(f"guie-smoke runs Python notebooks; {kernel.path.name} says language {kernel.language!r}, "
                        f"kernel_type {kernel.kernel_type!r}")
    for warning in folders.warnings:
        log(f"note: {warning}")
    labelled = folder_images(Path(images)) if images else None
    if labelled and labelled.unreadable:
        log(f"skipped {len(labelled.unreadable)} unreadable images of --images (listed in the report): "
            + ", ".join(f"{p} ({why})" for p, why in labelled.unreadable[:5])
            + (", ..." if len(labelled.unreadable) > 5 else ""))
    if labelled and labelled.left_out:
        log(f"left out {len(labelled.left_out)} entries of --images that are not images (listed in the report): "
            + format_skipped(labelled.left_out))
    dataset_dir, kernel_dir, slug = folders.dataset_dir, folders.kernel_dir, folders.dataset.ref.slug
    report: dict[str, Any] = {"build": str(build.resolve()), "dataset": str(folders.dataset.ref),
                              "kernel": kernel.name, "passed": [], "failed": None}
    if labelled:
        report["unreadable_images"] = [{"path": p, "reason": why} for p, why in labelled.unreadable]
        report["left_out"] = [{"path": p, "reason": why} for p, why in labelled.left_out]
    report_dir = build / SMOKE_DIR
    with writing_into(tempfile.gettempdir(), SMOKE_FULL_FIX):
        work = Path(tempfile.mkdtemp(prefix="guie-smoke-"))
    started = time.perf_counter()
    try:
        with writing_into(work, SMOKE_FULL_FIX):
            root = emulate_kaggle(work, dataset_dir, slug)
            if not ipc_fits(work) and os.name != "nt":
                log(f"note: the temporary folder {work} is too long a path for the kernel's IPC sockets "
                    f"({ipc_limit()} bytes at most): they go in a short private folder instead (in "
                    "$XDG_RUNTIME_DIR, /tmp or /var/tmp; TCP on 127.0.0.1 where none is writable)")
            nb_path = kernel_dir / kernel.code_file
            log(f"running {nb_path.name} with {ROOT_ENV}={root} (input/{slug}/, working/)")
            run_notebook(nb_path, root, work, timeout, report_dir / "executed.ipynb")
            report["passed"].append("notebook")
            log("ok  notebook: every cell ran")
            submission = root / "working" / SUBMISSION_ZIP
            if not submission.is_file():
                raise SmokeFailure("submission-written", "the notebook finished without writing working/submission.zip")
            report["passed"].append("submission-written")
            labelled = labelled or digit_images(work / "data")
            source = str(images) if images else "handwritten digits"
            log(f"host check: {len(labelled.paths)} images ({source}) of mixed sizes and the host-style test images, "
                "in a fresh python without guie")
            result = check_submission(submission, labelled, work, timeout)
            report["passed"] += result["passed"]
            for name in result["passed"]:
                log(f"ok  {name}")
            report.update({k: result[k] for k in ("mP@5", "queries", "index", "classes", "torch_version")})
            log(f"mP@5 {result['mP@5']:.4f} ({result['queries']} queries against {result['index']} images, "
                f"{result['classes']} classes)")
            if result["mP@5"] < min_mp5:
                raise SmokeFailure("mP@5", f"{result['mP@5']:.4f} is below --min-mp5 {min_mp5}")
            report["passed"].append("mP@5")
    except SmokeFailure as exc:
        report["failed"] = {"check": exc.check, "detail": exc.detail}
        raise
    except OutOfSpace as exc:  # this machine's disk
        report["failed"] = {"check": "disk space", "detail": str(exc)}
        raise
    except GuieError as exc:  # the inputs, found while checking: not a failure of the package
        report["failed"] = {"check": INPUT_CHECK, "detail": str(exc)}
        raise
    finally:
        report["seconds"] = round(time.perf_counter() - started, 2)
        write_json(report_dir / "report.json", report)
        if keep:
            log(f"kept the emulated tree: {work}")
        else:
            _release(work)
    log(f"smoke passed: {build / KERNEL_DIR} is ready for: kaggle kernels push -p {build / KERNEL_DIR}")
    return report
