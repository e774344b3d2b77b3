"""Dataset reading and validation: every bad input gives one line naming the file, and a non-zero exit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from edgekit.cli.main import main
from edgekit.data import load_dataset
from edgekit.data.dataset import LabelWarning


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


def first_label(yaml_path: Path, split="val") -> Path:
    return sorted((yaml_path.parent / "labels" / split).glob("*.txt"))[0]


def test_reads_yaml_without_path_relative_to_its_folder(coco8, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # resolution must not depend on the working directory
    ds = load_dataset(coco8)
    assert ds.nc == 80 and ds.names[0] == "person"
    val = ds.samples("val")
    assert len(val) == 8
    assert all(s.image.exists() for s in val)
    assert sum(len(s.classes) for s in val) > 0
    assert val[0].boxes.shape[1] == 4 and (val[0].boxes >= 0).all() and (val[0].boxes <= 1).all()


def test_reads_yaml_with_relative_and_absolute_path(coco8, copy_dataset, tmp_path):
    y = copy_dataset(coco8)
    doc = yaml.safe_load(y.read_text())
    nested = tmp_path / "cfg"
    nested.mkdir()
    doc["path"] = "../coco8"
    (nested / "data.yaml").write_text(yaml.safe_dump(doc))
    assert len(load_dataset(nested / "data.yaml").samples("val")) == 8
    doc["path"] = str(y.parent)
    (nested / "abs.yaml").write_text(yaml.safe_dump(doc))
    assert len(load_dataset(nested / "abs.yaml").samples("train")) == 4


def test_reads_coco_json_same_boxes_as_yolo(coco8, tmp_path):
    ds = load_dataset(coco8)
    import cv2

    images, anns = [], []
    for i, s in enumerate(ds.samples("val")):
        h, w = cv2.imread(str(s.image)).shape[:2]
        images.append({"id": i, "file_name": str(s.image), "width": w, "height": h})
        for c, b in zip(s.classes, s.boxes_xyxy(w, h)):
            anns.append({"id": len(anns), "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]})
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(ds.names)]
    j = tmp_path / "instances_val.json"
    j.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    cj = load_dataset(j)
    assert cj.names == ds.names and cj.splits == ["val"]
    for a, b in zip(ds.samples("val"), cj.samples("val")):
        assert (a.classes == b.classes).all()
        assert abs(a.boxes - b.boxes).max() < 1e-4


def one_line_error(code, err, expect):
    """The CLI's contract for bad input: exit code 2 and one line (no traceback) containing `expect`."""
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert expect in err, err


# --- YOLO label lines: (line put first in a val label file, message after 'LABEL:1: ') -------------------------
LABEL_LINES = [
    ("0 0.5 0.5 0.2", "expected 5 fields 'class cx cy w h', got 4"),
    ("0 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2", "expected 5 fields 'class cx cy w h', got 9"),  # a polygon
    ("80 0.5 0.5 0.2 0.2", "class id 80 out of range: dataset has nc=80 (ids 0..79)"),
    ("nan 0.5 0.5 0.2 0.2", "class id nan is not a non-negative integer"),
    ("inf 0.5 0.5 0.2 0.2", "class id inf is not a non-negative integer"),
    ("-1 0.5 0.5 0.2 0.2", "class id -1 is not a non-negative integer"),
    ("1.5 0.5 0.5 0.2 0.2", "class id 1.5 is not a non-negative integer"),
    ("0 1.2 0.5 0.2 0.2", "coordinates outside [0, 1]: 1.2 0.5 0.2 0.2"),
    ("0 0.5 0.5 nan 0.2", "coordinates outside [0, 1]: 0.5 0.5 nan 0.2"),
    ("0 0.5 0.5 0 0.2", "box has zero width or height: 0.5 0.5 0 0.2"),
    ("0 0.5 x 0.2 0.2", "non-numeric value in '0 0.5 x 0.2 0.2'"),
]


@pytest.mark.parametrize("line, expect", LABEL_LINES, ids=[c[0] for c in LABEL_LINES])
def test_bad_input_label_line(line, expect, coco8, copy_dataset, onnx320, capsys):
    y = copy_dataset(coco8)
    lbl = first_label(y)
    lbl.write_text(line + "\n" + lbl.read_text())
    one_line_error(*run_cli(capsys, "eval", onnx320, "--data", y)[::2], f"{lbl}:1: {expect}")


