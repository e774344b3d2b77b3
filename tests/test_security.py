"""Untrusted checkpoints never run code; Ultralytics settings and temp copies stay out of HOME and are cleaned."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("ultralytics")

OPT_IN = "--trust-checkpoint (CLI) or trust_checkpoint=True (Python)"
ROOT = Path(__file__).resolve().parent.parent


def run_cli(capsys, *argv):
    from edgekit.cli.main import main

    code = main(list(map(str, argv)))
    out = capsys.readouterr()
    return code, out.out, out.err


class _Marker:
    """Unpickling calls os.system, which writes the marker file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.fixture()
def evil(tmp_path):
    """(malicious .pt, the marker it would write)."""
    import torch

    marker = tmp_path / "PWNED"
    pt = tmp_path / "evil.pt"
    torch.save({"model": _Marker(marker), "date": "2024"}, pt)
    return pt, marker


@pytest.fixture()
def small_data(tmp_path, coco8):
    dst = tmp_path / "coco8"
    shutil.copytree(coco8.parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    return dst / "data.yaml"


@pytest.mark.parametrize("argv", [
    ["export", "{pt}", "--imgsz", "64", "--no-parity", "-o", "{tmp}/o"],
    ["train", "{pt}", "--data", "{data}", "--epochs", "1", "--imgsz", "64", "-o", "{tmp}/t"],
    ["train-export", "--model", "{pt}", "--data", "{data}", "--epochs", "1", "--imgsz", "64", "--strategies", "full",
     "-o", "{tmp}/te"],
    ["bench", "{pt}", "--iters", "2", "--warmup", "1"],
    ["eval", "{pt}", "--data", "{data}"],
], ids=["export", "train", "train-export", "bench", "eval"])
def test_bad_input_malicious_checkpoint_cli(capsys, tmp_path, evil, small_data, argv):
    pt, marker = evil
    args = [a.format(pt=pt, tmp=tmp_path, data=small_data) for a in argv]
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert not marker.exists()
    assert err.count("\n") == 1, err  # refused before any work (train-export too: no trial starts)
    line = err.strip()
    assert line.startswith(f"edgekit {args[0]}: error: ")
    assert f"{pt.name}: refused to load: global posix.system is called" in line and OPT_IN in line
    assert not any(tmp_path.glob("t*/*")), "nothing is written for a refused checkpoint"


def test_bad_input_malicious_checkpoint_engine(evil):
    from edgekit import Engine
    from edgekit.checkpoint import UnsafeCheckpoint

    pt, marker = evil
    with pytest.raises(UnsafeCheckpoint, match="trust_checkpoint=True") as e:
        Engine(pt)
    assert not marker.exists() and str(pt) in str(e.value)


def test_bad_input_malicious_checkpoint_legacy_format(capsys, tmp_path):
    """The pre-1.6 (non-zip) torch format goes through torch's weights_only unpickler: refused too."""
    import torch

    marker, pt = tmp_path / "PWNED", tmp_path / "legacy.pt"
    torch.save({"model": _Marker(marker)}, pt, _use_new_zipfile_serialization=False)
    code, _, err = run_cli(capsys, "export", pt, "-o", tmp_path / "o")
    assert code == 2 and not marker.exists()
    assert "legacy.pt: refused to load: " in err and "posix.system" in err and OPT_IN in err


def test_trust_checkpoint_opt_in_really_unpickles(evil):
    """The opt-in is what it says: the same file, trusted, runs its code (so the refusal above is the check's doing)."""
    from edgekit.checkpoint import load_checkpoint

    pt, marker = evil
    load_checkpoint(pt, trust=True)
    assert marker.exists()


def _doctored(tmp_path, weights, edit):
    import torch

    ckpt = torch.load(weights, map_location="cpu", weights_only=False)  # the bundled file: trusted
    edit(ckpt)
    out = tmp_path / "doctored.pt"
    torch.save(ckpt, out)
    return out


def _call_detection_model(ckpt):
    """A pickle that calls DetectionModel(cfg) on load: Ultralytics would eval the cfg's activation string."""
    from ultralytics.nn.tasks import DetectionModel

    class Call:
        def __reduce__(self):
            return (DetectionModel, ({"activation": "print('x')", "backbone": [], "head": []},))

    ckpt["model"] = Call()


def _plant_yaml_activation(ckpt):
    ckpt["model"].yaml["activation"] = "__import__('os').getcwd()"
    ckpt["ema"] = None


def _plant_class_as_hook(ckpt):
    from ultralytics.nn.tasks import DetectionModel

    ckpt["model"].model[0]._forward_hooks[0] = DetectionModel


def _plant_yaml_layer(ckpt):
    ckpt["model"].yaml["backbone"][0][2] = "torch_load"  # a function in ultralytics.nn.tasks, not a layer


@pytest.mark.parametrize("edit, message", [
    (_call_detection_model, "global ultralytics.nn.tasks.DetectionModel is called while unpickling"),
    (_plant_yaml_activation, "model yaml activation \"__import__('os').getcwd()\" would be eval()ed by Ultralytics"),
    (_plant_class_as_hook, "global ultralytics.nn.tasks.DetectionModel appears as a value"),
    (_plant_yaml_layer, "model yaml layer 'torch_load' is not a torch or Ultralytics nn.Module"),
], ids=["class-called", "yaml-activation", "class-as-hook", "yaml-layer"])
def test_bad_input_checkpoint_allowed_class_misused(capsys, tmp_path, weights, edit, message):
    pt = _doctored(tmp_path, weights, edit)
    code, _, err = run_cli(capsys, "export", pt, "--imgsz", "64", "--no-parity", "-o", tmp_path / "o")
    assert code == 2 and message in err and OPT_IN in err and "\n" not in err.strip()


@pytest.mark.slow
def test_real_checkpoints_load_without_opt_in(weights, tmp_path, small_data):
    """The bundled COCO .pt and an edgekit-trained best.pt (and its last.pt) pass the restricted loader and export."""
    from edgekit.checkpoint import load_checkpoint
    from edgekit.export import export_onnx
    from edgekit.train import train

    ckpt = load_checkpoint(weights)
    assert len(ckpt["model"].names) == 80
    out = tmp_path / "run"
    train(weights, small_data, epochs=1, imgsz=64, batch=8, out_dir=out, log=lambda *a: None)
    for pt in (out / "best.pt", out / "last.pt"):
        assert load_checkpoint(pt)["train_args"]["imgsz"] == 64
    onnx = export_onnx(out / "best.pt", tmp_path / "onnx", imgsz=64, parity_images=False, log=lambda *a: None)
    assert onnx.exists() and onnx.with_suffix(".json").exists()


def test_ultralytics_settings_not_in_home(tmp_path, weights):
    """Importing Ultralytics through edgekit and loading a model writes nothing under HOME."""
    home, tmpdir = tmp_path / "home", tmp_path / "tmp"
    home.mkdir()
    tmpdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("YOLO_CONFIG_DIR", "XDG_CONFIG_HOME", "MPLCONFIGDIR")}
    env.update(HOME=str(home), TMPDIR=str(tmpdir), PYTHONPATH=str(ROOT))
    code = ("from edgekit._ultralytics import ultralytics; ul = ultralytics(); "
            f"from edgekit.runtime.meta import load_meta; load_meta({str(weights)!r}); "
            "import os; print(os.environ['YOLO_CONFIG_DIR'])")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*")) == []
    assert Path(r.stdout.strip().splitlines()[-1]).parent == tmpdir


def test_stale_export_tempdir_removed(tmp_path, weights, monkeypatch):
    """A temp folder left by a killed export (dead pid) goes at the next start; a live process's folder stays."""
    from edgekit.export import export_onnx

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f"edgekit-export-{dead.pid}-abcd1234"
    live = tmp_path / f"edgekit-export-{os.getppid()}-abcd1234"
    for d in (stale, live):
        d.mkdir()
        (d / "yolov8n_coco.pt").write_bytes(b"x" * 1000)
    export_onnx(weights, tmp_path / "onnx", imgsz=64, parity_images=False, log=lambda *a: None)
    assert not stale.exists() and live.exists()
    assert [p.name for p in tmp_path.glob(f"edgekit-export-{os.getpid()}-*")] == []  # ours removed on exit
