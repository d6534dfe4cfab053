"""guie-eval --gallery: which queries are shown, the per-query retrieval it reads, the files it writes
(escaped names, placeholders, bounded thumbnails, all-or-nothing), guie-eval and guie-train --wandb
writing it, and the pages as headless Chromium renders them.

The browser tests drive Debian's chromium (/usr/bin/chromium, installed by .ci/run) with Playwright's
Python package. Under CI (CI set) a missing browser or Playwright is a failure, elsewhere a skip. The
last screenshot is kept in test-artifacts/ (or $GUIE_TEST_ARTIFACTS).
"""
from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from submission_models import ContractModel, script

from guie.errors import GuieError
from guie.eval.evaluate import score_retrieval
from guie.eval.gallery import select_queries, write_gallery
from guie.eval.retrieval_rows import TaskRetrieval, retrieval_by_class
from guie.eval.thumbnails import HIT_RGB, MISS_RGB, THUMB_PX
from guie.retrieval.knn import knn

REPO = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def hand_made(task: str, model: str, scores: list[float], k: int = 5, n_index: int = 6) -> TaskRetrieval:
    """A TaskRetrieval with the given per-query scores (relevance made to match), on made-up paths."""
    q = len(scores)
    neighbours = np.tile(np.arange(k), (q, 1)) % n_index
    relevant = np.array([[r < round(s * k) for r in range(k)] for s in scores])
    return TaskRetrieval(task, model, [f"/q/{i}.png" for i in range(q)], [f"c{i}" for i in range(q)],
                         [f"/x/{j}.png" for j in range(n_index)], [f"c{j}" for j in range(n_index)], neighbours,
                         np.linspace(1, 0, k, dtype=np.float32)[None].repeat(q, 0), relevant,
                         np.full(q, k, dtype=np.int64), np.array(scores, dtype=np.float64))


# --- what is shown ----------------------------------------------------------------------------------------------

def test_lowest_queries_per_model_then_random_ones_among_the_rest():
    a = hand_made("t", "a", [0.2, 1.0, 0.0, 0.6, 1.0, 0.4, 0.8, 1.0, 0.6, 0.0])
    b = hand_made("t", "b", [1.0, 0.0, 1.0, 1.0, 0.2, 1.0, 1.0, 0.4, 1.0, 1.0])
    sections = select_queries([a, b], 3, seed=0)
    assert [(kind, by) for kind, by, _ in sections] == [("lowest", "a"), ("lowest", "b"), ("random", None)]
    (_, _, low_a), (_, _, low_b), (_, _, rand) = sections
    assert sorted(low_a[:2]) == [2, 9] and low_a[2] == 0  # the two zeros (in a seeded order), then 0.2
    assert low_b == [1, 4, 7]  # 0.0, 0.2, 0.4: lowest first
    assert len(rand) == 3 and not set(rand) & (set(low_a) | set(low_b))
    assert select_queries([a, b], 3, seed=0) == sections  # seeded: the same rows every time
    assert select_queries([a, b], 20, seed=0)[2][2] == []  # nothing left to draw at random


def test_equal_scores_are_ordered_by_the_seed():
    flat = hand_made("t", "a", [0.5] * 40)
    orders = {tuple(select_queries([flat], 5, seed)[0][2]) for seed in range(6)}
    assert len(orders) > 1  # another seed, other queries among equals
    assert select_queries([flat], 5, 3) == select_queries([flat], 5, 3)


