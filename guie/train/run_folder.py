"""A guie-train run folder's state, read without heavy imports, and the check made before anything is written.

A run folder is created only once the run's inputs have been read and validated; until head
training has finished an epoch (``checkpoint.pt``) or the run is done (``model.pt``) the
folder holds nothing that a rerun would lose (config.json, data.json: the features live in the
cache). Such a run "has not started": a rerun replaces it, and ``--resume`` on it takes the
options given on the command line over the saved ones, since there is nothing to continue.
"""
from __future__ import annotations

from pathlib import Path

from guie.artifacts import RUN_CHECKPOINT, RUN_CONFIG, RUN_MODEL, SWEEP_RUN_PREFIX
from guie.errors import GuieError

SWEEP_RUN_GLOB = f"{SWEEP_RUN_PREFIX}*"


def training_started(run_dir: Path) -> bool:
    """True once head training has finished an epoch or the run is complete."""
    return (run_dir / RUN_CHECKPOINT).is_file() or (run_dir / RUN_MODEL).is_file()


def sweep_started(out: Path) -> bool:
    """True once any run of a class-count sweep has started training."""
    return any(training_started(run) for run in out.glob(SWEEP_RUN_GLOB) if run.is_dir())


def check_run_dir(out: str, resume: bool, overwrite: bool) -> str:
    """What a run may do with ``out``, decided before any input is read or output written.

    Returns ``new`` (absent or empty), ``resume`` (continue a started run), ``restart`` (a run
    folder whose training never started: replaced) or ``overwrite``; raises when the run may not
    touch the folder.
    """
    run_dir = Path(out)
    if resume:
        if not (run_dir / RUN_CONFIG).is_file():
            raise GuieError(f"cannot resume: {out!r} is not a guie run folder (no {RUN_CONFIG}); "
                            "start a new run without --resume")
        return "resume" if training_started(run_dir) else "restart"
    if run_dir.exists() and not run_dir.is_dir():
        raise GuieError(f"run folder {out!r} is a file; pass another --out")
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return "new"
    if training_started(run_dir) and not overwrite:
        raise GuieError(f"run folder {out!r} already exists; pass --resume to continue it, "
                        "--overwrite to replace it, or another --out")
    if not (run_dir / RUN_CONFIG).is_file():
        raise GuieError(f"refusing to {'--overwrite' if overwrite else 'write into'} {out!r}: it is not a guie run "
                        f"folder (no {RUN_CONFIG}); pass an empty or new --out")
    return "overwrite" if training_started(run_dir) else "restart"
