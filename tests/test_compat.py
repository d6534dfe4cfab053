"""The submission file loads in every PyTorch from 1.11 (the GUIE host's) on: the portable rewrite,
the static check, guie-compat's matrix in real older releases, and every image-tower family.

The matrix tests build (once, cached in ~/.cache/guie/torch-envs) a torch 1.11.0 environment on
Python 3.10 and a torch 2.0.1 one, the oldest 2.x, which lacks operators up to 2.12 just as
1.11 does. In CI a missing environment is a failure, elsewhere a skip.
"""
import json
import os
import re
import zipfile
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from conftest import run_cli, tiny_train_config
from torch import nn

from guie.errors import GuieError
from guie.export.build import build_submission_module
from guie.export.compat import MATCH_LIMIT, checked_versions, run_matrix
from guie.export.host_images import HOST_SIZES, host_cases
from guie.export.portable import (
    HOST_MAX_FILE_VERSION,
    PortableGELU,
    file_format_version,
    host_portability,
    make_portable,
    missing_host_ops,
    portable_pad,
    save_portable,
    script_portable,
)
from guie.export.submission_module import EmbeddingCore, SubmissionModule
from guie.export.torch_envs import ensure_env, find_python, resolve_versions, supported_pythons
from guie.model.backbone import BackboneSpec, load_backbone, resize_before_crop, tower_family
from guie.model.projection import Projection
from guie.model.timm_backbone import timm_configs

COMPAT_RELEASES = ["1.11.0", "2.0.1"]
FAMILY_CONFIGS = sorted(n for n in open_clip.list_models() if n.startswith("guie-tiny"))
# timm models used directly (timm:NAME), shrunken: DINOv2-style ViT (register tokens, LayerScale), ConvNeXt, EVA
TIMM_FAMILY_CONFIGS = sorted(f"timm:{n}" for n in timm_configs() if n.startswith("timm-tiny"))


@pytest.fixture(scope="session")
def torch_envs():
    """The 1.11.0 and 2.0.1 environments, built on first use (about 30 s and 1 min from PyPI)."""
    envs = {}
    for version in COMPAT_RELEASES:
        try:
            envs[version] = ensure_env(version, log=lambda _: None)
        except GuieError as exc:
            if os.environ.get("CI"):
                raise
            pytest.skip(f"no torch {version} environment here ({exc})")
    return envs


