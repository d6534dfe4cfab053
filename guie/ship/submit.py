"""guie-submit: from a guie-package BUILD to a scored Kaggle submission, recorded in leaderboard.jsonl.

Everything goes through the official kaggle client (imported lazily, see guie.ship.upload):

1. The dataset and notebook are uploaded with guie-package's upload path unless BUILD/uploaded.json
   shows that exactly these files were uploaded already (then the notebook version it recorded is used).
2. ``kernels_status(owner/slug/version)`` is polled until the notebook version has run. On ``error``
   its log (``kernels_logs``, or ``kernels_output`` on older clients) is saved to BUILD/notebook.log
   and the failing cell is named in one line.
3. ``competition_submit_code`` submits the notebook's ``submission.zip`` as a code-competition
   submission of that notebook version; a line with status ``pending`` goes into leaderboard.jsonl.
4. ``competition_submissions`` is polled until that submission is ``complete`` or ``error``; the line is
   completed with the public and private scores (or the error). A submission still pending when
   ``wait`` ends stays ``pending``; ``guie-submit --refresh BUILD`` completes it later.

One line is printed per status change; every wait is bounded by ``wait`` seconds in total.
leaderboard.jsonl goes into the run folder the package came from (named by BUILD/export/verify.json
when guie-package exported a run folder), else into BUILD. No credential is ever printed or written.
"""
from __future__ import annotations

import json
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from guie.artifacts import (
    KERNEL_METADATA,
    NOTEBOOK_LOG,
    SAVED_MODEL,
    SUBMISSION_ZIP,
    leaderboard_path,
    saved_model_sha256,
)
from guie.errors import GuieError
from guie.fileio import write_text
from guie.leaderboard_log import (
    append_record,
    read_records,
    score_value,
    update_record,
)
from guie.ship.kaggle_ids import GUIE_COMPETITION, check_competition
from guie.ship.metadata import Build, read_build
from guie.ship.upload import (
    CREDENTIALS_HELP,
    build_digest,
    call_kaggle,
    check_kaggle,
    find_credentials,
    kaggle_client,
    one_line,
    read_upload_record,
    upload_package,
)

KERNEL_DONE, KERNEL_FAILED = ("complete",), ("error", "cancel_requested", "cancel_acknowledged")
SUBMISSION_DONE = ("complete", "error")

# nbclient's CellExecutionError text, as nbconvert prints it when a notebook run fails:
# "An error occurred while executing the following cell:\n------------------\n<source>\n------------------\n..."
_CELL_ERROR = re.compile(r"An error occurred while executing the following cell:\s*\n-{5,}\n(.*?)\n-{5,}\n", re.S)
_PAPERMILL = re.compile(r'Exception encountered at "In \[(\d+)\]"')
_ERROR_LINE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Interrupt|Exit)):?\s?(.*)$")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class Waiter:
    """One deadline for all waits of a command, with a poll interval; clock and sleep are injectable."""

    wait: float
    poll: float
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def __post_init__(self) -> None:
        if self.wait < 0 or self.poll <= 0:
            raise GuieError(f"--wait must be 0 or more and --poll above 0 (got {self.wait}, {self.poll})")
        self.start = self.clock()

    @property
    def elapsed(self) -> float:
        return self.clock() - self.start

    @property
    def left(self) -> float:
        return max(0.0, self.wait - self.elapsed)

    def pause(self) -> None:
        self.sleep(max(0.0, min(self.poll, self.left)))


def status_name(value: Any) -> str:
    """A kaggle client status (an enum such as KernelWorkerStatus.COMPLETE, or a string) as 'complete'."""
    name = str(getattr(value, "name", value) or "").lower()
    for prefix in ("kernel_worker_status_", "submission_status_"):
        name = name.removeprefix(prefix)
    return name


