"""Shared test fixtures: an isolated cache, tiny real image sets, a trained tiny run, and CLI runners
(in this process, and in a fresh ``python -m guie.cli`` process)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

import pytest

# Every test (and every subprocess it starts) uses a private cache and never reaches W&B servers.
_CACHE = tempfile.mkdtemp(prefix="guie-test-cache-")
os.environ["GUIE_CACHE"] = _CACHE
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
# Under pytest-xdist (the README's -n 2) each worker gets one thread: two workers with two threads
# each on two cores spin against each other.
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")
# Shrunken open_clip configs of every image-tower family (tests/model_configs), registered by guie.
os.environ["GUIE_MODEL_CONFIGS"] = str(Path(__file__).resolve().parent / "model_configs")
for secret in ("KAGGLE_KEY", "KAGGLE_USERNAME", "KAGGLE_API_TOKEN", "WANDB_API_KEY"):
    os.environ.pop(secret, None)

REPO = Path(__file__).resolve().parents[1]
# A test of the torch_envs fixture (tests/test_compat.py) may build both old-torch environments in its
# setup on a fresh machine (pip from the package index: 1.6 GB and 4 GB); the rest have pyproject's timeout.
COMPAT_TIMEOUT = 2400


def pytest_collection_modifyitems(config, items):
    """Mark every test that uses the old-torch environments ``compat``, with the longer timeout."""
    for item in items:
        if "torch_envs" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.compat)
            if item.get_closest_marker("timeout") is None:
                item.add_marker(pytest.mark.timeout(COMPAT_TIMEOUT))


def tiny_train_config(data: list[str], out: Path, **overrides):
    """A fast guie-tiny training config that learns on the digits."""
    from guie.config import TrainConfig

    values = dict(data=data, out=str(out), backbone="guie-tiny", pretrained="none", epochs=8,
                  batch_size=32, lr=1e-2, scale=16.0, margin=0.2, eval="holdout", workers=0)
    values.update(overrides)
    return TrainConfig(**values).validate()


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory) -> Path:
    """400 real handwritten digits (40 per class) as an imagefolder of 32x32 PNGs."""
    from guie.data.demo import write_digits

    return write_digits(tmp_path_factory.mktemp("data") / "digits", per_class=40)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory, digits_dir) -> Path:
    """A finished guie-tiny run folder (model.pt, config.json, eval.json, ...) trained on ``digits_dir``."""
    from guie.train.run import run_training

    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_training(tiny_train_config([f"imagefolder:{digits_dir}"], out), log=lambda _: None)
    return out


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run the ``guie`` command group with ARGS in this process (click's CliRunner), as ``python -m guie.cli
    ARGS`` would run: exit status, stdout and stderr as text. An exception that would end the process
    uncaught comes back as that process would show it: exit 1, its traceback on stderr. ``env`` entries
    apply during the call only (None removes one); ``timeout`` is kept for the callers, pytest-timeout
    (pyproject.toml) bounds the test instead."""
    from click.testing import CliRunner

    from guie.cli import cli as guie_group

    before = Path.cwd()
    if cwd is not None:
        os.chdir(cwd)
    try:
        result = CliRunner().invoke(guie_group, list(args), env=env, prog_name="python -m guie.cli")
    finally:
        os.chdir(before)
    stderr = result.stderr
    if result.exc_info is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(*result.exc_info))
    return subprocess.CompletedProcess([sys.executable, "-m", "guie.cli", *args], result.exit_code,
                                       result.stdout, stderr)


def run_cli_process(*args: str, env: dict | None = None, cwd: Path | None = None,
                    timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``python -m guie.cli ARGS`` in a fresh interpreter, as a user would, capturing text output:
    for the tests where the process is the point (the real entry, process-wide environment)."""
    return subprocess.run([sys.executable, "-m", "guie.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=timeout)


@pytest.fixture
def cli():
    """``run_cli``: a guie command in this process."""
    return run_cli


@pytest.fixture
def cli_process():
    """``run_cli_process``: a guie command in a fresh ``python -m guie.cli`` process."""
    return run_cli_process
