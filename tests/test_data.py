"""Dataset reading and validation: every bad input gives one line naming the file, and a non-zero exit."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from edgekit.cli.main import main
from edgekit.data import load_dataset
from edgekit.errors import DataError


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


@pytest.mark.parametrize(
    "case, expect",
    [
        ("fields", ":1: expected 5 fields 'class cx cy w h', got 4"),
        ("class", ":1: class id 80 out of range: dataset has nc=80 (ids 0..79)"),
        ("coords", ":1: coordinates outside [0, 1]"),
        ("text", ":1: non-numeric value"),
    ],
)
def test_bad_label_lines(case, expect, coco8, copy_dataset, onnx320, capsys):
    y = copy_dataset(coco8)
    lbl = first_label(y)
    bad = {"fields": "0 0.5 0.5 0.2", "class": "80 0.5 0.5 0.2 0.2", "coords": "0 1.2 0.5 0.2 0.2",
           "text": "0 0.5 x 0.2 0.2"}[case]
    lbl.write_text(bad + "\n" + lbl.read_text())
    code, out, err = run_cli(capsys, "eval", onnx320, "--data", y)
    assert code == 2
    assert err.count("\n") == 1, err  # one line, no traceback
    assert str(lbl) + expect in err


def test_corrupt_and_non_image_files(coco8, copy_dataset, onnx320, capsys):
    y = copy_dataset(coco8)
    img = sorted((y.parent / "images" / "val").glob("*.jpg"))[0]
    img.write_bytes(img.read_bytes()[:2000])  # truncated JPEG
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", y)
    assert code == 2 and f"{img}: corrupt JPEG (truncated: no end-of-image marker)" in err
    img.write_bytes(b"this is not an image")
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", y)
    assert code == 2 and f"{img}: not an image (unknown file header)" in err


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


def test_nc_names_mismatch(coco8, copy_dataset, onnx320, capsys):
    y = copy_dataset(coco8)
    doc = yaml.safe_load(y.read_text())
    doc["nc"] = 3
    y.write_text(yaml.safe_dump(doc))
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", y)
    assert code == 2 and f"{y}: nc=3 does not match the 80 class names" in err


def test_empty_and_missing_split(coco8, copy_dataset, onnx320, capsys):
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


def test_model_and_dataset_class_counts_must_match(demo_data, onnx320, capsys):
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", demo_data)
    assert code == 2
    assert f"{demo_data}: dataset has 5 classes but the model model.onnx has 80" in err


def test_missing_data_file(onnx320, capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval", onnx320, "--data", tmp_path / "nope.yaml")
    assert code == 2 and f"{tmp_path / 'nope.yaml'}: dataset file not found" in err


def test_invalid_yaml(tmp_path):
    y = tmp_path / "data.yaml"
    y.write_text("names: [a, b\ntrain: x")
    with pytest.raises(DataError, match="invalid YAML"):
        load_dataset(y)
