"""Resources that run out: a full disk or a quota, at every writer, is one line naming the folder, leaves no
partial file behind, and the rerun after freeing space succeeds.

Two ways in: the writer made to fail at its narrowest point (an OSError with errno ENOSPC or EDQUOT,
numpy's short write, torch's writer error), and real commands on a real small disk: a tmpfs mounted in
a private mount namespace (``unshare -m``, or ``unshare -rm`` as an unprivileged user), then remounted
bigger for the rerun. Those are skipped where the machine allows neither.
"""
import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import submission_models as sm

from guie.fileio import (
    OutOfSpace,
    atomic_path,
    remove_stale_staging,
    space_problem,
    staging_folder,
    writing_into,
)

ENOSPC = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
TINY = ["--backbone", "guie-tiny", "--pretrained", "none", "--epochs", "1", "--workers", "0"]


def _namespace_prefix() -> list[str] | None:
    if not shutil.which("unshare"):
        return None
    probe = Path(os.environ.get("TMPDIR", "/tmp")) / f"guie-mount-probe-{os.getpid()}"
    probe.mkdir(exist_ok=True)
    try:
        for prefix in (["unshare", "-m"], ["unshare", "-rm"]):
            res = subprocess.run([*prefix, "sh", "-c", f"mount -t tmpfs -o size=64k tmpfs {probe}"],
                                 capture_output=True, timeout=30)
            if res.returncode == 0:
                return prefix
    finally:
        probe.rmdir()
    return None


NAMESPACE = _namespace_prefix()
small_disk = pytest.mark.skipif(NAMESPACE is None, reason="needs unshare -m (or -rm) to mount a small tmpfs")

_SCRIPT = """
mount -t tmpfs -o size="$SMALL" tmpfs "$DISK" || exit 90
sh -c "$SETUP" || exit 91
python -m guie.cli $FIRST > "$LOG/first.out" 2> "$LOG/first.err"; echo $? > "$LOG/first.rc"
find "$DISK" -mindepth 1 | sort > "$LOG/after-first.txt"
[ -z "$SECOND" ] && exit 0
mount -o remount,size="$BIG" "$DISK" || exit 92
python -m guie.cli $SECOND > "$LOG/second.out" 2> "$LOG/second.err"; echo $? > "$LOG/second.rc"
find "$DISK" -mindepth 1 | sort > "$LOG/after-second.txt"
"""


class Runs:
    """The two runs of one command on a small disk, before and after it was made bigger."""

    def __init__(self, log: Path, disk: Path):
        self.log, self.disk = log, disk

    def rc(self, which: str) -> int:
        return int((self.log / f"{which}.rc").read_text())

    def err(self, which: str) -> str:
        return (self.log / f"{which}.err").read_text()

    def out(self, which: str) -> str:
        return (self.log / f"{which}.out").read_text()

    def files(self, which: str) -> list[str]:
        text = (self.log / f"after-{which}.txt").read_text()
        return [str(Path(line).relative_to(self.disk)) for line in text.splitlines()]


def on_small_disk(tmp_path: Path, small: str, first: list[str], rerun: bool = True,
                  setup: str = "true", big: str = "64m", env: dict | None = None) -> Runs:
    """Run ``python -m guie.cli FIRST`` with ``tmp_path/disk`` a tmpfs of ``small``, then (with ``rerun``) grow it
    to ``big`` and run it again. Arguments must not hold spaces."""
    disk, log = tmp_path / "disk", tmp_path / "log"
    disk.mkdir()
    log.mkdir()
    script_env = {**os.environ, **(env or {}), "SMALL": small, "BIG": big, "DISK": str(disk), "LOG": str(log),
                  "SETUP": setup, "FIRST": " ".join(first), "SECOND": " ".join(first) if rerun else "",
                  "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([*NAMESPACE, "sh", "-c", _SCRIPT], env=script_env, capture_output=True, text=True,
                         timeout=600)
    assert res.returncode == 0, (res.returncode, res.stderr)
    return Runs(log, disk)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.startswith("error:") or "Traceback" in line]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    return lines[0]


# ---- the narrowest points -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("exc, headline, detail", [
    (OSError(errno.ENOSPC, "No space left on device"), "the disk is full", "No space left on device"),
    (OSError(errno.EDQUOT, "Disk quota exceeded"), "the disk quota is used up", "Disk quota exceeded"),
    (OSError(errno.EFBIG, "File too large"), "the file size limit (ulimit -f) is reached", "File too large"),
    (OSError("3072 requested and 1984 written"), "the disk is full",
     "No space left on device: a write stopped short, 3072 bytes requested and 1984 written"),
    (RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 31168 vs 31056"), "the disk is full",
     "No space left on device: torch could not finish writing the file"),
    (OSError(errno.EACCES, "Permission denied"), None, None),
    (RuntimeError("shape mismatch"), None, None),
])
def test_refused_writes_are_recognised_however_worded(exc, headline, detail):
    problem = space_problem(exc)
    assert (problem.headline, problem.detail) == (headline, detail) if headline else problem is None


