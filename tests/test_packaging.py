"""Packaging: artifact file modes, recipes inside the package, extras that cover each backend's imports, Dockerfiles."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _umask() -> int:
    old = os.umask(0o022)
    os.umask(old)
    return old


def test_export_sidecar_and_ir_folder_are_readable_by_others(onnx160, tmp_path):
    """Files 0666 & ~umask, folders 0777 & ~umask, as open()/mkdir() make them (mkstemp/mkdtemp give 0600/0700)."""
    pytest.importorskip("openvino")
    from edgekit.export.openvino import onnx_to_openvino

    f, d = 0o666 & ~_umask(), 0o777 & ~_umask()
    assert (_mode(onnx160), _mode(onnx160.with_suffix(".json"))) == (f, f)
    old = os.umask(0o022)
    try:
        ir = onnx_to_openvino(onnx160, tmp_path / "ir", log=lambda *a: None)
    finally:
        os.umask(old)
    assert _mode(ir) == 0o755
    assert {p.name: _mode(p) for p in ir.iterdir()} == {n: 0o644 for n in ("model.xml", "model.bin", "model.json")}


def test_atomic_writes_respect_a_stricter_umask(tmp_path):
    """Under umask 077 the same functions give 0600 / 0700: the mode follows the umask, not a constant."""
    from edgekit.io import atomic_dir, atomic_write_json

    old = os.umask(0o077)
    try:
        f = atomic_write_json(tmp_path / "a.json", {"a": 1})
        with atomic_dir(tmp_path / "d") as d:
            (d / "x").write_text("x")
    finally:
        os.umask(old)
    assert (_mode(f), _mode(tmp_path / "d")) == (0o600, 0o700)