def test_retrieval_by_class_scores_as_guie_eval_does():
    rng = np.random.default_rng(0)
    xb = rng.standard_normal((60, 8)).astype(np.float32)
    xq = rng.standard_normal((25, 8)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    index_labels = [f"d/{i % 7}" for i in range(60)]
    query_labels = [f"d/{i % 5}" for i in range(25)]
    sims, ids = knn(xb, xq, 5)
    r = retrieval_by_class("t", "m", [f"q{i}" for i in range(25)], query_labels, [f"x{i}" for i in range(60)],
                           index_labels, sims, ids)
    scores = score_retrieval(ids, query_labels, index_labels)
    assert r.mean_precision == pytest.approx(scores["mP@5"]) and r.precision_at_1 == pytest.approx(scores["P@1"])
    assert (r.relevant == (np.array(index_labels)[ids] == np.array(query_labels)[:, None])).all()
    assert r.n_relevant.tolist() == [index_labels.count(label) for label in query_labels]
    assert np.allclose(r.similarities, (xq[:, None, :] * xb[ids]).sum(-1), atol=1e-5)
    with pytest.raises(ValueError, match="scores"):
        TaskRetrieval("t", "m", r.query_paths, r.query_labels, r.index_paths, r.index_labels, r.neighbours,
                      r.similarities, r.relevant, r.n_relevant, r.scores[:-1])


# --- the files ----------------------------------------------------------------------------------------------------

@pytest.fixture
def odd_images(tmp_path) -> dict[str, str]:
    """Image files whose names need escaping, one that is not UTF-8, a big one and one that does not decode."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    names = {"quote": 'say "cheese" it\'s.png', "markup": "<b>bold & co.png", "latin1": os.fsdecode(b"caf\xe9.png"),
             "big": "big.jpg", "plain": "plain.png", "other": "other.png"}
    paths = {}
    for i, (key, name) in enumerate(names.items()):
        size = (600, 300) if key == "big" else (24, 24)
        path = os.path.join(folder, name)
        Image.new("RGB", size, (40 * i, 255 - 30 * i, 90)).save(path, format="JPEG" if key == "big" else "PNG")
        paths[key] = path
    paths["broken"] = str(folder / "broken.jpg")
    Path(paths["broken"]).write_bytes(b"\xff\xd8 this is no JPEG")
    return paths


def odd_retrieval(paths: dict[str, str], task: str = "odd <task> & \"name\"", model: str = "m") -> TaskRetrieval:
    index = [paths[k] for k in ("markup", "latin1", "big", "broken", "plain", "other")]
    index_labels = ["cls<script>alert(1)</script>", "a&b", "a&b", "cls<script>alert(1)</script>", "z", "z"]
    neighbours = np.array([[0, 3, 1, 2, 4], [1, 2, 0, 5, -1]])
    sims = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.95, 0.9, 0.2, 0.1, 0.0]], dtype=np.float32)
    query_labels = ["cls<script>alert(1)</script>", "a&b"]
    relevant = np.array(index_labels, dtype=object)[np.maximum(neighbours, 0)] == np.array(query_labels)[:, None]
    relevant &= neighbours >= 0
    return TaskRetrieval(task, model, [paths["quote"], paths["plain"]], query_labels, index, index_labels, neighbours,
                         sims, relevant, np.array([2, 2]), np.array([1.0, 1.0]))


def test_gallery_files_escape_every_name_and_show_undecodable_images(odd_images, tmp_path):
    entry = write_gallery([odd_retrieval(odd_images)], tmp_path / "out" / "gallery", 2)
    gallery = tmp_path / "out" / "gallery"
    assert entry["folder"] == "gallery" and entry["index"] == "gallery/index.html"
    assert gallery.stat().st_mode & 0o777 == 0o777 & ~current_umask()  # readable by others, as any folder made here
    task = entry["tasks"][0]
    page = (gallery / task["page"]).read_text(encoding="utf-8")  # strict UTF-8: no raw surrogate in the page
    assert task["page"] == "odd-task-name.html" and (gallery / task["png"]).is_file()
    assert "<script>" not in page and "<b>bold" not in page
    assert "cls&lt;script&gt;alert(1)&lt;/script&gt;" in page and "&lt;b&gt;bold &amp; co.png" in page
    assert "say &quot;cheese&quot; it&#x27;s.png" in page
    assert html_repr(Path(odd_images["latin1"]).name) in page  # the non-UTF-8 name shown as Python's repr
    assert "caf%E9.png" in page  # and linked by its bytes
    assert "cannot decode" in page and "broken.jpg" in page
    assert page.count('class="empty"') == 1  # the second query got 4 results of 5
    shown = [r for row in task["rows"] for s in row["strips"] for r in s["results"]]
    assert next(r for r in shown if r["name"] == "broken.jpg")["unreadable"]
    assert all(r["unreadable"] is None for r in shown if r["name"] != "broken.jpg")
    thumbs = sorted((gallery / "thumbs").iterdir())
    assert len(thumbs) == len({r["path"] for r in shown} | {row["query"]["path"] for row in task["rows"]})
    for thumb in thumbs:
        with Image.open(thumb) as im:
            assert im.format == "JPEG" and max(im.size) <= THUMB_PX
    big = next(r for r in shown if r["name"] == "big.jpg")
    with Image.open(gallery / big["thumb"]) as im:
        assert im.size == (THUMB_PX, THUMB_PX // 2)
    with Image.open(gallery / task["png"]) as im:
        assert im.format == "PNG" and im.width > 5 * 96


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def html_repr(name: str) -> str:
    import html

    return html.escape(repr(name), quote=True)


def test_a_merged_index_with_multi_label_queries_shows_the_relevance_it_is_given(odd_images, tmp_path):
    """UnED's common setting: several domains in one index, a query of two classes, relevance only within
    the query's domain (a label equal in another domain is no hit); the gallery shows what it is given."""
    index = [odd_images[k] for k in ("markup", "latin1", "big", "plain", "other")]
    index_labels = ["cars/1", "sop/1", "cars/2", "cars/3", "sop/2"]
    neighbours = np.array([[1, 0, 2, 3, 4]])
    relevant = np.array([[False, True, True, False, False]])  # sop/1 shares the label 1 but not the domain
    r = TaskRetrieval("uned-common", "m", [odd_images["quote"]], ["cars/1+cars/2"], index, index_labels, neighbours,
                      np.linspace(0.9, 0.5, 5, dtype=np.float32)[None], relevant, np.array([2]), np.array([1.0]))
    entry = write_gallery([r], tmp_path / "g", 1)
    (row,) = entry["tasks"][0]["rows"]
    assert row["query"]["label"] == "cars/1+cars/2" and row["query"]["n_q"] == 2
    assert [x["relevant"] for x in row["strips"][0]["results"]] == relevant[0].tolist()
    assert [x["label"] for x in row["strips"][0]["results"]] == ["sop/1", "cars/1", "cars/2", "cars/3", "sop/2"]
    page = (tmp_path / "g" / "uned-common.html").read_text(encoding="utf-8")
    assert page.count("result hit") == 2 and page.count("result miss") == 3


def test_thumbnails_are_written_once_across_tasks(odd_images, tmp_path):
    entry = write_gallery([odd_retrieval(odd_images, "one"), odd_retrieval(odd_images, "two")], tmp_path / "g", 2)
    assert [t["page"] for t in entry["tasks"]] == ["one.html", "two.html"]
    paths = {r["path"] for t in entry["tasks"] for row in t["rows"] for s in row["strips"] for r in s["results"]}
    paths |= {row["query"]["path"] for t in entry["tasks"] for row in t["rows"]}
    assert len(list((tmp_path / "g" / "thumbs").iterdir())) == len(paths)


def test_gallery_is_replaced_whole_or_not_at_all(odd_images, tmp_path):
    folder = tmp_path / "g"
    write_gallery([odd_retrieval(odd_images)], folder, 2)
    before = sorted(p.name for p in folder.iterdir())
    other = odd_retrieval(odd_images, model="n")
    moved = TaskRetrieval(other.task, other.model, list(reversed(other.query_paths)), other.query_labels,
                          other.index_paths, other.index_labels, other.neighbours, other.similarities, other.relevant,
                          other.n_relevant, other.scores)
    with pytest.raises(ValueError, match="different queries"):
        write_gallery([odd_retrieval(odd_images), moved], folder, 2)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".guie-gallery")]
    entry = write_gallery([odd_retrieval(odd_images, "again")], folder, 1)
    assert sorted(p.name for p in folder.iterdir()) == ["again.html", "again.png", "index.html", "thumbs"]
    assert len(entry["tasks"][0]["rows"]) == 2  # 1 lowest + 1 random
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    with pytest.raises(GuieError, match="is not a gallery guie-eval wrote"):
        write_gallery([odd_retrieval(odd_images)], foreign, 2)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]
    with pytest.raises(GuieError, match="--gallery must be at least 1"):
        write_gallery([odd_retrieval(odd_images)], tmp_path / "h", 0)