def test_an_atomic_write_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    target = tmp_path / "run" / "model.pt"
    with pytest.raises(OutOfSpace) as err:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise ENOSPC
    assert str(err.value).startswith(f"the disk is full: cannot write to {tmp_path / 'run'} (No space left on device; ")
    assert str(err.value).endswith(" free there); nothing half-written was kept; free space there or write to another "
                                   "disk, then rerun")
    assert err.value.exit_code == 1 and err.value.errno == errno.ENOSPC and isinstance(err.value, OSError)
    assert sorted(os.listdir(tmp_path / "run")) == []


def test_a_writers_own_fix_replaces_the_generic_one_inside_its_folder(tmp_path):
    with pytest.raises(OutOfSpace) as err:
        with writing_into(tmp_path, "pass another --out"):
            with atomic_path(tmp_path / "sub" / "x.json"):
                raise OSError(errno.EDQUOT, "Disk quota exceeded")
    assert str(err.value).startswith(f"the disk quota is used up: cannot write to {tmp_path / 'sub'} (Disk quota exceeded;")
    assert str(err.value).endswith("; pass another --out")
    with pytest.raises(OutOfSpace) as err:  # a folder elsewhere (the feature cache) keeps its own words
        with writing_into(tmp_path / "run", "pass another --out"):
            with atomic_path(tmp_path / "cache" / "x.npy"):
                raise ENOSPC
    assert str(err.value).endswith("write to another disk, then rerun")


def test_a_full_cache_keeps_no_orphan_shard_and_no_torn_journal_line(tmp_path, monkeypatch):
    from guie.features import cache as cache_module
    from guie.features.cache import FeatureCache

    cache = FeatureCache.open_dir(tmp_path / "c", {"format": "test"})
    meta = {"feature_dim": 4, "preprocess_cfg": {}}
    cache.add_shard(["a|1|1"], np.ones((1, 4), np.float32), np.ones((1, 2)), {}, meta)
    journal = (tmp_path / "c" / "index.jsonl").read_bytes()
    real_save = np.save
    calls = {"n": 0}

    def save_then_full(fh, arr):  # the features land, the sizes shard hits the full disk as numpy reports it
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("2688 requested and 1984 written")
        real_save(fh, arr)

    monkeypatch.setattr(cache_module.np, "save", save_then_full)
    with pytest.raises(OutOfSpace) as err:
        cache.add_shard(["b|1|1", "c|1|1"], np.ones((2, 4), np.float32), np.ones((2, 2)), {}, meta)
    assert str(err.value).startswith(f"the disk is full: cannot write to {tmp_path / 'c'} (No space left on device: a "
                                     "write stopped short, 2688 bytes requested and 1984 written; ")
    assert "--cache-dir or $GUIE_CACHE" in str(err.value) and "extraction resumes after them" in str(err.value)
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.name.startswith("shard-")) == sorted(
        f"{cache.shards[0]['file'][:-4]}{ext}" for ext in (".npy", ".sizes.npy", ".keys.txt"))
    monkeypatch.setattr(cache_module.np, "save", real_save)

    class HalfWrite:  # the journal line is cut short by the disk: 10 bytes land, then ENOSPC
        def __init__(self, fh):
            self.fh = fh

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

        def __getattr__(self, name):
            return getattr(self.fh, name)

        def write(self, data):
            self.fh.write(bytes(data)[:10])
            raise ENOSPC

    def open_journal(path, mode="r", *args, **kwargs):
        fh = open(path, mode, *args, **kwargs)
        return HalfWrite(fh) if str(path).endswith("index.jsonl") and "a" in mode else fh

    monkeypatch.setattr(cache_module, "open", open_journal, raising=False)
    with pytest.raises(OutOfSpace):
        cache.add_shard(["d|1|1"], np.ones((1, 4), np.float32), np.ones((1, 2)), {}, meta)
    monkeypatch.undo()
    assert (tmp_path / "c" / "index.jsonl").read_bytes() == journal
    assert len([p for p in (tmp_path / "c").iterdir() if p.name.startswith("shard-")]) == 3
    assert FeatureCache.open_dir(tmp_path / "c", {"format": "test"}).missing(["a|1|1", "b|1|1", "d|1|1"]) == [1, 2]