# --- data.yaml keys: (edit of the document: key -> value, None deletes; or the whole text), message after 'YAML: '
DELETE = object()
YAML_CASES = [
    ("nc-word", {"nc": "five"}, "'nc' must be an integer, got 'five'"),
    ("nc-float", {"nc": 80.0}, "'nc' must be an integer, got 80.0"),
    ("nc-mismatch", {"nc": 3}, "nc=3 does not match the 80 class names"),
    ("no-names", {"names": DELETE}, "no 'names' key"),
    ("names-number", {"names": 5}, "'names' must be a list or a mapping id -> name"),
    ("names-gap", {"names": {0: "a", 2: "b"}, "nc": 2}, "'names' ids must be 0..1 without gaps"),
    ("names-keys", {"names": {"a": "x"}, "nc": 1}, "'names' keys must be integer class ids"),
    ("names-empty", {"names": [], "nc": 0}, "'names' is empty"),
    ("val-numbers", {"val": [1, 2]}, "'val' must be a path or a list of paths, got [1, 2]"),
    ("val-missing", {"val": "images/nope"}, "split 'val': path not found"),
    ("no-splits", {"train": DELETE, "val": DELETE}, "no train/val/test split defined"),
    ("invalid", "names: [a, b\ntrain: x", "invalid YAML"),
    ("a-list", "- a\n- b\n", "expected a mapping with train/val/names keys"),
]


@pytest.mark.parametrize("edit, expect", [c[1:] for c in YAML_CASES], ids=[c[0] for c in YAML_CASES])
def test_bad_input_data_yaml(edit, expect, coco8, copy_dataset, onnx320, capsys):
    y = copy_dataset(coco8)
    if isinstance(edit, str):
        y.write_text(edit)
    else:
        doc = yaml.safe_load(y.read_text())
        doc.update(edit)
        y.write_text(yaml.safe_dump({k: v for k, v in doc.items() if v is not DELETE}))
    one_line_error(*run_cli(capsys, "eval", onnx320, "--data", y)[::2], f"{y}: {expect}")


# --- COCO json: (edit of the document built from coco8 val, message after 'JSON: ') -----------------------------
def _set(obj, key, value):
    obj[key] = value


COCO_CASES = [
    ("image-no-id", lambda d: d["images"][0].pop("id"), "images[0]: no 'id'"),
    ("image-float-id", lambda d: _set(d["images"][0], "id", 1.5), "images[0]: id must be an integer or a string, got 1.5"),
    ("image-no-file", lambda d: d["images"][0].pop("file_name"), "images[0]: no 'file_name'"),
    ("image-str-width", lambda d: _set(d["images"][1], "width", "640"), "images[1]: width must be a positive number, got '640'"),
    ("image-no-height", lambda d: d["images"][1].pop("height"), "images[1]: no 'height'"),
    ("image-wrong-size", lambda d: _set(d["images"][0], "width", 100), "images[0]: width x height 100x"),
    ("image-not-found", lambda d: _set(d["images"][0], "file_name", "nope.jpg"), "nope.jpg: image file not found"),
    ("mixed-id-types", lambda d: _set(d["images"][2], "id", "2"), "images[2]: id '2' is a string but images[0].id is an integer (mixed id types)"),
    ("duplicate-id", lambda d: _set(d["images"][1], "id", 0), "images[1]: duplicate id 0"),
    ("unknown-image", lambda d: _set(d["annotations"][3], "image_id", 999), "annotations[3]: image_id 999 is not the id of any image"),
    ("str-vs-int-ids", lambda d: [_set(i, "id", str(i["id"])) for i in d["images"]], "annotations[0]: image_id 0 is not the id of any image (image ids are strings)"),
    ("ann-no-image-id", lambda d: d["annotations"][3].pop("image_id"), "annotations[3]: no 'image_id'"),
    ("ann-no-bbox", lambda d: d["annotations"][3].pop("bbox"), "annotations[3]: no 'bbox'"),
    ("ann-no-category", lambda d: d["annotations"][3].pop("category_id"), "annotations[3]: no 'category_id'"),
    ("ann-unknown-category", lambda d: _set(d["annotations"][3], "category_id", 999), "annotations[3]: unknown category_id 999"),
    ("bbox-3-numbers", lambda d: _set(d["annotations"][3], "bbox", [1, 2, 3]), "annotations[3]: bbox must be 4 numbers, got 3"),
    ("bbox-text", lambda d: _set(d["annotations"][3], "bbox", [1, 2, "3", 4]), "annotations[3]: bbox must be 4 numbers, got [1, 2, '3', 4]"),
    ("bbox-outside", lambda d: _set(d["annotations"][3], "bbox", [1, 2, 9000, 4]), "annotations[3]: bbox [1, 2, 9000, 4] outside image"),
    ("annotations-not-list", lambda d: _set(d, "annotations", {}), "'annotations' must be a list, got dict"),
    ("annotation-not-object", lambda d: _set(d, "annotations", [3]), "annotations[0]: must be an object, got int"),
    ("no-categories", lambda d: d.pop("categories"), "not a COCO detection file: no 'categories' key"),
    ("category-no-id", lambda d: d["categories"][0].pop("id"), "categories[0]: no 'id'"),
    ("category-no-name", lambda d: d["categories"][0].pop("name"), "categories[0]: no 'name'"),
    ("category-duplicate", lambda d: _set(d["categories"][1], "id", 1), "categories[1]: duplicate id 1"),
]


