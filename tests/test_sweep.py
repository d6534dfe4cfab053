"""guie-train --classes A,B: one cache, one run folder per count, one comparison report."""
import csv
import json


def test_class_count_sweep(cli, digits_dir, tmp_path):
    sweep, cache = tmp_path / "sweep", tmp_path / "cache"
    args = ["train", "--data", f"imagefolder:{digits_dir}", "--backbone", "guie-tiny", "--pretrained", "none",
            "--workers", "0", "--epochs", "2", "--classes", "3,6", "--out", str(sweep), "--cache-dir", str(cache)]
    res = cli(*args)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads((sweep / "classes-3" / "classes.json").read_text()).__len__() == 3
    assert json.loads((sweep / "classes-6" / "classes.json").read_text()).__len__() == 6
    # The 3 classes are among the 6 (most images first, seeded ties), so the second run reuses their features.
    assert "using cached features for 120 images, computing 120" in res.stdout
    assert len(list(cache.glob("guie-tiny-v0-*"))) == 1
    rows = list(csv.DictReader(open(sweep / "report" / "report.csv")))
    assert {r["model"] for r in rows} == {"classes-3", "classes-6"}
    assert (sweep / "report" / "report.png").stat().st_size > 1000
    assert "mP@5" in res.stdout

    again = cli(*args)
    assert again.returncode != 0 and "already exists" in again.stderr
    resumed = cli("train", "--resume", "--out", str(sweep))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert resumed.stdout.count("finished earlier; kept") == 2