def seeded(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- the portable rewrite, module by module: same function as the original -------------------------

@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_portable_gelu_is_gelu(approximate):
    act = nn.GELU(approximate=approximate)
    portable = make_portable(nn.Sequential(act))[0]
    assert isinstance(portable, PortableGELU) and isinstance(act, nn.GELU)  # the original is untouched
    x = seeded(1000) * 4
    assert (portable(x) - act(x)).abs().max() < 1e-6


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("mask", [None, "bool", "float", "padding"])
def test_portable_multihead_attention_matches(batch_first, mask):
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    x = seeded(3, 5, 16) if batch_first else seeded(5, 3, 16)
    kwargs = {}
    if mask == "bool":
        kwargs["attn_mask"] = torch.triu(torch.ones(5, 5, dtype=torch.bool), diagonal=1)
    elif mask == "float":
        kwargs["attn_mask"] = seeded(5, 5, seed=1)
    elif mask == "padding":
        kwargs["key_padding_mask"] = torch.tensor([[False] * 5, [False] * 4 + [True], [False] * 3 + [True] * 2])
    portable = torch.jit.script(make_portable(attn))
    with torch.no_grad():
        expected = attn(x, x, x, need_weights=False, **kwargs)[0]
        got = portable(x, x, x, need_weights=False, **kwargs)[0]
    assert (got - expected).abs().max() < 1e-5


def test_portable_cross_attention_with_other_key_width_matches():
    torch.manual_seed(0)
    attn = nn.MultiheadAttention(16, 2, kdim=24, vdim=24, batch_first=True).eval()
    q, kv = seeded(2, 3, 16), seeded(2, 7, 24, seed=1)
    portable = torch.jit.script(make_portable(attn))
    with torch.no_grad():
        assert (portable(q, kv, kv)[0] - attn(q, kv, kv, need_weights=False)[0]).abs().max() < 1e-5


def test_portable_attention_pool_matches_modified_resnet():
    from open_clip.modified_resnet import AttentionPool2d

    torch.manual_seed(0)
    pool = AttentionPool2d(3, 32, 4, 16).eval()
    x = seeded(2, 32, 3, 3)
    with torch.no_grad():
        assert (torch.jit.script(make_portable(pool))(x) - pool(x)).abs().max() < 1e-5


@pytest.mark.parametrize("mode,pad", [("constant", [1, 2]), ("constant", [1, 2, 3, 0]), ("reflect", [2, 1, 1, 2]),
                                      ("replicate", [3, 0, 0, 1]), ("reflect", [1, 2])])
def test_portable_pad_is_pad(mode, pad):
    x = seeded(2, 3, 6, 7)
    if len(pad) == 2 and mode == "reflect":
        x = x[:, :, 0]
    assert torch.equal(portable_pad(x, pad, mode), F.pad(x, pad, mode))
    assert torch.equal(torch.jit.script(portable_pad)(x, pad, mode), F.pad(x, pad, mode))


# --- the static check, on what plain scripting of a torch-2.14 model puts in the file ----------------

def test_plain_scripting_is_caught_and_the_portable_file_is_not(tmp_path):
    visual = load_backbone(BackboneSpec("guie-tiny")).visual
    plain = torch.jit.script(visual)
    torch.jit.save(plain, str(tmp_path / "plain.pt"))
    verdict = host_portability(plain, file_format_version(tmp_path / "plain.pt"))
    assert not verdict["loads_in_1_11"]
    assert "file format version 10" in verdict["reason"] and "aten::scaled_dot_product_attention" in verdict["reason"]

    portable = script_portable(visual)
    version = save_portable(portable, tmp_path / "portable.pt")
    assert version <= HOST_MAX_FILE_VERSION and missing_host_ops(portable) == []
    assert host_portability(portable, version) == {"loads_in_1_11": True, "reason": None}
    with zipfile.ZipFile(tmp_path / "portable.pt") as zf:
        assert not [n for n in zf.namelist() if n.endswith(".debug_pkl")]
    x = seeded(2, 3, 32, 32)
    with torch.no_grad():
        assert (torch.jit.load(str(tmp_path / "portable.pt"))(x) - visual(x)).abs().max() < 1e-5


def test_f_interpolate_compiled_into_a_file_is_named():
    class Resize(nn.Module):
        def forward(self, x):
            return F.interpolate(x, size=[4, 4], mode="bilinear", align_corners=False)

    assert "aten::_upsample_lanczos2d_aa" in missing_host_ops(torch.jit.script(Resize()))


def test_file_format_version_reads_the_archive(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a zip")
    with pytest.raises(GuieError, match="not a TorchScript archive"):
        file_format_version(bad)


# --- environments and versions ---------------------------------------------------------------------

def test_python_for_each_release():
    assert supported_pythons("1.11.0")[0] == (3, 10) and (3, 11) not in supported_pythons("1.12.1")
    assert (3, 11) in supported_pythons("2.0.1") and (3, 13) in supported_pythons("2.6.0")
    with pytest.raises(GuieError, match="older than 1.11"):
        supported_pythons("1.10.2")
    with pytest.raises(GuieError, match="not a release number"):
        supported_pythons("latest")
    import sys

    with pytest.raises(GuieError, match=r"torch 1.11.0 has no wheels for Python 3.11 .*pass --python with one of 3.10"):
        find_python("1.11.0", sys.executable)
    assert find_python("2.0.1") == sys.executable  # this Python fits


def test_versions_option():
    assert resolve_versions("none") == [] and resolve_versions(" 1.11.0, 2.4.1") == ["1.11.0", "2.4.1"]
    assert resolve_versions(["1.11", "2.0.1,1.11.0"]) == ["1.11.0", "2.0.1"]  # canonical, each once
    with pytest.raises(GuieError, match="not a release number"):
        resolve_versions("1.11,banana")


def test_release_numbers_are_pep_440_final_releases():
    from guie.export.torch_envs import canonical_release, parse_release

    # torch.__version__ carries a local build label: it names the release PyPI installs
    assert parse_release("2.4.1+cpu") == (2, 4, 1) and canonical_release("2.14.1+cu130") == "2.14.1"
    assert canonical_release(" 2.4 ") == "2.4.0" and parse_release("1.11") < parse_release("1.12.1")
    for pre, final in (("2.5.0rc1", "2.5.0"), ("2.6.0.dev20241001", "2.6.0"), ("1.11.0.post1", "1.11.0")):
        with pytest.raises(GuieError, match=rf"torch version '{re.escape(pre)}' is not a final release; .*PyPI.* "
                                            rf"pass e\.g\. {re.escape(final)}$"):
            parse_release(pre)
    for bad in ("1.2.3.4", "2", "1!2.0", ""):
        with pytest.raises(GuieError, match="is not a release number; pass e.g. 1.11.0 or 2.4.1"):
            parse_release(bad)
    assert resolve_versions("2.4.1+cpu,2.4.1") == ["2.4.1"]


def test_one_build_at_a_time_per_environment(tmp_path, monkeypatch):
    """ensure_env waits for the lock another process holds on the environment (filelock), then finds it built."""
    import threading

    from filelock import FileLock

    monkeypatch.setenv("GUIE_TORCH_ENVS", str(tmp_path))
    final = tmp_path / "torch-2.0.1-py3.11"
    (final / "bin").mkdir(parents=True)
    (final / "bin" / "python").write_text("")
    (final / "guie-env.json").write_text("{}")
    found = []
    with FileLock(str(tmp_path / "torch-2.0.1-py3.11.lock")):
        waiter = threading.Thread(target=lambda: found.append(ensure_env("2.0.1", log=lambda _: None)))
        waiter.start()
        waiter.join(3)
        assert waiter.is_alive() and found == []  # blocked while the lock is held
    waiter.join(30)
    assert [env.path for env in found] == [final]


@pytest.mark.slow
def test_a_release_that_does_not_exist_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIE_TORCH_ENVS", str(tmp_path / "envs"))
    with pytest.raises(GuieError, match=r"could not install torch 2.0.99 for Python 3.11: .*check the version exists"):
        ensure_env("2.0.99", log=lambda _: None)
    assert [p.name for p in (tmp_path / "envs").iterdir() if not p.name.endswith(".lock")] == []


def test_host_cases_are_the_host_feeding():
    cases = host_cases()
    assert [tuple(c.shape) for c in cases[:-1]] == [(1, 3, h, w) for h, w in HOST_SIZES]
    assert all(c.dtype == torch.uint8 for c in cases) and cases[-1].shape[0] == 4
    assert torch.equal(host_cases()[3], cases[3])


# --- the matrix in real older torch releases --------------------------------------------------------

def old_style_file(run, path):
    """What guie-export wrote before: plain torch.jit.script of the submission module, debug records kept."""
    module, _, _ = build_submission_module(run)
    torch.jit.save(torch.jit.script(module), str(path))


def test_export_checks_old_releases_and_records_them(trained_run, tmp_path, torch_envs):
    out = tmp_path / "export"
    res = run_cli("export", str(trained_run), "--out", str(out), "--check-torch", ",".join(COMPAT_RELEASES))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "verify.json").read_text())
    assert report["torchscript_file_version"] <= HOST_MAX_FILE_VERSION
    assert report["host_portability"] == {"loads_in_1_11": True, "reason": None}
    rows = report["compat"]
    assert [r["torch"] for r in rows] == COMPAT_RELEASES
    assert all(r["loads"] and r["passed"] and r["max_abs_diff"] <= MATCH_LIMIT for r in rows), rows
    assert [r["python"][:4] for r in rows] == ["3.10", "3.11"]
    assert {c["torch"] for c in checked_versions(out / "saved_model.pt")} == set(COMPAT_RELEASES)

    # guie-compat on the zip, the way a user checks a file they were given
    res = run_cli("compat", str(out / "submission.zip"), "--torch", "1.11.0", "--json")
    assert res.returncode == 0, res.stderr
    (row,) = json.loads(res.stdout)
    assert row["torch"] == "1.11.0" and row["passed"] and row["max_abs_diff"] <= MATCH_LIMIT
    assert "1 of 1 releases load the file" in res.stderr