# --- guie-eval and guie-train write it ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_model_gallery(tmp_path_factory, trained_run, digits_dir) -> dict:
    """guie-eval RUN TORCHSCRIPT --task ... --gallery 3 --out OUT; returns OUT, report.json and the CLI output."""
    from conftest import run_cli

    root = tmp_path_factory.mktemp("gallery-cli")
    ts = root / "contract"
    ts.mkdir()
    torch.jit.save(script(ContractModel()), str(ts / "saved_model.pt"))
    out = root / "out"
    res = run_cli("eval", str(trained_run), str(ts / "saved_model.pt"), "--task", f"imagefolder:{digits_dir}",
                  "--max-classes", "4", "--workers", "0", "--gallery", "3", "--out", str(out))
    assert res.returncode == 0, res.stderr[-3000:]
    return {"out": out, "report": json.loads((out / "report.json").read_text()), "stdout": res.stdout}


@pytest.mark.slow
def test_guie_eval_gallery_shows_both_models_on_the_same_queries(two_model_gallery):
    report, out = two_model_gallery["report"], two_model_gallery["out"]
    assert f"gallery: {out / 'gallery' / 'index.html'}" in two_model_gallery["stdout"]
    gallery = report["gallery"]
    assert gallery["rows_per_section"] == 3 and (out / gallery["index"]).is_file()
    (task,) = gallery["tasks"]
    models = [m["name"] for m in report["models"]]
    assert models == ["tiny", "contract"]
    result = {r["model"]: r for r in report["results"]}
    for m in task["models"]:  # the page's summary is guie-eval's own numbers
        assert m["mP@5"] == pytest.approx(result[m["model"]]["mP@5"]) and m["P@1"] == pytest.approx(result[m["model"]]["P@1"])
    assert [(r["section"], r["by"]) for r in task["rows"]] == [("lowest", "tiny")] * 3 + [("lowest", "contract")] * 3 \
        + [("random", None)] * 3
    for row in task["rows"]:
        assert [s["model"] for s in row["strips"]] == models
        for strip in row["strips"]:
            assert [r["rank"] for r in strip["results"]] == [1, 2, 3, 4, 5]
            assert [r["relevant"] for r in strip["results"]] == [r["label"] == row["query"]["label"]
                                                                 for r in strip["results"]]
            sims = [r["similarity"] for r in strip["results"]]
            assert sims == sorted(sims, reverse=True)
            m = min(row["query"]["n_q"], 5)
            assert strip["score"] == pytest.approx(sum(r["relevant"] for r in strip["results"][:m]) / m)
    for model in models:  # each model's lowest section holds its lowest scores
        chosen = [next(s["score"] for s in r["strips"] if s["model"] == model) for r in task["rows"]
                  if r["by"] == model]
        others = [next(s["score"] for s in r["strips"] if s["model"] == model) for r in task["rows"]
                  if r["section"] == "random"]
        assert max(chosen) <= min(others)


