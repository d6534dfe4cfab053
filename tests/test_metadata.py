"""Kaggle metadata files are read as the kaggle client reads them: the client itself is the reference.

Each kernel-metadata.json variant below is pushed by the real kaggle client to the recording fake
of Kaggle (fake_kaggle.py) and read by guie: guie accepts exactly the variants the client
accepts, and reads every switch as the value the client sends.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from fake_kaggle import OWNER, FakeKaggle, client_env, run_client

from guie.errors import GuieError
from guie.ship.kaggle_ids import KaggleRef
from guie.ship.metadata import (
    competition_slug,
    read_build,
    read_dataset_metadata,
    read_kernel_metadata,
)

SLUG = "guie-meta-inference"
NOTEBOOK = {"cells": [{"cell_type": "code", "execution_count": None, "id": "a", "metadata": {}, "outputs": [],
                       "source": "print(1)"}], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
BASE = {"id": f"{OWNER}/{SLUG}", "title": "Guie Meta Inference", "code_file": f"{SLUG}.ipynb", "language": "python",
        "kernel_type": "notebook", "is_private": True, "enable_gpu": False, "enable_tpu": False,
        "enable_internet": False, "dataset_sources": [f"{OWNER}/guie-meta-model"],
        "competition_sources": ["google-universal-image-embedding"], "kernel_sources": [], "model_sources": []}
ABSENT = object()

# name -> changes to BASE (ABSENT removes the key)
VARIANTS = {
    "as-guie-writes-it": {},
    "internet-quoted-false": {"enable_internet": "false"},  # Kaggle's documented example quotes booleans
    "internet-quoted-False": {"enable_internet": "False"},
    "internet-quoted-TRUE": {"enable_internet": "TRUE"},
    "internet-true": {"enable_internet": True},
    "internet-absent": {"enable_internet": ABSENT},  # the client's default is true
    "internet-no": {"enable_internet": "no"},
    "internet-zero": {"enable_internet": 0},
    "internet-null": {"enable_internet": None},
    "all-switches-quoted": {"is_private": "false", "enable_gpu": "True", "enable_tpu": "false"},
    "switches-absent": {"is_private": ABSENT, "enable_gpu": ABSENT, "enable_tpu": ABSENT},
    "dataset-source-as-string": {"dataset_sources": f"{OWNER}/guie-meta-model"},
    "dataset-source-pinned-version": {"dataset_sources": [f"{OWNER}/guie-meta-model/3"]},
    "dataset-source-null": {"dataset_sources": None},
    "dataset-source-without-owner": {"dataset_sources": ["guie-meta-model"]},
    "dataset-source-number": {"dataset_sources": [7]},
    "competition-null": {"competition_sources": None},
    "competition-as-kaggle-writes-it": {"competition_sources": ["c/google-universal-image-embedding"]},
    # what `kaggle kernels pull -m` writes: the server's metadata, with id_no, keywords and image settings
    "as-kernels-pull-writes-it": {"id_no": 112233445, "keywords": [], "docker_image": None, "machine_shape": None,
                                  "competition_sources": ["c/google-universal-image-embedding"]},
    "competition-as-string": {"competition_sources": "google-universal-image-embedding"},
    "kernel-source-short-slug": {"kernel_sources": [f"{OWNER}/abcd"]},
    "kernel-source-ok": {"kernel_sources": [f"{OWNER}/other-notebook/2"]},
    "model-source-ok": {"model_sources": ["google/owl/pytorch/base/1"]},
    "model-source-bad-version": {"model_sources": ["google/owl/pytorch/base/latest"]},
    "id-bare-slug": {"id": SLUG},
    "id-with-version": {"id": f"{OWNER}/{SLUG}/2"},
    "id-short-slug": {"id": f"{OWNER}/abcd", "title": "Abcd notebook"},
    "id-number-only": {"id": ABSENT, "id_no": 12345},
    "title-too-short": {"title": "Gui"},
    "title-long-and-off-slug": {"title": "A notebook title that is longer than Kaggle's fifty characters"},
    "language-capitalised": {"language": "Python"},
    "language-r": {"language": "r"},
    "kernel-type-script": {"kernel_type": "script"},
    "code-file-missing": {"code_file": "elsewhere.ipynb"},
    "code-file-absent": {"code_file": ABSENT},
}
SWITCHES = ("is_private", "enable_gpu", "enable_tpu", "enable_internet")
SENT = {"is_private": "isPrivate", "enable_gpu": "enableGpu", "enable_tpu": "enableTpu",
        "enable_internet": "enableInternet"}

PUSH_ALL = """
import json
from kaggle.api.kaggle_api_extended import KaggleApi
api = KaggleApi()
api.authenticate()
results = {}
for folder in sys.argv[2:]:
    try:
        api.kernels_push(folder)
        results[folder] = None
    except Exception as exc:
        results[folder] = type(exc).__name__ + ": " + str(exc)
