"""Every third-party package guie imports is declared in setup.py, so the next undeclared import fails here.

Imports are read with ast from every module under guie/ (module level, inside functions, and the
Python source held in strings: the notebook cells and the smoke kernel's boot code); the tests and
benchmarks are checked against install_requires plus the dev extra.
"""
from __future__ import annotations

import ast
import runpy
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]

# Top-level import names whose PyPI distribution has another name.
DISTRIBUTION_OF = {
    "PIL": "pillow",
    "slugify": "python-slugify",
    "faiss": "faiss-cpu",
    "open_clip": "open_clip_torch",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
}


def imported_names(source: str) -> set[str]:
    """Top-level names of the absolute imports in ``source``, also those in string constants that parse as code."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import " in node.value:
            try:
                names |= imported_names(node.value)
            except SyntaxError:  # prose, not code
                pass
    return names


def third_party(files: list[Path], local: set[str]) -> dict[str, list[str]]:
    """Third-party top-level import name -> the files (relative to the repo) importing it."""
    found: dict[str, list[str]] = {}
    for path in files:
        for name in imported_names(path.read_text(encoding="utf-8")):
            if name not in sys.stdlib_module_names and name not in local:
                found.setdefault(name, []).append(str(path.relative_to(REPO)))
    return found


def distribution(name: str) -> str:
    return canonicalize_name(DISTRIBUTION_OF.get(name, name))


@pytest.fixture(scope="module")
def declared() -> dict[str, set[str]]:
    """setup.py's install_requires ("install") and extras as canonical distribution names, from running setup.py."""
    captured: dict = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
        mp.chdir(REPO)
        runpy.run_path(str(REPO / "setup.py"), run_name="__main__")
    names = {"install": {canonicalize_name(Requirement(r).name) for r in captured["install_requires"]}}
    for extra, reqs in captured["extras_require"].items():
        names[extra] = {canonicalize_name(Requirement(r).name) for r in reqs}
    return names


def test_every_package_guie_imports_is_in_install_requires(declared):
    used = third_party(sorted((REPO / "guie").rglob("*.py")), local={"guie"})
    assert {"torch", "open_clip", "kaggle", "requests", "slugify", "jupyter_client", "timm", "ipykernel"} <= set(used)
    missing = {name: files for name, files in used.items() if distribution(name) not in declared["install"]}
    assert missing == {}, "declare these in setup.py's install_requires (import name: files): " + repr(missing)


def test_every_package_the_tests_import_is_declared(declared):
    files = sorted([*(REPO / "tests").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")])
    local = {"guie", *(p.stem for p in files)}
    used = third_party(files, local)
    missing = {name: paths for name, paths in used.items()
               if distribution(name) not in declared["install"] | declared["dev"]}
    assert missing == {}, "declare these in setup.py (install_requires or the dev extra): " + repr(missing)


def test_the_name_table_matches_the_installed_distributions():
    """DISTRIBUTION_OF agrees with the installed metadata, and no imported name needs a row it lacks."""
    installed = {name: {canonicalize_name(d) for d in dists} for name, dists in packages_distributions().items()}
    for name, dist in DISTRIBUTION_OF.items():
        if name in installed:
            assert canonicalize_name(dist) in installed[name], (name, installed[name])
    files = sorted([*(REPO / "guie").rglob("*.py"), *(REPO / "tests").rglob("*.py")])
    for name in third_party(files, {"guie", *(p.stem for p in files)}):
        if name in installed and name not in DISTRIBUTION_OF:
            assert canonicalize_name(name) in installed[name], \
                f"import {name} comes from {sorted(installed[name])}: add it to DISTRIBUTION_OF"


def test_imports_in_functions_and_code_strings_are_read():
    source = '''
import numpy as np
from PIL import Image
from . import sibling
def f():
    import requests
    from jupyter_client.manager import AsyncKernelManager
BOOT = """import sys
from ipykernel.kernelapp import launch_new_instance
"""
HELP = "the notebook must not import it"
'''
    assert imported_names(source) == {"numpy", "PIL", "requests", "jupyter_client", "sys", "ipykernel"}