def test_compat_shows_why_old_style_files_fail(trained_run, tmp_path, torch_envs):
    from submission_models import write_export

    path = tmp_path / "saved_model.pt"
    old_style_file(trained_run, path)  # nn.GELU: operator version 10
    interpolating = write_export(tmp_path / "contract") / "saved_model.pt"  # scripted F.interpolate
    for model, release, expected in [
        (path, "1.11.0", "RuntimeError: Attempted to read a PyTorch file with version 10, but the maximum "
                         "supported version for reading is 9"),
        (interpolating, "2.0.1", "RuntimeError: Unknown builtin op: aten::_upsample_lanczos2d_aa"),
    ]:
        res = run_cli("compat", str(model), "--torch", release)
        assert res.returncode == 1 and "Traceback" not in res.stderr
        (row,) = [line for line in res.stdout.splitlines() if line.startswith(release)]
        assert row.split()[3] == "no" and expected in row and "INTERNAL ASSERT" not in row, row
        assert f"0 of 1 releases load the file and match within 1e-04; failed: {release}" in res.stdout


def test_compat_bad_input_is_one_line(tmp_path, cli):
    from submission_models import write_export

    junk = tmp_path / "junk" / "saved_model.pt"
    junk.parent.mkdir()
    junk.write_bytes(b"junk")
    checkpoint = tmp_path / "model.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, checkpoint)
    (tmp_path / "empty").mkdir()
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "saved_model.pt").write_bytes(b"x")
    not_python = tmp_path / "not-python"
    not_python.write_text("#!/bin/sh\nexit 0\n")
    not_python.chmod(0o755)
    for args, message in [
        ([str(junk), "--torch", "banana"], "error: torch version 'banana' is not a release number"),
        ([str(junk), "--torch", "1.8.0"], "error: torch 1.8.0 is older than 1.11"),
        ([str(junk)], f"error: {junk} is not a TorchScript file (not a zip archive)"),
        ([str(checkpoint)], f"error: {checkpoint} is a torch checkpoint (torch.save), not TorchScript"),
        ([str(tmp_path / "empty")], f"error: {tmp_path / 'empty'} holds no saved_model.pt or submission.zip"),
        ([str(tmp_path / "run")], f"error: {tmp_path / 'run'} holds no saved_model.pt or submission.zip (a run "
                                  f"folder: its export is {tmp_path / 'run' / 'export'})"),
        ([str(junk), "--device", "cuda"], "error: --device cuda needs a CUDA device"),
        ([str(write_export(tmp_path / "ts") / "saved_model.pt"), "--python", str(not_python), "--torch", "2.0.1"],
         f"error: cannot run Python '{not_python}' (it did not report a version)"),
    ]:
        res = cli("compat", *args)
        assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
        assert res.stderr.strip().splitlines()[-1].startswith(message), res.stderr