def coco_json(ds, split="val") -> dict:
    """A COCO instances document with the same images and boxes as a YOLO split (category id = class + 1)."""
    images, anns = [], []
    for i, s in enumerate(ds.samples(split)):
        w, h = s.size
        images.append({"id": i, "file_name": str(s.image), "width": w, "height": h})
        for c, b in zip(s.classes, s.boxes_xyxy(w, h)):
            anns.append({"id": len(anns), "image_id": i, "category_id": int(c) + 1, "iscrowd": 0,
                         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
    return {"images": images, "annotations": anns,
            "categories": [{"id": k + 1, "name": n} for k, n in enumerate(ds.names)]}


@pytest.mark.parametrize("edit, expect", [c[1:] for c in COCO_CASES], ids=[c[0] for c in COCO_CASES])
def test_bad_input_coco_json(edit, expect, coco8, onnx320, capsys, tmp_path):
    doc = coco_json(load_dataset(coco8))
    edit(doc)
    j = tmp_path / "instances_val.json"
    j.write_text(json.dumps(doc))
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", j)
    one_line_error(code, err, expect if expect.startswith("nope") else f"{j}: {expect}")


def test_bad_input_coco_json_not_an_object(onnx320, capsys, tmp_path):
    j = tmp_path / "instances_val.json"
    j.write_text("[1, 2]")
    one_line_error(*run_cli(capsys, "eval", onnx320, "--data", j)[::2],
                   f"{j}: not a COCO detection file: expected an object with images, annotations, categories")


@pytest.mark.slow
def test_coco_string_ids_give_the_same_map_as_yolo(coco8, onnx320, capsys, tmp_path):
    """String image ids, used consistently, are mapped: the same ground truth, the same mAP as the YOLO labels."""
    doc = coco_json(load_dataset(coco8))
    for im in doc["images"]:
        im["id"] = f"img-{im['id']}"
    for a in doc["annotations"]:
        a["image_id"] = f"img-{a['image_id']}"
    j = tmp_path / "instances_val.json"
    j.write_text(json.dumps(doc))
    assert main(["eval", str(onnx320), "--data", str(j), "--json", str(tmp_path / "coco.json")]) == 0
    assert main(["eval", str(onnx320), "--data", str(coco8), "--json", str(tmp_path / "yolo.json")]) == 0
    coco, yolo = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("coco", "yolo"))
    assert coco["boxes"] == yolo["boxes"] > 0
    assert coco["map50_95"] == pytest.approx(yolo["map50_95"], abs=1e-4) and coco["map50_95"] > 0.1


@pytest.mark.slow
def test_duplicate_label_lines_removed_with_a_warning(coco8, copy_dataset, onnx320, capsys, tmp_path):
    y = copy_dataset(coco8)
    assert main(["eval", str(onnx320), "--data", str(y), "--json", str(tmp_path / "clean.json")]) == 0
    capsys.readouterr()
    lbl = first_label(y)
    lines = lbl.read_text().splitlines()
    lbl.write_text("\n".join(lines + lines[:2] + lines[:1]) + "\n")
    code, out, err = run_cli(capsys, "eval", onnx320, "--data", y, "--json", tmp_path / "dup.json")
    assert code == 0 and "duplicate" not in out  # the CLI shows edgekit's warnings on stderr, never stdout
    assert [ln for ln in err.splitlines() if "duplicate" in ln] == [f"warning: {lbl}: 3 duplicate label lines removed"]
    with pytest.warns(LabelWarning, match="3 duplicate label lines removed"):  # a LabelWarning for library callers
        load_dataset(y).samples("val")
    clean, dup = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("clean", "dup"))
    assert dup["boxes"] == clean["boxes"] and dup["map50_95"] == clean["map50_95"]


