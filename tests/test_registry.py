"""Issue N: one registry type for backends and quantizers. Entry-point plugins are read in every path, so
train-export's --backends, bench and Engine know the same names; a plugin that fails to import is one warning line,
not a crash (nor a name train-export offers)."""
from __future__ import annotations

import json
import warnings
from importlib import metadata

import pytest

from edgekit.cli.main import main

pytest.importorskip("onnxruntime")


@pytest.fixture()
def plugins(monkeypatch):
    """Entry points of two installed 'packages': a backend that loads and one that does not; a quantizer of each."""
    from edgekit import quantize
    from edgekit.runtime import backends

    eps = {"edgekit.backends": [metadata.EntryPoint("toyort", "toyort_backend:ToyOrtBackend", "edgekit.backends"),
                                metadata.EntryPoint("brokenep", "edgekit_no_such_plugin:B", "edgekit.backends")],
           "edgekit.quantizers": [
               metadata.EntryPoint("toyq", "edgekit.quantize.onnxruntime:OnnxRuntimeQuantizer", "edgekit.quantizers"),
               metadata.EntryPoint("brokenq", "edgekit_no_such_plugin:Q", "edgekit.quantizers")]}
    monkeypatch.setattr(metadata, "entry_points", lambda group=None, **k: eps.get(group, []))
    for reg in (backends.REGISTRY, quantize.REGISTRY):
        monkeypatch.setattr(reg, "_entry_points_read", False)
    yield
    for reg in (backends.REGISTRY, quantize.REGISTRY):
        for name in ("toyort", "brokenep", "toyq", "brokenq"):
            reg.unregister(name)


def test_train_export_and_bench_read_the_same_plugin_names(plugins, onnx160, coco8, tmp_path):
    from edgekit.cli.train_export import backend_names
    from edgekit.runtime.backends import get_backend, registered

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # brokenep's warning: the next test
        assert "toyort" in backend_names() and set(backend_names()) == set(registered())
    artifact = get_backend("toyort").build(onnx160, "fp32", tmp_path / "toy", log=lambda m: None)
    out = tmp_path / "bench.json"
    assert main(["bench", str(artifact), "--images", str(coco8.parent / "images" / "val"), "--warmup", "1",
                 "--iters", "2", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["backend"] == "toyort"


def test_a_plugin_that_fails_to_import_is_one_warning(plugins, onnx160, coco8, tmp_path, capsys):
    from edgekit import Engine
    from edgekit.cli.train_export import backend_names

    out = tmp_path / "bench.json"
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with Engine(onnx160) as eng:
            assert eng.backend_name == "onnxruntime"
        assert main(["bench", str(onnx160), "--images", str(coco8.parent / "images" / "val"), "--warmup", "1",
                     "--iters", "2", "--json", str(out)]) == 0
        assert "brokenep" not in backend_names()
    ours = [str(w.message) for w in seen if "brokenep" in str(w.message)]
    assert len(ours) == 1 and "ModuleNotFoundError" in ours[0] and ours[0].endswith("left out"), ours
    capsys.readouterr()
    assert main(["train-export", "--data", str(coco8), "--backends", "brokenep", "-o", str(tmp_path / "O")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgekit train-export: error: --backends: 'brokenep' is not one of ")


def test_quantizers_are_plugins_too(plugins, onnx160_copy, coco8, tmp_path, capsys):
    from edgekit.quantize import names, quantizer_class
    from edgekit.quantize.onnxruntime import OnnxRuntimeQuantizer
    from edgekit.quantize.recipe import _known_backends

    assert names()[:3] == ["openvino", "onnxruntime", "tensorrt"] and {"toyq", "brokenq"} <= set(names())
    assert quantizer_class("toyq") is OnnxRuntimeQuantizer and "toyq" in _known_backends()
    assert main(["quantize", str(onnx160_copy), "--data", str(coco8), "--backend", "brokenq",
                 "-o", str(tmp_path / "Q")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["edgekit quantize: error: backend 'brokenq' (edgekit_no_such_plugin:Q) cannot be loaded: "
                   "ModuleNotFoundError: No module named 'edgekit_no_such_plugin'"]