def submission_for(name, image_size=None):
    """A SubmissionModule around the random-init tower ``name`` and a random projection (no training)."""
    backbone = load_backbone(BackboneSpec.resolve(name, "none" if name.startswith(("timm:", "guie-")) else None,
                                                  image_size))
    torch.manual_seed(0)
    projection = Projection(backbone.feature_dim, 64).eval()
    cfg = backbone.preprocess_cfg
    return SubmissionModule(EmbeddingCore(backbone.visual, projection), backbone.image_size[0], list(cfg["mean"]),
                            list(cfg["std"]), cfg["resize_mode"], 8, interpolation=cfg["interpolation"],
                            resize=resize_before_crop(cfg)).eval()


def test_every_tower_family_in_open_clip_has_a_shrunken_config():
    """A new tower family in open_clip's registry fails here until tests/model_configs covers it."""
    covered = {tower_family(n) for n in FAMILY_CONFIGS}
    families = {tower_family(n) for n in open_clip.list_models() if not n.startswith("guie-tiny")}
    assert families - covered == set(), f"add a shrunken config for {sorted(families - covered)} to tests/model_configs"
    assert {"open_clip:vit", "open_clip:modified_resnet", "open_clip:coca", "timm:convnext",
            "timm:vision_transformer:map", "timm:eva"} <= covered


