"""guie-submit: the real kaggle client against the recording fake of Kaggle on 127.0.0.1 (fake_kaggle.py).

Covers the whole loop (upload, notebook run, code submission, score, leaderboard.jsonl), a failing notebook
with its log, a failed submission, a wait that ends while pending followed by --refresh, missing
credentials, and planted secrets that must reach no file and no output.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from fake_kaggle import OWNER, SUBMISSION_REF, FakeKaggle, client_env, run_submit
from submission_models import write_export

from guie.artifacts import LEADERBOARD_FILE
from guie.errors import GuieError
from guie.fileio import file_sha256
from guie.leaderboard_log import (
    append_record,
    latest_scored,
    read_records,
    update_record,
)
from guie.ship.submit import Waiter, failing_cell, leaderboard_path, status_name
from guie.ship.upload import CREDENTIALS_HELP, UPLOAD_RECORD

DATASET, KERNEL = f"{OWNER}/guie-submit-model", f"{OWNER}/guie-submit-inference"
FAKE_KEY = "fake-kaggle-key-5ubm1t-0123"
FAKE_TOKEN = "KGAT_fake-submit-token-987"
COMPETITION = "google-universal-image-embedding"


@pytest.fixture(scope="module")
def base_build(tmp_path_factory) -> Path:
    """A BUILD packaged from a bare export folder, as guie-package writes it."""
    from guie.ship.folders import PackageSpec, build_package

    root = tmp_path_factory.mktemp("submit")
    export = write_export(root / "export")
    build_package(export, PackageSpec.create(DATASET, KERNEL), root / "build", log=lambda _: None)
    return root / "build"


def came_from_run(build: Path, run: Path) -> None:
    """What guie-package leaves in BUILD for a run folder SOURCE: BUILD/export, whose verify.json names the
    run's model file and the exported file's hash."""
    (build / "export").mkdir()
    (build / "export" / "verify.json").write_text(json.dumps({
        "source": str(run / "model.pt"), "sha256": file_sha256(build / "dataset" / "saved_model.pt")}))


@pytest.fixture
def build(base_build, tmp_path) -> Path:
    return Path(shutil.copytree(base_build, tmp_path / "build"))


def legacy_env(tmp_path: Path) -> dict[str, str]:
    """A private HOME, and fake legacy credentials in a kaggle.json in KAGGLE_CONFIG_DIR."""
    home, config = tmp_path / "home", tmp_path / "kaggle-config"
    home.mkdir()
    config.mkdir()
    (config / "kaggle.json").write_text(json.dumps({"username": OWNER, "key": FAKE_KEY}))
    (config / "kaggle.json").chmod(0o600)
    return client_env(home, KAGGLE_CONFIG_DIR=str(config))


def token_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home-token"
    home.mkdir()
    return client_env(home, KAGGLE_API_TOKEN=FAKE_TOKEN)


def fast(*extra: str) -> list[str]:
    return ["--poll", "0.02", "--wait", "30", *extra]


def assert_no_secret(res, *folders: Path) -> None:
    for secret in (FAKE_KEY, FAKE_TOKEN):
        assert secret not in res.stdout + res.stderr
        for folder in folders:
            for path in folder.rglob("*"):
                assert not path.is_file() or secret.encode() not in path.read_bytes(), path


def test_submit_uploads_waits_submits_and_records_the_scores(build, tmp_path):
    env = legacy_env(tmp_path)
    with FakeKaggle(statuses=("READY",)) as kaggle:
        res = run_submit(kaggle, [str(build), "--message", "vith 4000", *fast()], env)
    assert res.returncode == 0, res.stdout + res.stderr
    methods = kaggle.methods()
    push = methods.index("SaveKernel")
    assert methods.index("CreateDataset") < push  # uploaded first, by guie-package's path
    assert methods[push + 1:] == ["GetKernelSessionStatus"] * 3 + ["CreateCodeSubmission"] + ["ListSubmissions"] * 2
    assert {json.dumps(c["json"], sort_keys=True) for c in kaggle.calls("GetKernelSessionStatus")} == {
        json.dumps({"userName": OWNER, "kernelSlug": "guie-submit-inference", "versionLabel": "v1"}, sort_keys=True)}
    body = kaggle.calls("CreateCodeSubmission")[0]["json"]
    assert body == {"competitionName": COMPETITION, "kernelOwner": OWNER, "kernelSlug": "guie-submit-inference",
                    "kernelVersion": 1, "fileName": "submission.zip", "submissionDescription": "vith 4000"}
    assert kaggle.calls("ListSubmissions")[0]["json"]["competitionName"] == COMPETITION

    # one line per status change
    lines = res.stdout.splitlines()
    for status in ("queued", "running", "complete"):
        assert sum(line.startswith(f"notebook {KERNEL}/1: {status} (") for line in lines) == 1
    assert sum(line.startswith(f"submission {SUBMISSION_REF}: pending (") for line in lines) == 1
    assert any(line.startswith(f"submission {SUBMISSION_REF}: complete (") and line.endswith(
        "public 0.6120, private 0.5980") for line in lines)

    # a bare export's package records into BUILD
    (record,) = read_records(build / LEADERBOARD_FILE)
    assert {k: record[k] for k in ("competition", "kernel", "kernel_version", "submission_ref", "status",
                                   "public_score", "private_score")} == {
        "competition": COMPETITION, "kernel": KERNEL, "kernel_version": 1, "submission_ref": SUBMISSION_REF,
        "status": "complete", "public_score": 0.612, "private_score": 0.598}
    assert record["model_sha256"] == file_sha256(build / "dataset" / "saved_model.pt")
    assert record["submitted_at"].endswith("Z") and len(record["submitted_at"]) == 20
    assert_no_secret(res, build)

    # BUILD is now current: a second submission neither uploads nor pushes again
    with FakeKaggle(submission_states=({"status": "COMPLETE", "publicScore": "0.7", "privateScore": "0.65"},),
                    submission_ref=SUBMISSION_REF + 1) as kaggle:
        res = run_submit(kaggle, [str(build), *fast()], env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert kaggle.methods() == ["GetKernelSessionStatus"] * 3 + ["CreateCodeSubmission", "ListSubmissions"]
    assert "already uploaded (notebook guie-tester/guie-submit-inference version 1)" in res.stdout
    records = read_records(build / LEADERBOARD_FILE)
    assert [r["public_score"] for r in records] == [0.612, 0.7]
    assert latest_scored(records)["private_score"] == 0.65


def test_failed_notebook_names_the_cell_and_submits_nothing(build, tmp_path):
    nb = json.loads((build / "kernel" / "guie-submit-inference.ipynb").read_text())
    cell = next(c for c in nb["cells"] if c.get("id") == "write-submission")
    source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
    log = json.dumps([
        {"stream_name": "stderr", "time": 1.2, "data": "[NbConvertApp] Converting notebook __notebook__.ipynb\n"},
        {"stream_name": "stderr", "time": 4.5, "data": (
            "Traceback (most recent call last):\n  File \"/opt/conda/bin/jupyter-nbconvert\", line 10\n"
            "nbclient.exceptions.CellExecutionError: An error occurred while executing the following cell:\n"
            f"------------------\n{source}\n------------------\n\n\x1b[0;31m----------\x1b[0m\n"
            "\x1b[0;31mFileNotFoundError\x1b[0m  Traceback (most recent call last)\n"
            "FileNotFoundError: [Errno 2] No such file or directory: '/kaggle/input/guie-submit-model'\n\n")}])
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    number = code.index(cell) + 1
    with FakeKaggle(statuses=("READY",), kernel_statuses=("RUNNING", "ERROR"), kernel_log=log,
                    failure_message="Your notebook hit an exception") as kaggle:
        res = run_submit(kaggle, [str(build), *fast()], token_env(tmp_path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: notebook {KERNEL}/1 ended with error: notebook cell 'write-submission' (code cell {number} of "
        f"{len(code)}) raised FileNotFoundError: [Errno 2] No such file or directory: "
        f"'/kaggle/input/guie-submit-model' (Your notebook hit an exception); log: {build / 'notebook.log'}; "
        "nothing was submitted")
    assert kaggle.calls("ListKernelSessionOutput")[0]["json"] == {
        "userName": OWNER, "kernelSlug": "guie-submit-inference", "versionLabel": "v1"}
    assert "CreateCodeSubmission" not in kaggle.methods()
    assert not (build / LEADERBOARD_FILE).exists()
    saved = (build / "notebook.log").read_text()
    assert "CellExecutionError" in saved and "\x1b[" not in saved
    assert_no_secret(res, build)


def test_failed_submission_is_recorded_and_exits_non_zero(build, tmp_path):
    states = ({"status": "PENDING"}, {"status": "ERROR", "errorDescription": "Submission Scoring Error"})
    with FakeKaggle(statuses=("READY",), submission_states=states) as kaggle:
        res = run_submit(kaggle, [str(build), *fast()], legacy_env(tmp_path))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        f"error: Kaggle could not score submission {SUBMISSION_REF}: Submission Scoring Error; recorded in "
        f"{build / LEADERBOARD_FILE}")
    (record,) = read_records(build / LEADERBOARD_FILE)
    assert (record["status"], record["error"], record["public_score"]) == ("error", "Submission Scoring Error", None)
    assert latest_scored([record]) is None


def test_pending_at_the_end_of_the_wait_then_refresh(build, tmp_path):
    run = tmp_path / "runs" / "vith-4000"  # the package came from this run folder: its scores go there
    run.mkdir(parents=True)
    came_from_run(build, run)
    env = token_env(tmp_path)
    with FakeKaggle(statuses=("READY",), submission_states=({"status": "PENDING"},)) as kaggle:
        res = run_submit(kaggle, [str(build), "--poll", "0.05", "--wait", "2"], env)
    assert res.returncode == 3, res.stdout + res.stderr
    polls = kaggle.methods().count("ListSubmissions")
    assert 2 <= polls <= 60  # polled, bounded by --wait
    assert f"Complete it later with: guie-submit --refresh {build}" in res.stdout
    assert not (build / LEADERBOARD_FILE).exists()
    (pending,) = read_records(run / LEADERBOARD_FILE)
    assert (pending["status"], pending["public_score"]) == ("pending", None)

    with FakeKaggle(listed=True, submission_states=(
            {"status": "PENDING"}, {"status": "COMPLETE", "publicScore": "0.58", "privateScore": "0.61"})) as kaggle:
        res = run_submit(kaggle, [str(build), "--refresh", *fast()], env)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [m for m in kaggle.methods() if m != "IntrospectToken"] == ["ListSubmissions"] * 2
    (done,) = read_records(run / LEADERBOARD_FILE)
    assert {k: done[k] for k in ("status", "public_score", "private_score", "submitted_at")} == {
        "status": "complete", "public_score": 0.58, "private_score": 0.61, "submitted_at": pending["submitted_at"]}
    assert "scored: public 0.5800, private 0.6100" in res.stdout
    assert_no_secret(res, build, run)

    with FakeKaggle() as kaggle:  # nothing pending: nothing sent
        res = run_submit(kaggle, [str(build), "--refresh", *fast()], env)
    assert res.returncode == 0 and kaggle.requests == []
    assert f"no pending submission in {run / LEADERBOARD_FILE}" in res.stdout


def test_without_credentials_nothing_is_sent_or_written(build, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    before = sorted(p.relative_to(build) for p in build.rglob("*"))
    with FakeKaggle() as kaggle:
        res = run_submit(kaggle, [str(build), *fast()], client_env(home))
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [f"error: {CREDENTIALS_HELP}"]
    assert kaggle.requests == []
    assert sorted(p.relative_to(build) for p in build.rglob("*")) == before
    assert not (build / UPLOAD_RECORD).exists() and not (build / LEADERBOARD_FILE).exists()


# ---- pieces ------------------------------------------------------------------------------------------------------


def test_failing_cell_reads_nbclient_papermill_and_bare_errors():
    cells = [{"cell_type": "markdown", "id": "about", "source": "# x"},
             {"cell_type": "code", "id": "find-model", "source": ["import torch\n", "x = 1"]},
             {"cell_type": "code", "id": "write-submission", "source": "y = 2"}]
    nbclient = ("An error occurred while executing the following cell:\n------------------\nimport torch\nx = 1\n"
                "------------------\n\nModuleNotFoundError: No module named 'torch'\n")
    assert failing_cell(nbclient, cells) == ("notebook cell 'find-model' (code cell 1 of 2) raised "
                                             "ModuleNotFoundError: No module named 'torch'")
    papermill = 'Exception encountered at "In [2]":\n  y = 2\nRuntimeError: CUDA out of memory\n'
    assert failing_cell(json.dumps([{"data": papermill}]), cells) == (
        "notebook cell 'write-submission' (code cell 2 of 2) raised RuntimeError: CUDA out of memory")
    assert failing_cell("boom\nValueError: bad\n", cells) == "the notebook raised ValueError: bad"
    assert failing_cell("nothing useful", cells) == "the log names no failing cell"


def test_status_names_and_waiter():
    from kagglesdk.competitions.types.submission_status import SubmissionStatus
    from kagglesdk.kernels.types.kernels_enums import KernelWorkerStatus

    assert status_name(KernelWorkerStatus.CANCEL_ACKNOWLEDGED) == "cancel_acknowledged"
    assert status_name(SubmissionStatus.COMPLETE) == status_name("SUBMISSION_STATUS_COMPLETE") == "complete"
    now = [0.0]
    waiter = Waiter(10, 4, clock=lambda: now[0], sleep=lambda s: now.__setitem__(0, now[0] + s))
    waiter.pause()
    waiter.pause()
    waiter.pause()
    assert now[0] == 10 and waiter.left == 0  # the last pause is cut to the time left
    with pytest.raises(GuieError, match="--poll above 0"):
        Waiter(10, 0)


def test_leaderboard_file_is_rewritten_whole(tmp_path):
    path = tmp_path / LEADERBOARD_FILE
    append_record(path, {"submission_ref": 1, "status": "pending", "submitted_at": "2026-01-02T00:00:00Z"})
    append_record(path, {"submission_ref": 2, "status": "complete", "public_score": "0.5",
                         "submitted_at": "2026-01-01T00:00:00Z"})
    update_record(path, 1, {"status": "complete", "public_score": 0.4})
    records = read_records(path)
    assert [r["submission_ref"] for r in records] == [1, 2] and records[0]["public_score"] == 0.4
    assert latest_scored(records)["submission_ref"] == 1  # newest by date, not by line
    assert [p.name for p in tmp_path.iterdir()] == [LEADERBOARD_FILE]  # no temporary file left
    with pytest.raises(GuieError, match="has no submission 9"):
        update_record(path, 9, {})
    path.write_text('{"status": "complete"}\nnot json\n')
    with pytest.raises(GuieError, match="line 2 is not JSON"):
        read_records(path)


def test_leaderboard_path_follows_the_package_origin(build, tmp_path):
    run = tmp_path / "run"
    sha = file_sha256(build / "dataset" / "saved_model.pt")
    assert leaderboard_path(build, sha) == build / LEADERBOARD_FILE  # a bare export's package: BUILD
    came_from_run(build, run)
    assert leaderboard_path(build, sha) == build / LEADERBOARD_FILE  # the run folder is gone
    run.mkdir()
    assert leaderboard_path(build, sha) == run / LEADERBOARD_FILE
    assert leaderboard_path(build, "0" * 64) == build / LEADERBOARD_FILE  # BUILD/export left by another package


@pytest.mark.slow
def test_a_package_of_a_run_folder_records_into_the_run(trained_run, tmp_path):
    from guie.ship.folders import PackageSpec, build_package

    build_package(trained_run, PackageSpec.create(DATASET, KERNEL), tmp_path / "build", log=lambda _: None)
    sha = file_sha256(tmp_path / "build" / "dataset" / "saved_model.pt")
    assert leaderboard_path(tmp_path / "build", sha) == trained_run / LEADERBOARD_FILE


def test_a_competition_source_as_kernels_pull_writes_it_is_submitted(build, tmp_path):
    """competition_sources as `kaggle kernels pull -m` writes it ("c/SLUG"): the client pushes it as it is,
    and guie-submit takes the folder guie-smoke takes (one reader, guie.ship.metadata)."""
    meta_path = build / "kernel" / "kernel-metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["competition_sources"] = [f"c/{COMPETITION}"]
    meta_path.write_text(json.dumps(meta, indent=2))
    with FakeKaggle(statuses=("READY",)) as kaggle:
        res = run_submit(kaggle, [str(build), *fast()], token_env(tmp_path))
    assert res.returncode == 0, res.stdout + res.stderr
    assert kaggle.calls("SaveKernel")[0]["json"]["competitionDataSources"] == [f"c/{COMPETITION}"]
    assert kaggle.calls("CreateCodeSubmission")[0]["json"]["competitionName"] == COMPETITION
    (record,) = read_records(build / LEADERBOARD_FILE)
    assert (record["competition"], record["status"]) == (COMPETITION, "complete")
