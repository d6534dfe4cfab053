"""guie.artifacts: what a path is, for files made by the real tools (torch.jit.save, torch.save,
torch.export.save, zipfile), and the one way to open each."""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
from torch import nn

from guie.artifacts import (
    ANYTHING,
    BUILD_FOLDER,
    CHECKPOINT,
    EXPORT_FOLDER,
    PROGRAM,
    RUN_FOLDER,
    SUBMISSION,
    TAKES_EVAL_MODEL,
    TAKES_PACKAGE_SOURCE,
    TAKES_RUN,
    TAKES_TORCHSCRIPT,
    TORCHSCRIPT,
    TorchScriptLoadError,
    archive_kind,
    extract_saved_model,
    identify,
    load_torchscript,
    read_report,
    saved_model_sha256,
)
from guie.errors import GuieError
from guie.fileio import file_sha256

ANY_PASSES = ("pass a guie-train run folder or its model.pt, a saved_model.pt, a saved_model.pt2, a submission.zip, "
              "an export folder or a guie-package build folder")


class Double(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 2.0


def jit_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices
        torch.jit.save(torch.jit.script(Double()), str(path))
    return path


def save_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"weights": torch.zeros(3)}, path)
    return path


def program_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(Double(), (torch.zeros(2, 3),)), str(path))
    return path


