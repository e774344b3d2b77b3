"""`edgekit deploy --triton`: the repository's configs parse against Triton's ModelConfig schema, the ensemble wires up,
and the Python-backend pre/post models (edgekit's own code, copied) give Engine's detections around the real model."""
from __future__ import annotations

import importlib.util
import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest

VAL = sorted((Path(__file__).parent / "assets" / "coco8" / "images" / "val").glob("*.jpg"))


def model_config_schema():
    """Triton's ModelConfig protobuf class, from the model_config_pb2.py that tritonclient ships."""
    pytest.importorskip("google.protobuf")
    spec = importlib.util.find_spec("tritonclient")
    if spec is None:
        pytest.skip("tritonclient not installed (pip install 'edgekit[serve]')")
    path = Path(spec.origin).parent / "grpc" / "model_config_pb2.py"
    if not path.exists():
        pytest.skip("this tritonclient ships no model_config_pb2.py")
    s = importlib.util.spec_from_file_location("_triton_model_config_pb2", path)
    mod = importlib.util.module_from_spec(s)
    s.loader.exec_module(mod)
    return mod.ModelConfig


def parse_repo(repo: Path) -> dict:
    """{model name: ModelConfig} for every config.pbtxt; unknown fields or bad syntax fail the parse."""
    from google.protobuf import text_format

    schema = model_config_schema()
    configs = {}
    for f in sorted(repo.glob("*/config.pbtxt")):
        cfg = text_format.Parse(f.read_text(), schema())
        assert cfg.name == f.parent.name, f"{f}: name must match its folder"
        assert (f.parent / "1").is_dir(), f"{f.parent}: no version folder 1/"
        configs[cfg.name] = cfg
    return configs


@pytest.fixture(scope="module")
def repo(onnx160, tmp_path_factory):
    from edgekit.cli.main import main

    out = tmp_path_factory.mktemp("triton") / "repo"
    assert main(["deploy", str(onnx160), "--triton", str(out), "--name", "yolo"]) == 0
    return out


def test_triton_configs_follow_the_schema(repo, onnx160):
    cfgs = parse_repo(repo)
    assert set(cfgs) == {"yolo", "yolo_model", "yolo_pre", "yolo_post"}
    model = cfgs["yolo_model"]
    assert model.backend == "onnxruntime" and (repo / "yolo_model" / "1" / model.default_model_filename).is_file()
    assert [i.name for i in model.input] == ["images"] and list(model.input[0].dims) == [3, 160, 160]
    assert model.max_batch_size == 1  # the fixture's export has a fixed batch of 1
    assert model.instance_group[0].kind == model.instance_group[0].KIND_CPU
    for stage in ("pre", "post"):
        c = cfgs[f"yolo_{stage}"]
        assert c.backend == "python" and c.parameters["stage"].string_value == stage
        assert (repo / f"yolo_{stage}" / "1" / "model.py").is_file()
    assert (repo / "yolo" / "README.md").read_text().count("tritonserver --model-repository=/models") == 1


def test_triton_ensemble_wiring_is_consistent(repo):
    """Every step maps real inputs/outputs, every ensemble tensor has one producer, and shapes agree."""
    cfgs = parse_repo(repo)
    ens = cfgs["yolo"]
    assert ens.platform == "ensemble"
    producers = {i.name: ("ensemble", list(i.dims), i.data_type) for i in ens.input}
    for step in ens.ensemble_scheduling.step:
        m = cfgs[step.model_name]
        assert ens.max_batch_size <= m.max_batch_size
        ins = {t.name: t for t in m.input}
        outs = {t.name: t for t in m.output}
        assert set(step.input_map) == set(ins), step.model_name
        for key, tensor in step.input_map.items():
            _, dims, dtype = producers[tensor]
            assert dtype == ins[key].data_type and dims == list(ins[key].dims), (step.model_name, key)
        for key, tensor in step.output_map.items():
            assert tensor not in producers
            producers[tensor] = (step.model_name, list(outs[key].dims), outs[key].data_type)
    for o in ens.output:
        assert producers[o.name][1:] == (list(o.dims), o.data_type)


class _Tensor:
    def __init__(self, name, array):
        self._name, self._a = name, np.asarray(array)

    def name(self):
        return self._name

    def as_numpy(self):
        return self._a


class _Response:
    def __init__(self, output_tensors, error=None):
        self.outputs, self.error = {t.name(): t.as_numpy() for t in output_tensors}, error


def _pb_utils():
    """The three calls model.py makes of Triton's triton_python_backend_utils, as a module."""
    m = types.ModuleType("triton_python_backend_utils")
    m.Tensor, m.InferenceResponse, m.TritonError = _Tensor, _Response, str
    m.get_input_tensor_by_name = lambda req, name: req.get(name)
    return m


