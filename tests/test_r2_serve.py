"""Issue 19 (R2), the server and deploy items: image size limits shared by eval, train, Engine and serve (11, 12),
request validation (13), Triton's config / statistics / repository-index endpoints and honest precision (14), the
example client's [1, 1] shape (15), deploy --triton that keeps the repository's other models (4), and deploy without
the onnx package."""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
COCO8 = Path(__file__).parent / "assets" / "coco8"
VAL = sorted((COCO8 / "images" / "val").glob("*.jpg"))


def png_of_zeros(width: int, height: int) -> bytes:
    """A valid 1-bit grayscale PNG of zeros, written row by row: a few hundred KB that decode to width*height px."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    z = zlib.compressobj(9)
    row = bytes(1 + (width + 7) // 8)  # filter byte 0, then the packed bits
    idat = b"".join(z.compress(row * min(1000, height - k)) for k in range(0, height, 1000)) + z.flush()
    ihdr = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([1, 0, 0, 0, 0])
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def thin_png(width: int, height: int) -> bytes:
    img = np.full((height, width, 3), 90, np.uint8)
    img[:, : width // 2] = 200
    return cv2.imencode(".png", img)[1].tobytes()


def tree_sums(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 11, 12: one place for image size limits ---------------------------------------------------------------------

@pytest.mark.parametrize("ext,flags", [(".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
                                       (".bmp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 80]),
                                       (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".tiff", [])])
def test_header_size_is_the_decoded_size(ext, flags):
    """The limits are checked on the size read from the header, before decoding: it must be the decoder's size."""
    from edgekit.runtime.images import header_size, image_kind

    img = np.random.default_rng(0).integers(0, 255, (23, 37, 3), np.uint8)
    data = cv2.imencode(ext, img, flags)[1].tobytes()
    assert header_size(data, image_kind(data[:16], Path("x" + ext))) == (37, 23)


def test_letterbox_thin_image_maps_boxes_back_per_axis():
    """Item 11: a 20000x20 strip at 160 px used to give a 0-px side (cv2.error inv_scale_x > 0). The rule: a side the
    gain would round to 0 px is drawn 1 px wide, and boxes map back through that axis' own scale."""
    from edgekit.runtime.preprocess import letterbox

    img = np.zeros((20, 20000, 3), np.uint8)
    out, info = letterbox(img, (160, 160))
    assert out.shape == (160, 160, 3)
    top = info.pad_top
    assert np.all(out[top] == 0) and np.all(out[top - 1] == 114) and np.all(out[top + 1] == 114)  # the 1-px strip
    boxes = np.array([[0, top, 80, top + 0.5], [0, top, 160, top + 1]], np.float32)
    back = info.to_original(boxes)
    np.testing.assert_allclose(back, [[0, 0, 10000, 10], [0, 0, 20000, 20]], atol=1e-3)
    _, normal = letterbox(np.zeros((480, 640, 3), np.uint8), (160, 160))  # other images: Ultralytics' one gain
    assert normal.scales == (0.25, 0.25)


@pytest.fixture()
def limits_data(tmp_path):
    """A copy of coco8 whose val split gains a 20000x20 PNG (valid, thin)."""
    ds = tmp_path / "coco8"
    shutil.copytree(COCO8, ds)
    (ds / "images" / "val" / "thin.png").write_bytes(thin_png(20000, 20))
    (ds / "labels" / "val" / "thin.txt").write_text("0 0.25 0.5 0.5 1.0\n")
    return ds