def zip_of(path: Path, members: dict[str, Path | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for name, content in members.items():
            if isinstance(content, Path):
                zf.write(content, name)
            else:
                zf.writestr(name, content)
    return path


def message(path, takes=ANYTHING) -> str:
    with pytest.raises(GuieError) as err:
        identify(path, takes)
    return str(err.value)


# ---- the layouts the one rule reads -------------------------------------------------------------------------------


def test_the_rule_is_the_layout_each_tool_writes(tmp_path):
    """If a torch release changes how it lays out its archives, this fails before guie misjudges a file."""
    layouts = {}
    for name, make in (("ts", jit_file), ("save", save_file), ("program", program_file)):
        with zipfile.ZipFile(make(tmp_path / f"{name}.bin")) as zf:
            names = zf.namelist()
            root = names[0].split("/")[0]
            assert all(n.startswith(root + "/") for n in names), names  # one top folder, as torch requires
            layouts[name] = ({n[len(root) + 1:] for n in names}, archive_kind(zf))
            if name == "program":
                assert zf.read(f"{root}/archive_format") == b"pt2"
    ts, save, program = (layouts[k][0] for k in ("ts", "save", "program"))
    assert {"data.pkl", "constants.pkl"} <= ts and any(n.startswith("code/") for n in ts)
    assert "data.pkl" in save and "constants.pkl" not in save and not any(n.startswith("code/") for n in save)
    assert "constants.pkl" not in program and "data.pkl" not in program
    assert [layouts[k][1] for k in ("ts", "save", "program")] == [TORCHSCRIPT, CHECKPOINT, PROGRAM]


# ---- files --------------------------------------------------------------------------------------------------------


def test_each_file_kind(tmp_path):
    ts = jit_file(tmp_path / "a" / "model.pt")  # the name says nothing: the layout does
    assert identify(ts).kind == TORCHSCRIPT
    assert identify(save_file(tmp_path / "b" / "whatever.bin")).kind == CHECKPOINT
    assert identify(program_file(tmp_path / "c" / "saved_model.pt2")).kind == PROGRAM
    legacy = zip_of(tmp_path / "d" / "old.pt2", {"serialized_exported_program.json": b"{}", "version": b"1"})
    assert identify(legacy).kind == PROGRAM  # what torch.export.save wrote in torch 2.1 to 2.5
    sub = identify(zip_of(tmp_path / "e" / "submission.zip", {"saved_model.pt": ts}))
    assert (sub.kind, sub.model_kind, sub.model_file, sub.name) == (SUBMISSION, SUBMISSION, tmp_path / "e" / "submission.zip", "e")


def test_a_checkpoint_named_saved_model_is_a_checkpoint(tmp_path):
    odd = save_file(tmp_path / "odd" / "saved_model.pt")
    assert identify(odd).kind == CHECKPOINT
    assert message(odd, TAKES_TORCHSCRIPT) == (
        f"{odd} is a torch checkpoint (torch.save), not TorchScript (torch.jit.save); export the run with guie-export "
        "and pass its saved_model.pt")
    assert message(odd, TAKES_PACKAGE_SOURCE) == (
        f"{odd} is a torch checkpoint, not TorchScript (torch.jit.save); export the run with guie-export and package "
        "its saved_model.pt")
    assert identify(odd, TAKES_RUN).kind == CHECKPOINT  # guie-export takes it; read_model_file checks its format


def test_files_that_are_none_of_them(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a model")
    assert message(junk) == f"{junk} is not a file guie writes (not a zip archive); {ANY_PASSES}"
    assert message(junk, TAKES_TORCHSCRIPT) == (
        f"{junk} is not a TorchScript file (not a zip archive); pass a saved_model.pt, a submission.zip or an export "
        "folder")
    ts = jit_file(tmp_path / "ts" / "saved_model.pt")
    without = zip_of(tmp_path / "without.zip", {"model/saved_model.pt": ts, "notes.txt": b"hi"})
    assert message(without) == (
        f"{without} holds no saved_model.pt at its root and is no torch archive (found: model/saved_model.pt, "
        "notes.txt); a submission.zip holds saved_model.pt at its root and nothing else")
    extra = zip_of(tmp_path / "extra.zip", {"saved_model.pt": ts, "notes.txt": b"hi"})
    assert message(extra) == (f"{extra} holds ['saved_model.pt', 'notes.txt']; a submission.zip holds only "
                              "saved_model.pt at its root")
    assert message(tmp_path / "nowhere") == f"{tmp_path / 'nowhere'} does not exist; {ANY_PASSES}"
    program = program_file(tmp_path / "p" / "saved_model.pt2")
    assert message(program, TAKES_EVAL_MODEL) == (
        f"{program} is a torch.export program (guie-export --program), not a model file: it loads with "
        "torch.export.load in the torch that made it or newer; pass a guie-train run folder, its model.pt, a "
        "TorchScript saved_model.pt or a submission.zip")
    assert message(ts, TAKES_RUN) == (f"{ts} is a TorchScript file (torch.jit.save), not a guie model file; pass a "
                                      "guie-train run folder or its model.pt")


# ---- folders ------------------------------------------------------------------------------------------------------


def test_each_folder_kind(tmp_path):
    run = tmp_path / "run"
    save_file(run / "model.pt")
    (run / "config.json").write_text("{}")
    art = identify(run)
    assert (art.kind, art.model_file, art.model_kind, art.name) == (RUN_FOLDER, run / "model.pt", CHECKPOINT, "run")
    as_file = identify(run / "model.pt", TAKES_EVAL_MODEL)
    assert (as_file.kind, as_file.run_folder, as_file.name) == (CHECKPOINT, run, "run")
    as_source = identify(run / "model.pt", TAKES_PACKAGE_SOURCE)  # a run's model.pt stands for the run there
    assert (as_source.kind, as_source.path) == (RUN_FOLDER, run)

    export = tmp_path / "export"
    ts = jit_file(export / "saved_model.pt")
    zip_of(export / "submission.zip", {"saved_model.pt": ts})
    art = identify(export)
    assert (art.kind, art.model_file, art.model_kind) == (EXPORT_FOLDER, ts, TORCHSCRIPT)
    ts.unlink()
    art = identify(export)
    assert (art.model_file, art.model_kind) == (export / "submission.zip", SUBMISSION)

    build = tmp_path / "build"
    jit_file(build / "dataset" / "saved_model.pt")
    (build / "dataset" / "dataset-metadata.json").write_text("{}")
    art = identify(build)
    assert (art.kind, art.model_file, art.model_kind) == (BUILD_FOLDER, build / "dataset" / "saved_model.pt",
                                                          TORCHSCRIPT)


def test_folders_that_are_none_of_them(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert message(empty) == f"{empty} holds no model.pt, saved_model.pt or submission.zip; {ANY_PASSES}"
    assert message(empty, TAKES_RUN) == (f"no model.pt in '{empty}'; pass a finished guie-train run folder (a killed "
                                         "run finishes with guie-train --resume --out RUN)")
    assert message(empty, TAKES_PACKAGE_SOURCE) == (
        f"{empty} is not a submission.zip, an export folder (saved_model.pt) or a guie-train run folder (model.pt + "
        "config.json); pass one of those")

    run = tmp_path / "unfinished"
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert message(run) == (f"run folder {run} has no model.pt (its training did not finish); finish it with "
                            f"guie-train --resume --out {run}")
    save_file(run / "model.pt")
    jit_file(run / "export" / "saved_model.pt")
    assert message(run, TAKES_TORCHSCRIPT) == (
        f"{run} holds no saved_model.pt or submission.zip (a run folder: its export is {run / 'export'}); pass a "
        "saved_model.pt, a submission.zip or an export folder")

    export = tmp_path / "bad-export"
    save_file(export / "saved_model.pt")
    assert message(export, TAKES_TORCHSCRIPT) == (
        f"{export / 'saved_model.pt'} is a torch checkpoint (torch.save), not TorchScript (torch.jit.save); export "
        "the run with guie-export and pass its saved_model.pt")


# ---- opening ------------------------------------------------------------------------------------------------------


def test_opening_a_submission_zip_and_what_it_stands_for(tmp_path):
    ts = jit_file(tmp_path / "export" / "saved_model.pt")
    sub = zip_of(tmp_path / "export" / "submission.zip", {"saved_model.pt": ts})
    out = extract_saved_model(sub, tmp_path / "out")
    assert out.read_bytes() == ts.read_bytes()
    x = torch.arange(6.0).view(2, 3)
    for path in (ts, sub, tmp_path / "export"):
        assert torch.equal(load_torchscript(path)(x), x * 2.0)
    sha = file_sha256(ts)
    assert saved_model_sha256(ts) == saved_model_sha256(sub) == saved_model_sha256(tmp_path / "export") == sha
    run = tmp_path / "run"
    save_file(run / "model.pt")
    assert saved_model_sha256(run) is None and saved_model_sha256(run / "model.pt") is None
    assert saved_model_sha256(tmp_path / "nowhere") is None

    wrong = zip_of(tmp_path / "wrong" / "submission.zip", {"saved_model.pt": save_file(tmp_path / "ckpt.pt")})
    assert identify(wrong).kind == SUBMISSION  # the layout is right; the file inside is checked when taken out
    with pytest.raises(GuieError) as err:
        load_torchscript(wrong)
    assert str(err.value) == (f"{wrong} holds a saved_model.pt that is a torch checkpoint (torch.save), not "
                              "TorchScript (torch.jit.save); make the submission.zip with guie-export")


def test_a_file_this_torch_cannot_load_is_one_line(tmp_path):
    ts = jit_file(tmp_path / "saved_model.pt")
    future = tmp_path / "future.pt"
    with zipfile.ZipFile(ts) as zin, zipfile.ZipFile(future, "w") as zout:
        for info in zin.infolist():
            version = info.filename.endswith("/.data/version") or info.filename.split("/", 1)[-1] == "version"
            zout.writestr(info.filename, b"99\n" if version else zin.read(info))
    with pytest.raises(TorchScriptLoadError) as err:
        load_torchscript(future, shown_as="FILE", fix="export it again")
    assert "version 99" in err.value.reason and "\n" not in str(err.value)
    assert str(err.value) == f"FILE does not load in this torch {torch.__version__} ({err.value.reason}); export it again"


def test_reports_are_dicts_or_empty(tmp_path):
    (tmp_path / "verify.json").write_text(json.dumps({"sha256": "ab"}))
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "bad.json").write_text("{not json")
    assert read_report(tmp_path / "verify.json") == {"sha256": "ab"}
    assert read_report(tmp_path / "list.json") == read_report(tmp_path / "bad.json") == {}
    assert read_report(tmp_path / "missing.json") == {}