def test_gallery_needs_out_and_a_positive_count(cli, trained_run, digits_dir, tmp_path):
    res = cli("eval", str(trained_run), "--task", f"imagefolder:{digits_dir}", "--gallery", "4")
    assert res.returncode != 0 and "--gallery writes its pages under --out; add --out FOLDER" in res.stderr
    res = cli("eval", str(trained_run), "--task", f"imagefolder:{digits_dir}", "--gallery", "0", "--out",
              str(tmp_path / "o"))
    assert res.returncode != 0 and "--gallery must be at least 1" in res.stderr and not (tmp_path / "o").exists()


def test_train_eval_with_wandb_logs_the_gallery_picture(digits_dir, tmp_path):
    from conftest import tiny_train_config

    from guie.workflows.train_eval import train_and_evaluate

    lines: list[str] = []
    cfg = tiny_train_config([f"imagefolder:{digits_dir}"], tmp_path / "run", epochs=1, eval=f"imagefolder:{digits_dir}",
                            wandb="offline")
    train_and_evaluate(cfg, log=lines.append)
    run = tmp_path / "run"
    stored = json.loads((run / "eval.json").read_text())["tasks"]["gallery"]
    assert (run / stored["index"]).is_file() and (run / "gallery" / stored["tasks"][0]["png"]).is_file()
    assert any(line.startswith("gallery: ") for line in lines)
    media = list((run / "wandb").rglob("media/images/eval/*/gallery*.png"))
    assert len(media) == 1
    with Image.open(media[0]) as logged, Image.open(run / "gallery" / stored["tasks"][0]["png"]) as written:
        assert logged.size == written.size


# --- in a real browser --------------------------------------------------------------------------------------------