def test_eval_accepts_thin_image(onnx160, limits_data, tmp_path, capsys):
    """Item 11: eval of a 20000x20 image exited 1 with a cv2.error traceback; train accepted it. Now both accept it."""
    from edgekit.cli.main import main

    out = tmp_path / "eval.json"
    assert main(["eval", str(onnx160), "--data", str(limits_data / "data.yaml"), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["images"] == len(VAL) + 1
    assert "Traceback" not in capsys.readouterr().err


def test_eval_and_train_refuse_image_over_the_pixel_limit(onnx160, limits_data, tmp_path, capsys):
    """Item 11/12: an image over the limit gives one line naming the file (eval and train's validation, the same
    check); the user's files are unchanged."""
    from edgekit.cli.main import main
    from edgekit.data import load_dataset
    from edgekit.runtime.images import ImageTooLarge

    huge = limits_data / "images" / "val" / "huge.png"
    huge.write_bytes(png_of_zeros(30000, 30000))
    before = tree_sums(limits_data)
    assert main(["eval", str(onnx160), "--data", str(limits_data / "data.yaml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(huge) in err and "over the limit of 100,000,000 decoded pixels" in err
    with pytest.raises(ImageTooLarge, match="huge.png: image of 30000x30000"):
        load_dataset(limits_data / "data.yaml").samples("val")  # what `edgekit train` validates its data with
    assert tree_sums(limits_data) == before


def test_train_refuses_image_over_the_pixel_limit(weights, limits_data, tmp_path, capsys):
    """Item 11: `train` gives the same one line as eval for the same data."""
    pytest.importorskip("ultralytics")
    from edgekit.cli.main import main

    huge = limits_data / "images" / "train" / "huge.png"
    huge.write_bytes(png_of_zeros(30000, 30000))
    before = tree_sums(limits_data)
    code = main(["train", str(weights), "--data", str(limits_data / "data.yaml"), "--epochs", "1", "--imgsz", "160",
                 "-o", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and str(huge) in err and "over the limit" in err
    assert tree_sums(limits_data) == before


# --- the server ----------------------------------------------------------------------------------------------------

try:  # the real-server helpers; test_serve skips itself without fastapi / tritonclient
    import tritonclient.http as th
    from test_serve import bytes_input, server, status
except (ImportError, pytest.skip.Exception):
    th = None


@pytest.fixture(scope="module")
def dynamic160(tmp_path_factory, weights) -> Path:
    """The bundled YOLOv8n at 160 with a dynamic batch, so the server batches up to --max-batch."""
    pytest.importorskip("ultralytics")
    from edgekit.export import export_onnx

    return export_onnx(weights, tmp_path_factory.mktemp("dyn160"), imgsz=160, dynamic=True, log=lambda *a: None)


@pytest.fixture(scope="module")
def served(dynamic160):
    if th is None:
        pytest.skip("pip install 'edgekit[serve,dev]' (fastapi, uvicorn, tritonclient)")
    with server(dynamic160, "--max-batch", "4", "--max-delay-ms", "1", "--max-body-mb", "2") as (port, proc):
        yield port, proc


@pytest.fixture(scope="module")
def engine(dynamic160):
    from edgekit import Engine

    with Engine(dynamic160) as e:
        yield e


def _binary_request(port, payload: bytes):
    """IMAGE [1] with the payload (a serialized BYTES tensor) as binary data: (status, headers, body)."""
    head = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(payload)}}]}).encode()
    return status(port, "POST", "/v2/models/model/infer", head + payload,
                  {"Inference-Header-Content-Length": str(len(head))})


def _peak_rss(pid: int) -> int:
    """The process's peak resident memory in bytes (VmHWM), 0 where /proc does not say."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.slow
def test_serve_refuses_decompression_bomb_before_decoding(served):
    """Item 12: a 30000x30000 PNG of zeros (under 1 MB) was decoded (200, 5.3 GiB peak). Now 413 naming the limit,
    and the server's peak memory does not move (the PNG would decode to 2.7 GB)."""
    port, proc = served
    png = png_of_zeros(30000, 30000)
    assert len(png) < 2 ** 20
    peak = _peak_rss(proc.pid)
    code, _, body = _binary_request(port, len(png).to_bytes(4, "little") + png)
    assert code == 413, body
    assert "image of 30000x30000" in json.loads(body)["error"] and "over the limit of 100,000,000" in body.decode()
    if peak:
        assert _peak_rss(proc.pid) - peak < 200 * 2 ** 20
    assert proc.poll() is None


def test_serve_refuses_body_over_max_body_mb(served):
    """Item 12: bodies over --max-body-mb (2 here) get 413 naming the option, without being decoded."""
    port, proc = served
    big = bytes(3 * 2 ** 20)
    code, _, body = _binary_request(port, len(big).to_bytes(4, "little") + big)
    assert code == 413 and "over the limit of 2 MB (serve --max-body-mb)" in json.loads(body)["error"]
    assert proc.poll() is None


def test_serve_thin_image_gives_boxes_not_500(served, engine):
    """Item 11: a 60000x10 PNG gave the server a 500. Now 200, and the same detections as Engine."""
    port, _ = served
    png = thin_png(60000, 10)
    r = th.InferenceServerClient(f"127.0.0.1:{port}").infer("model", [bytes_input(png)])
    ref = engine(cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR))
    np.testing.assert_allclose(r.as_numpy("BOXES"), ref.boxes, atol=0.01)
    boxes = r.as_numpy("BOXES")
    assert np.all(boxes[:, [0, 2]] <= 60000) and np.all(boxes[:, [1, 3]] <= 10)


def _image_head(**over):
    t = {"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}
    t.update(over)
    return {"inputs": [t]}


BAD_FIELDS = [  # (request header as JSON text or dict, binary tail, status, message part); item 13
    (_image_head(data=None, parameters={"binary_data_size": -5}), b"\0" * 8, 400,
     "parameters.binary_data_size must be a non-negative integer, got -5"),
    (_image_head(data=None, parameters={"binary_data_size": "abc"}), b"\0" * 8, 400,
     "parameters.binary_data_size must be a non-negative integer, got 'abc'"),
    (_image_head(data=None, parameters={"binary_data_size": 4}), b"\0" * 8, 400,
     "binary_data_size add up to 4"),  # the body holds more than the sizes say
    (_image_head(parameters="binary_data_size=4"), b"", 400, "input IMAGE: 'parameters' must be a JSON object"),
    ({"inputs": [{"name": "IMAGE_HWC", "shape": [1, 1, 3], "datatype": "UINT8", "data": [300, 0, 0]}]}, b"", 400,
     "value 300 in 'data' is outside UINT8's range 0..255"),
    ({"inputs": [{"name": "IMAGE_HWC", "shape": [2 ** 32, 1, 3], "datatype": "UINT8", "data": [1, 2, 3]}]}, b"",
     400, "3 elements in 'data', shape [4294967296, 1, 3] needs 12884901888"),
    ({"inputs": [{"name": "IMAGE_HWC", "shape": [65536, 65536, 3], "datatype": "UINT8",
                  "parameters": {"binary_data_size": 3}}]}, b"\0\0\0", 400, "needs 12884901888 bytes"),
    ({"inputs": [{"name": "IMAGE_HWC", "shape": [1, 1, 3], "datatype": "UINT8", "data": ["a", 1, 2]}]}, b"", 400,
     "value 'a' in 'data' is not of datatype UINT8"),
    ({"inputs": [{"name": "IMAGE_HWC", "shape": [1, 1, 3], "datatype": "UINT8", "data": [1, True, 2]}]}, b"", 400,
     "value True in 'data' is not of datatype UINT8"),  # numpy alone would read it as 1
    ({"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "STRING", "data": ["AA=="]}]}, b"", 400,
     "unsupported datatype 'STRING'"),
    ({"inputs": [{"name": "IMAGE", "shape": [-1], "datatype": "BYTES", "data": ["AA=="]}]}, b"", 400,
     "shape must be a list of non-negative integers"),
    ({**_image_head(), "parameters": "conf=0.5"}, b"", 400, "'parameters' must be a JSON object"),
    ({**_image_head(), "parameters": {"conf": "0.5"}}, b"", 400, "parameters.conf: expected a number, got '0.5'"),
    ('{"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}], '
     '"parameters": {"conf": NaN}}', b"", 400, "parameters.conf: nan is outside 0.0..1.0"),
    ({**_image_head(), "parameters": {"iou": 5}}, b"", 400, "parameters.iou: 5 is outside 0.0..1.0"),
    ({**_image_head(), "parameters": {"max_det": 2.5}}, b"", 400, "parameters.max_det: expected an integer"),
    ({**_image_head(), "parameters": {"binary_data_output": "yes"}}, b"", 400, "binary_data_output must be true"),
    ({**_image_head(), "outputs": [{"name": "MASKS"}]}, b"", 400, "outputs[0]: expected an object whose name"),
    ({**_image_head(), "id": 7}, b"", 400, "'id' must be a string"),
    (_image_head(data=None, parameters={"shared_memory_region": "r0"}), b"", 400, "shared memory is not supported"),
    ({"inputs": [{"name": "IMAGE", "shape": [5, 1], "datatype": "BYTES", "data": ["AA=="] * 5}]}, b"", 400,
     "a batch of 5 images is over this model's max_batch_size 4"),
]


@pytest.mark.parametrize("head,tail,code,msg", BAD_FIELDS, ids=range(len(BAD_FIELDS)))
def test_bad_request_fields_answer_400_naming_the_field(served, head, tail, code, msg):
    """Item 13: client mistakes answered 500 (or 200 with the wrong bytes); now 400 with {"error": ...}."""
    port, proc = served
    js = (head if isinstance(head, str) else json.dumps(head)).encode()
    got, _, body = status(port, "POST", "/v2/models/model/infer", js + tail,
                          {"Inference-Header-Content-Length": str(len(js))})
    assert got == code, body
    assert msg in json.loads(body)["error"]
    assert proc.poll() is None


def test_serve_accepts_what_triton_accepts(served, engine):
    """Item 15: IMAGE [1] (edgekit's), [1, 1] and [n, 1] (Triton's, max_batch_size > 0); batched outputs padded."""
    port, _ = served
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    data = [VAL[0].read_bytes(), VAL[1].read_bytes()]
    i = th.InferInput("IMAGE", [2, 1], "BYTES")
    i.set_data_from_numpy(np.array([[d] for d in data], dtype=object))
    r = client.infer("model", [i])
    boxes, labels = r.as_numpy("BOXES"), r.as_numpy("LABELS")
    assert boxes.shape[0] == 2 and boxes.ndim == 3
    for k, img in enumerate(VAL[:2]):
        ref = engine(img)
        keep = labels[k] >= 0
        np.testing.assert_array_equal(labels[k][keep], ref.class_ids)
        np.testing.assert_allclose(boxes[k][keep], ref.boxes, atol=0.01)
    meta = client.get_model_metadata("model")
    assert {t["name"]: t["shape"] for t in meta["inputs"]}["IMAGE"] == [-1, 1]


def test_example_client_sends_triton_shape(served, engine, onnx160, tmp_path):
    """Item 15: the example client sent IMAGE [1], which real Triton refuses ("Expected [-1,1], got [1]"). It now
    sends [1, 1], which is [-1] + dims of the deployed ensemble's IMAGE, and edgekit serve accepts it."""
    from edgekit.serve.triton import write_triton_repo

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import client_tritonclient as example
    finally:
        sys.path.pop(0)
    sent = []
    real = example.httpclient.InferInput

    def spy(name, shape, dt):
        sent.append(list(shape))
        return real(name, shape, dt)

    port, _ = served
    example.httpclient.InferInput = spy
    try:
        boxes, _, labels = example.detect(th.InferenceServerClient(f"127.0.0.1:{port}"), "model", str(VAL[0]))
    finally:
        example.httpclient.InferInput = real
    np.testing.assert_array_equal(labels, engine(VAL[0]).class_ids)
    repo = write_triton_repo(onnx160, tmp_path / "repo", name="yolo")
    cfg = (repo / "yolo" / "config.pbtxt").read_text()
    assert "max_batch_size: 1" in cfg and 'name: "IMAGE" data_type: TYPE_STRING dims: [ 1 ]' in cfg
    assert sent == [[1, 1]]  # [batch] + dims, as Triton requires when max_batch_size > 0


# --- 14: config, statistics, repository index, precision -------------------------------------------------------------

def _triton_pb(name: str, monkeypatch):
    """A message class of Triton's protobuf schema (model_config_pb2 / service_pb2, shipped by tritonclient)."""
    pytest.importorskip("google.protobuf")
    base = Path(importlib.util.find_spec("tritonclient").origin).parent / "grpc"
    pkg = types.ModuleType("tritonclient.grpc")  # the real package imports grpc, which the schema does not need
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", pkg)
    for mod in ("model_config_pb2", "service_pb2"):
        if not (base / f"{mod}.py").exists():
            pytest.skip(f"this tritonclient ships no {mod}.py")
        spec = importlib.util.spec_from_file_location(f"tritonclient.grpc.{mod}", base / f"{mod}.py")
        m = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, f"tritonclient.grpc.{mod}", m)
        setattr(pkg, mod, m)
        spec.loader.exec_module(m)
    return getattr(pkg.service_pb2 if hasattr(pkg.service_pb2, name) else pkg.model_config_pb2, name)


def test_tritonclient_reads_config_stats_and_repository_index(served, monkeypatch):
    """Item 14: get_model_config, get_inference_statistics and get_model_repository_index got 404. They now answer
    in Triton's JSON shape (parsed against Triton's protobuf schema), and the statistics move with traffic."""
    from google.protobuf import json_format

    port, _ = served
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    cfg = client.get_model_config("model")
    json_format.ParseDict(cfg, _triton_pb("ModelConfig", monkeypatch)())  # unknown fields or wrong types fail
    assert cfg["max_batch_size"] == 4 and cfg["backend"] == "edgekit_onnxruntime"
    assert {i["name"]: i["dims"] for i in cfg["input"]} == {"IMAGE": [1], "IMAGE_HWC": [-1, -1, 3]}

    def stats():
        doc = client.get_inference_statistics("model")
        json_format.ParseDict(doc, _triton_pb("ModelStatisticsResponse", monkeypatch)())
        (s,) = doc["model_stats"]
        return s

    s0 = stats()
    for img in VAL[:3]:
        client.infer("model", [bytes_input(img.read_bytes())])
    status(port, "POST", "/v2/models/model/infer", b'{"inputs": []}')
    s1 = stats()
    assert s1["inference_count"] - s0["inference_count"] == 3
    assert s1["execution_count"] - s0["execution_count"] in (1, 2, 3)
    i0, i1 = s0["inference_stats"], s1["inference_stats"]
    for key in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert i1[key]["count"] - i0[key]["count"] == 3, key
        assert i1[key]["ns"] > i0[key]["ns"], key
    assert i1["fail"]["count"] - i0["fail"]["count"] == 1
    assert sum(b["compute_infer"]["count"] for b in s1["batch_stats"]) == s1["execution_count"]
    assert client.get_model_repository_index() == [{"name": "model", "version": "1", "state": "READY", "reason": ""}]
    assert status(port, "GET", "/v2/models/nope/stats")[0] == 404


def test_metadata_reports_int8_precision(int8_ir160, tmp_path):
    """Item 14: model metadata called an INT8 IR "fp32". It reports the artifact's precision and what executes,
    also when the sidecar claims fp32 for an INT8 graph."""
    from edgekit.serve.server import build_service

    lying = tmp_path / "ir"
    shutil.copytree(int8_ir160, lying)
    doc = json.loads((lying / "model.json").read_text())
    (lying / "model.json").write_text(json.dumps({**doc, "precision": "fp32"}))
    for ir in (int8_ir160, lying):
        svc = build_service(ir, max_batch=2)
        try:
            p = svc.metadata()["parameters"]
            assert p["precision"] == "int8" and p["precision_executed"].startswith("int8+"), p
            assert svc.config()["parameters"]["precision"] == {"string_value": "int8"}
        finally:
            svc.engine.close()


def test_serve_extra_serves_alone_and_all_keeps_everything():
    """Item 14: [serve] installed tritonclient (never imported by the server) and no runtime."""
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    serve = " ".join(extras["serve"])
    assert "tritonclient" not in serve and "fastapi" in serve and "uvicorn" in serve
    assert "edgekit[onnxruntime]" in serve  # a CPU runtime: `edgekit serve model.onnx` works with [serve] alone
    assert any("tritonclient" in r for r in extras["dev"] + extras["examples"])
    every = extras["all"][0]
    assert all(e in every for e in ("serve", "dev", "examples", "onnxruntime"))
    src = "\n".join(p.read_text() for p in (ROOT / "edgekit" / "serve").glob("*.py"))
    assert "tritonclient" not in src


# --- 4: deploy --triton keeps the repository's other models -----------------------------------------------------

@pytest.fixture()
def user_repo(tmp_path):
    """A Triton repository holding a user's own model and a README."""
    repo = tmp_path / "models"
    (repo / "theirs" / "1").mkdir(parents=True)
    (repo / "theirs" / "config.pbtxt").write_text('name: "theirs"\nbackend: "python"\n')
    (repo / "theirs" / "1" / "model.py").write_text("# the user's model\n")
    (repo / "README.md").write_text("the user's notes\n")
    return repo


def test_deploy_adds_its_folders_and_keeps_other_models(onnx160, user_repo, capsys):
    """Item 4: deploy --triton deleted every other model of the repository. It now adds (and on a second deploy
    replaces) only its own marked folders."""
    from edgekit.cli.main import main
    from edgekit.serve.triton import MARKER

    theirs = tree_sums(user_repo)
    for _ in range(2):  # the second deploy replaces the first one's folders
        assert main(["deploy", str(onnx160), "--triton", str(user_repo), "--name", "yolo"]) == 0
        now = tree_sums(user_repo)
        assert {k: v for k, v in now.items() if k in theirs} == theirs
        assert {p.name for p in user_repo.iterdir()} == {"theirs", "README.md", "yolo", "yolo_model", "yolo_pre",
                                                        "yolo_post"}  # no staging left behind
    for f in ("yolo", "yolo_model", "yolo_pre", "yolo_post"):
        assert json.loads((user_repo / f / MARKER).read_text())["written_by"] == "edgekit deploy"


def test_deploy_refuses_a_folder_it_did_not_write(onnx160, user_repo, capsys):
    """Item 4: a folder named like one of deploy's but not marked as its own: one line, exit 2, nothing changed;
    --force replaces it."""
    from edgekit.cli.main import main

    (user_repo / "yolo_pre").mkdir()
    (user_repo / "yolo_pre" / "config.pbtxt").write_text('name: "yolo_pre"\n')
    before = tree_sums(user_repo)
    names = sorted(p.name for p in user_repo.iterdir())
    assert main(["deploy", str(onnx160), "--triton", str(user_repo), "--name", "yolo"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "yolo_pre already in the repository and not written by edgekit" in err
    assert "--force" in err
    assert tree_sums(user_repo) == before and sorted(p.name for p in user_repo.iterdir()) == names
    assert main(["deploy", str(onnx160), "--triton", str(user_repo), "--name", "yolo", "--force"]) == 0
    assert (user_repo / "yolo_pre" / "1" / "model.py").is_file()
    assert (user_repo / "theirs" / "1" / "model.py").read_text() == "# the user's model\n"


_WITHOUT = """
import sys
for m in {mods!r}:
    sys.modules[m] = None  # as if not installed
from edgekit.cli.main import main
sys.exit(main(["deploy", {model!r}, "--triton", {repo!r}]))
"""


@pytest.mark.parametrize("absent,code", [(["onnx", "onnxruntime"], 0), (["onnx", "onnxruntime", "openvino"], 3)])
def test_deploy_onnx_without_the_onnx_package(onnx160, tmp_path, absent, code):
    """Small item: deploy model.onnx with only [openvino] printed a traceback. OpenVINO now reads the ONNX file's
    inputs for the onnxruntime-backend config; with neither installed: one line naming the extra, exit 3."""
    if "openvino" not in absent:
        pytest.importorskip("openvino")
    repo = tmp_path / "repo"
    script = _WITHOUT.format(mods=absent, model=str(onnx160), repo=str(repo))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == code, r.stderr
    assert "Traceback" not in r.stderr
    if code == 0:
        cfg = (repo / "model_model" / "config.pbtxt").read_text()
        assert 'backend: "onnxruntime"' in cfg and 'name: "images"' in cfg and "dims: [ 3, 160, 160 ]" in cfg
        assert (repo / "model_model" / "1" / "model.onnx").read_bytes() == onnx160.read_bytes()
    else:
        assert len(r.stderr.strip().splitlines()) == 1 and "pip install 'edgekit[onnxruntime]'" in r.stderr
        assert not repo.exists()


@pytest.mark.parametrize("dt,data,bad", [("FP32", [True, 1.0], "True"), ("INT64", [1, False], "False"),
                                         ("BOOL", [True, 1], "1"), ("FP32", [1, 2.5], None), ("BOOL", [True, False], None)])
def test_json_booleans_are_values_of_bool_only(dt, data, bad):
    """A JSON boolean in a numeric tensor (or a number in a BOOL one) is the client's mistake, not a 1 or a 0:
    numpy alone reads [true, 1] as [1, 1] and serve used to compute on it."""
    from edgekit.serve.protocol import V2Error, _from_json

    if bad is None:
        assert _from_json("X", dt, [2], 2, data).tolist() == data
        return
    with pytest.raises(V2Error, match=f"input X: value {bad} in 'data' is not of datatype {dt}"):
        _from_json("X", dt, [2], 2, data)