print("RESULTS " + json.dumps(results))
"""


def kernel_folder(root: Path, name: str, changes: dict, raw: bytes | None = None) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    meta = {k: v for k, v in {**BASE, **changes}.items() if v is not ABSENT}
    (folder / "kernel-metadata.json").write_bytes(raw if raw is not None else json.dumps(meta).encode())
    (folder / f"{SLUG}.ipynb").write_text(json.dumps(NOTEBOOK))
    return folder


def guie_reads(folder: Path):
    try:
        return read_kernel_metadata(folder), None
    except GuieError as exc:
        return None, str(exc)


@pytest.fixture(scope="module")
def pushed(tmp_path_factory):
    """Every variant pushed by the real client: folder -> (error or None, what SaveKernel received)."""
    root = tmp_path_factory.mktemp("kernel-variants")
    folders = {name: kernel_folder(root, name, changes) for name, changes in VARIANTS.items()}
    folders["bom"] = kernel_folder(root, "bom", {}, raw=b"\xef\xbb\xbf" + json.dumps(BASE).encode())
    home, config = root / "home", root / "config"
    home.mkdir()
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": OWNER, "key": "fake-key-for-tests"}))
    (config / "kaggle.json").chmod(0o600)
    with FakeKaggle(max_requests=200) as kaggle:
        res = run_client(kaggle, PUSH_ALL, [str(f) for f in folders.values()],
                         client_env(home, KAGGLE_CONFIG_DIR=str(config)))
    line = next((x for x in res.stdout.splitlines() if x.startswith("RESULTS ")), None)
    assert line, res.stdout + res.stderr
    results = json.loads(line[len("RESULTS "):])
    saves = iter(call["json"] for call in kaggle.calls("SaveKernel"))
    return {name: (results[str(folder)], None if results[str(folder)] else next(saves))
            for name, folder in folders.items()}


@pytest.mark.parametrize("name", [*VARIANTS, "bom"])
def test_kernel_metadata_is_read_as_the_client_reads_it(pushed, tmp_path, name):
    client_error, sent = pushed[name]
    folder = kernel_folder(tmp_path, name, VARIANTS.get(name, {}),
                           raw=b"\xef\xbb\xbf" + json.dumps(BASE).encode() if name == "bom" else None)
    meta, guie_error = guie_reads(folder)
    assert (guie_error is None) == (client_error is None), (client_error, guie_error)
    if meta is None:
        assert "\n" not in guie_error
        return
    for key in SWITCHES:
        assert getattr(meta, key) == sent[SENT[key]], key
    assert meta.dataset_sources == sent.get("datasetDataSources", [])
    assert meta.competition_sources == sent.get("competitionDataSources", [])
    assert meta.kernel_sources == sent.get("kernelDataSources", [])
    assert (meta.language, meta.kernel_type) == (sent["language"], sent["kernelType"])


def test_quoted_switches_are_read_as_their_values(tmp_path):
    meta = read_kernel_metadata(kernel_folder(tmp_path, "k", {"enable_internet": "false", "is_private": "True",
                                                                "enable_gpu": "FALSE"}))
    assert (meta.enable_internet, meta.is_private, meta.enable_gpu, meta.enable_tpu) == (False, True, False, False)
    assert read_kernel_metadata(kernel_folder(tmp_path, "absent", {"enable_internet": ABSENT})).enable_internet is True


def test_refusals_name_the_value_and_the_fix(tmp_path):
    with pytest.raises(GuieError) as err:
        read_kernel_metadata(kernel_folder(tmp_path, "s", {"dataset_sources": f"{OWNER}/guie-meta-model"}))
    assert str(err.value) == (f'kernel-metadata.json dataset_sources is "{OWNER}/guie-meta-model"; the kaggle client '
                              f'needs a list of strings; write it as a list: ["{OWNER}/guie-meta-model"]')
    with pytest.raises(GuieError, match=r'enable_internet is "no"; the kaggle client reads only true or false'):
        read_kernel_metadata(kernel_folder(tmp_path, "n", {"enable_internet": "no"}))
    with pytest.raises(GuieError, match="starts with a byte-order mark"):
        read_kernel_metadata(kernel_folder(tmp_path, "b", {}, raw=b"\xef\xbb\xbf{}"))


def test_warnings_for_what_the_client_lets_through(tmp_path):
    meta = read_kernel_metadata(kernel_folder(tmp_path, "t", VARIANTS["title-long-and-off-slug"]))
    assert len(meta.warnings) == 2
    assert "gives the URL slug" in meta.warnings[0] and "over 50" in meta.warnings[1]
    assert meta.attaches(KaggleRef(OWNER, "guie-meta-model"))
    pinned = read_kernel_metadata(kernel_folder(tmp_path, "p", VARIANTS["dataset-source-pinned-version"]))
    assert pinned.attaches(KaggleRef(OWNER, "guie-meta-model"))
    assert not pinned.attaches(KaggleRef(OWNER, "guie-meta-model-2"))


DATASET = {"title": "Guie Meta Model", "subtitle": "TorchScript 64-D universal image embedder, packaged by guie",
           "id": f"{OWNER}/guie-meta-model", "licenses": [{"name": "other"}]}


def dataset_folder(root: Path, meta: dict | None = None, name: str = "dataset-metadata.json",
                   raw: bytes | None = None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / name).write_bytes(raw if raw is not None else json.dumps({**DATASET, **(meta or {})}).encode())
    return root


@pytest.mark.parametrize("changes, message", [
    ({"id": "guie-meta-model"}, "must be OWNER/SLUG"),
    ({"id": f"{OWNER}/short"}, "slug 'short' is 5 characters; the kaggle client needs 6 to 50"),
    ({"title": "Guie"}, "title 'Guie' is 4 characters"),
    ({"subtitle": "too short"}, "subtitle 'too short' is 9 characters; the kaggle client needs 20 to 80"),
    ({"licenses": [{"name": "CC0-1.0"}, {"name": "other"}]}, "needs exactly one licence"),
    ({"licenses": "other"}, "needs exactly one licence"),
])
def test_dataset_metadata_refusals(tmp_path, changes, message):
    with pytest.raises(GuieError, match=message):
        read_dataset_metadata(dataset_folder(tmp_path / "d", changes))


def test_dataset_metadata_as_the_client_finds_it(tmp_path):
    old = read_dataset_metadata(dataset_folder(tmp_path / "old", name="datapackage.json"))
    assert old.ref == KaggleRef(OWNER, "guie-meta-model") and old.path.name == "datapackage.json"
    versioned = read_dataset_metadata(dataset_folder(tmp_path / "v", {"id": f"{OWNER}/guie-meta-model/4"}))
    assert versioned.ref.slug == "guie-meta-model" and "carries a version (4)" in versioned.warnings[0]
    assert "not one Kaggle lists" in read_dataset_metadata(
        dataset_folder(tmp_path / "l", {"licenses": [{"name": "WTFPL"}]})).warnings[0]
    with pytest.raises(GuieError, match="starts with a byte-order mark"):
        read_dataset_metadata(dataset_folder(tmp_path / "bom", raw=b"\xef\xbb\xbf" + json.dumps(DATASET).encode()))


def test_build_needs_the_model_dataset_attached_and_internet_off(tmp_path):
    dataset_folder(tmp_path / "dataset")
    kernel_folder(tmp_path, "kernel", {"enable_internet": "false"})
    assert read_build(tmp_path).kernel.enable_internet is False
    (tmp_path / "kernel" / "kernel-metadata.json").write_text(json.dumps({**BASE, "dataset_sources": []}))
    with pytest.raises(GuieError, match="lacks the model dataset guie-tester/guie-meta-model"):
        read_build(tmp_path)
    (tmp_path / "kernel" / "kernel-metadata.json").write_text(
        json.dumps({k: v for k, v in BASE.items() if k != "enable_internet"}))
    with pytest.raises(GuieError, match="must set enable_internet to false"):
        read_build(tmp_path)


def test_competition_sources_name_the_competition_in_either_form(tmp_path):
    assert competition_slug("c/google-universal-image-embedding") == "google-universal-image-embedding"
    assert competition_slug("google-universal-image-embedding") == "google-universal-image-embedding"
    pulled = read_kernel_metadata(kernel_folder(tmp_path, "pulled", VARIANTS["as-kernels-pull-writes-it"]))
    assert pulled.competition_sources == ["c/google-universal-image-embedding"]  # kept as the client sends it
    assert pulled.competitions == ["google-universal-image-embedding"]
    assert pulled.attaches_competition("google-universal-image-embedding")
    assert not pulled.attaches_competition("landmark-retrieval-2021")
    assert read_kernel_metadata(kernel_folder(tmp_path, "plain", {})).attaches_competition(
        "google-universal-image-embedding")


def test_a_pulled_kernel_folder_is_ready_for_smoke_and_for_submit(tmp_path, monkeypatch):
    """guie-smoke and guie-submit read the one folder through the one reader: what one takes, the other takes."""
    from guie.ship.submit import submit_build
    from guie.ship.upload import CREDENTIALS_HELP

    dataset_folder(tmp_path / "dataset")
    kernel_folder(tmp_path, "kernel", VARIANTS["as-kernels-pull-writes-it"])
    build = read_build(tmp_path)  # guie-smoke's and guie-submit's first step
    assert build.kernel.attaches_competition("google-universal-image-embedding")
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    with pytest.raises(GuieError) as err:  # past the competition check, up to the credentials
        submit_build(tmp_path, log=lambda _: None)
    assert str(err.value) == CREDENTIALS_HELP
    with pytest.raises(GuieError, match="does not attach the competition landmark-retrieval-2021"):
        submit_build(tmp_path, competition="landmark-retrieval-2021", log=lambda _: None)


def test_the_older_dataset_metadata_name_is_a_package_everywhere(tmp_path):
    """datapackage.json, the name older kaggle clients wrote, marks a dataset folder for every reader alike."""
    from guie.artifacts import BUILD_FOLDER, folder_kind, leaderboard_files

    dataset_folder(tmp_path / "dataset", name="datapackage.json")
    kernel_folder(tmp_path, "kernel", {})
    assert read_build(tmp_path).dataset.path.name == "datapackage.json"
    (tmp_path / "kernel" / "kernel-metadata.json").unlink()
    assert folder_kind(tmp_path) == BUILD_FOLDER  # the dataset folder alone marks it
    (tmp_path / "dataset" / "saved_model.pt").write_bytes(b"x")
    (tmp_path / "leaderboard.jsonl").write_text("{}\n")
    assert leaderboard_files(tmp_path / "dataset" / "saved_model.pt") == [tmp_path / "leaderboard.jsonl"]