@pytest.mark.parametrize("name", FAMILY_CONFIGS)
def test_tower_family_loads_in_old_torch(name, tmp_path, torch_envs):
    assert_portable_in_1_11(submission_for(name), tmp_path / "saved_model.pt")


def assert_portable_in_1_11(module, path):
    """The portable rewrite of ``module`` is the same function, passes the static check and loads and matches in
    torch 1.11.0, the strictest release (fewest operators, oldest file format); 2.0.1 is checked on the trained
    exports below and on the demo export above. TorchScript's simple executor there: the same graph and load,
    without the profiling executor's per-shape optimisation (12 s a tower), which every trained export of
    this file and guie-compat run."""
    scripted = script_portable(module)
    version = save_portable(scripted, path)
    assert host_portability(scripted, version) == {"loads_in_1_11": True, "reason": None}
    x = host_cases()[1]
    with torch.no_grad():
        assert (scripted(x) - module(x)).abs().max() <= MATCH_LIMIT
    (row,) = run_matrix(path, ["1.11.0"], log=lambda _: None, profiling_executor=False)
    assert row.passed, (row.error, row.max_abs_diff)


@pytest.fixture
def schema_backbone(tmp_path, monkeypatch):
    """``local-dir:`` / ``hf-hub:`` names of guie-tiny with random weights (the hub one from a prepared
    offline Hugging Face cache)."""
    from backbone_folders import write_hub_cache, write_local_dir

    def make(kind):
        folder = write_local_dir(tmp_path / "guie-tiny-folder")
        if kind == "local-dir":
            return f"local-dir:{folder}"
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        write_hub_cache(tmp_path / "hf", "guie-test/guie-tiny", folder)
        return "hf-hub:guie-test/guie-tiny"

    return make


@pytest.mark.parametrize("name, image_size", [(n, None) for n in TIMM_FAMILY_CONFIGS]
                         + [("timm:timm-tiny-dinov2", 70), ("local-dir", None), ("hf-hub", None)])
def test_new_backbone_kinds_load_in_old_torch(name, image_size, tmp_path, torch_envs, schema_backbone):
    """timm towers used directly (their own attention, LayerScale, register tokens, rotary embeddings, pooling
    heads), at another size too, and the open_clip schemas go through the same portable rewrite."""
    if name in ("local-dir", "hf-hub"):
        name = schema_backbone(name)
    assert_portable_in_1_11(submission_for(name, image_size), tmp_path / "saved_model.pt")


def test_a_tower_that_cannot_be_made_portable_is_refused_at_export(trained_run, tmp_path, monkeypatch):
    """Without the rewrite a tower keeps nn.GELU (file format 10) and fused attention (absent before 2.0): the
    export stops in one line naming the oldest torch that could load the file, and writes nothing."""
    import guie.export.portable as portable
    from guie.export import export_run

    monkeypatch.setattr(portable, "make_portable", lambda module: module)
    with pytest.raises(GuieError) as err:
        export_run(trained_run, tmp_path / "export", measure_speed=False, log=lambda _: None)
    text = str(err.value)
    assert text.startswith("open_clip `guie-tiny` (`none`) cannot be made portable to PyTorch 1.11 (the GUIE host): "
                           "file format version 10") and "\n" not in text
    assert text.endswith("its file needs PyTorch 2.0 or newer; choose another --backbone"), text
    assert not (tmp_path / "export").exists()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["local-dir", "hf-hub", "timm-dinov2-at-70"])
