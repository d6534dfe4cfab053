"""UnED (uned:ROOT) on a miniature in its published format: the adapter's counts, training on its train
splits, and guie-eval's protocol checked against a second implementation written here from the
protocol's text (not guie's code path), for both settings and both splits."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from submission_models import ContractModel, write_export
from uned_mini import PLAN, converter_escape, make_uned

from guie.data import load_source
from guie.data.uned import escaped_name
from guie.errors import GuieError
from guie.eval.evaluate import EvalSettings, evaluate
from guie.eval.uned import build_uned_task, evaluate_uned

FAST = EvalSettings(workers=0, batch_size=16)
METRICS = ("mMP@5", "R@1", "mAP@5")
# The protocol as the brief states it: split -> domain -> (query split, index split).
QUERY_INDEX = {
    "test": {"cars": ("test", "test"), "sop": ("test", "test"), "inshop": ("test", "index"), "inat": ("test", "test"),
             "met": ("test", "index"), "gldv2": ("test", "index"), "food2k": ("test", "test"),
             "rp2k": ("test", "test")},
    "val": {d: ("val", "small_index" if d == "met" else "val") for d in PLAN},
}


@pytest.fixture(scope="module")
def mini(tmp_path_factory) -> dict:
    return make_uned(tmp_path_factory.mktemp("uned") / "data")


@pytest.fixture(scope="module")
def twins(tmp_path_factory) -> dict:
    return make_uned(tmp_path_factory.mktemp("uned-twins") / "data", duplicates=True)


class Centred(ContractModel):
    """The contract model on pixels centred at 0, so that embeddings spread out (no near-ties to rank)."""

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 3:
            x = x.unsqueeze(0)
        x = F.interpolate(x.float() / 255.0 - 0.5, size=(32, 32), mode="bilinear", align_corners=False)
        return x.flatten(1) @ self.weight


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return write_export(tmp_path_factory.mktemp("uned-export") / "export", Centred()) / "saved_model.pt"


def reference(mini: dict, vectors: dict[Path, np.ndarray], split: str, ignore_domain: bool = False,
              excluded: frozenset = frozenset()) -> dict:
    """setting -> domain -> metrics, and "mean", computed entry by entry from the protocol's text.

    An entry is (domain, split, position in its info file); the query is left out of its own index by
    that identity. Relevant: same domain (unless ``ignore_domain``) and a shared label. Queries with no
    relevant index image are left out. Ranks by float64 cosine; the miniature has no near-ties (checked).
    """
    def present(domain: str, which: str) -> list[tuple[tuple, tuple[int, ...], np.ndarray]]:
        return [((domain, which, i), labels, vectors[disk])
                for i, (_, labels, disk) in enumerate(mini["entries"][domain, which])
                if disk is not None and disk not in excluded]

    index = {d: present(d, QUERY_INDEX[split][d][1]) for d in PLAN}
    out: dict[str, dict] = {}
    for setting in ("separate", "common"):
        rows = {}
        for domain in PLAN:
            candidates_all = index[domain] if setting == "separate" else [e for d in PLAN for e in index[d]]
            scores = []
            for ident, labels, vec in present(domain, QUERY_INDEX[split][domain][0]):
                candidates = [c for c in candidates_all if c[0] != ident]
                relevant = [(ignore_domain or c[0][0] == domain) and bool(set(c[1]) & set(labels)) for c in candidates]
                n = sum(relevant)
                if n == 0:
                    continue
                unit = vec / np.linalg.norm(vec)
                sims = np.array([float(np.dot(unit, c[2] / np.linalg.norm(c[2]))) for c in candidates])
                order = np.argsort(-sims, kind="stable")
                top = sims[order[:6]]  # the first 5 and the one after them
                assert len(top) < 2 or np.min(-np.diff(top)) > 1e-5, "near-tie: the ranking is not unique"
                hits = [relevant[j] for j in order[:5]]
                m = min(n, 5)
                ap = sum(sum(hits[:r + 1]) / (r + 1) for r in range(len(hits)) if hits[r]) / m
                scores.append((sum(hits[:m]) / m, float(hits[0]), ap))
            rows[domain] = {"queries": len(scores), "index": len(candidates_all),
                            **{name: float(np.mean([s[i] for s in scores])) for i, name in enumerate(METRICS)}}
        rows["mean"] = {name: float(np.mean([rows[d][name] for d in PLAN])) for name in METRICS}
        out[setting] = rows
    return out


def host_vectors(model: Path, paths) -> dict[Path, np.ndarray]:
    """Each image through the TorchScript file as the host fed it: PIL RGB -> uint8 (1, 3, H, W) -> row 0."""
    module = torch.jit.load(str(model))
    out = {}
    with torch.inference_mode():
        for path in paths:
            pixels = np.asarray(Image.open(path).convert("RGB"))
            out[path] = module(torch.from_numpy(pixels.copy()).permute(2, 0, 1)[None])[0].double().numpy()
    return out


def all_disks(mini: dict) -> set[Path]:
    return {disk for rows in mini["entries"].values() for _, _, disk in rows if disk is not None}


def assert_uned_equals(got: dict, want: dict) -> None:
    for setting in ("separate", "common"):
        for domain in [*PLAN, "mean"]:
            for name in (*METRICS, *(("queries", "index") if domain != "mean" else ())):
                assert got[setting][domain][name] == pytest.approx(want[setting][domain][name], abs=1e-12), \
                    (setting, domain, name)


# ---- the adapter ---------------------------------------------------------------------------------------


def test_escaped_names_follow_the_converters_rule():
    assert escaped_name("可口可乐") == "#U53ef#U53e3#U53ef#U4e50"
    assert escaped_name("rp2k/all/test/café/1.jpg") == "rp2k/all/test/caf#U00e9/1.jpg"
    for text in ("rp2k/all/train/农夫山泉/a_农夫山泉.jpg", "ÿĀ߿ࠀ￿", "plain/ascii.jpg"):
        assert escaped_name(text) == converter_escape(text)


def test_guie_data_counts_every_domain_and_split_exactly(cli, mini):
    res = cli("data", "--json", f"uned:{mini['root']}")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)["sources"][0]
    assert summary["domain_splits"] == mini["counts"]
    assert summary["images"] == sum(c["images"] for d in mini["counts"].values() for c in d.values())
    assert summary["skipped"] == mini["skipped"]
    assert {why: r["count"] for why, r in summary["skipped_reasons"].items()} == mini["reasons"]
    assert summary["skipped_reasons"]["image file not found"]["examples"] == ["cars/train.json:entry 6",
                                                                             "rp2k/test.json:entry 7"]
    text = cli("data", f"uned:{mini['root']}").stdout
    assert "    gldv2   index 7 (4 classes), test 3 (4 classes), train 4 (2 classes), val 4 (2 classes)" in text
    assert "2 x image file not found (e.g. cars/train.json:entry 6, rp2k/test.json:entry 7)" in text


def test_records_keep_domains_splits_label_sets_and_both_rp2k_forms(mini):
    data = load_source(f"uned:{mini['root'].parent}:gldv2+rp2k+met")  # a folder above data/ works too
    assert {r.domain for r in data.records} == {"gldv2", "rp2k", "met"}
    multi = {data.records[i].path: labels for i, labels in data.label_sets.items()}
    assert sorted(multi.values()) == [("5", "6"), ("7", "99")]
    assert all(data.records[i].label == labels[0] and data.records[i].split == "test"
               for i, labels in data.label_sets.items())
    rp2k = [Path(r.path) for r in data.records if r.domain == "rp2k"]
    assert any("#U519c" in str(p) for p in rp2k) and any("雪碧" in str(p) for p in rp2k)
    assert any("caf#U00e9" in str(p) for p in rp2k) and all(p.is_file() for p in rp2k)
    met = [r for r in data.records if r.domain == "met"]
    assert {r.split for r in met} == {"train", "val", "test", "index", "small_index", "small_train"}
    assert all("/met/test_met/" in r.path for r in met if r.split in ("test", "val"))


def test_bad_specs_and_missing_info_files_are_one_line(mini, tmp_path):
    with pytest.raises(GuieError, match=r"names no UnED domain 'carz' \(did you mean: cars\?\)"):
        load_source(f"uned:{mini['root']}:carz+sop")
    with pytest.raises(GuieError, match="UnED info_files/ and images/ folders not found .* download info_files.zip"):
        load_source(f"uned:{tmp_path}")
    copy = tmp_path / "data"
    shutil.copytree(mini["root"] / "info_files", copy / "info_files")
    (copy / "images").mkdir()
    (copy / "info_files" / "met" / "small_index.json").unlink()
    with pytest.raises(GuieError, match=r"UnED info file .*small_index.json' not found; download info_files.zip"):
        load_source(f"uned:{copy}")
    with pytest.raises(GuieError, match=r"holds no usable images \(19 skipped, e.g. cars/train.json:entry 0: image file"):
        load_source(f"uned:{copy}:cars")


# ---- training ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_guie_train_trains_on_the_eight_train_splits(cli, mini, tmp_path):
    out = tmp_path / "run"
    res = cli("train", "--data", f"uned:{mini['root']}", "--backbone", "guie-tiny", "--pretrained", "none",
              "--epochs", "2", "--batch-size", "8", "--workers", "0", "--domain-loss", "0.1",
              "--domain-max-per-class", "cars=2", "--min-per-class", "2", "--out", str(out),
              "--eval", f"uned:{mini['root']}:cars+sop")
    assert res.returncode == 0, res.stderr
    classes = json.loads((out / "classes.json").read_text())
    want = {f"{d}/{labels}" for d in PLAN for labels, count in PLAN[d]["train"] if count >= 2}
    assert set(classes) == want  # 8 domains' train splits; the same class id in two domains is two classes
    sampling = json.loads((out / "data.json").read_text())["sampling"]
    train_images = sum(mini["counts"][d]["train"]["images"] for d in PLAN)
    # --min-per-class 2 drops met's two single-image exhibits; cars=2 caps its two 3-image classes
    assert (sampling["images_capped"], sampling["images_kept"]) == (2, train_images - 2 - 2)
    assert "images not used for training" in res.stdout
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
    uned = json.loads((out / "eval.json").read_text())["tasks"]["results"][0]["uned"]
    assert list(uned["common"]) == ["cars", "sop", "mean"] and uned["split"] == "test"


# ---- evaluation ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_guie_eval_follows_the_protocol_in_both_settings_on_test_and_val(cli, mini, export, tmp_path):
    vectors = host_vectors(export, all_disks(mini))
    res = cli("eval", str(export), "--task", f"uned:{mini['root']}", "--out", str(tmp_path / "rep"), "--workers", "0",
              "--gallery", "2")
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "rep" / "report.json").read_text())
    # the gallery shows the common index: a result is framed relevant iff it is of the query's domain and one of
    # its classes (labels read domain/class, a two-class query domain/a+domain/b), and the page's mP@5 is the headline
    (page,) = report["gallery"]["tasks"]
    assert page["models"][0]["mP@5"] == pytest.approx(report["results"][0]["mP@5"]) and len(page["rows"]) == 4
    for row in page["rows"]:
        wanted = set(row["query"]["label"].split("+"))
        for result in row["strips"][0]["results"]:
            assert result["relevant"] == (result["label"] in wanted), (row["query"], result)
        m = min(row["query"]["n_q"], 5)
        assert row["strips"][0]["score"] == pytest.approx(sum(r["relevant"] for r in row["strips"][0]["results"][:m]) / m)
    assert (tmp_path / "rep" / report["gallery"]["index"]).is_file()
    uned = report["results"][0]["uned"]
    want = reference(mini, vectors, "test")
    assert uned["split"] == "test" and uned["sampled"] is None
    assert_uned_equals(uned, want)
    assert report["results"][0]["mP@5"] == pytest.approx(want["common"]["mean"]["mMP@5"], abs=1e-12)
    assert report["results"][0]["P@1"] == pytest.approx(want["common"]["mean"]["R@1"], abs=1e-12)
    # a merged index that ignored domains would score otherwise (labels and looks repeat across domains)
    assert reference(mini, vectors, "test", ignore_domain=True)["common"]["mean"]["mMP@5"] != pytest.approx(
        uned["common"]["mean"]["mMP@5"], abs=1e-3)
    assert 0.1 < uned["common"]["mean"]["mMP@5"] < uned["separate"]["mean"]["mMP@5"] < 1.0
    assert report["tasks"][0]["dropped_reasons"] == {"no index image of its class": 2}  # cars 7, met exhibit 4
    assert "UnED test split, export on uned: common index mean over 8 domains" in res.stdout
    assert "sep. mMP@5" in res.stdout and "mean (8 domains)" in res.stdout
    assert "## UnED" in (tmp_path / "rep" / "report.md").read_text()

    val = evaluate([export], [f"uned:{mini['root']}"], EvalSettings(workers=0, uned_split="val"), log=lambda _: None)
    assert val["results"][0]["uned"]["split"] == "val"
    assert_uned_equals(val["results"][0]["uned"], reference(mini, vectors, "val"))
    assert val["tasks"][0]["protocol"]["met"]["index_split"] == "small_index"


def designed_vectors(mini: dict) -> dict[Path, np.ndarray]:
    """A label's direction (shared across domains), a domain's, noise; the sop twins identical and far away."""
    rng = np.random.default_rng(0)
    axis = np.eye(64)[0]
    look = {key: rng.normal(size=64) for key in [*range(100), *PLAN]}
    out = {}
    for (domain, _), rows in sorted(mini["entries"].items()):
        for rel, labels, disk in rows:
            if disk is None:
                continue
            if domain == "sop" and rel.endswith("_test0.JPG") and labels[0] in (11, 12):
                out[disk] = -axis
            else:
                out[disk] = 5 * axis + look[labels[0]] + look[domain] + 1.2 * rng.normal(size=64)
    return out


def product_scores(task, vectors: dict[Path, np.ndarray]):
    paths = sorted(task.paths())
    matrix = np.stack([vectors[Path(p)] for p in paths]).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return evaluate_uned(task, matrix, {p: i for i, p in enumerate(paths)})


def test_the_query_is_left_out_by_identity_not_by_dropping_rank_1(twins):
    vectors = designed_vectors(twins)
    task = build_uned_task(f"uned:{twins['root']}", "test")
    row, retrievals = product_scores(task, vectors)
    assert_uned_equals(row["uned"], reference(twins, vectors, "test"))
    for setting in ("separate", "common"):
        sop = retrievals[setting]["sop"]
        twin_rows = [i for i, r in enumerate(sop.query) if r.path.endswith("_test0.JPG") and r.label in ("11", "12")]
        assert len(twin_rows) == 2
        for i in twin_rows:  # its twin (another class, similarity 1) ranks first and is not relevant
            first = sop.index[sop.neighbours[i, 0]]
            assert first.path != sop.query[i].path and first.path.endswith("_test0.JPG")
            assert sop.similarities[i, 0] == pytest.approx(1.0) and not sop.relevant[i, 0]
        for ret in retrievals[setting].values():  # no query ever finds itself
            for query, row_ids in zip(ret.query, ret.neighbours, strict=True):
                assert query.path not in {ret.index[j].path for j in row_ids if j >= 0}
    # an unreadable image leaves both its query and its index entry; n_q is recounted
    gone = next(disk for _, _, disk in twins["entries"]["food2k", "test"])
    smaller = task.without({str(gone): "unreadable"})
    assert_uned_equals(product_scores(smaller, vectors)[0]["uned"],
                       reference(twins, vectors, "test", excluded=frozenset({gone})))


def test_val_protocol_with_designed_vectors(mini):
    vectors = designed_vectors(mini)
    row, _ = product_scores(build_uned_task(f"uned:{mini['root']}", "val"), vectors)
    assert_uned_equals(row["uned"], reference(mini, vectors, "val"))


def test_max_queries_samples_each_domain_against_the_full_index(mini):
    full = build_uned_task(f"uned:{mini['root']}", "test")
    task = build_uned_task(f"uned:{mini['root']}", "test", max_queries=2, seed=3)
    assert [len(d.query) for d in task.domains] == [min(2, len(d.query)) for d in full.domains]
    assert [len(d.index) for d in task.domains] == [len(d.index) for d in full.domains]
    assert "sampled figures, not the benchmark's" in task.rule
    row, _ = product_scores(task, designed_vectors(mini))
    assert row["uned"]["sampled"]["max_queries"] == 2 and row["uned"]["sampled"]["from"]["cars"] == 6
    again = build_uned_task(f"uned:{mini['root']}", "test", max_queries=2, seed=3)
    assert [[r.path for r in d.query] for d in again.domains] == [[r.path for r in d.query] for d in task.domains]


def test_protocol_changing_options_are_refused_in_one_line(cli, mini, export):
    for option in (["--max-classes", "3"], ["--distractors", "5"]):
        res = cli("eval", str(export), "--task", f"uned:{mini['root']}", *option)
        assert res.returncode == 2
        assert res.stderr.strip().splitlines() == [
            "error: --max-classes and --distractors change UnED's fixed queries and index; leave them out for uned: "
            "tasks (--max-queries N samples each domain's queries against the full index)"]


def test_an_index_image_under_several_classes_is_refused(mini, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(mini["root"] / "info_files", copy / "info_files")
    (copy / "images").symlink_to(mini["root"] / "images")
    info = copy / "info_files" / "gldv2" / "index.json"
    entries = json.loads(info.read_text())
    entries[0]["class_id"] = [5, 8]
    info.write_text(json.dumps(entries))
    with pytest.raises(GuieError, match=r"gldv2/index.json lists 1 index image\(s\) under several classes"):
        build_uned_task(f"uned:{copy}:gldv2", "test")


def test_a_domain_without_its_images_names_the_folder_and_the_way_out(mini, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(mini["root"], copy)
    shutil.rmtree(copy / "images" / "food2k")
    with pytest.raises(GuieError, match=r"UnED food2k has no usable test query .* put its images in "
                                        r"images/food2k/Food2k_complete or leave food2k out: "
                                        r"uned:ROOT:cars\+sop\+inshop\+inat\+met\+gldv2\+rp2k"):
        build_uned_task(f"uned:{copy}", "test")