def test_a_dead_processes_staging_folder_is_removed_and_a_live_ones_kept(tmp_path):
    stale = tmp_path / ".guie-export-dead"
    stale.mkdir()
    (stale / "saved_model.pt").write_bytes(b"x" * 4096)
    live = tmp_path / ".guie-export-live"
    live.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from filelock import FileLock; "
                               f"l = FileLock({str(live / '.lock')!r}); l.acquire(); print('held', flush=True); "
                               "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        old = time.time() - 3600
        for folder in (stale, live):
            os.utime(folder, (old, old))
        lines: list[str] = []
        removed = remove_stale_staging(tmp_path, ".guie-export-", lines.append)
        assert removed == [stale] and not stale.exists() and live.is_dir()
        assert lines == [f"removed {stale} (4.0 KiB), left by an earlier run that did not finish"]
    finally:
        holder.kill()
        holder.wait()
    young = tmp_path / ".guie-export-young"  # just made by a process that may not hold its lock yet
    young.mkdir()
    assert remove_stale_staging(tmp_path, ".guie-export-") == [live]  # its holder is gone now
    assert young.is_dir()
    with staging_folder(tmp_path, ".guie-package-") as tmp:
        (tmp / "x").write_text("y")
    assert not tmp.exists()


def test_a_torch_environment_build_on_a_full_disk(tmp_path, monkeypatch):
    from guie.export import torch_envs

    monkeypatch.setenv("GUIE_TORCH_ENVS", str(tmp_path / "envs"))
    monkeypatch.setattr(torch_envs, "find_python", lambda version, python=None: sys.executable)
    monkeypatch.setattr(torch_envs, "python_version", lambda python: (3, 11))
    pip_said = "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device\n"

    def run(step, **kwargs):
        if "venv" in step:
            Path(step[-1], "bin").mkdir(parents=True)
            return subprocess.CompletedProcess(step, 0, "", "")
        return subprocess.CompletedProcess(step, 1, "", pip_said)

    monkeypatch.setattr(torch_envs.subprocess, "run", run)
    with pytest.raises(OutOfSpace) as err:
        torch_envs.ensure_env("2.0.1", log=lambda _: None)
    assert str(err.value).startswith("the disk is full: cannot write to ")
    assert "(No space left on device, pip installing torch 2.0.1; " in str(err.value)
    assert "set GUIE_TORCH_ENVS or TMPDIR to a disk with room" in str(err.value)
    assert not any(p.name.endswith(".partial") for p in (tmp_path / "envs").iterdir())


def test_an_unnamed_os_error_of_a_full_disk_names_its_folder(tmp_path):
    import click

    from guie.cli.common import friendly_errors

    @click.command()
    @friendly_errors
    def command() -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "out" / "f.bin"))

    from click.testing import CliRunner

    res = CliRunner().invoke(command, [])
    assert res.exit_code == 1
    assert res.output.startswith(f"error: the disk is full: cannot write to {tmp_path / 'out'} (No space left on device;")


def test_smoke_on_a_full_temporary_disk_names_it_and_keeps_nothing(tmp_path, monkeypatch):
    from guie.ship import smoke
    from guie.ship.folders import PackageSpec, build_package

    build = tmp_path / "build"
    build_package(sm.write_export(tmp_path / "export"), PackageSpec.create("guie-tester/guie-full-model",
                                                                           "guie-tester/guie-full-inference"),
                  build, log=lambda _: None)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(smoke.tempfile, "tempdir", None)

    def full(work, dataset_dir, slug):
        raise OSError(errno.ENOSPC, "No space left on device", str(work / "kaggle" / "input"))

    monkeypatch.setattr(smoke, "emulate_kaggle", full)
    with pytest.raises(OutOfSpace) as err:
        smoke.run_smoke(build, log=lambda _: None)
    assert str(err.value).startswith(f"the disk is full: cannot write to {tmp_path / 'tmp'}/guie-smoke-")
    assert "point TMPDIR at a disk with room" in str(err.value)
    assert os.listdir(tmp_path / "tmp") == []
    report = json.loads((build / "smoke" / "report.json").read_text())
    assert report["failed"]["check"] == "disk space"


# ---- real commands on a real small disk ---------------------------------------------------------------------------


@small_disk
@pytest.mark.slow
def test_feature_cache_on_a_full_disk_then_resumed(tmp_path, digits_dir):
    cache = tmp_path / "disk" / "cache"
    args = ["train", "--data", f"imagefolder:{digits_dir}", *TINY, "--shard-size", "64", "--cache-dir", str(cache),
            "--out", str(tmp_path / "run")]
    runs = on_small_disk(tmp_path, "40k", args)
    assert runs.rc("first") == 1
    line = one_error_line(runs.err("first"))
    assert line.startswith(f"error: the disk is full: cannot write to {cache}/guie-tiny-v0-")
    assert "(--cache-dir or $GUIE_CACHE)" in line
    files = runs.files("first")
    assert not [f for f in files if f.endswith(".tmp")]
    shard_files = {f.rsplit("/", 1)[1] for f in files if "/shard-" in f}
    journal = [f for f in files if f.endswith("index.jsonl")]
    assert journal and len(shard_files) % 3 == 0 and shard_files  # whole shards only: features, sizes, keys
    assert runs.rc("second") == 0, runs.err("second")[-2000:]
    done = runs.out("second")
    cached = int(done.split("using cached features for ")[1].split()[0])
    assert 0 < cached < 400 and f"computing {400 - cached} (clean view)" in done