def test_new_backbone_kinds_train_and_export_offline(kind, tmp_path, digits_dir, torch_envs, schema_backbone):
    """Done when (issue 20): with no network, guie-train then guie-export --torchscript succeed for a local-dir:
    model, an hf-hub: model from a prepared offline cache and a DINOv2-style timm model at a size other than its
    default, and the file loads and matches in torch 1.11.0 and 2.0.1."""
    backbone = ["--backbone", "timm:timm-tiny-dinov2", "--image-size", "70"] if kind.startswith("timm") else \
        ["--backbone", schema_backbone(kind)]
    env = {"HF_HUB_OFFLINE": "1", **({"HF_HOME": os.environ["HF_HOME"]} if "HF_HOME" in os.environ else {})}
    run, out = tmp_path / "run", tmp_path / "export"
    res = run_cli("train", "--data", f"imagefolder:{digits_dir}", *backbone, "--epochs", "1", "--max-per-class", "4",
                  "--batch-size", "32", "--workers", "0", "--out", str(run), env=env)
    assert res.returncode == 0, res.stderr
    res = run_cli("export", str(run), "--torchscript", "--out", str(out), "--check-torch", ",".join(COMPAT_RELEASES),
                  env=env)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "verify.json").read_text())
    assert report["max_abs_diff_vs_eager"] <= 1e-4 and report["host_portability"]["loads_in_1_11"]
    assert [(r["torch"], r["passed"]) for r in report["compat"]] == [(v, True) for v in COMPAT_RELEASES]
    assert all(r["max_abs_diff"] <= MATCH_LIMIT for r in report["compat"])
    spec = report["preprocess"]["backbone"]
    assert spec == json.loads((run / "config.json").read_text())["backbone_spec"]
    if kind == "hf-hub":
        assert len(spec["revision"]) == 40
    if kind.startswith("timm"):
        assert (spec["image_size"], report["preprocess"]["image_size"], report["preprocess"]["pil_pipeline"]) == \
            (70, 70, "timm")


@pytest.mark.parametrize("name", ["ViT-B-32", "guie-tiny-coca", "guie-tiny-rn"])
def test_tower_family_trains_and_exports(name, tmp_path, digits_dir, torch_envs):
    from guie.export import export_run
    from guie.train.run import run_training

    run = tmp_path / "run"
    run_training(tiny_train_config([f"imagefolder:{digits_dir}"], run, backbone=name, epochs=1,
                                   max_per_class=4), log=lambda _: None)
    report = export_run(run, tmp_path / "export", measure_speed=False, log=lambda _: None,
                        check_torch=COMPAT_RELEASES)
    assert report["max_abs_diff_vs_eager"] <= 1e-4
    assert [r["passed"] for r in report["compat"]] == [True, True]


# --- guie-package checks the file itself, with or without verify.json beside it ---------------------

PACKAGE = ["--dataset", "guie-tester/guie-compat-model", "--kernel", "guie-tester/guie-compat-inference"]


