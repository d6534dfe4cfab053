"""What guie-package accepts as SOURCE: a submission.zip, an export folder, or a run folder.

Every kind resolves to one TorchScript ``saved_model.pt`` plus what is known about it (the
export's verify.json, the run's config.json and eval.json), which the model card reports.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guie.artifacts import (
    EXPORT_DIR,
    EXPORT_FOLDER,
    RUN_CONFIG,
    RUN_EVAL,
    RUN_FOLDER,
    SUBMISSION,
    TAKES_PACKAGE_SOURCE,
    VERIFY_REPORT,
    Artifact,
    extract_saved_model,
    identify,
    read_report,
)
from guie.errors import GuieError


@dataclass
class ModelSource:
    model_path: Path  # a TorchScript file following the submission contract
    kind: str  # "submission.zip", "export folder", "model file" or "run folder"
    origin: Path
    verify: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    eval: dict[str, Any] = field(default_factory=dict)
    file_version: int | None = None  # the archive's file-format version, read by guie-package
    compat: list[dict[str, Any]] = field(default_factory=list)  # guie-compat checks known for this file

    @property
    def torch_version(self) -> str | None:
        return self.verify.get("torch_version")


def _from_export(artifact: Artifact, staging: Path) -> ModelSource:
    """A submission.zip, a TorchScript file or an export folder: its saved_model.pt (taken out of the zip
    into ``staging/source``) and the verify.json beside it."""
    verify = read_report(artifact.model_file.parent / VERIFY_REPORT)
    model = artifact.model_file
    if artifact.model_kind == SUBMISSION:
        model = extract_saved_model(model, staging / "source")
    kind = artifact.kind if artifact.kind in (EXPORT_FOLDER, SUBMISSION) else "model file"
    return ModelSource(model, kind, artifact.path, verify=verify)


def _from_run_folder(run: Path, staging: Path, log: Callable[[str], None]) -> ModelSource:
    try:
        from guie.export import export_run
    except ImportError:
        raise GuieError(f"{str(run)!r} is a run folder, but this guie has no exporter (guie.export); "
                        "export it with guie-export and pass the export folder") from None
    out = staging / EXPORT_DIR
    if out.exists():
        shutil.rmtree(out)
    log(f"exporting run {run} (TorchScript)")
    report = export_run(run, out, log=log, check_torch="auto")  # as guie-export does by default
    source = _from_export(identify(out, TAKES_PACKAGE_SOURCE), staging)
    source.kind, source.origin = "run folder", run
    source.verify = {**(report if isinstance(report, dict) else {}), **source.verify}
    source.config = read_report(run / RUN_CONFIG)
    source.eval = read_report(run / RUN_EVAL)
    return source


def resolve_source(source: str | Path, staging: Path, log: Callable[[str], None] = print) -> ModelSource:
    """The TorchScript model behind SOURCE (what it is: ``guie.artifacts.identify``); run folders are
    exported into ``staging/export``. Raises GuieError naming what SOURCE is and what to pass instead."""
    artifact = identify(source, TAKES_PACKAGE_SOURCE)
    if artifact.kind == RUN_FOLDER:
        return _from_run_folder(artifact.path, staging, log)
    return _from_export(artifact, staging)
