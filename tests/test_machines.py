"""The machines people run on: whatever the temporary path (an HPC job's 80-character scratch folder), the user
name (spaces, non-ASCII) or the locale, what guie starts works (the smoke test's notebook kernel, fresh
interpreters, torchrun); and processes that share a feature cache never compute the same images twice."""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import submission_models as sm

from guie.features.cache import CLAIMS_DIR, FeatureCache
from guie.ship.smoke import ipc_limit, socket_folder

REPO = Path(__file__).resolve().parents[1]
TINY = ["--backbone", "guie-tiny", "--pretrained", "none", "--epochs", "1", "--workers", "0"]


def long_tmpdir(tmp_path: Path) -> Path:
    """An HPC job's scratch folder: 80 characters or more before guie adds its own names."""
    folder = tmp_path / ("slurm-job-4815162342-scratch-" + "x" * max(0, 80 - len(str(tmp_path)) - 30))
    folder.mkdir()
    assert len(str(folder)) >= 80
    return folder


def odd_home(tmp_path: Path) -> Path:
    """A user folder whose name has a space and non-ASCII letters."""
    home = tmp_path / "home dir" / "jörg müller"
    home.mkdir(parents=True)
    return home


def machine_env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "TMPDIR": str(long_tmpdir(tmp_path)), "HOME": str(odd_home(tmp_path)), "LC_ALL": "C",
            "LANG": "C", "OMP_NUM_THREADS": "1"}


def shard_rows(cache_root: Path) -> int:
    """Rows of every shard the journals of ``cache_root`` list: the images computed into the cache."""
    rows = 0
    for journal in cache_root.glob("*/index.jsonl"):
        for line in journal.read_text().splitlines():
            shard = json.loads(line).get("shard")
            rows += shard["rows"] if shard else 0
    return rows


# ---- the notebook kernel's sockets -----------------------------------------------------------------------------


def test_kernel_sockets_go_where_their_paths_fit(tmp_path):
    short = tmp_path / "w"
    short.mkdir()
    assert len(str(short)) + len("/kernel-ipc-99") <= ipc_limit()
    assert socket_folder(short) == short
    work = long_tmpdir(tmp_path) / "guie-smoke-abcdefgh"
    work.mkdir()
    assert len(os.fsencode(str(work / "kernel-ipc-4"))) > ipc_limit()  # where the old code put them: too long
    sockets = socket_folder(work)
    try:
        assert sockets != work and len(os.fsencode(str(sockets / "kernel-ipc-4"))) <= ipc_limit()
        assert stat.S_IMODE(sockets.stat().st_mode) == 0o700  # private to this user
    finally:
        sockets.rmdir()


