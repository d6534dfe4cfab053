"""Services that are not there: W&B and the Kaggle API are checked before any work, with a bounded wait and a
progress line, and answered in one line naming what is missing and the offline alternative; W&B failing
once a run has started never costs the run."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from conftest import tiny_train_config
from fake_kaggle import CLIENT_BOOT, OWNER, SUBMIT_BOOT, client_env
from submission_models import write_export

from guie.errors import GuieError
from guie.services import reach
from guie.train import tracking

KEY = "k" * 40  # the form of a W&B API key; no server ever sees it
TINY = ["--backbone", "guie-tiny", "--pretrained", "none", "--epochs", "1", "--workers", "0"]


class Silent:
    """A server that accepts connections and never answers: a network that swallows requests."""

    def __enter__(self) -> Silent:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()


class Answering:
    """A server answering every request with ``status`` and ``{}``."""

    def __init__(self, status: int = 500):
        fake = self
        self.status, self.hits = status, 0

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fake.hits += 1
                self.send_response(fake.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> Answering:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for name in ("WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GUIE_SERVICE_TIMEOUT", "1")
    return tmp_path / "home"


# ---- the bounded check ---------------------------------------------------------------------------------------------


def test_reach_answers_within_the_bound():
    with Answering(404) as server:
        assert reach(server.url, 2) is None  # any HTTP answer means the service is there
    assert reach(closed_port_url(), 2).startswith("ConnectionRefusedError")
    with Silent() as silent:
        start = time.monotonic()
        problem = reach(silent.url, 1)
        assert time.monotonic() - start < 2.5
    assert problem in ("TimeoutError: timed out", "no answer within 1 s")


# ---- W&B -----------------------------------------------------------------------------------------------------------


def test_wandb_online_without_a_key_is_one_line_before_any_request(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_BASE_URL", closed_port_url())
    lines: list[str] = []
    with pytest.raises(GuieError) as err:
        tracking.check_tracking("online", lines.append)
    assert str(err.value) == (
        f"--wandb online needs a W&B API key for {os.environ['WANDB_BASE_URL']}: none in WANDB_API_KEY or the netrc "
        "file (~/.netrc); run `wandb login` or export WANDB_API_KEY, or train with --wandb offline and upload later "
        "with: wandb sync RUN/wandb/offline-run-*")
    assert lines == []  # nothing was contacted
    tracking.check_tracking("offline", lines.append)  # offline needs nothing
    tracking.check_tracking("off", lines.append)


def test_wandb_keys_where_wandb_finds_them(no_wandb_key, monkeypatch):
    monkeypatch.setenv("WANDB_API_KEY", "short")
    with pytest.raises(GuieError, match=r"WANDB_API_KEY is not a W&B API key \(API key must have 40\+ characters"):
        tracking.wandb_credentials("https://api.example.org")
    monkeypatch.delenv("WANDB_API_KEY")
    no_wandb_key.mkdir()
    (no_wandb_key / ".netrc").write_text(f"machine api.example.org\n  login user\n  password {KEY}\n")
    assert tracking.wandb_credentials("https://api.example.org") == str(no_wandb_key / ".netrc")
    assert tracking.wandb_credentials("https://other.example.org") is None


@pytest.mark.parametrize("server", ["closed", "silent"])
def test_wandb_online_without_network_is_one_line_within_the_bound(no_wandb_key, monkeypatch, server):
    monkeypatch.setenv("WANDB_API_KEY", KEY)
    with Silent() as silent:
        url = silent.url if server == "silent" else closed_port_url()
        monkeypatch.setenv("WANDB_BASE_URL", url)
        lines: list[str] = []
        start = time.monotonic()
        with pytest.raises(GuieError) as err:
            tracking.check_tracking("online", lines.append)
        assert time.monotonic() - start < 3
    assert lines == [f"checking W&B at {url} (at most 1 s)"]
    assert str(err.value).startswith(f"W&B at {url} did not answer (")
    assert str(err.value).endswith("); check the network (or WANDB_BASE_URL), or train with --wandb offline and "
                                   "upload later with: wandb sync RUN/wandb/offline-run-*")


@pytest.mark.slow
def test_guie_train_checks_wandb_before_reading_any_image(tmp_path, cli, digits_dir):
    out, cache = tmp_path / "run", tmp_path / "cache"
    res = cli("train", "--data", f"imagefolder:{digits_dir}", *TINY, "--wandb", "online", "--cache-dir", str(cache),
              "--out", str(out), env={"HOME": str(tmp_path / "home"), "WANDB_MODE": "", "WANDB_API_KEY": KEY,
                                      "WANDB_BASE_URL": closed_port_url(), "GUIE_SERVICE_TIMEOUT": "1"})
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stdout.splitlines()[0].startswith("checking W&B at http://127.0.0.1:")
    assert res.stderr.startswith("error: W&B at http://127.0.0.1:") and len(res.stderr.splitlines()) == 1
    assert not out.exists() and not cache.exists()  # no data read, no feature computed, no folder made


@pytest.mark.slow
def test_wandb_failing_during_the_run_never_costs_it(tmp_path, digits_dir, monkeypatch):
    import wandb

    from guie.train.run import run_training

    def unreachable(self, *args, **kwargs):
        raise wandb.errors.CommError("Network error (ConnectionError), entering retry loop")

    monkeypatch.setattr(wandb.sdk.wandb_run.Run, "log", unreachable)
    lines: list[str] = []
    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=3, wandb="offline")
    result = run_training(cfg, log=lines.append)
    assert len(result.metrics) == 3 and (tmp_path / "run" / "model.pt").is_file()
    warnings = [line for line in lines if line.startswith("warning: W&B")]
    assert warnings == [
        "warning: W&B failed while logging metrics (CommError: Network error (ConnectionError), entering retry loop); "
        f"training goes on without tracking, every epoch is in {tmp_path / 'run' / 'metrics.jsonl'}"]
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.slow
def test_wandb_that_answers_but_cannot_start_the_run_falls_back_to_offline(tmp_path, cli_process, digits_dir):
    # a fresh process: W&B's service and settings are process-wide, and an earlier run in this one would
    # answer for it. WANDB_MODE exported empty (wandb itself refuses that value) counts as unset.
    out = tmp_path / "run"
    with Answering(500) as server:
        res = cli_process("train", "--data", f"imagefolder:{digits_dir}", *TINY, "--wandb", "online", "--out", str(out),
                  env={"HOME": str(tmp_path / "home"), "WANDB_MODE": "", "WANDB_API_KEY": KEY,
                       "WANDB_BASE_URL": server.url, "GUIE_SERVICE_TIMEOUT": "1"})
    assert res.returncode == 0, res.stderr[-3000:]
    assert f"checking W&B at {server.url} (at most 1 s)" in res.stdout
    assert "warning: W&B did not start the run online (" in res.stdout
    assert f"logging it offline instead: upload later with wandb sync {out}/wandb/offline-run-*" in res.stdout
    assert list((out / "wandb").glob("offline-run-*")) and (out / "model.pt").is_file()


# ---- the Kaggle API ------------------------------------------------------------------------------------------------


def run_booted(boot: str, endpoint: str, args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """guie-package or guie-submit in a fresh interpreter whose kaggle client is aimed at ``endpoint``."""
    return subprocess.run([sys.executable, "-c", boot, endpoint, *args], capture_output=True, text=True, env=env,
                          timeout=120)


@pytest.mark.parametrize("server", ["closed", "silent"])
def test_package_upload_without_kaggle_is_one_line_and_builds_nothing(tmp_path, server):
    export = write_export(tmp_path / "export")
    build = tmp_path / "build"
    env = client_env(tmp_path / "home", KAGGLE_API_TOKEN="KGAT_fake-token", GUIE_SERVICE_TIMEOUT="1")
    with Silent() as silent:
        url = silent.url if server == "silent" else closed_port_url()
        res = run_booted(CLIENT_BOOT, url, [str(export), "--dataset", f"{OWNER}/guie-offline-model", "--kernel",
                                            f"{OWNER}/guie-offline-inference", "--out", str(build), "--upload"], env)
    assert res.returncode == 2 and "Traceback" not in res.stderr and "KGAT_fake-token" not in res.stdout + res.stderr
    assert res.stdout.splitlines() == [f"checking the Kaggle API at {url} (at most 1 s)"]
    (line,) = res.stderr.splitlines()
    assert line.startswith(f"error: the Kaggle API at {url} did not answer (")
    assert line.endswith(f"nothing was built or uploaded. Without Kaggle, run guie-package without --upload and upload "
                         f"later: kaggle datasets create -p {build}/dataset, then kaggle kernels push -p {build}/kernel")
    assert not build.exists()


def test_submit_without_kaggle_is_one_line_and_sends_nothing(tmp_path):
    from guie.ship.folders import PackageSpec, build_package

    build = tmp_path / "build"
    build_package(write_export(tmp_path / "export"), PackageSpec.create(f"{OWNER}/guie-offline-model",
                                                                        f"{OWNER}/guie-offline-inference"),
                  build, log=lambda _: None)
    before = sorted(p.name for p in build.iterdir())
    env = client_env(tmp_path / "home", KAGGLE_API_TOKEN="KGAT_fake-token", GUIE_SERVICE_TIMEOUT="1")
    url = closed_port_url()
    res = run_booted(SUBMIT_BOOT, url, [str(build), "--wait", "5"], env)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stdout.splitlines() == [f"checking the Kaggle API at {url} (at most 1 s)"]
    assert res.stderr.strip() == (f"error: the Kaggle API at {url} did not answer (ConnectionRefusedError: [Errno 111] "
                                  f"Connection refused); nothing was uploaded or submitted; rerun guie-submit {build} "
                                  f"once Kaggle answers (guie-smoke {build} checks the package offline meanwhile)")
    assert sorted(p.name for p in build.iterdir()) == before  # no uploaded.json, no leaderboard.jsonl


def test_the_kaggle_endpoint_is_the_clients(monkeypatch):
    from guie.ship.upload import kaggle_endpoint

    monkeypatch.delenv("KAGGLE_API_ENVIRONMENT", raising=False)
    assert kaggle_endpoint() == "https://api.kaggle.com"
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    assert kaggle_endpoint() == "http://localhost"
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "MARS")
    with pytest.raises(GuieError, match="the kaggle client refuses KAGGLE_API_ENVIRONMENT"):
        kaggle_endpoint()
