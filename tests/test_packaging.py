"""Packaging: artifact file modes, recipes inside the package, extras that cover each backend's imports, Dockerfiles."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = Path(__import__("edgekit").__file__).resolve().parent  # the installed package (a wheel in the Docker test stage)


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
    "runtime/backends/ncnn.py": ["ncnn"],
    "runtime/backends/litert.py": ["litert", "litert-build"],
    "runtime/backends/executorch.py": ["executorch", "executorch-build"],
    "quantize/onnxruntime.py": ["onnxruntime", "eval"],
    "quantize/openvino.py": ["openvino-quantize"],
    "quantize/tensorrt.py": ["tensorrt", "eval"],
    "bench/power.py": ["gpu"],
    "bench/memory.py": ["gpu"],
    "eval/accuracy.py": ["eval"],
}
# the accuracy gate: every quantize module runs eval/accuracy.py's evaluator
GATE = "eval/accuracy.py"
OPTIONAL_ALTERNATIVES = {
    "pycocotools",  # accuracy.py's fallback when faster-coco-eval is absent
    "torch",  # quantize/diagnose.py: the calibration-domain distance, recorded as skipped without torch
}


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")
    if not (ROOT / "pyproject.toml").exists():
        pytest.skip("no pyproject.toml beside the tests")
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

    pkg = PKG / Path(rel).parent
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
    files = _sibling_closure(rel) + ([PKG / GATE] if rel.startswith("quantize/") else [])
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


def test_recipes_ship_inside_the_package(monkeypatch, tmp_path):
    """The recipes are package data read through importlib.resources; EDGEKIT_RECIPES still overrides them."""
    from edgekit.quantize.recipe import recipe_for, recipes_dir

    monkeypatch.delenv("EDGEKIT_RECIPES", raising=False)
    assert Path(str(recipes_dir())).resolve() == PKG / "recipes"
    assert recipe_for("yolov8").name == "yolov8" and recipe_for("no-such-family").name == "default"
    (tmp_path / "default.yaml").write_text("name: mine\nkeep_float: {types: [Sigmoid]}\n")
    monkeypatch.setenv("EDGEKIT_RECIPES", str(tmp_path))
    assert recipe_for("yolov8").name == "mine"
    assert "recipes/*.yaml" in _pyproject()["tool"]["setuptools"]["package-data"]["edgekit"]


def test_install_nas_script_installs_the_nas_extra():
    """docker/install_nas.sh and edgekit[nas] list the same packages (jsonschema was missing from both)."""
    import re

    script = ROOT / "docker" / "install_nas.sh"
    if not script.exists():
        pytest.skip("docker/ not beside the tests")
    text = script.read_text().replace("\\\n", " ")
    listed = set()
    for line in text.splitlines():
        if re.search(r"pip install (?!--no-deps)", line):
            listed |= {_dist_name(w) for w in line.split("pip install", 1)[1].split() if not w.startswith("-")}
    nas = _extra_dists(_pyproject()["project"], "nas") - {"setuptools"}
    assert "jsonschema" in listed and nas <= listed, sorted(nas - listed)


# --- Docker -----------------------------------------------------------------------------------------------------------

DOCKERFILES = ["cpu", "cuda", "jetson"]


def _dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    path = ROOT / "docker" / name / "Dockerfile"
    if not path.exists():
        pytest.skip("docker/ not beside the tests")
    out, cur = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not cur:
            continue
        cur += line.rstrip("\\").strip() + " " if line.rstrip().endswith("\\") else line.strip()
        if not line.rstrip().endswith("\\"):
            if cur.strip():
                op, _, rest = cur.strip().partition(" ")
                out.append((op.upper(), rest.strip()))
            cur = ""
    return out


def _dockerignored() -> list[str]:
    path = ROOT / ".dockerignore"
    return [l.strip() for l in path.read_text().splitlines() if l.strip() and not l.startswith("#")] if path.exists() else []


@pytest.mark.parametrize("name", DOCKERFILES)
def test_dockerfile_builds_a_wheel_and_has_a_test_stage(name):
    import fnmatch
    import re

    ins = _dockerfile(name)
    stages, args = [], {}
    for op, rest in ins:
        if op == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?$", rest, re.I)
            assert m, f"{name}: bad FROM {rest!r}"
            base = re.sub(r"\$\{(\w+)\}", lambda g: args.get(g.group(1), g.group(0)), m.group(1))
            assert "${" not in base, f"{name}: FROM {rest!r} uses an ARG without a default"
            stages.append(m.group(2) or "")
    assert "test" in stages and stages[0] == "wheel", stages
    assert stages[-1] == name, f"{name}: the default (last) stage must be the runtime, not {stages[-1]}"
    text = " ".join(r for _, r in ins)
    assert "pip wheel" in text or "pip3 wheel" in text
    assert not re.search(r"pip3? install[^&]*\s-e\s", text), f"{name}: editable install"
    assert "/wheels/edgekit-*.whl" in text
    test_stage = ins[[i for i, (op, r) in enumerate(ins) if op == "FROM" and r.endswith(" AS test")][0]:]
    assert any(op == "RUN" and "-m pytest -q" in r for op, r in test_stage), f"{name}: test stage runs no pytest"
    ignored = _dockerignored()
    for op, rest in ins:
        if op == "COPY" and "--from" not in rest:
            *srcs, _dst = [w for w in rest.split() if not w.startswith("--")]
            for src in srcs:
                assert (ROOT / src).exists(), f"{name}: COPY {src}: not in the repository"
                assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), f"{name}: COPY {src} is .dockerignored"
        if "from=" in rest:
            ref = re.search(r"from=(\w[\w-]*)", rest).group(1)
            assert ref in stages, f"{name}: --from={ref} names no stage"
    assert ins[-1][0] == "CMD" and "edgekit" in ins[-1][1]


def test_cuda_image_tensorrt_major_matches_the_pip_pin():
    import re

    args = dict(r.split("=", 1) for op, r in _dockerfile("cuda") if op == "ARG" and "=" in r)
    pin = [r for r in _pyproject()["project"]["optional-dependencies"]["tensorrt"] if r.startswith("tensorrt")][0]
    lo, hi = (int(x) for x in re.match(r"tensorrt>=(\d+),<(\d+)$", pin.replace(" ", "")).groups())
    assert hi == lo + 1 and args["TENSORRT_MAJOR"] == str(lo)
    assert "TENSORRT_MAJOR" in " ".join(r for op, r in _dockerfile("cuda") if op == "RUN")  # asserted at build


def test_compose_names_the_three_images():
    yaml = pytest.importorskip("yaml")
    path = ROOT / "docker" / "compose.yaml"
    if not path.exists():
        pytest.skip("docker/ not beside the tests")
    services = yaml.safe_load(path.read_text())["services"]
    assert sorted(services) == sorted(DOCKERFILES)
    for name, svc in services.items():
        assert (path.parent / svc["build"]["context"] / svc["build"]["dockerfile"]).exists(), name
        assert svc["build"]["target"] == name