@pytest.mark.slow
def test_smoke_under_a_long_tmpdir_an_odd_home_and_the_c_locale(tmp_path, cli_process):
    # a fresh process: TMPDIR, HOME and the locale are read once per process (tempfile caches its folder)
    from guie.ship.folders import PackageSpec, build_package

    build = tmp_path / "build"
    build_package(sm.write_export(tmp_path / "export"), PackageSpec.create("guie-tester/guie-hpc-model",
                                                                           "guie-tester/guie-hpc-inference"),
                  build, log=lambda _: None)
    env = machine_env(tmp_path)
    before = set(Path("/tmp").glob("guie-smoke-*"))
    res = cli_process("smoke", str(build), env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "is too long a path for the kernel's IPC sockets (107 bytes at most): they go in a short private folder instead" \
        in res.stdout
    assert "smoke passed" in res.stdout and "ZMQError" not in res.stderr
    assert set(Path("/tmp").glob("guie-smoke-*")) == before  # the socket folder went with the run
    assert list(Path(env["TMPDIR"]).iterdir()) == []


# ---- fresh interpreters and torchrun -----------------------------------------------------------------------------


def test_fresh_interpreter_under_a_long_tmpdir_an_odd_home_and_the_c_locale(tmp_path):
    export = sm.write_export(tmp_path / "export")
    script = ("import sys, torch; from pathlib import Path; from guie.export.fresh import TensorInput, run_fresh; "
              "r = run_fresh(sys.executable, Path(sys.argv[1]), [TensorInput('x', torch.zeros(1, 3, 20, 30, "
              "dtype=torch.uint8))]); print(r.error, r.guie_refused, r.inputs[0].runs[0].shape)")
    res = subprocess.run([sys.executable, "-c", script, str(export / "saved_model.pt")], capture_output=True,
                         text=True, env=machine_env(tmp_path), cwd=REPO, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip() == "None True (1, 64)"


@pytest.mark.slow
def test_torchrun_under_a_long_tmpdir_an_odd_home_and_the_c_locale(tmp_path, digits_dir):
    out, cache = tmp_path / "ddp", tmp_path / "cache"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "guie.train",
         "--data", f"imagefolder:{digits_dir}", *TINY, "--max-per-class", "12", "--out", str(out), "--cache-dir",
         str(cache)], capture_output=True, text=True, env=machine_env(tmp_path), cwd=REPO, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    assert (out / "model.pt").is_file() and shard_rows(cache) == 120


# ---- processes sharing one feature cache ---------------------------------------------------------------------------


def test_a_live_claim_is_left_alone_and_a_dead_ones_is_taken_over(tmp_path):
    cache = FeatureCache.open_dir(tmp_path / "c", {"format": "test"})
    keys = [f"/img/{i}.png|10|{i}" for i in range(10)]
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    try:
        (tmp_path / "c" / CLAIMS_DIR).mkdir()
        host = socket.gethostname()
        for name, pid, claimed in (("alive", sleeper.pid, keys[:4]), ("dead", gone.pid, keys[4:7])):
            (tmp_path / "c" / CLAIMS_DIR / f"{name}.json").write_text(json.dumps({"host": host, "pid": pid,
                                                                                  "keys": claimed}))
        old = time.time() - 3600  # a claim from another host that stopped beating long ago
        stale = tmp_path / "c" / CLAIMS_DIR / "elsewhere.json"
        stale.write_text(json.dumps({"host": "another-node", "pid": 1, "keys": keys[7:8]}))
        os.utime(stale, (old, old))
        claim = cache.claim(keys, range(10))
        assert claim.busy == [0, 1, 2, 3] and claim.mine == [4, 5, 6, 7, 8, 9]
        assert sorted(p.name for p in (tmp_path / "c" / CLAIMS_DIR).iterdir()) == sorted(
            ["alive.json", claim.path.name])
        other = subprocess.run([sys.executable, "-c", "import sys, json; from guie.features.cache import FeatureCache; "
                                "c = FeatureCache.open_dir(sys.argv[1], {'format': 'test'}); "
                                "cl = c.claim(json.loads(sys.argv[2]), range(10)); print(cl.mine, cl.busy)",
                                str(tmp_path / "c"), json.dumps(keys)], capture_output=True, text=True, timeout=120)
        assert other.stdout.strip() == f"[] {list(range(10))}", other.stderr  # another process finds our claim
        cache.add_shard(keys[4:10], np.ones((6, 2), np.float32), np.ones((6, 2)), {}, {"feature_dim": 2,
                                                                                     "preprocess_cfg": {}})
        claim.release()
        assert cache.claim(keys, range(10)).busy == [0, 1, 2, 3]  # computed ones are never claimed again
    finally:
        sleeper.kill()
        sleeper.wait()
    assert cache.claim(keys, range(10)).mine == [0, 1, 2, 3]  # its owner died


SHARED_EXTRACTION = """
import dataclasses, sys, time, torch
from guie.features.extract import ensure_features
from guie.model.backbone import BackboneSpec, load_backbone

class Slow(torch.nn.Module):  # a tower slow enough (0.3 s a batch) that the two processes surely overlap
    def __init__(self, visual):
        super().__init__()
        self.visual = visual

    def forward(self, x):
        time.sleep(0.3)
        return self.visual(x)

spec = BackboneSpec("guie-tiny", "none")
def backbone():
    loaded = load_backbone(spec, torch.device("cpu"))
    return dataclasses.replace(loaded, visual=Slow(loaded.visual))

paths = open(sys.argv[2]).read().split("\\n")
feats = ensure_features(paths, spec, 0, sys.argv[1], backbone, batch_size=10, num_workers=0, shard_size=30,
                        log=print)
print("COMPUTED", feats.computed, "ROWS", len(feats.views[0]))
"""


@pytest.mark.slow
def test_two_processes_on_one_cache_compute_each_image_once(tmp_path):
    """The bug report's two trainings on one cache, made small: two real processes extracting the same 300
    new images at the same time compute 300 rows between them (not 562), each image once."""
    from guie.data.demo import write_digits

    data = write_digits(tmp_path / "digits-300", per_class=30)
    listing = tmp_path / "paths.txt"
    listing.write_text("\n".join(sorted(str(p) for p in data.rglob("*.png"))))
    cache = tmp_path / "cache"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    runs = [subprocess.Popen([sys.executable, "-c", SHARED_EXTRACTION, str(cache), str(listing)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)
            for _ in range(2)]
    outputs = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-2000:] for _, err in outputs]
    done = [next(line for line in out.splitlines() if line.startswith("COMPUTED ")).split() for out, _ in outputs]
    computed = [int(words[1]) for words in done]
    assert sum(computed) == 300 and min(computed) > 0  # shared, and each image once
    assert [int(words[3]) for words in done] == [300, 300]  # each process has every image's features
    assert shard_rows(cache) == 300  # not 562
    assert any("waiting for another process that computes" in out for out, _ in outputs)
    assert not list(cache.glob(f"*/{CLAIMS_DIR}/*.json"))  # every claim released
