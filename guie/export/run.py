"""guie-export: run folder -> verified saved_model.pt, submission.zip and verify.json, all or nothing."""
from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from guie.errors import GuieError
from guie.fileio import file_sha256, write_json
from guie.version import __version__

MODEL_NAME = "saved_model.pt"
ZIP_NAME = "submission.zip"
PROGRAM_NAME = "saved_model.pt2"
FORMATS = ("torchscript", "program")


def write_submission_zip(model_file: Path, zip_path: Path) -> None:
    """submission.zip holding ``saved_model.pt`` at its root and nothing else (the host's layout)."""
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.write(model_file, arcname=MODEL_NAME)


def export_run(model: str | Path, out_dir: str | Path, *, fp16: bool = False, fmt: str = "torchscript",
               log: Callable[[str], None] = print, chunk: int = 32, measure_speed: bool = True,
               tta: str = "none") -> dict[str, Any]:
    """Export a run folder (or model.pt) and verify it; returns the verify report.

    Writes ``out_dir/saved_model.pt`` (``saved_model.pt2``, a torch.export program, for
    ``fmt="program"``; the chunked batch loop is left out there), for TorchScript
    also ``out_dir/submission.zip``, and ``out_dir/verify.json``. Everything is built and checked
    in a temporary folder first: a failed check leaves no model file or zip behind.
    """
    from guie.export.build import build_submission_module

    if fmt not in FORMATS:
        raise GuieError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if chunk < 1:
        raise GuieError("--chunk must be at least 1")
    # torch.export needs one pass over the batch: a Python loop over chunks would fix the batch size.
    eager, embedder, info = build_submission_module(model, fp16, chunk if fmt == "torchscript" else 0, tta)
    out = Path(out_dir)  # made only once the model has loaded: a wrong RUN leaves no empty folder behind
    out.mkdir(parents=True, exist_ok=True)
    extras = (["TTA " + info["tta"]] if info["tta"] != "none" else []) + (["size features"] if info["size_features"] else [])
    log(f"exporting {info['backbone']['name']} ({info['backbone']['pretrained']}) + projection to "
        f"{info['dim']}-D as {fmt}{' (fp16 weights)' if fp16 else ''}{' with ' + ' and '.join(extras) if extras else ''}")
    return write_verified(eager, embedder, info, out, fmt, str(Path(model).resolve()), log, measure_speed)


def export_ensemble(runs: list[str | Path], out_dir: str | Path, *, dim: int = 64, images: int = 2000,
                    seed: int = 0, log: Callable[[str], None] = print, chunk: int = 32,
                    measure_speed: bool = True) -> dict[str, Any]:
    """Export several runs as one module: concatenated embeddings, PCA to ``dim``; verified like a single run."""
    from guie.export.ensemble import build_ensemble

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eager, info = build_ensemble(runs, dim=dim, images=images, seed=seed, chunk=chunk, log=log)
    log(f"exporting an ensemble of {len(runs)} runs to {dim}-D as torchscript")
    return write_verified(eager, None, info, out, "torchscript", [str(Path(r).resolve()) for r in runs], log,
                          measure_speed, reference=lambda x: eager(x))


def write_verified(eager: torch.nn.Module, embedder: Any, info: dict[str, Any], out: Path, fmt: str, source: Any,
                   log: Callable[[str], None], measure_speed: bool,
                   reference: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """Save ``eager`` as ``fmt`` in a temporary folder, verify it, then move the files into ``out``."""
    from guie.export.build import export_program, script
    from guie.export.verify import verify_export

    tmp = Path(tempfile.mkdtemp(prefix=".guie-export-", dir=out))
    try:
        if fmt == "torchscript":
            name = MODEL_NAME
            torch.jit.save(script(eager), str(tmp / name))
        else:
            name = PROGRAM_NAME
            export_program(eager, tmp / name)
        checks = verify_export(tmp / name, eager, embedder, info, log, measure_speed=measure_speed,
                               reference=reference)
        if fmt == "torchscript":
            write_submission_zip(tmp / name, tmp / ZIP_NAME)
        report = {
            "format": fmt, "file": name, "file_size_bytes": (tmp / name).stat().st_size,
            "sha256": file_sha256(tmp / name), "torch_version": torch.__version__, "guie_version": __version__,
            "source": source, "preprocess": info, **checks,
        }
        for produced in (name, ZIP_NAME):
            if (tmp / produced).exists():
                os.replace(tmp / produced, out / produced)
        write_json(out / "verify.json", report)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size_mb = report["file_size_bytes"] / 2**20
    speed = report.get("images_per_s")
    log(f"wrote {out / name} ({size_mb:.1f} MiB)" + (f", {out / ZIP_NAME}" if fmt == "torchscript" else "")
        + f", {out / 'verify.json'}" + (f"; {speed['exported']:.0f} img/s exported vs {speed['eager']:.0f} eager "
                                       f"(batch {speed['batch']})" if speed else ""))
    return report
