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


# Text files as spreadsheets save them: every variant below holds the same three rows.
ROWS = [("a.png", "cat"), ("b.png", "cat, tabby"), ("c.png", "dog")]


def _csv(delimiter: str, newline: str = "\n") -> str:
    lines = ["Path" + delimiter + " Label"] + [f'{p}{delimiter}"{label}"' for p, label in ROWS]
    return newline.join(lines) + newline


SPREADSHEET_CSVS = {
    "excel-csv-utf8-bom-crlf": b"\xef\xbb\xbf" + _csv(",", "\r\n").encode() + b",\r\n\r\n",  # Excel "CSV UTF-8"
    "semicolon-locale": _csv(";", "\r\n").encode() + b";\r\n;\r\n",  # Excel in de/fr/... locales
    "tab-utf16-unicode-text": b"\xff\xfe" + _csv("\t", "\r\n").encode("utf-16-le"),  # Excel "Unicode Text"
    "trailing-blank-lines": _csv(",").encode() + b"\n\n   \n",
}


@pytest.mark.parametrize("variant", sorted(SPREADSHEET_CSVS))
def test_csv_manifests_as_spreadsheets_save_them(tmp_path, variant):
    for name, _ in ROWS:
        png(tmp_path / name)
    manifest = tmp_path / f"{variant}.csv"
    manifest.write_bytes(SPREADSHEET_CSVS[variant])
    data = load_source(f"csv:{manifest}")
    assert [(r.path, r.label) for r in data.records] == [(str(tmp_path / p), label) for p, label in ROWS]
    assert data.skipped == []


def test_csv_line_numbers_count_blank_lines(tmp_path):
    png(tmp_path / "a.png")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,label\n\na.png,1\n\nmissing.png,2\n")
    assert load_source(f"csv:{manifest}").skipped == [(f"{manifest}:5", "image not found: missing.png")]


def test_csv_header_problems_show_what_was_found(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(b"\xef\xbb\xbfimage\xc2\xa0path;label\n")  # a no-break space Excel users cannot see
    with pytest.raises(GuieError) as err:
        load_source(f"csv:{manifest}")
    assert "lacks column(s) path (found: 'image\\xa0path', 'label')" in str(err.value)


def test_csv_in_a_legacy_encoding_names_the_line_and_its_bytes(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes("path,label\na.png,caf\u00e9\n".encode("cp1252"))
    with pytest.raises(GuieError) as err:
        load_source(f"csv:{manifest}")
    message = str(err.value)
    assert "is not UTF-8 text: line 2 holds b'a.png,caf\\xe9'" in message
    assert message.endswith("save it as UTF-8 CSV with columns path,label and optionally domain,split")


def test_list_and_json_files_with_a_byte_order_mark(tmp_path):
    from layouts import make_met, make_sop

    make_sop(tmp_path / "sop")
    for name in ("Ebay_train.txt", "Ebay_test.txt"):
        path = tmp_path / "sop" / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    assert len(load_source(f"sop:{tmp_path / 'sop'}").records) == 17
    expected = make_met(tmp_path / "met")
    database = tmp_path / "met" / "ground_truth" / "MET_database.json"
    database.write_bytes(b"\xef\xbb\xbf" + database.read_bytes())
    assert len(load_source(f"met:{tmp_path / 'met'}").records) == expected["images"]


def test_csv_cells_longer_than_the_csv_modules_default_limit(tmp_path):
    """A landmark of GLDv2's train_clean.csv lists all its image ids in one cell."""
    from guie.data.listfiles import read_csv_rows

    ids = " ".join(f"{i:016x}" for i in range(12000))  # about 200 KB
    (tmp_path / "train_clean.csv").write_text(f"landmark_id,images\n7,{ids}\n")
    rows = list(read_csv_rows(tmp_path / "train_clean.csv", ("landmark_id", "images"), "GLDv2 train_clean.csv"))
    assert len(rows) == 1 and len(rows[0][1]["images"].split()) == 12000
