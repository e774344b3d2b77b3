"""The user's dataset is read-only: train and train-export validate it first, then Ultralytics works on a view."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli.main import main
from treesum import tree_sha256 as checksum  # noqa: E402  (tests/treesum.py)

IMGSZ = 64


def run_cli(capsys, *argv):
    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture()
def coco8_trailing(coco8, copy_dataset) -> Path:
    """coco8 in tmp, one train JPEG with bytes after its end marker (valid: Ultralytics would re-save it in place)."""
    y = copy_dataset(coco8)
    img = sorted((y.parent / "images" / "train").glob("*.jpg"))[0]
    img.write_bytes(img.read_bytes() + b"\x00\x01 bytes after the end marker")
    return y


@pytest.mark.slow
def test_train_validates_skips_bad_and_leaves_dataset_untouched(coco8_trailing, weights, tmp_path, capsys):
    pytest.importorskip("ultralytics")
    y = coco8_trailing
    train_imgs = sorted((y.parent / "images" / "train").glob("*.jpg"))
    bad_label = y.parent / "labels" / "train" / f"{train_imgs[1].stem}.txt"
    bad_label.write_text("7 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n")  # 2nd line: a polygon
    before = checksum(y.parent)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", weights, "--data", y, "--epochs", 1, "--imgsz", IMGSZ, "--batch", 4,
                           "--strategy", "head", "--skip-bad", "-o", out)
    assert code == 0, err
    assert checksum(y.parent) == before  # no *.cache, no re-saved JPEG, nothing else
    assert f"skipped: {bad_label}:2: expected 5 fields 'class cx cy w h', got 9" in err
    doc = json.loads((out / "train.json").read_text())
    assert doc["status"] == "done" and len(doc["skipped"]) == 1
    view = out / ".data"
    assert (view / "labels" / "train.cache").exists() and (view / "labels" / "val.cache").exists()
    placed = sorted((view / "images" / "train").iterdir())
    assert [p.name for p in placed] == [p.name for p in train_imgs if p != train_imgs[1]]  # the bad one left out
    assert not placed[0].is_symlink()  # the JPEG Ultralytics re-saved: a copy in the view
    assert all(p.is_symlink() and p.resolve() in train_imgs for p in placed[1:])


def _cut_closed(f: Path) -> None:
    b = f.read_bytes()
    f.write_bytes(b[:len(b) // 2] + b"\xff\xd9")


def _tiny(f: Path) -> None:
    import cv2
    import numpy as np

    f.write_bytes(cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))[1].tobytes())


BAD_TRAIN = [  # (id, file under the coco8 copy, new text or an edit, message after 'FILE:')
    ("class", "labels/train/000000000009.txt", "80 0.5 0.5 0.2 0.2\n", "1: class id 80 out of range: dataset has nc=80"),
    ("polygon", "labels/train/000000000009.txt", "0 0.1 0.1 0.2 0.1 0.2 0.2 0.1 0.2\n", "1: expected 5 fields 'class cx cy w h', got 9"),
    ("nan", "labels/val/000000000139.txt", "0 0.5 0.5 0.2 0.2\nnan 0.5 0.5 0.2 0.2\n", "2: class id nan is not a non-negative integer"),
    ("cut-jpeg", "images/train/000000000009.jpg", _cut_closed, " corrupt JPEG (decoder: Corrupt JPEG data"),
    ("tiny", "images/val/000000000139.jpg", _tiny, " image is 8x8 pixels; training needs at least 10x10"),
]


@pytest.mark.parametrize("rel, edit, expect", [c[1:] for c in BAD_TRAIN], ids=[c[0] for c in BAD_TRAIN])
def test_bad_input_train_refuses_before_training(rel, edit, expect, coco8, copy_dataset, weights, tmp_path, capsys):
    """`train` validates every train and val sample as eval does, before Ultralytics sees anything."""
    pytest.importorskip("ultralytics")
    y = copy_dataset(coco8)
    f = y.parent / rel
    f.write_text(edit) if isinstance(edit, str) else edit(f)
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", weights, "--data", y, "--epochs", 1, "--imgsz", IMGSZ, "-o", out)
    assert code == 2 and err.count("\n") == 1, err
    assert f"{f}:{expect}" in err
    assert not (out / "train.json").exists() and not (out / "weights").exists()


def test_eval_writes_nothing_into_the_dataset(coco8_trailing, onnx160, tmp_path, capsys):
    before = checksum(coco8_trailing.parent)
    assert main(["eval", str(onnx160), "--data", str(coco8_trailing), "--split", "train"]) == 0
    assert checksum(coco8_trailing.parent) == before


@pytest.mark.slow
def test_train_export_leaves_dataset_untouched(coco8_trailing, weights, tmp_path, capsys):
    pytest.importorskip("ultralytics")
    y = coco8_trailing
    before = checksum(y.parent)
    out = tmp_path / "sweep"
    code, _, err = run_cli(capsys, "train-export", "--data", y, "--model", weights, "--strategies", "head",
                           "--epochs", 1, "--imgsz", IMGSZ, "--batch", 4, "--backends", "onnxruntime",
                           "--precisions", "fp32,int8", "--calib-size", 4, "--bench-iters", 3,
                           "--max-map-drop", 100, "-o", out)
    assert code == 0, err
    assert checksum(y.parent) == before
    assert json.loads((out / "report.json").read_text())["rows"]
