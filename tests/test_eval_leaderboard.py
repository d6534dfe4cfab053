"""guie-eval toward the host's CV: --distractors (never-queried classes in the index), --task-weights, and
--leaderboard (each model's Kaggle score from leaderboard.jsonl, CV-LB Spearman/Pearson per task)."""
from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from layouts import make_met
from torch import nn

from guie.artifacts import LEADERBOARD_FILE, leaderboard_files
from guie.errors import GuieError
from guie.eval.cv_vs_leaderboard import attach_leaderboard, model_score
from guie.eval.evaluate import check_task_weights, mean_over_tasks, parse_task_weights
from guie.eval.report import format_markdown, format_table, long_rows, write_report
from guie.eval.tasks import TaskOptions, build_task
from guie.fileio import file_sha256


class RandomProjection(nn.Module):
    """The submission contract in miniature with a seeded random linear map: models of different quality."""

    def __init__(self, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("weight", torch.randn(3 * 8 * 8, 64, generator=g))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        x = F.interpolate(x.float() / 255.0, size=[8, 8], mode="bilinear", align_corners=False)
        return F.normalize(x.flatten(1) @ self.weight, dim=1)


def model_folder(folder: Path, seed: int, lines: list[dict]) -> Path:
    folder.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(torch.jit.script(RandomProjection(seed)), str(folder / "saved_model.pt"))
    (folder / LEADERBOARD_FILE).write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def ranks(values: list[float]) -> list[float]:
    """1-based ranks, tied values sharing their average rank."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    out = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            out[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return out


def pearson(x: list[float], y: list[float]) -> float:
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    return cov / (sum((a - mx) ** 2 for a in x) * sum((b - my) ** 2 for b in y)) ** 0.5


# ---- distractors ---------------------------------------------------------------------------------------------


def test_distractors_add_exactly_n_index_images_of_never_queried_classes(digits_dir):
    spec = f"imagefolder:{digits_dir}"
    base = build_task(spec, TaskOptions(max_classes=3))
    task = build_task(spec, TaskOptions(max_classes=3, distractors=40))
    assert [r.path for r in task.query] == [r.path for r in base.query]  # no query added or removed
    assert len(task.index) == len(base.index) + 40 and task.distractors == 40
    added = task.index[len(base.index):]
    queried = {r.class_key for r in task.query}
    assert len({r.path for r in added}) == 40 and not {r.class_key for r in added} & queried
    assert not {r.path for r in added} & {r.path for r in base.index}
    assert task.rule.endswith("; 40 distractor images of never-queried classes added to the index")
    assert task.summary()["distractors"] == 40 and task.summary()["index"] == len(base.index) + 40
    again = build_task(spec, TaskOptions(max_classes=3, distractors=40))
    assert [r.path for r in again.index] == [r.path for r in task.index]  # seeded
    other = build_task(spec, TaskOptions(max_classes=3, distractors=40, seed=1))
    assert {r.path for r in other.index} != {r.path for r in task.index}
    with pytest.raises(GuieError, match=r"has only 280 images of never-queried classes outside its index; "
                                        r"--distractors 281 needs 281"):
        build_task(spec, TaskOptions(max_classes=3, distractors=281))
    with pytest.raises(GuieError, match="--distractors must be 0 or more"):
        build_task(spec, TaskOptions(distractors=-1))


def test_distractors_bring_back_the_exhibits_max_classes_left_out(tmp_path):
    make_met(tmp_path)
    spec = f"met:{tmp_path}"
    seed = next(s for s in range(50) if len(build_task(spec, TaskOptions(seed=s)).query) == 2
                and _builds(spec, TaskOptions(seed=s, max_classes=1)))
    base = build_task(spec, TaskOptions(seed=seed, max_classes=1))
    (queried,) = {r.class_key for r in base.query}
    assert {r.class_key for r in base.index} == {queried}  # today: only the sampled exhibit is left in the index
    task = build_task(spec, TaskOptions(seed=seed, max_classes=1, distractors=3))
    added = task.index[len(base.index):]
    assert len(added) == 3 and queried not in {r.class_key for r in added}
    assert [r.path for r in task.query] == [r.path for r in base.query]


def _builds(spec: str, options: TaskOptions) -> bool:
    try:
        build_task(spec, options)
        return True
    except GuieError:
        return False


# ---- task weights --------------------------------------------------------------------------------------------


def test_task_weights_parse_check_and_weight_the_mean():
    assert parse_task_weights(None) is None and parse_task_weights("") is None
    assert parse_task_weights("sop=2, food101=0.5") == {"sop": 2.0, "food101": 0.5}
    for bad, message in (("sop", "must be TASK=WEIGHT"), ("sop=-1", "must be TASK=WEIGHT"),
                         ("sop=x", "must be TASK=WEIGHT"), ("sop=nan", "must be TASK=WEIGHT"),
                         ("sop=1,sop=2", "names task 'sop' twice"), ("sop=0", "all 0")):
        with pytest.raises(GuieError, match=message):
            parse_task_weights(bad)
    with pytest.raises(GuieError, match=r"names 'sopp', which is not a task here \(did you mean: sop\?\)"):
        check_task_weights({"sopp": 1.0, "food101": 1.0}, ["sop", "food101"])
    with pytest.raises(GuieError, match="gives no weight to food101"):
        check_task_weights({"sop": 1.0}, ["sop", "food101"])
    results = [{"task": "sop", "mP@5": 0.2, "P@1": 0.4, "mAP@5": 0.1},
               {"task": "food101", "mP@5": 0.8, "P@1": 0.6, "mAP@5": 0.3}]
    assert mean_over_tasks(results)["mP@5"] == pytest.approx(0.5)
    weighted = mean_over_tasks(results, {"sop": 3.0, "food101": 1.0})
    assert weighted["mP@5"] == pytest.approx((3 * 0.2 + 0.8) / 4) and weighted["weights"] == {"sop": 3.0,
                                                                                              "food101": 1.0}


# ---- leaderboard -------------------------------------------------------------------------------------------------


def hand_report(tmp_path: Path, scores: dict[str, dict | None]) -> dict:
    """A guie-eval report over two tasks, its models' folders holding the given leaderboard lines."""
    models, results, means = [], [], []
    for i, (name, line) in enumerate(scores.items()):
        folder = tmp_path / name
        folder.parent.mkdir(parents=True, exist_ok=True)
        folder.mkdir()
        if line is not None:
            (folder / LEADERBOARD_FILE).write_text(json.dumps({"status": "complete", **line}) + "\n")
        models.append({"name": name, "path": str(folder), "kind": "eager"})
        for task, value in (("sop", 0.1 * (i + 1)), ("met", 0.5 - 0.1 * i)):
            results.append({"model": name, "task": task, "mP@5": value, "P@1": value, "mAP@5": value,
                            "queries": 4, "index": 9})
        means.append({"model": name, "mP@5": 0.3, "P@1": 0.0, "mAP@5": 0.0,
                      "tasks": 2})
    tasks = [{"name": n, "spec": f"{n}:/d", "rule": "r", "queries": 4, "index": 9, "query_classes": 2,
              "index_classes": 3, "dropped_queries": 0, "dropped_reasons": {}, "skipped_rows": 0,
              "skipped_reasons": {}} for n in ("sop", "met")]
    return {"k": 5, "models": models, "tasks": tasks, "results": results, "mean": means}


def test_public_scores_when_a_model_lacks_a_private_one_and_too_few_models(tmp_path):
    report = attach_leaderboard(hand_report(tmp_path, {
        "a": {"public_score": 0.3, "private_score": 0.31}, "b": {"public_score": "0.5"},
        "c": {"public_score": 0.4, "private_score": 0.41}, "d": None}))
    board = report["leaderboard"]
    assert board["score"] == "public_score" and "not every model has a private one" in board["note"]
    assert [r["lb"] for r in board["models"]] == [0.3, 0.5, 0.4, None]
    sop = next(c for c in board["correlation"] if c["task"] == "sop")
    assert sop["n"] == 3 and sop["spearman"] == pytest.approx(0.5)  # mP@5 ranks 1,2,3 vs LB ranks 1,3,2
    met = next(c for c in board["correlation"] if c["task"] == "met")
    assert met["spearman"] == pytest.approx(-0.5)
    mean = next(c for c in board["correlation"] if c["task"] == "mean")
    assert mean["spearman"] is None and mean["pearson"] is None  # every model has the same mean: undefined
    table = format_table(report)
    assert "LB public" in table and "CV vs leaderboard: mP@5 against the public score across 3 models" in table
    md = format_markdown(report)
    assert "## CV against the leaderboard" in md and "| sop | +0.500 |" in md
    paths = write_report(report, tmp_path / "out")
    assert paths["scatter"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads(paths["json"].read_text())["leaderboard"]["correlation"][2]["spearman"] is None
    assert long_rows(report)[2]["public_score"] == 0.3 and long_rows(report)[0]["public_score"] == ""

    few = attach_leaderboard(hand_report(tmp_path / "few", {"a": {"private_score": 0.3},
                                                            "b": {"private_score": 0.2}, "c": None}))
    assert few["leaderboard"]["correlation"] == [] and few["leaderboard"]["score"] == "private_score"
    assert few["leaderboard"]["note"].startswith("2 models with a leaderboard score; a correlation needs at least 3")


def test_leaderboard_files_beside_the_model(tmp_path):
    build = tmp_path / "build"
    (build / "dataset").mkdir(parents=True)
    (build / "dataset" / "dataset-metadata.json").write_text("{}")
    (build / "dataset" / "saved_model.pt").write_bytes(b"x")
    assert leaderboard_files(build / "dataset" / "saved_model.pt") == []
    (build / LEADERBOARD_FILE).write_text("")
    assert leaderboard_files(build / "dataset" / "saved_model.pt") == [build / LEADERBOARD_FILE]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / LEADERBOARD_FILE).write_text("")
    assert leaderboard_files(tmp_path / "run") == leaderboard_files(tmp_path / "run" / "model.pt") == [
        tmp_path / "run" / LEADERBOARD_FILE]


@pytest.mark.slow
def test_cli_leaderboard_distractors_and_weights_on_three_runs(cli, digits_dir, tmp_path):
    older = {"status": "complete", "public_score": 0.9, "private_score": 0.9, "submitted_at": "2026-01-01T00:00:00Z"}
    runs = []
    for i, private in enumerate((0.52, 0.47, 0.61)):
        lines = [older,
                 {"status": "complete", "public_score": private + 0.01, "private_score": private,
                  "submitted_at": f"2026-02-0{i + 1}T00:00:00Z", "submission_ref": 100 + i},
                 {"status": "error", "public_score": None, "private_score": None, "submitted_at": "2026-03-01T00:00:00Z"},
                 {"status": "pending", "submitted_at": "2026-03-02T00:00:00Z"}]
        runs.append(model_folder(tmp_path / f"run-{'abc'[i]}", seed=i, lines=lines))
    spec = f"imagefolder:{digits_dir}"
    out = tmp_path / "report"
    res = cli("eval", *map(str, runs), "--task", spec, "--task", "demo:digits-noisy", "--max-classes", "4",
              "--distractors", "40", "--task-weights", "digits=3,digits-noisy=1", "--leaderboard", "--workers", "0",
              "--device", "cpu", "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())

    # --distractors 40: exactly 40 more index images and the same queries as without it
    plain = build_task(spec, TaskOptions(max_classes=4))
    digits = report["tasks"][0]
    assert (digits["name"], digits["queries"], digits["index"]) == ("digits", len(plain.query), len(plain.index) + 40)
    assert digits["distractors"] == 40 and report["settings"]["distractors"] == 40

    # --task-weights: the mean is the weighted mean of the report's own task scores
    for mean in report["mean"]:
        by_task = {r["task"]: r["mP@5"] for r in report["results"] if r["model"] == mean["model"]}
        assert mean["mP@5"] == pytest.approx((3 * by_task["digits"] + by_task["digits-noisy"]) / 4)

    # --leaderboard: the Spearman coefficient a reader computes from the report's own numbers
    board = report["leaderboard"]
    assert board["score"] == "private_score"
    lb = {r["model"]: r["lb"] for r in board["models"]}
    assert lb == {"run-a": 0.52, "run-b": 0.47, "run-c": 0.61}  # the latest complete line of each file
    models = [m["name"] for m in report["models"]]
    assert [c["task"] for c in board["correlation"]] == ["digits", "digits-noisy", "mean"]
    for corr in board["correlation"]:
        if corr["task"] == "mean":
            cv = [next(m["mP@5"] for m in report["mean"] if m["model"] == name) for name in models]
        else:
            cv = [next(r["mP@5"] for r in report["results"] if r["model"] == name and r["task"] == corr["task"])
                  for name in models]
        y = [lb[name] for name in models]
        assert corr["n"] == 3
        assert corr["spearman"] == pytest.approx(pearson(ranks(cv), ranks(y)))
        assert corr["pearson"] == pytest.approx(pearson(cv, y))
    assert "LB private" in res.stdout and "weighted mean (2 tasks)" in res.stdout
    assert "CV vs leaderboard: mP@5 against the private score across 3 models" in res.stdout
    assert (out / "leaderboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bad_task_weights_is_one_line(cli, digits_dir):
    res = cli("eval", str(digits_dir), "--task", f"imagefolder:{digits_dir}", "--task-weights", "digits")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --task-weights item 'digits' must be TASK=WEIGHT with a weight of 0 or more, e.g. sop=2,food101=1"]


def test_a_torchscript_model_gets_only_its_own_scores(tmp_path):
    folder = model_folder(tmp_path / "export", seed=0, lines=[])
    with zipfile.ZipFile(folder / "submission.zip", "w") as zf:
        zf.write(folder / "saved_model.pt", "saved_model.pt")
    sha = file_sha256(folder / "saved_model.pt")
    (folder / LEADERBOARD_FILE).write_text("".join(json.dumps(line) + "\n" for line in (
        {"status": "complete", "public_score": 0.5, "model_sha256": sha, "submitted_at": "2026-01-01T00:00:00Z"},
        {"status": "complete", "public_score": 0.7, "model_sha256": "0" * 64, "submitted_at": "2026-02-01T00:00:00Z"})))
    for path in (folder, folder / "saved_model.pt", folder / "submission.zip"):
        assert model_score(path)["public_score"] == 0.5  # the newer line is another model's
