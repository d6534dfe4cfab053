"""The per-release torch environments guie-compat loads files in: found, built once, listed.

Each requested torch release gets its own virtual environment, built once with pip from the
package index and kept in ``$GUIE_TORCH_ENVS`` (default ``~/.cache/guie/torch-envs``; not under
``$GUIE_CACHE``, so test and feature caches never throw a 2-5 GB environment away). Releases
before 1.13 need an older Python, found on PATH or in pyenv (:func:`find_python`).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from packaging.version import InvalidVersion, Version

from guie.errors import GuieError
from guie.fileio import OutOfSpace, SpaceProblem, free_bytes, space_problem_in_text, write_json
from guie.paths import torch_envs_root

HOST_TORCH = "1.11.0"  # the GUIE 2022 host loaded submissions with PyTorch 1.11
ENV_MARKER = "guie-env.json"
ENV_FULL_FIX = ("free space there (a torch 2.x environment takes 2-5 GB, and pip unpacks in TMPDIR first), or set "
                "GUIE_TORCH_ENVS or TMPDIR to a disk with room, then rerun")


def canonical_release(version: str) -> str:
    """'1.11' -> '1.11.0', ' 2.4.1 ' -> '2.4.1', '2.4.1+cpu' -> '2.4.1': the form pip installs from PyPI."""
    return ".".join(str(n) for n in parse_release(version))


def parse_release(version: str) -> tuple[int, int, int]:
    """'1.11.0' -> (1, 11, 0); a bare '2.4' means 2.4.0; a local build label, as torch.__version__ has it
    ('2.4.1+cpu', '2.14.1+cu130'), names its release. Parsed as PEP 440 (packaging.version).

    Raises GuieError for anything else: text that is no version, a pre-, post- or dev release (PyPI
    holds torch's final releases only; nightlies and release candidates live on PyTorch's own index),
    or more than three numbers.
    """
    not_a_release = f"torch version {version!r} is not a release number; pass e.g. 1.11.0 or 2.4.1"
    try:
        parsed = Version(version.strip())
    except InvalidVersion:
        raise GuieError(not_a_release) from None
    if parsed.epoch or not 2 <= len(parsed.release) <= 3:
        raise GuieError(not_a_release)
    if parsed.is_prerelease or parsed.is_postrelease:
        final = ".".join(str(n) for n in parsed.release)
        raise GuieError(f"torch version {version!r} is not a final release; environments are installed from PyPI, "
                        f"which has torch's final releases only: pass e.g. {final}")
    major, minor, *patch = parsed.release
    return major, minor, patch[0] if patch else 0


def supported_pythons(version: str) -> list[tuple[int, int]]:
    """The CPython minor versions PyPI has wheels of this torch release for, newest first.

    From the releases' published wheel lists: 1.11-1.12 3.7-3.10, 1.13 3.7-3.11 (3.11 from
    1.13.1 on Linux), 2.0-2.1 3.8-3.11, 2.2-2.4 3.8-3.12, 2.5 3.9-3.13, 2.6+ 3.9-3.13 and newer.
    """
    major, minor, _ = parse_release(version)
    if (major, minor) < (1, 11):
        raise GuieError(f"torch {version} is older than 1.11 (the GUIE host's), which guie does not target; "
                        "pass 1.11.0 or newer")
    if (major, minor) <= (1, 12):
        low, high = 7, 10
    elif (major, minor) == (1, 13):
        low, high = 7, 11
    elif (major, minor) <= (2, 1):
        low, high = 8, 11
    elif (major, minor) <= (2, 4):
        low, high = 8, 12
    elif (major, minor) <= (2, 7):
        low, high = 9, 13
    else:
        low, high = 10, 14
    return [(3, m) for m in range(high, low - 1, -1)]


def python_version(python: str) -> tuple[int, int]:
    """(major, minor) of an interpreter, asked from the interpreter itself."""
    try:
        out = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GuieError(f"cannot run Python {python!r} ({exc}); pass a working interpreter with --python") from None
    found = re.fullmatch(r"(\d+)\.(\d+)", out.stdout.strip())
    if out.returncode != 0 or not found:
        raise GuieError(f"cannot run Python {python!r} (it did not report a version); pass a working interpreter "
                        "with --python")
    return int(found[1]), int(found[2])


def find_python(version: str, python: str | None = None) -> str:
    """An interpreter that torch ``version`` has wheels for: ``python`` if given (checked), this one if it
    fits, else ``pythonX.Y`` on PATH or in pyenv's versions folder, newest fitting minor first.

    Raises GuieError naming the versions needed when none is found.
    """
    wanted = supported_pythons(version)
    names = ", ".join(f"{a}.{b}" for a, b in wanted)
    if python:
        found = python_version(python)
        if found not in wanted:
            raise GuieError(f"torch {version} has no wheels for Python {found[0]}.{found[1]} ({python}); "
                            f"pass --python with one of {names}")
        return python
    if sys.version_info[:2] in wanted:
        return sys.executable
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    for major, minor in wanted:
        candidate = shutil.which(f"python{major}.{minor}")
        if candidate and _runs_as(candidate, (major, minor)):
            return candidate
        if pyenv.is_dir():
            for folder in sorted(pyenv.glob(f"{major}.{minor}.*"), reverse=True):
                exe = folder / "bin" / "python"
                if exe.is_file() and re.fullmatch(rf"{major}\.{minor}\.\d+", folder.name):
                    return str(exe)
    raise GuieError(f"torch {version} needs Python {names}, and none was found on PATH or in pyenv; "
                    "install one (e.g. `pyenv install 3.10`) or pass --python PATH")


def _runs_as(python: str, version: tuple[int, int]) -> bool:
    """Whether ``python`` runs and is that minor version (a pyenv shim of an unselected version does not run)."""
    try:
        return python_version(python) == version
    except GuieError:
        return False


@dataclass(frozen=True)
class TorchEnv:
    """A virtual environment holding one torch release."""

    torch: str
    python: str  # the environment's interpreter
    path: Path


def ensure_env(version: str, python: str | None = None, log: Callable[[str], None] = print) -> TorchEnv:
    """The environment for torch ``version``, built on first use: venv + ``pip install torch==VERSION``.

    Built in ``NAME.partial`` and renamed when torch imports and reports the asked version, so an
    interrupted build never passes for a finished one (the next call starts it again). Raises
    GuieError with pip's last line when the release cannot be installed.
    """
    version = canonical_release(version)
    base = find_python(version, python)
    major, minor = python_version(base)
    root = torch_envs_root()
    final = root / f"torch-{version}-py{major}.{minor}"
    env_python = final / "bin" / "python"
    final.parent.mkdir(parents=True, exist_ok=True)
    # beside the environment, so two processes never build it at once (filelock: flock on POSIX, also Windows)
    with FileLock(str(final.with_name(final.name + ".lock"))):
        if (final / ENV_MARKER).is_file() and env_python.exists():
            return TorchEnv(version, str(env_python), final)
        partial = final.with_name(final.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)  # a folder without its marker is a broken earlier build
        log(f"building a torch {version} environment with Python {major}.{minor} in {final} (once; pip "
            "downloads about 1-3 GB for a 2.x release)")
        start = time.perf_counter()
        steps = [[base, "-m", "venv", str(partial)],
                 [str(partial / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                  "--no-input", f"torch=={version}"]]
        for step in steps:
            res = subprocess.run(step, capture_output=True, text=True)
            if res.returncode != 0:
                shutil.rmtree(partial, ignore_errors=True)
                problem = space_problem_in_text(res.stderr + res.stdout)
                if problem:  # pip unpacks in TMPDIR and installs into the environment: name the fuller disk
                    tmp = Path(tempfile.gettempdir())
                    full = partial.parent if (free_bytes(partial.parent) or 0) <= (free_bytes(tmp) or 0) else tmp
                    raise OutOfSpace(full, SpaceProblem(problem.errno, f"{problem.detail}, pip installing torch "
                                                                       f"{version}"), ENV_FULL_FIX)
                last = [line for line in (res.stderr + res.stdout).strip().splitlines()
                        if line.strip() and not line.startswith("WARNING: Location")] or ["no output"]
                raise GuieError(f"could not install torch {version} for Python {major}.{minor}: {last[-1][:200]}; "
                                "check the version exists on PyPI for that Python and that the index is reachable")
        probe = subprocess.run([str(partial / "bin" / "python"), "-c", "import torch; print(torch.__version__)"],
                               capture_output=True, text=True)
        got = probe.stdout.strip().split("+")[0]
        if probe.returncode != 0 or got != version:
            shutil.rmtree(partial, ignore_errors=True)
            raise GuieError(f"the torch {version} environment reports torch {got or 'nothing'}; "
                            "delete it and rerun, or pass another --python")
        write_json(partial / ENV_MARKER, {"torch": probe.stdout.strip(), "python": f"{major}.{minor}",
                                          "base_python": base, "build_seconds": round(time.perf_counter() - start, 1)})
        os.replace(partial, final)  # a venv's interpreter finds its site-packages relative to itself
        log(f"torch {version} environment ready ({time.perf_counter() - start:.0f} s)")
        return TorchEnv(version, str(env_python), final)


def built_versions() -> list[str]:
    """The torch releases whose environments are already built, oldest first."""
    root = torch_envs_root()
    found = set()
    if root.is_dir():
        for folder in root.glob("torch-*-py*"):
            m = re.fullmatch(r"torch-(\d+\.\d+\.\d+)-py\d+\.\d+", folder.name)
            if m and (folder / ENV_MARKER).is_file():
                found.add(m[1])
    return sorted(found, key=parse_release)


def resolve_versions(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """Releases to check in: ``auto`` (the GUIE host's 1.11.0 when its environment is already built,
    a few seconds; else none), ``none``, or releases as a list or comma-separated text. Raises
    GuieError for a malformed or unsupported release."""
    items = [spec] if isinstance(spec, str) else list(spec)
    parts = [p.strip() for item in items for p in item.split(",") if p.strip()]
    if parts == ["auto"]:
        return [HOST_TORCH] if HOST_TORCH in built_versions() else []
    if parts in ([], ["none"]):
        return []
    for part in parts:
        supported_pythons(part)
    return list(dict.fromkeys(canonical_release(p) for p in parts))  # each release once, in the order given