def now_utc() -> str:
    """The current time, UTC, ISO 8601 to the second: '2026-11-30T14:02:11Z'."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- where the scores go ---------------------------------------------------------------------------------------


def model_digest(folders: Build) -> str | None:
    """SHA-256 of the packaged saved_model.pt, or None when BUILD/dataset has none."""
    return saved_model_sha256(folders.dataset_dir / SAVED_MODEL)


# ---- the notebook run --------------------------------------------------------------------------------------------


def _notebook_cells(folders: Build) -> list[dict[str, Any]]:
    try:
        nb = json.loads((folders.kernel_dir / folders.kernel.code_file).read_text(encoding="utf-8"))
        return [c for c in nb.get("cells", []) if isinstance(c, dict)]
    except (OSError, ValueError, AttributeError):
        return []


def _source(cell: dict[str, Any]) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else str(src)


def log_text(raw: str) -> str:
    """A Kaggle notebook log as plain text: the JSON list of {stream_name, time, data} events joined,
    or the text itself when it is not such a list; colour codes removed."""
    try:
        events = json.loads(raw)
    except ValueError:
        events = None
    if isinstance(events, list):
        raw = "".join(str(e.get("data", "")) for e in events if isinstance(e, dict))
    return _ANSI.sub("", raw)


def failing_cell(raw_log: str, cells: list[dict[str, Any]]) -> str:
    """One line naming the notebook cell that failed and its error, read from the run's log.

    Finds nbclient's "An error occurred while executing the following cell" block (nbconvert) and
    matches its source to a cell of the pushed notebook, or papermill's 'Exception encountered at
    "In [N]"' (the N-th code cell); the error is the log's last 'SomeError: message' line.
    """
    text = log_text(raw_log)
    code = [c for c in cells if c.get("cell_type") == "code"]
    where = None
    blocks = _CELL_ERROR.findall(text)
    if blocks:
        source = blocks[-1].strip()
        for number, cell in enumerate(code, start=1):
            if _source(cell).strip() == source:
                where = f"notebook cell '{cell.get('id', number)}' (code cell {number} of {len(code)})"
                break
        else:
            first = next((line.strip() for line in source.splitlines() if line.strip()), "")
            where = f"the notebook cell starting {first[:60]!r}"
    elif _PAPERMILL.search(text):
        number = int(_PAPERMILL.findall(text)[-1])
        cell = code[number - 1] if 0 < number <= len(code) else {}
        where = f"notebook cell '{cell.get('id', number)}' (code cell {number} of {len(code)})"
    errors = [m for m in (_ERROR_LINE.match(line) for line in text.splitlines()) if m]
    error = f"{errors[-1].group(1)}: {errors[-1].group(2).strip()}".rstrip(": ") if errors else None
    if where and error:
        return f"{where} raised {one_line(error)}"
    if where:
        return f"{where} failed"
    if error:
        return f"the notebook raised {one_line(error)}"
    return "the log names no failing cell"


def fetch_log(api: Any, kernel: str) -> str:
    """The notebook version's log: ``kernels_logs`` where the client has it, else the log that
    ``kernels_output`` saves (its file pattern matching no output file, so nothing else downloads)."""
    if hasattr(api, "kernels_logs"):
        return str(call_kaggle(f"the log of notebook {kernel}", api.kernels_logs, kernel) or "")
    with tempfile.TemporaryDirectory(prefix="guie-log-") as tmp:
        files, _ = call_kaggle(f"the log of notebook {kernel}", api.kernels_output, kernel, tmp, file_pattern=r"^$")
        logs = [Path(f) for f in files if str(f).endswith(".log")]
        return logs[0].read_text(encoding="utf-8", errors="replace") if logs else ""


def wait_for_notebook(api: Any, folders: Build, kernel: str, waiter: Waiter, log: Callable[[str], None],
                      build: Path) -> None:
    """Poll ``kernels_status(kernel)`` until the run is complete; raise GuieError naming the failing cell on
    error (the log saved to BUILD/notebook.log), or when ``waiter``'s time runs out."""
    last = None
    while True:
        response = call_kaggle(f"the status of notebook {kernel}", api.kernels_status, kernel)
        status = status_name(getattr(response, "status", response))
        if status != last:
            log(f"notebook {kernel}: {status} ({waiter.elapsed:.0f} s)")
            last = status
        if status in KERNEL_DONE:
            return
        if status in KERNEL_FAILED:
            message = one_line(getattr(response, "failure_message", None) or "")
            raw = fetch_log(api, kernel)
            cell = failing_cell(raw, _notebook_cells(folders)) if raw else "Kaggle sent no log"
            saved = ""
            if raw:
                write_text(build / NOTEBOOK_LOG, log_text(raw))
                saved = f"; log: {build / NOTEBOOK_LOG}"
            raise GuieError(f"notebook {kernel} ended with {status}: {cell}"
                            + (f" ({message})" if message else "") + f"{saved}; nothing was submitted")
        if waiter.left <= 0:
            raise GuieError(f"notebook {kernel} is still {status} after {waiter.wait:.0f} s; nothing was submitted. "
                            "Rerun guie-submit later (BUILD is not uploaded again), or with a longer --wait")
        waiter.pause()