@small_disk
@pytest.mark.slow
def test_run_folder_on_a_full_disk_then_rerun(tmp_path, digits_dir):
    out = tmp_path / "disk" / "run"
    args = ["train", "--data", f"imagefolder:{digits_dir}", *TINY, "--out", str(out)]
    runs = on_small_disk(tmp_path, "24k", args)
    assert runs.rc("first") == 1
    line = one_error_line(runs.err("first"))
    assert line.startswith(f"error: the disk is full: cannot write to {out} (No space left on device: torch could not "
                           "finish writing the file; ")
    assert "rerun the same command" in line
    assert not [f for f in runs.files("first") if f.endswith(".tmp") or f.endswith(".pt")]
    assert runs.rc("second") == 0, runs.err("second")[-2000:]
    assert {"model.pt", "config.json", "data.json", "eval.json"} <= {f.split("/")[-1] for f in runs.files("second")}


@small_disk
@pytest.mark.slow
def test_export_on_a_full_disk_refuses_before_torch_aborts_and_clears_a_dead_exports_folder(tmp_path, trained_run):
    out = tmp_path / "disk" / "e"
    setup = (f"mkdir -p {out}/.guie-export-old && head -c 100000 /dev/zero > {out}/.guie-export-old/saved_model.pt"
             f" && touch -d '2 hours ago' {out}/.guie-export-old")
    runs = on_small_disk(tmp_path, "1m", ["export", str(trained_run), "--out", str(out), "--check-torch", "none"],
                         setup=setup)
    assert runs.rc("first") == 1  # not 134: torch.jit.save is never reached on a disk without room
    line = one_error_line(runs.err("first"))
    assert line.startswith("error: the disk is full: the TorchScript file and submission.zip need about ")
    assert f" MiB in {out} (" in line and "nothing was written; free space there or pass another --out" in line
    assert f"removed {out}/.guie-export-old (97.7 KiB), left by an earlier run that did not finish" in runs.out("first")
    assert runs.files("first") == ["e"]  # the dead export's folder went, and the failed one left nothing in OUT
    assert runs.rc("second") == 0, runs.err("second")[-2000:]
    assert runs.files("second") == ["e", "e/saved_model.pt", "e/submission.zip", "e/verify.json"]


@small_disk
@pytest.mark.slow
def test_package_on_a_full_disk_then_rerun(tmp_path):
    export = sm.write_export(tmp_path / "export")
    build = tmp_path / "disk" / "build"
    args = ["package", str(export), "--dataset", "guie-tester/guie-full-model", "--kernel",
            "guie-tester/guie-full-inference", "--out", str(build)]
    runs = on_small_disk(tmp_path, "400k", args)
    assert runs.rc("first") == 1
    line = one_error_line(runs.err("first"))
    assert line.startswith(f"error: the disk is full: cannot write to {build}") and "pass another --out" in line
    assert runs.files("first") == []
    assert runs.rc("second") == 0, runs.err("second")[-2000:]
    assert "build/dataset/saved_model.pt" in runs.files("second")
    assert not [f for f in runs.files("second") if ".guie-package-" in f]


@small_disk
@pytest.mark.slow
def test_smoke_with_a_full_tmpdir(tmp_path):
    from guie.ship.folders import PackageSpec, build_package

    build = tmp_path / "build"
    build_package(sm.write_export(tmp_path / "export"), PackageSpec.create("guie-tester/guie-full-model",
                                                                           "guie-tester/guie-full-inference"),
                  build, log=lambda _: None)
    runs = on_small_disk(tmp_path, "600k", ["smoke", str(build)], rerun=False, env={"TMPDIR": str(tmp_path / "disk")})
    assert runs.rc("first") == 1
    line = one_error_line(runs.err("first"))  # the notebook's own "No space left" in its cell, named as this disk's
    assert line.startswith(f"error: the disk is full: cannot write to {tmp_path / 'disk'}/guie-smoke-")
    assert "point TMPDIR at a disk with room" in line
    assert runs.files("first") == []  # the emulated tree is gone, so a rerun finds the disk as it was
    assert json.loads((build / "smoke" / "report.json").read_text())["failed"]["check"] == "disk space"
