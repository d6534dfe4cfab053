"""What guie-package accepts as SOURCE: a submission.zip, an export folder, or a run folder.

Every kind resolves to one TorchScript ``saved_model.pt`` plus what is known about it (the
export's verify.json, the run's config.json and eval.json), which the model card reports.
"""
from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guie.errors import GuieError

MODEL_FILENAME = "saved_model.pt"
SUBMISSION_FILENAME = "submission.zip"
VERIFY_FILENAME = "verify.json"
RUN_MODEL_FILENAME = "model.pt"
RUN_CONFIG_FILENAME = "config.json"


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


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def check_torchscript(path: Path) -> Path:
    """Refuse files that are not TorchScript archives (e.g. a plain torch.save checkpoint)."""
    if not zipfile.is_zipfile(path):
        raise GuieError(f"{str(path)!r} is not a TorchScript file (not a zip archive); "
                        "export the run with guie-export and package its saved_model.pt")
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    if not any("/code/" in name for name in names):
        raise GuieError(f"{str(path)!r} is a torch checkpoint, not TorchScript (torch.jit.save); "
                        "export the run with guie-export and package its saved_model.pt")
    return path


def _from_submission_zip(path: Path, staging: Path) -> ModelSource:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if names != [MODEL_FILENAME]:
                raise GuieError(f"{str(path)!r} holds {names}; a submission.zip holds only {MODEL_FILENAME} "
                                "at its root")
            target = staging / "source"
            target.mkdir(parents=True, exist_ok=True)
            model = Path(zf.extract(MODEL_FILENAME, target))
    except zipfile.BadZipFile:
        raise GuieError(f"{str(path)!r} is not a readable zip archive") from None
    return ModelSource(check_torchscript(model), "submission.zip", path, verify=_read_json(path.parent / VERIFY_FILENAME))


def _from_export_folder(folder: Path, staging: Path) -> ModelSource:
    verify = _read_json(folder / VERIFY_FILENAME)
    if (folder / MODEL_FILENAME).is_file():
        return ModelSource(check_torchscript(folder / MODEL_FILENAME), "export folder", folder, verify=verify)
    source = _from_submission_zip(folder / SUBMISSION_FILENAME, staging)
    source.kind, source.origin, source.verify = "export folder", folder, verify
    return source


def _from_run_folder(run: Path, staging: Path, log: Callable[[str], None]) -> ModelSource:
    try:
        from guie.export import export_run
    except ImportError:
        raise GuieError(f"{str(run)!r} is a run folder, but this guie has no exporter (guie.export); "
                        "export it with guie-export and pass the export folder") from None
    out = staging / "export"
    if out.exists():
        shutil.rmtree(out)
    log(f"exporting run {run} (TorchScript)")
    report = export_run(run, out, log=log, check_torch="auto")  # as guie-export does by default
    source = _from_export_folder(out, staging)
    source.kind, source.origin = "run folder", run
    source.verify = {**(report if isinstance(report, dict) else {}), **source.verify}
    source.config = _read_json(run / RUN_CONFIG_FILENAME)
    source.eval = _read_json(run / "eval.json")
    return source


def resolve_source(source: str | Path, staging: Path, log: Callable[[str], None] = print) -> ModelSource:
    """The TorchScript model behind SOURCE; run folders are exported into ``staging/export``."""
    path = Path(source)
    if path.is_file():
        if path.suffix == ".zip":
            return _from_submission_zip(path, staging)
        if path.suffix == ".pt":
            if path.name == RUN_MODEL_FILENAME and (path.parent / RUN_CONFIG_FILENAME).is_file():
                return _from_run_folder(path.parent, staging, log)
            return ModelSource(check_torchscript(path), "model file", path,
                               verify=_read_json(path.parent / VERIFY_FILENAME))
    elif path.is_dir():
        if (path / MODEL_FILENAME).is_file() or (path / SUBMISSION_FILENAME).is_file():
            return _from_export_folder(path, staging)
        if (path / RUN_MODEL_FILENAME).is_file() and (path / RUN_CONFIG_FILENAME).is_file():
            return _from_run_folder(path, staging, log)
        if (path / RUN_CONFIG_FILENAME).is_file():
            raise GuieError(f"run folder {str(path)!r} has no {RUN_MODEL_FILENAME}; finish it with "
                            f"guie-train --resume --out {path}")
    raise GuieError(f"SOURCE {str(source)!r} is not a submission.zip, an export folder ({MODEL_FILENAME}) "
                    f"or a guie-train run folder ({RUN_MODEL_FILENAME} + {RUN_CONFIG_FILENAME})")