def with_version(src, dst, version):
    """A copy of the TorchScript archive ``src`` whose version record says ``version``."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith("/.data/version") or info.filename.count("/") == 1 and \
                    info.filename.endswith("/version"):
                data = f"{version}\n".encode()
            zout.writestr(info.filename, data)


def test_package_refuses_a_file_this_torch_cannot_load(trained_run, tmp_path, cli):
    from submission_models import write_export

    export = write_export(tmp_path / "export")
    (tmp_path / "future").mkdir()
    with_version(export / "saved_model.pt", tmp_path / "future" / "saved_model.pt", 99)
    res = cli("package", str(tmp_path / "future"), *PACKAGE, "--out", str(tmp_path / "build"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    (line,) = res.stderr.strip().splitlines()
    assert "does not load in this torch" in line and "version 99" in line and "export it again" in line
    assert not (tmp_path / "build" / "dataset").exists()


def test_package_warns_on_files_not_checked_in_the_hosts_torch(trained_run, tmp_path, cli, torch_envs):
    out = tmp_path / "export"
    assert run_cli("export", str(trained_run), "--out", str(out), "--check-torch", "none").returncode == 0
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "submission.zip").write_bytes((out / "submission.zip").read_bytes())  # no verify.json beside it

    res = cli("package", str(alone / "submission.zip"), *PACKAGE, "--out", str(tmp_path / "b1"))
    assert res.returncode == 0, res.stderr
    assert ("warning: saved_model.pt was not checked in PyTorch 1.11.0 (the GUIE host's): run guie-compat "
            f"{tmp_path / 'b1' / 'dataset' / 'saved_model.pt'} --torch 1.11.0") in res.stdout
    card = (tmp_path / "b1" / "dataset" / "README.md").read_text()
    assert "Not checked in other PyTorch releases" in card and "file format version" in card

    assert run_cli("compat", str(alone / "submission.zip"), "--torch", "1.11.0").returncode == 0
    res = cli("package", str(alone / "submission.zip"), *PACKAGE, "--out", str(tmp_path / "b2"))
    assert res.returncode == 0 and "warning:" not in res.stdout + res.stderr, res.stdout + res.stderr
    card = (tmp_path / "b2" / "dataset" / "README.md").read_text()
    assert re.search(r"gives the same embedding .*PyTorch 1\.11\.0 cpu \(\d\.\de-\d\d\)", card), card

    old = tmp_path / "old"
    old.mkdir()
    old_style_file(trained_run, old / "saved_model.pt")
    (old / "verify.json").write_bytes((out / "verify.json").read_bytes())  # another file's report beside it
    res = cli("package", str(old), *PACKAGE, "--out", str(tmp_path / "b3"))
    assert res.returncode == 0 and ("warning: saved_model.pt has file format version 10; PyTorch 1.11.0 (the GUIE "
                                    "host's) reads at most 9") in res.stdout
    assert "describes another file (sha256 differs)" in res.stdout
    card = (tmp_path / "b3" / "dataset" / "README.md").read_text()
    assert "max abs diff to the eager model" not in card and "Exported with torch" not in card


@pytest.mark.parametrize("vision, message", [
    ({"image_size": [32, 48]}, "non-square input (32, 48)"),
    ({"image_size": 32, "image_interpolation": "nearest"}, "uses nearest resizing"),
    ({"image_size": 32, "image_resize_mode": "longest"}, "uses resize_mode 'longest'"),
])
def test_train_refuses_a_backbone_export_cannot_reproduce_before_any_folder(vision, message, tmp_path, digits_dir):
    from guie.train.run import run_training

    config = json.loads((Path(__file__).parent.parent / "guie/model/model_configs/guie-tiny.json").read_text())
    config["vision_cfg"].update(vision)
    name = f"guie-odd-{tmp_path.name}"
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / "configs")
    with pytest.raises(GuieError, match=re.escape(message) + r".*; choose another --backbone"):
        run_training(tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", backbone=name),
                     log=lambda _: None)
    assert not (tmp_path / "run").exists()


def test_auto_means_the_host_release_once_built(tmp_path, monkeypatch):
    monkeypatch.setenv("GUIE_TORCH_ENVS", str(tmp_path))
    assert resolve_versions("auto") == []
    (tmp_path / "torch-2.0.1-py3.11").mkdir()
    (tmp_path / "torch-2.0.1-py3.11" / "guie-env.json").write_text("{}")
    (tmp_path / "torch-1.11.0-py3.10.partial").mkdir()  # an interrupted build does not count
    assert resolve_versions("auto") == []
    (tmp_path / "torch-1.11.0-py3.10").mkdir()
    (tmp_path / "torch-1.11.0-py3.10" / "guie-env.json").write_text("{}")
    assert resolve_versions("auto") == ["1.11.0"]


def test_ensemble_image_count_is_checked_before_any_work(trained_run):
    from guie.export.ensemble import build_ensemble

    with pytest.raises(GuieError, match="--ensemble-images 64 is too few: the PCA to 64-D needs more than 64 images"):
        build_ensemble([trained_run, "no-such-run"], images=64)