# ---- the submission ----------------------------------------------------------------------------------------------


def find_submission(api: Any, competition: str, ref: Any) -> Any | None:
    """Our submission in the competition's latest submissions (``competition_submissions``), or None."""
    submissions = call_kaggle(f"the submissions to {competition}", api.competition_submissions, competition) or []
    return next((s for s in submissions if s is not None and str(getattr(s, "ref", "")) == str(ref)), None)


def submission_changes(submission: Any) -> dict[str, Any]:
    """The leaderboard.jsonl fields Kaggle's answer fills: status, scores (floats) and any error."""
    status = status_name(getattr(submission, "status", None))
    changes: dict[str, Any] = {"status": status if status in SUBMISSION_DONE else "pending",
                               "public_score": score_value(getattr(submission, "public_score", None)),
                               "private_score": score_value(getattr(submission, "private_score", None))}
    if changes["status"] == "error":
        changes["error"] = one_line(getattr(submission, "error_description", None) or "no description")
    return changes


def _scores_line(record: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        return "not shown" if v is None else f"{v:.4f}"

    return f"public {fmt(record.get('public_score'))}, private {fmt(record.get('private_score'))}"


def wait_for_score(api: Any, competition: str, record_path: Path, ref: Any, waiter: Waiter,
                   log: Callable[[str], None]) -> dict[str, Any]:
    """Poll the competition's submissions until ``ref`` is complete or failed, or the time runs out;
    each answer updates its line in ``record_path``. Returns the line."""
    last = None
    while True:
        submission = find_submission(api, competition, ref)
        changes = submission_changes(submission) if submission is not None else {"status": "pending"}
        status = changes["status"] if submission is not None else "not listed yet"
        record = update_record(record_path, ref, changes)
        if status != last:
            extra = f": {_scores_line(record)}" if status == "complete" else \
                f": {record.get('error')}" if status == "error" else ""
            log(f"submission {ref}: {status} ({waiter.elapsed:.0f} s){extra}")
            last = status
        if record["status"] in SUBMISSION_DONE or waiter.left <= 0:
            return record
        waiter.pause()


def _signed_in(log: Callable[[str], None]) -> Any:
    source = find_credentials()
    if source is None:
        raise GuieError(CREDENTIALS_HELP)
    api = kaggle_client(source)
    log(f"signed in to Kaggle (credentials from {source})")
    return api


def _kernel_ref(folders: Build) -> str:
    kernel = folders.kernel.id or ""
    if kernel.count("/") != 1:
        raise GuieError(f"{KERNEL_METADATA} id {kernel or folders.kernel.name!r} must be OWNER/SLUG for a "
                        "code submission; rebuild the folders with guie-package")
    return kernel


def _finish(record: dict[str, Any], record_path: Path, build: Path, log: Callable[[str], None]) -> dict[str, Any]:
    ref = record.get("submission_ref")
    if record["status"] == "complete":
        log(f"scored: {_scores_line(record)}; recorded in {record_path}")
    elif record["status"] == "error":
        raise GuieError(f"Kaggle could not score submission {ref}: {record.get('error')}; recorded in {record_path}")
    else:
        log(f"submission {ref} is still pending; recorded in {record_path} as pending. "
            f"Complete it later with: guie-submit --refresh {build}")
    return record


def submit_build(build: str | Path, *, competition: str = GUIE_COMPETITION, message: str | None = None,
                 wait: float = 3600.0, poll: float = 30.0, log: Callable[[str], None] = print,
                 clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep,
                 ) -> dict[str, Any]:
    """Upload BUILD if it is not current, wait for its notebook run, submit its submission.zip, wait for the
    score, and record it in leaderboard.jsonl. ``wait`` bounds all waits together (seconds); ``poll`` is the
    interval between status checks (seconds).

    Returns the leaderboard.jsonl line (status ``complete`` or ``pending``). Raises GuieError without
    credentials (nothing sent), when the notebook fails (naming the cell), and when Kaggle reports the
    submission as failed (the line is recorded with status ``error`` first).
    """
    build = Path(build)
    competition = check_competition(competition)
    folders = read_build(build)
    kernel = _kernel_ref(folders)
    if not folders.kernel.attaches_competition(competition):
        raise GuieError(f"the notebook {kernel} does not attach the competition {competition} (its "
                        f"competition_sources: {folders.kernel.competition_sources}); rebuild with guie-package "
                        f"--competition {competition}")
    check_kaggle(f"nothing was uploaded or submitted; rerun guie-submit {build} once Kaggle answers "
                 f"(guie-smoke {build} checks the package offline meanwhile)", log)  # before any work or request
    waiter = Waiter(wait, poll, clock, sleep)
    model_sha256 = model_digest(folders)
    record_path = leaderboard_path(build, model_sha256)

    uploaded = read_upload_record(build)
    if uploaded.get("files") == build_digest(folders) and uploaded.get("kernel") == kernel:
        version = uploaded.get("kernel_version")
        log(f"{build} is already uploaded (notebook {kernel} version {version}); not uploading again")
    else:
        log(f"uploading {build} (dataset {folders.dataset.ref}, notebook {kernel})")
        pushed = upload_package(build, message=message or "guie-submit", wait=waiter.left, poll=poll, log=log)
        version = pushed.get("kernel_version")
    api = _signed_in(log)
    versioned = f"{kernel}/{version}" if version else kernel
    wait_for_notebook(api, folders, versioned, waiter, log, build)

    log(f"submitting {SUBMISSION_ZIP} of notebook {versioned} to {competition}")
    response = call_kaggle(f"submitting notebook {versioned} to {competition}", api.competition_submit_code,
                     SUBMISSION_ZIP, message or f"guie-submit {versioned}", competition, kernel=kernel,
                     kernel_version=version, quiet=True)
    ref = getattr(response, "ref", None)
    if not ref:
        reason = one_line(getattr(response, "message", None) or getattr(response, "error", None) or "no reason given")
        raise GuieError(f"Kaggle did not accept the submission of notebook {versioned} to {competition}: {reason}")
    record = {"competition": competition, "kernel": kernel, "kernel_version": version, "submission_ref": ref,
              "submitted_at": now_utc(), "status": "pending", "public_score": None, "private_score": None,
              "model_sha256": model_sha256, "message": message or f"guie-submit {versioned}"}
    append_record(record_path, record)
    log(f"submission {ref} created; waiting for its score")
    return _finish(wait_for_score(api, competition, record_path, ref, waiter, log), record_path, build, log)


def refresh_build(build: str | Path, *, competition: str | None = None, wait: float = 0.0, poll: float = 30.0,
                  log: Callable[[str], None] = print, clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
    """Complete the pending lines of BUILD's leaderboard.jsonl from the competitions' submission lists,
    waiting up to ``wait`` seconds in total for them to be scored. Returns the lines it looked at.

    Raises GuieError without credentials, and when one of them failed at Kaggle (after recording it).
    """
    build = Path(build)
    record_path = leaderboard_path(build, model_digest(read_build(build)))
    pending = [r for r in read_records(record_path) if r.get("status") == "pending" and r.get("submission_ref")
               and (competition is None or r.get("competition") == competition)]
    if not pending:
        log(f"no pending submission in {record_path}")
        return []
    check_kaggle(f"the pending lines stay in {record_path}; rerun guie-submit --refresh {build} once Kaggle answers",
                 log)
    api = _signed_in(log)
    waiter = Waiter(wait, poll, clock, sleep)
    done = [wait_for_score(api, r.get("competition") or GUIE_COMPETITION, record_path, r["submission_ref"], waiter,
                           log) for r in pending]
    failed = [r for r in done if r["status"] == "error"]
    for record in done:
        if record["status"] != "error":
            _finish(record, record_path, build, log)
    if failed:
        raise GuieError(f"Kaggle could not score submission {failed[0]['submission_ref']}: {failed[0].get('error')}; "
                        f"recorded in {record_path}")
    return done