def chromium_executable() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium driven by Playwright; a failure under CI when either is missing, else a skip."""
    executable = chromium_executable()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        sync_playwright = None
    missing = ("Playwright's Python package (pip install -e '.[dev]')" if sync_playwright is None else
               "Chromium (apt-get install chromium)" if executable is None else None)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the browser tests need {missing}; .ci/run installs it")
        pytest.skip(f"no {missing} here")
    with sync_playwright() as p:
        # Playwright starts it with a new, empty --user-data-dir of its own
        b = p.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("GUIE_TEST_ARTIFACTS", REPO / "test-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


IMAGES_JS = "() => Array.from(document.images).map(i => [i.getAttribute('src'), i.complete && i.naturalWidth > 0])"
ROWS_JS = """() => Array.from(document.querySelectorAll('section.row')).map(r => ({
  query: r.dataset.query, section: r.dataset.section,
  strips: Array.from(r.querySelectorAll('div.strip')).map(s => ({
    model: s.dataset.model,
    frames: Array.from(s.querySelectorAll('figure.result')).map(f => getComputedStyle(f).borderTopColor)}))}))"""


def rgb(c: tuple[int, int, int]) -> str:
    return f"rgb({c[0]}, {c[1]}, {c[2]})"


def open_page(browser, path: Path):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(path.as_uri())  # waits for the load event: every picture has loaded or failed
    images = page.evaluate(IMAGES_JS)
    assert images and all(ok for _, ok in images), [src for src, ok in images if not ok]
    return page


@pytest.mark.slow
def test_browser_renders_every_row_and_frame_as_report_json_says(browser, two_model_gallery, tmp_path):
    out = two_model_gallery["out"]
    moved = tmp_path / "elsewhere" / "report"  # the relative links must survive a move (or a zip)
    shutil.copytree(out, moved)
    hidden = out.with_name("hidden")
    out.rename(hidden)  # nothing may still point into the first place
    try:
        check_moved_gallery(browser, moved, tmp_path)
    finally:
        hidden.rename(out)


def check_moved_gallery(browser, moved: Path, tmp_path: Path) -> None:
    report = json.loads((moved / "report.json").read_text())
    index = moved / report["gallery"]["index"]
    page = open_page(browser, index)
    links = page.evaluate("() => Array.from(document.querySelectorAll('a')).map(a => a.getAttribute('href'))")
    task = report["gallery"]["tasks"][0]
    assert task["page"] in links and all(not href.startswith("/") for href in links)
    page.click(f"a[href='{task['page']}']")
    page.wait_for_load_state("load")
    assert page.url == (index.parent / task["page"]).as_uri()
    images = page.evaluate(IMAGES_JS)
    assert images and all(ok for _, ok in images), [src for src, ok in images if not ok]
    rendered = page.evaluate(ROWS_JS)
    assert len(rendered) == len(task["rows"]) == 9
    for shown, row in zip(rendered, task["rows"], strict=True):
        assert shown["query"] == row["query"]["path"] and shown["section"] == row["section"]
        assert [s["model"] for s in shown["strips"]] == [s["model"] for s in row["strips"]]
        for s, strip in zip(shown["strips"], row["strips"], strict=True):
            assert s["frames"] == [rgb(HIT_RGB) if r["relevant"] else rgb(MISS_RGB) for r in strip["results"]]
    originals = page.evaluate("() => Array.from(document.querySelectorAll('figure a')).map(a => a.href)")
    assert originals and all(Path(href.removeprefix("file://")).is_file() for href in originals)
    shot = artifacts_dir() / "gallery-two-models.png"
    page.screenshot(path=str(shot), full_page=False)
    assert shot.stat().st_size > 10_000
    page.close()
    archive = tmp_path / "gallery.zip"  # zipped and unpacked on "another machine": still whole
    shutil.make_archive(str(archive.with_suffix("")), "zip", moved)
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path / "unzipped")
    open_page(browser, tmp_path / "unzipped" / report["gallery"]["index"]).close()


def test_browser_shows_odd_names_and_undecodable_images(browser, odd_images, tmp_path):
    write_gallery([odd_retrieval(odd_images)], tmp_path / "g", 2)
    page = open_page(browser, next((tmp_path / "g").glob("odd*.html")))
    text = page.inner_text("body")
    assert "cls<script>alert(1)</script>" in text and "<b>bold & co.png" in text
    assert repr(Path(odd_images["latin1"]).name) in text and "cannot decode" in text
    assert page.evaluate("() => document.scripts.length") == 0  # the label's <script> stayed text
    assert page.evaluate("() => Array.from(document.querySelectorAll('b')).filter(b => b.textContent.startsWith('bold'))"
                         ".length") == 0
    page.screenshot(path=str(artifacts_dir() / "gallery-odd-names.png"))
    page.close()