# --- image files: (how the first val image is broken, message after 'IMAGE: ') -----------------------------------
def _cut_closed(b: bytes) -> bytes:
    """Cut mid-file, then closed with an end-of-image marker: OpenCV decodes it half grey and only warns."""
    return b[:len(b) // 2] + b"\xff\xd9"


def _png_cut(b: bytes) -> bytes:
    import cv2
    import numpy as np

    png = cv2.imencode(".png", cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR))[1].tobytes()
    return png[:len(png) // 2]


IMAGE_CASES = [
    ("truncated", lambda b: b[:2000], "corrupt JPEG (truncated: no end-of-image marker)"),
    ("cut-closed", _cut_closed, "corrupt JPEG (decoder: Corrupt JPEG data"),
    ("not-an-image", lambda b: b"this is not an image", "not an image (unknown file header)"),
    ("empty", lambda b: b"", "image file is empty"),
    ("png-cut", _png_cut, "corrupt image (cannot be decoded: libpng error"),
    ("header-only", lambda b: b[:20] + b"\xff\xd9", "corrupt image (cannot be decoded"),
]


@pytest.mark.parametrize("edit, expect", [c[1:] for c in IMAGE_CASES], ids=[c[0] for c in IMAGE_CASES])
def test_bad_input_image(edit, expect, coco8, copy_dataset, onnx320, capfd):
    y = copy_dataset(coco8)
    img = sorted((y.parent / "images" / "val").glob("*.jpg"))[0]
    img.write_bytes(edit(img.read_bytes()))
    code = main(["eval", str(onnx320), "--data", str(y)])
    err = capfd.readouterr().err  # file descriptor 2: libjpeg's own warning must not leak there either
    one_line_error(code, err, f"{img}: {expect}")


@pytest.mark.slow
def test_jpeg_with_trailing_bytes_is_accepted(coco8, copy_dataset, onnx320, capsys, tmp_path):
    from edgekit.data import read_image

    y = copy_dataset(coco8)
    img = sorted((y.parent / "images" / "val").glob("*.jpg"))[0]
    before = read_image(img)
    img.write_bytes(img.read_bytes() + b"\x00trailing bytes after FFD9\xff\xd9 and more")
    assert (read_image(img) == before).all()
    assert main(["eval", str(onnx320), "--data", str(y), "--json", str(tmp_path / "t.json")]) == 0
    assert main(["eval", str(onnx320), "--data", str(coco8), "--json", str(tmp_path / "c.json")]) == 0
    t, c = (json.loads((tmp_path / f"{k}.json").read_text()) for k in ("t", "c"))
    assert t["images"] == 8 and t["map50_95"] == c["map50_95"]


def test_skip_bad_reports_and_goes_on(coco8, copy_dataset, onnx320, capsys, tmp_path):
    y = copy_dataset(coco8)
    img = sorted((y.parent / "images" / "val").glob("*.jpg"))[0]
    img.write_bytes(b"garbage")
    lbl = first_label(y)
    if lbl.stem == img.stem:
        lbl = sorted((y.parent / "labels" / "val").glob("*.txt"))[1]
    lbl.write_text("99 0.5 0.5 0.1 0.1\n")
    out_json = tmp_path / "r.json"
    code, out, err = run_cli(capsys, "eval", onnx320, "--data", y, "--skip-bad", "--json", out_json)
    assert code == 0
    r = json.loads(out_json.read_text())
    assert r["images"] == 6 and len(r["skipped"]) == 2
    assert "skipped:" in err and img.name in err and "class id 99" in err


def test_bad_input_empty_and_missing_split(coco8, copy_dataset, onnx320, capsys):
    y = copy_dataset(coco8)
    for f in (y.parent / "images" / "val").iterdir():
        f.unlink()
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", y)
    assert code == 2 and f"{y}: split 'val' is empty" in err
    shutil.rmtree(y.parent / "images" / "val")
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", y)
    assert code == 2 and "split 'val': path not found" in err
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", y, "--split", "test")
    assert code == 2 and "split 'test' is not defined (splits: train, val)" in err


def test_bad_input_class_count_mismatch(demo_data, onnx320, capsys):
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", demo_data)
    assert code == 2
    assert f"{demo_data}: dataset has 5 classes but the model model.onnx has 80" in err


def test_bad_input_missing_data_file(onnx320, capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", tmp_path / "nope.yaml")
    assert code == 2 and f"{tmp_path / 'nope.yaml'}: dataset file not found" in err