def _load_python_model(folder: Path, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _pb_utils())
    for k in [k for k in sys.modules if k == "edgekit_runtime" or k.startswith("edgekit_runtime.")]:
        monkeypatch.delitem(sys.modules, k)
    spec = importlib.util.spec_from_file_location(f"_triton_{folder.name}", folder / "1" / "model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    model = mod.TritonPythonModel()
    cfg = (folder / "config.pbtxt").read_text()
    stage = "pre" if 'string_value: "pre"' in cfg else "post"
    model.initialize({"model_config": json.dumps({"parameters": {"stage": {"string_value": stage}}})})
    return model


def test_triton_python_models_match_engine(repo, onnx160, monkeypatch):
    """pre (copied letterbox) -> the repository's model file under ONNX Runtime -> post (copied decode + NMS)."""
    ort = pytest.importorskip("onnxruntime")
    from edgekit import Engine

    pre = _load_python_model(repo / "yolo_pre", monkeypatch)
    post = _load_python_model(repo / "yolo_post", monkeypatch)
    sess = ort.InferenceSession(str(repo / "yolo_model" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    engine = Engine(onnx160)
    total = 0
    for img in VAL:
        r = pre.execute([{"IMAGE": _Tensor("IMAGE", np.array([[img.read_bytes()]], dtype=object))}])[0]
        assert r.error is None
        raw = sess.run(None, {"images": r.outputs["images"]})[0]
        out = post.execute([{"RAW": _Tensor("RAW", raw), "LETTERBOX": _Tensor("LETTERBOX", r.outputs["LETTERBOX"])}])[0]
        ref = engine(img)
        np.testing.assert_array_equal(out.outputs["LABELS"][0], ref.class_ids)
        np.testing.assert_allclose(out.outputs["BOXES"][0], ref.boxes, atol=0.01)
        total += len(ref)
    assert total > 0
    bad = pre.execute([{"IMAGE": _Tensor("IMAGE", np.array([[b"not an image"]], dtype=object))}])[0]
    assert bad.error.startswith("IMAGE[0]: ") and "not an image (unknown file header)" in bad.error


def test_triton_pre_refuses_decompression_bomb_before_decoding(repo, monkeypatch):
    """The Triton pre model checks an image like serve does: a 30000x30000 PNG of zeros (under 1 MB, 2.7 GB
    decoded) is refused from its header, naming the limit, and the other images of the batch are not decoded."""
    from test_r2_serve import png_of_zeros

    pre = _load_python_model(repo / "yolo_pre", monkeypatch)
    png = png_of_zeros(30000, 30000)
    import cv2

    decoded, imdecode = [], cv2.imdecode
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1) or imdecode(*a))
    batch = np.array([[VAL[0].read_bytes()], [png]], dtype=object)
    r = pre.execute([{"IMAGE": _Tensor("IMAGE", batch)}])[0]
    assert r.error.startswith("IMAGE[1]: image of 30000x30000") and "over the limit of 100,000,000" in r.error
    assert len(decoded) == 1  # the first image only


@pytest.mark.slow
def test_triton_repo_for_openvino_ir_and_dynamic_batch(onnx160_copy, tmp_path):
    pytest.importorskip("openvino")
    from edgekit.export.openvino import onnx_to_openvino
    from edgekit.serve.triton import NetIO, model_config, write_triton_repo

    ir = onnx_to_openvino(onnx160_copy, tmp_path / "ir", log=lambda *a: None)
    cfgs = parse_repo(write_triton_repo(ir, tmp_path / "repo", name="det"))
    assert cfgs["det_model"].backend == "openvino" and (tmp_path / "repo/det_model/1/model.bin").is_file()
    from google.protobuf import text_format

    io = NetIO("images", "output0", [3, 160, 160], [84, 525], "float32", None)
    cfg = text_format.Parse(model_config("m", "onnxruntime", io, 8, 2, 500), model_config_schema()())
    assert cfg.max_batch_size == 8 and cfg.dynamic_batching.max_queue_delay_microseconds == 500
    assert cfg.instance_group[0].count == 2


BAD = [  # (arguments, exit code, message part)
    (["{tmp}/none.onnx", "--triton", "{tmp}/r"], 2, "model file not found"),
    (["{nometa}", "--triton", "{tmp}/r"], 2, "no metadata"),
    (["{model}", "--triton", "{tmp}/r", "--max-batch", "0"], 2, "--max-batch must be >= 1"),
    (["{model}", "--triton", "{tmp}/r", "--backend", "torch"], 2, "Triton has no backend"),
]


@pytest.mark.parametrize("argv,code,msg", BAD)
def test_bad_input_deploy(onnx160, tmp_path, capsys, argv, code, msg):
    import shutil

    from edgekit.cli.main import main

    nometa = tmp_path / "bare" / "m.onnx"
    nometa.parent.mkdir()
    shutil.copy2(onnx160, nometa)
    import onnx

    m = onnx.load(str(nometa))
    del m.metadata_props[:]
    onnx.save(m, str(nometa))
    argv = [a.format(tmp=tmp_path, model=onnx160, nometa=nometa) for a in argv]
    assert main(["deploy", *argv]) == code
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


# --- optional: a real tritonserver (nvidia-pytriton's build) loads the repository's pre/post models ----------------

PYTRITON_VENV = "EDGEKIT_PYTRITON_VENV"  # a venv: nvidia-pytriton, numpy<2, opencv-python-headless (never the main env)


def _pytriton_server_dir(tmp_path: Path) -> tuple[Path, dict]:
    """tritonserver and its backends copied out of the venv's pytriton (with the Python stub of the venv's version),
    and the environment it runs in; skips when the venv is not there."""
    import os
    import shutil

    venv = os.environ.get(PYTRITON_VENV)
    if not venv:
        pytest.skip(f"set {PYTRITON_VENV} to a venv with nvidia-pytriton, 'numpy<2' and opencv-python-headless")
    sites = sorted(Path(venv).glob("lib/python3.*/site-packages"))
    dist = sites[0] / "pytriton" / "tritonserver" if sites else None
    if dist is None or not (dist / "bin" / "tritonserver").is_file():
        pytest.skip(f"{PYTRITON_VENV}={venv}: no pytriton tritonserver in it")
    version = sites[0].parent.name[len("python"):]
    server = tmp_path / "tritonserver"
    for part in ("bin", "backends", "caches"):
        shutil.copytree(dist / part, server / part)
    shutil.copy2(dist / "python_backend_stubs" / version / "triton_python_backend_stub",
                 server / "backends" / "python" / "triton_python_backend_stub")
    env = {**os.environ, "PATH": f"{venv}/bin:{os.environ.get('PATH', '')}", "PYTHONPATH": str(sites[0]),
           "LD_LIBRARY_PATH": str(sites[0] / "nvidia_pytriton.libs")}
    return server, env


def test_real_tritonserver_serves_pre_and_post(repo, onnx160, tmp_path):
    """Issue 19 item 15 (optional check): the repository `deploy` writes loads into a real tritonserver (2.51, from
    nvidia-pytriton, which has no ONNX Runtime or OpenVINO backend, so only the Python-backend models load), takes
    IMAGE as [1, 1] and gives Engine's detections around the network run here."""
    import signal
    import socket
    import subprocess
    import time

    ort = pytest.importorskip("onnxruntime")
    th = pytest.importorskip("tritonclient.http")
    from edgekit import Engine

    server, env = _pytriton_server_dir(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = (tmp_path / "tritonserver.log").open("w")
    proc = subprocess.Popen([str(server / "bin" / "tritonserver"), f"--model-repository={repo}",
                             f"--backend-directory={server / 'backends'}", "--model-control-mode=explicit",
                             "--load-model=yolo_pre", "--load-model=yolo_post", "--http-address=127.0.0.1",
                             f"--http-port={port}", "--allow-grpc=false", "--allow-metrics=false"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = th.InferenceServerClient(f"127.0.0.1:{port}")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                if client.is_model_ready("yolo_pre") and client.is_model_ready("yolo_post"):
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.5)
        else:
            tail = (tmp_path / "tritonserver.log").read_text()[-3000:]
            pytest.fail(f"tritonserver did not load yolo_pre/yolo_post: {tail}")
        sess = ort.InferenceSession(str(repo / "yolo_model" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
        engine = Engine(onnx160)
        total = 0
        for img in VAL:
            i = th.InferInput("IMAGE", [1, 1], "BYTES")  # [batch, 1]: what examples/client_tritonclient.py sends
            i.set_data_from_numpy(np.array([[img.read_bytes()]], dtype=object))
            pre = client.infer("yolo_pre", [i])
            raw = sess.run(None, {"images": pre.as_numpy("images")})[0]
            r, lb = th.InferInput("RAW", list(raw.shape), "FP32"), th.InferInput("LETTERBOX", [1, 5], "FP64")
            r.set_data_from_numpy(raw.astype(np.float32))
            lb.set_data_from_numpy(pre.as_numpy("LETTERBOX"))
            post = client.infer("yolo_post", [r, lb])
            ref = engine(img)
            np.testing.assert_array_equal(post.as_numpy("LABELS")[0], ref.class_ids)
            np.testing.assert_allclose(post.as_numpy("BOXES")[0], ref.boxes, atol=0.01)
            total += len(ref)
        assert total > 0
        with pytest.raises(th.InferenceServerException, match=r"Expected \[-1,1\]|unexpected shape"):
            one = th.InferInput("IMAGE", [1], "BYTES")  # the old client's shape: real Triton refuses it
            one.set_data_from_numpy(np.array([VAL[0].read_bytes()], dtype=object))
            client.infer("yolo_pre", [one])
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        log.close()
