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


# --- extras cover imports -------------------------------------------------------------------------------------------

# import name -> distribution (where they differ)
DIST = {"cv2": "opencv-python-headless", "yaml": "pyyaml", "pynvml": "nvidia-ml-py", "faster_coco_eval": "faster-coco-eval",
        "onnxruntime": "onnxruntime", "super_gradients": "super-gradients"}
# the module file -> the extras the README tells a user to install for it
EXTRAS_FOR = {
    "runtime/backends/onnxruntime.py": ["onnxruntime"],
    "runtime/backends/openvino.py": ["openvino"],
    "runtime/backends/tensorrt.py": ["tensorrt"],
    "runtime/backends/torch.py": ["train"],
    "quantize/onnxruntime.py": ["onnxruntime", "eval"],
    "quantize/openvino.py": ["openvino-quantize"],
    "quantize/tensorrt.py": ["tensorrt", "eval"],
    "bench/power.py": ["gpu"],
    "bench/memory.py": ["gpu"],
    "bench/accuracy.py": ["eval"],
}
# the accuracy gate: every quantize module runs bench/accuracy.py's evaluator
GATE = "bench/accuracy.py"
OPTIONAL_ALTERNATIVES = {"pycocotools"}  # accuracy.py's fallback when faster-coco-eval is absent


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _dist_name(req: str) -> str:
    import re

    return re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def _extra_dists(project: dict, extra: str) -> set[str]:
    """Distributions an extra installs, following 'edgekit[a,b]' self-references."""
    out = set()
    for req in project["optional-dependencies"][extra]:
        if req.startswith("edgekit["):
            for e in req[len("edgekit["):req.index("]")].split(","):
                out |= _extra_dists(project, e.strip())
        else:
            out.add(_dist_name(req))
    return out


def _third_party_imports(path: Path) -> set[str]:
    """Top-level modules a file imports (import/from, and edgekit's require('x')), stdlib left out."""
    import ast
    import sys

    mods = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            mods |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("require", "available")
              and node.args and isinstance(node.args[0], ast.Constant)):
            mods.add(str(node.args[0].value).split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m not in ("__future__", "edgekit")}


def _sibling_closure(rel: str) -> list[Path]:
    """The file plus the same-package modules it imports relatively ('from . import x', 'from .x import y')."""
    import ast

    pkg = ROOT / "edgekit" / Path(rel).parent
    todo, seen = [pkg / Path(rel).name], []
    while todo:
        p = todo.pop()
        if p in seen or not p.exists():
            continue
        seen.append(p)
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names = [node.module] if node.module else [a.name for a in node.names]
                todo += [pkg / f"{n.split('.')[0]}.py" for n in names]
    return seen


@pytest.mark.parametrize("rel", sorted(EXTRAS_FOR))
def test_extras_cover_each_backend_modules_imports(rel):
    """Every third-party module a backend file (and its sibling modules) imports is in its extras or core deps."""
    project = _pyproject()["project"]
    have = {_dist_name(r) for r in project["dependencies"]}
    for extra in EXTRAS_FOR[rel]:
        have |= _extra_dists(project, extra)
    files = _sibling_closure(rel) + ([ROOT / "edgekit" / GATE] if rel.startswith("quantize/") else [])
    need = set().union(*(_third_party_imports(f) for f in files)) - OPTIONAL_ALTERNATIVES
    missing = sorted(m for m in need if DIST.get(m, m).lower().replace("_", "-") not in have)
    assert not missing, f"{rel}: imports {missing} that [{','.join(EXTRAS_FOR[rel])}] does not install"


def test_extras_runtime_only_openvino_has_no_nncf_and_tensorrt_is_pinned_to_its_major():
    project = _pyproject()["project"]
    extras = project["optional-dependencies"]
    assert _extra_dists(project, "openvino") == {"openvino"}
    assert "nncf" in _extra_dists(project, "openvino-quantize")
    assert "tensorrt>=10,<11" in [r.replace(" ", "") for r in extras["tensorrt"]]
    assert "jsonschema" in _extra_dists(project, "nas")
    cpu = _extra_dists(project, "all")
    assert {"onnxruntime", "openvino", "nncf", "faster-coco-eval", "torch", "ultralytics", "pytest"} <= cpu
    assert not cpu & {"tensorrt", "onnxruntime-gpu"}  # [all] installs on a CPU machine


def test_missing_nncf_names_the_quantize_extra():
    from edgekit._imports import install_hint

    assert install_hint("nncf") == "pip install 'edgekit[openvino-quantize]'"
    assert install_hint("pynvml") == "pip install 'edgekit[gpu]'"
