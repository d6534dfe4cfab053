"""guie-package --upload: the real kaggle client, run against a recording fake of Kaggle on 127.0.0.1.

Only the client's network layer is replaced (see fake_kaggle.py); the tests assert what the client
sends: endpoints, metadata, files, credentials, and the order (dataset ready before the kernel).
"""
from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from fake_kaggle import OWNER, FakeKaggle, client_env, run_package
from submission_models import write_export

from guie.errors import GuieError
from guie.ship.kaggle_ids import KaggleRef
from guie.ship.upload import CREDENTIALS_HELP, find_credentials, wait_until_ready

DATASET, KERNEL = f"{OWNER}/guie-upload-model", f"{OWNER}/guie-upload-inference"
FAKE_KEY = "fake-kaggle-key-0123456789"
FAKE_TOKEN = "KGAT_fake-token-abcdef987"


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("upload") / "export")


def legacy_credentials(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """A private HOME and a kaggle.json with fake legacy credentials in KAGGLE_CONFIG_DIR."""
    home, config = tmp_path / "home", tmp_path / "kaggle-config"
    home.mkdir()
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": OWNER, "key": FAKE_KEY}))
    (config / "kaggle.json").chmod(0o600)
    return home, {"KAGGLE_CONFIG_DIR": str(config)}


def upload_args(export_dir: Path, build: Path, *extra: str) -> list[str]:
    return [str(export_dir), "--dataset", DATASET, "--kernel", KERNEL, "--out", str(build), "--upload",
            "--poll", "0.05", "--wait", "30", *extra]


def build_bytes(build: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(build.rglob("*")) if p.is_file())


def test_upload_creates_the_dataset_then_pushes_the_kernel(export_dir, tmp_path):
    home, extra = legacy_credentials(tmp_path)
    build = tmp_path / "build"
    with FakeKaggle(statuses=("BLOBS_RECEIVED", "BLOBS_RECEIVED", "READY")) as kaggle:
        res = run_package(kaggle, upload_args(export_dir, build), client_env(home, **extra))
    assert res.returncode == 0, res.stdout + res.stderr

    # Order: existence check (guie's, then the client's own), two blob uploads, create, poll to ready, push.
    methods = kaggle.methods()
    create = methods.index("CreateDataset")
    assert methods[:2] == ["GetDatasetStatus", "GetDatasetStatus"]
    assert sorted(methods[2:create]) == ["PUT", "PUT", "StartBlobUpload", "StartBlobUpload"]
    assert methods[create + 1:] == ["GetDatasetStatus"] * 3 + ["SaveKernel"]
    assert all(r["path"].startswith("/api/v1/") for r in kaggle.calls())
    assert kaggle.calls("GetDatasetStatus")[0]["json"] == {"ownerSlug": OWNER, "datasetSlug": "guie-upload-model"}

    # Files: every file of the dataset folder but its metadata, byte for byte.
    dataset = build / "dataset"
    starts = [c["json"] for c in kaggle.calls("StartBlobUpload")]
    assert sorted(s["name"] for s in starts) == ["README.md", "saved_model.pt"]
    assert all(s["type"] == "DATASET" and s["contentLength"] == (dataset / s["name"]).stat().st_size for s in starts)
    received = {kaggle.blob_names[token]: body for token, body in kaggle.uploads.items()}
    assert received == {name: (dataset / name).read_bytes() for name in ("README.md", "saved_model.pt")}

    body = kaggle.calls("CreateDataset")[0]["json"]
    meta = json.loads((dataset / "dataset-metadata.json").read_text())
    assert (body["ownerSlug"], body["slug"], body["title"]) == (OWNER, "guie-upload-model", meta["title"])
    assert body["licenseName"] == "other" and body["isPrivate"] is True
    assert body["subtitle"] == meta["subtitle"] and body["description"] == meta["description"]
    assert sorted(f["token"] for f in body["files"]) == sorted(kaggle.uploads)

    save = kaggle.calls("SaveKernel")[0]["json"]
    kmeta = json.loads((build / "kernel" / "kernel-metadata.json").read_text())
    assert save["slug"] == KERNEL and save["newTitle"] == kmeta["title"] == "Guie Upload Inference"
    assert (save["language"], save["kernelType"]) == ("python", "notebook")
    assert (save["isPrivate"], save["enableGpu"], save["enableInternet"]) == (True, False, False)
    assert save["datasetDataSources"] == [DATASET]
    assert save["competitionDataSources"] == ["google-universal-image-embedding"]
    notebook = json.loads(save["text"])
    assert [c["id"] for c in notebook["cells"]] == ["about", "find-model", "write-submission", "check-submission"]
    assert f'DATASET = "{DATASET}"' in notebook["cells"][1]["source"]

    auth = "Basic " + base64.b64encode(f"{OWNER}:{FAKE_KEY}".encode()).decode()
    assert {r["headers"].get("Authorization") for r in kaggle.calls()} == {auth}
    assert f"https://www.kaggle.com/datasets/{DATASET}" in res.stdout
    assert f"https://www.kaggle.com/code/{KERNEL}" in res.stdout
    assert "blobs_received" in res.stdout and f"dataset {DATASET}: ready" in res.stdout
    assert FAKE_KEY not in res.stdout + res.stderr and FAKE_KEY.encode() not in build_bytes(build)


def test_existing_dataset_gets_a_new_version_with_a_token(export_dir, tmp_path):
    home, build = tmp_path / "home", tmp_path / "build"
    home.mkdir()
    with FakeKaggle(dataset_exists=True, statuses=("READY",)) as kaggle:
        res = run_package(kaggle, upload_args(export_dir, build, "--message", "sub-center head"),
                          client_env(home, KAGGLE_API_TOKEN=FAKE_TOKEN))
    assert res.returncode == 0, res.stdout + res.stderr
    methods = kaggle.methods()
    assert "IntrospectToken" in methods and "CreateDataset" not in methods
    assert methods.index("CreateDatasetVersion") < methods.index("SaveKernel")
    version = kaggle.calls("CreateDatasetVersion")[0]["json"]
    assert (version["ownerSlug"], version["datasetSlug"]) == (OWNER, "guie-upload-model")
    assert version["body"]["versionNotes"] == "sub-center head"
    assert sorted(f["token"] for f in version["body"]["files"]) == sorted(kaggle.uploads)
    api_calls = [r for r in kaggle.calls() if r["method"] != "IntrospectToken"]
    assert {r["headers"].get("Authorization") for r in api_calls} == {f"Bearer {FAKE_TOKEN}"}
    assert kaggle.calls("SaveKernel")[0]["json"]["enableInternet"] is False
    assert FAKE_TOKEN not in res.stdout + res.stderr and FAKE_TOKEN.encode() not in build_bytes(build)


def test_refused_dataset_stops_before_the_kernel(export_dir, tmp_path):
    home, extra = legacy_credentials(tmp_path)
    refusal = {"status": "error", "error": "The requested slug is reserved."}
    with FakeKaggle(create_response=refusal) as kaggle:
        res = run_package(kaggle, upload_args(export_dir, tmp_path / "build"), client_env(home, **extra))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: Kaggle refused creating dataset {DATASET}: The requested slug is reserved.")
    assert "SaveKernel" not in kaggle.methods()


def test_dataset_never_ready_stops_before_the_kernel(export_dir, tmp_path):
    home, extra = legacy_credentials(tmp_path)
    with FakeKaggle(statuses=("BLOBS_RECEIVED",)) as kaggle:
        res = run_package(kaggle, [*upload_args(export_dir, tmp_path / "build")[:-2], "--wait", "1"],
                          client_env(home, **extra))
    assert res.returncode == 2
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: dataset {DATASET} is still blobs_received after 1 s; the notebook was not pushed")
    assert "SaveKernel" not in kaggle.methods()
    assert 3 <= kaggle.methods().count("GetDatasetStatus") < 100  # polled, bounded


def test_without_credentials_nothing_is_sent_or_written(export_dir, tmp_path):
    home, build = tmp_path / "home", tmp_path / "build"
    home.mkdir()
    with FakeKaggle() as kaggle:
        res = run_package(kaggle, upload_args(export_dir, build), client_env(home))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {CREDENTIALS_HELP}"]
    assert kaggle.requests == []
    assert not build.exists()
    assert not (home / ".config" / "kaggle").exists() and not (home / ".kaggle").exists()  # client never imported


def test_find_credentials_follows_the_client_order(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert find_credentials({}) is None
    assert find_credentials({"KAGGLE_USERNAME": "me"}) is None
    assert find_credentials({"KAGGLE_USERNAME": "me", "KAGGLE_KEY": "k"}) == "KAGGLE_USERNAME/KAGGLE_KEY"
    config = tmp_path / ".kaggle"
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": "me"}))
    assert find_credentials({}) is None
    assert find_credentials({"KAGGLE_KEY": "k"}) == str(config / "kaggle.json")  # env overlays the file
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "kaggle.json").write_text(json.dumps({"username": "me", "key": "k"}))
    assert find_credentials({"KAGGLE_CONFIG_DIR": str(other)}) == str(other / "kaggle.json")
    (config / "access_token").write_text(" \n")  # the client strips the token: blank is no token
    assert find_credentials({}) is None
    (config / "access_token").write_text("tok")
    assert find_credentials({}) == str(config / "access_token")
    assert find_credentials({"KAGGLE_API_TOKEN": "tok"}) == "KAGGLE_API_TOKEN"


def test_failed_dataset_is_reported(monkeypatch):
    class Api:
        def dataset_status(self, ref):
            return "failed"

    lines: list[str] = []
    with pytest.raises(GuieError, match="reports dataset me/guie-model as failed; the notebook was not pushed"):
        wait_until_ready(Api(), KaggleRef("me", "guie-model"), 10, 0, lines.append)
    assert lines == ["dataset me/guie-model: failed (0 s)"]
