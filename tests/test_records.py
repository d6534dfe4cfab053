"""Record parsing: imagefolder and CSV manifests, and the source spec registry."""
import pytest
from PIL import Image

from guie.data import load_source
from guie.errors import GuieError


def png(path, color=(10, 20, 30)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), color).save(path)
    return path


def test_imagefolder_one_class_per_folder(tmp_path):
    for label in ("cat", "dog"):
        for i in range(3):
            png(tmp_path / "pets" / label / f"{i}.png")
    png(tmp_path / "pets" / "dog" / "nested" / "x.png")
    (tmp_path / "pets" / "dog" / "notes.txt").write_text("hi")
    data = load_source(f"imagefolder:{tmp_path / 'pets'}")
    assert data.domain == "pets"
    assert sorted((r.label, r.domain) for r in data.records).count(("dog", "pets")) == 4
    assert len(data.records) == 7
    assert [why for _, why in data.skipped] == ["not an image file extension"]


def test_csv_manifest_resolves_relative_paths_and_domains(tmp_path):
    png(tmp_path / "imgs" / "a.png")
    png(tmp_path / "imgs" / "b.png")
    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,label,domain\nimgs/a.png,1,shoes\n{tmp_path / 'imgs' / 'b.png'},2,\nimgs/missing.png,3,x\n,4,x\n../outside.png,5,x\n")
    png(tmp_path.parent / "outside.png")
    data = load_source(f"csv:{manifest}")
    assert [(r.path, r.label, r.domain) for r in data.records] == [
        (str(tmp_path / "imgs" / "a.png"), "1", "shoes"), (str(tmp_path / "imgs" / "b.png"), "2", "list")]
    assert [why for _, why in data.skipped] == ["image not found: imgs/missing.png", "empty path or label",
                                                "relative path leaves the CSV's folder: ../outside.png"]


def test_csv_missing_columns_is_one_clear_error(tmp_path):
    manifest = tmp_path / "bad.csv"
    manifest.write_text("file,class\na.png,1\n")
    with pytest.raises(GuieError, match="lacks column\\(s\\) path, label"):
        load_source(f"csv:{manifest}")


@pytest.mark.parametrize("spec, message", [
    ("imagefolder:/no/such/dir", "does not exist"),
    ("imagefoldr:/x", "did you mean: imagefolder"),
    ("justapath", "not of the form PREFIX:PATH"),
])
def test_bad_specs(spec, message):
    with pytest.raises(GuieError, match=message):
        load_source(spec)


def test_empty_dataset_is_an_error(tmp_path):
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    with pytest.raises(GuieError, match="holds no usable images"):
        load_source(f"imagefolder:{tmp_path / 'empty'}")


def test_csv_rows_with_impossible_paths_are_skipped(tmp_path):
    png(tmp_path / "ok.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\nok.png,1\nbad\x00name.png,2\n" + "x" * 5000 + ".png,3\n")
    data = load_source(f"csv:{manifest}")
    assert len(data.records) == 1
    assert [why for _, why in data.skipped] == ["not a valid file path", "not a valid file path"]
