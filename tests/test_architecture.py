"""ARCHITECTURE.md's invariants, checked on the source: the chain only flows forward, no private names cross
modules, and the map names every package of the tree."""
from __future__ import annotations

import ast
from pathlib import Path

GUIE = Path(__file__).resolve().parents[1] / "guie"
ARCHITECTURE = GUIE.parent / "ARCHITECTURE.md"

# Bottom layer first; a package may import packages of its own or a lower layer only.
LAYERS = [
    {"errors", "version", "paths", "fsnames", "fileio"},
    {"artifacts", "distributed", "leaderboard_log", "services"},
    {"data"},
    {"model"},
    {"features", "retrieval"},
    {"config"},
    {"train", "eval", "export"},
    {"ship"},
    {"workflows"},
    {"cli"},
]
# Siblings of one layer that must not know each other.
FORBIDDEN = {("train", "eval"), ("train", "export"), ("eval", "train"), ("eval", "export"), ("export", "train"),
             ("export", "eval")}
ENTRY_POINTS = {"__main__.py"}  # `python -m guie.X` entries sit above everything, like the CLI


def layer_of(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"package guie.{package} is in no layer of tests/test_architecture.py (and ARCHITECTURE.md)")


def package_of(path: Path, root: Path = GUIE) -> str:
    return path.relative_to(root).with_suffix("").parts[0]


def guie_imports(path: Path) -> list[tuple[int, str, list[str]]]:
    """(line, imported guie module, imported names) of every import in ``path``, inside functions too."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("guie"):
            found.append((node.lineno, node.module, [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names if a.name.split(".")[0] == "guie"]
    return found


def modules(root: Path = GUIE) -> list[Path]:
    return sorted(p for p in root.rglob("*.py") if p.name != "__init__.py" or p.parent != root)


def backward_imports(root: Path = GUIE) -> list[str]:
    """Every import of ``root``'s modules that points up the chain or across a forbidden pair, one line each."""
    wrong = []
    for path in modules(root):
        if path.name in ENTRY_POINTS:
            continue
        here = package_of(path, root)
        for line, module, _ in guie_imports(path):
            parts = module.split(".")
            if len(parts) < 2:
                continue  # `import guie` / `from guie import __version__`
            there = parts[1]
            if there == here:
                continue
            if layer_of(there) > layer_of(here) or (here, there) in FORBIDDEN:
                wrong.append(f"{path.relative_to(root.parent)}:{line} ({here}) imports {module}")
    return wrong


def test_every_import_points_down_the_chain():
    wrong = backward_imports()
    assert not wrong, "imports against the chain (ARCHITECTURE.md, Invariants):\n" + "\n".join(wrong)


def test_no_private_name_is_imported_from_another_module():
    wrong = []
    for path in modules():
        me = ".".join(("guie", *path.relative_to(GUIE).with_suffix("").parts))
        for line, module, names in guie_imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and module != me:
                wrong.append(f"{path.relative_to(GUIE.parent)}:{line} imports {', '.join(private)} from {module}")
    assert not wrong, "\n".join(wrong)


def test_the_map_names_every_package():
    text = ARCHITECTURE.read_text(encoding="utf-8")
    packages = sorted({package_of(p) for p in modules()} - {"__init__", "__main__"})
    missing = [p for p in packages if f"`{p}" not in text]
    assert not missing, f"ARCHITECTURE.md's code map does not name: {', '.join(missing)}"
    assert len(text.splitlines()) <= 150, "ARCHITECTURE.md should stay readable in ten minutes (150 lines)"


def test_the_check_catches_backward_imports(tmp_path):
    """The checker itself, on a tree made here: a lazy import of eval inside train, data importing export, and
    a torchrun entry importing the CLI (allowed)."""
    root = tmp_path / "guie"
    (root / "train").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "train" / "run.py").write_text("import os\n\ndef f():\n    from guie.eval.evaluate import evaluate\n")
    (root / "train" / "__main__.py").write_text("from guie.cli import main\n")
    (root / "data" / "x.py").write_text("import guie.export.build\nfrom guie.errors import GuieError\n")
    assert backward_imports(root) == ["guie/data/x.py:1 (data) imports guie.export.build",
                                      "guie/train/run.py:4 (train) imports guie.eval.evaluate"]
