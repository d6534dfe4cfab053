"""The one fresh-interpreter runner: its plan and result, its guard against guie, and that it runs as the
oldest torch's interpreter runs it (Python 3.7 syntax, torch 1.11, nothing but torch installed)."""
import ast
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import submission_models as sm
import torch
from PIL import Image

from guie.errors import GuieError
from guie.export.fresh import (
    INLINE_VALUES,
    RUNNER,
    SECRET_ENV,
    ImageInput,
    TensorInput,
    child_env,
    run_fresh,
    write_plan,
)
from guie.export.fresh_runner import GUARD_MESSAGE
from guie.export.host_images import host_cases


class Pixels(torch.nn.Module):
    """Returns its input as float: (N, 3, H, W) values, so large inputs give large outputs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().flatten(1)


class Pair(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.float(), x.float()


def scripted(tmp_path: Path, module: torch.nn.Module, name: str = "model.pt") -> Path:
    path = tmp_path / name
    torch.jit.save(sm.script(module), str(path))
    return path


def png(path: Path, size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Path:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size[1], size[0], 3), generator=g, dtype=torch.uint8).numpy()
    img = Image.fromarray(pixels)
    (img.convert(mode) if mode != "RGB" else img).save(path)
    return path


def test_the_runner_is_python_3_7_with_only_the_standard_library_at_import():
    source = RUNNER.read_text()
    tree = ast.parse(source, feature_version=(3, 7))  # raises on newer syntax (walrus, match, ...)
    top = {alias.name.split(".")[0] for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
    top |= {node.module.split(".")[0] for node in tree.body if isinstance(node, ast.ImportFrom)}
    assert top <= {"array", "json", "os", "sys", "time", "traceback"}, top


def test_plan_and_result(tmp_path):
    model = scripted(tmp_path, sm.ContractModel())
    local = torch.jit.load(str(model))
    x = host_cases()[1]
    a, b = png(tmp_path / "a.png", (40, 30)), png(tmp_path / "b.png", (40, 30), mode="L", seed=1)
    result = run_fresh(sys.executable, model, [TensorInput("tensor", x, runs=2), ImageInput("one", (str(a),)),
                                               ImageInput("two", (str(a), str(b)))])
    assert result.loaded and result.torch == torch.__version__ and result.python == ".".join(map(str, sys.version_info[:3]))
    assert result.load_seconds > 0 and result.run_seconds > 0 and result.wall_seconds > result.load_seconds
    tensor, one, two = result.inputs
    assert [i.name for i in result.inputs] == ["tensor", "one", "two"] and not any(i.error for i in result.inputs)
    assert tensor.input_shape == (1, 3, 31, 64) and len(tensor.runs) == 2
    out = tensor.runs[0]
    assert (out.type, out.shape, out.dtype, out.values.dtype) == ("Tensor", (1, 64), "torch.float32", "float32")
    assert out.seconds > 0
    assert torch.equal(torch.from_numpy(out.values), local(x))  # float32 values come back exactly
    # image files host-style: PIL open, convert("RGB"), uint8 (1, 3, H, W); two of a size stacked
    host = [torch.from_numpy(np.array(Image.open(p).convert("RGB"))).permute(2, 0, 1)
            for p in (a, b)]
    assert one.input_shape == (1, 3, 30, 40) and two.input_shape == (2, 3, 30, 40)
    assert torch.equal(torch.from_numpy(one.runs[0].values), local(host[0].unsqueeze(0)))
    assert torch.allclose(torch.from_numpy(two.runs[0].values), local(torch.stack(host)), atol=1e-6)


def test_the_executor_is_the_hosts_unless_the_simple_one_is_asked_for(tmp_path):
    model = scripted(tmp_path, sm.ContractModel())
    x = host_cases()[1]
    default = run_fresh(sys.executable, model, [TensorInput("x", x)])
    simple = run_fresh(sys.executable, model, [TensorInput("x", x)], profiling_executor=False)
    assert (default.profiling_executor, simple.profiling_executor) == (True, False)
    assert np.array_equal(default.inputs[0].runs[0].values, simple.inputs[0].runs[0].values)


def test_large_outputs_other_types_and_failures(tmp_path):
    x = host_cases()[3]  # (1, 3, 500, 300): 450,000 values, more than come back inline
    assert x.numel() > INLINE_VALUES
    result = run_fresh(sys.executable, scripted(tmp_path, Pixels()), [TensorInput("large", x)])
    (large,) = result.inputs
    assert large.runs[0].shape == (1, x.numel()) and torch.equal(torch.from_numpy(large.runs[0].values),
                                                                 x.float().flatten(1))

    (pair,) = run_fresh(sys.executable, scripted(tmp_path, Pair()), [TensorInput("x", x)]).inputs
    assert pair.runs[0].type == "tuple" and not pair.runs[0].is_tensor and pair.runs[0].values is None

    truncated = tmp_path / "truncated.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 10, 10)).save(buf, "JPEG")
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    good = png(tmp_path / "good.png", (64, 48))
    plan = [ImageInput("odd size", (str(good),)), ImageInput("broken", (str(good), str(truncated))),
            ImageInput("mixed", (str(good), str(png(tmp_path / "small.png", (8, 8)))))]
    odd, broken, mixed = run_fresh(sys.executable, scripted(tmp_path, sm.FixedSize()), plan).inputs
    assert odd.error.stage == "forward" and odd.error.type in ("RuntimeError", "Error")
    assert odd.error.last_line.endswith("expected a 224x224 image") and odd.runs == []
    assert broken.error.stage == "input" and broken.error.file == str(truncated) and broken.input_shape is None
    assert broken.error.type == "OSError" and "truncated" in broken.error.last_line.lower()
    assert mixed.error.stage == "input" and mixed.error.file is None and "cannot be stacked" in mixed.error.first_line

    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a TorchScript archive")
    result = run_fresh(sys.executable, junk, [TensorInput("x", x)])
    assert not result.loaded and result.error.stage == "load" and result.inputs == []
    assert result.torch == torch.__version__ and result.guie_refused  # the guard held all the same

    with pytest.raises(GuieError, match="is torch.float32; the runner feeds uint8"):
        run_fresh(sys.executable, junk, [TensorInput("float", x.float())])


def test_the_child_cannot_import_guie_though_it_is_installed(tmp_path):
    # guie is installed editable in this interpreter: isolation alone does not hide it
    assert subprocess.run([sys.executable, "-I", "-c", "import guie"], cwd=tmp_path).returncode == 0
    model = scripted(tmp_path, sm.ContractModel())
    result = run_fresh(sys.executable, model, [TensorInput("x", host_cases()[0])])
    assert result.guie_refused and result.guie_import_error == GUARD_MESSAGE and result.guie_modules == []
    assert "guie is not installed at Kaggle" in GUARD_MESSAGE

    # not isolated either (the rule for a torch in the user site): the guard alone holds, and the runner's
    # own folder (guie/export, the script's folder) is taken off sys.path
    plan = write_plan(model, [], "cpu", tmp_path)
    out = tmp_path / "result.json"
    res = subprocess.run([sys.executable, str(RUNNER), "run", str(plan), str(out)], cwd=tmp_path,
                         capture_output=True, text=True, env=child_env())
    assert res.returncode == 0, res.stderr
    data = json.loads(out.read_text())
    assert data["guie_import_error"] == GUARD_MESSAGE and data["guie_modules"] == []


def test_secrets_never_reach_the_child(monkeypatch):
    for name in SECRET_ENV:
        monkeypatch.setenv(name, "secret-value")
    monkeypatch.setenv("GUIE_SOMETHING", "kept")
    env = child_env({"EXTRA": "1"})
    assert not set(SECRET_ENV) & set(env) and env["GUIE_SOMETHING"] == "kept" and env["EXTRA"] == "1"


def test_a_crashed_interpreter_and_the_timeout_are_results(tmp_path):
    crasher = tmp_path / "python"
    crasher.write_text("#!/bin/sh\necho \"terminate called after throwing an instance of 'c10::Error'\" >&2\n"
                       "echo '  what():  isTuple() INTERNAL ASSERT FAILED' >&2\nkill -ABRT $$\n")
    crasher.chmod(0o755)
    result = run_fresh(str(crasher), tmp_path / "m.pt", [])
    assert not result.loaded and result.error.stage == "died" and result.python is None
    assert str(result.error) == "the process died (exit -6): isTuple() INTERNAL ASSERT FAILED"
    sleeper = tmp_path / "sleeper"
    sleeper.write_text("#!/bin/sh\nexec sleep 30\n")
    sleeper.chmod(0o755)
    result = run_fresh(str(sleeper), tmp_path / "m.pt", [], timeout=1)
    assert result.error.stage == "timeout" and str(result.error) == "no result within 1 s"


def test_the_runner_in_torch_1_11(tmp_path):
    """The oldest torch guie targets, on Python 3.10, in an environment with torch and nothing else."""
    from guie.export.portable import save_portable, script_portable
    from guie.export.torch_envs import ensure_env

    try:
        env = ensure_env("1.11.0", log=lambda _: None)
    except GuieError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"no torch 1.11.0 environment here ({exc})")
    path = tmp_path / "pixels.pt"
    save_portable(script_portable(Pixels()), path)
    cases = host_cases()
    result = run_fresh(env.python, path, [TensorInput(f"case {i}", x, runs=2) for i, x in enumerate(cases)])
    assert result.loaded, result.error
    assert result.torch.startswith("1.11.0") and result.python.startswith("3.10.")
    assert result.guie_refused  # guie is not installed there, and the guard says so first
    for x, item in zip(cases, result.inputs, strict=True):
        assert item.error is None and len(item.runs) == 2
        assert item.runs[0].dtype == "torch.float32" and item.runs[0].shape == (x.shape[0], x[0].numel())
        assert torch.equal(torch.from_numpy(item.runs[1].values), x.float().flatten(1))  # raw files past 65,536
    assert any(x.numel() > INLINE_VALUES for x in cases)
    (no_pil,) = run_fresh(env.python, path, [ImageInput("img", (str(png(tmp_path / "a.png", (9, 9))),))]).inputs
    assert no_pil.error.stage == "input" and "PIL" in no_pil.error.first_line  # PIL is imported only for images


def python_3_7():
    """A Python 3.7 interpreter (pyenv's, or python3.7 on PATH when it runs), or None."""
    import shutil

    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates = sorted(pyenv.glob("3.7.*/bin/python")) + [Path(p) for p in [shutil.which("python3.7")] if p]
    for exe in candidates:
        probe = subprocess.run([str(exe), "-c", "import sys; print(sys.version_info[:2] == (3, 7))"],
                               capture_output=True, text=True)
        if probe.stdout.strip() == "True":
            return str(exe)
    return None


def test_the_runner_runs_on_python_3_7(tmp_path):
    """The oldest Python torch 1.11 has wheels for: the runner runs there up to torch (not installed), and
    reports that as a load error with the guard in place."""
    python = python_3_7()
    if python is None:
        pytest.skip("no Python 3.7 here")
    result = run_fresh(python, tmp_path / "model.pt", [TensorInput("x", host_cases()[0])])
    assert result.python.startswith("3.7.") and result.torch is None
    assert result.error.stage == "load" and result.error.type == "ModuleNotFoundError"
    assert "torch" in result.error.first_line
    assert result.guie_refused
