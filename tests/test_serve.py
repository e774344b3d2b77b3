"""`edgekit serve`: a real server in a subprocess on 127.0.0.1, called with tritonclient.http."""
from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

for _mod in ("fastapi", "uvicorn", "prometheus_client", "tritonclient.http"):
    pytest.importorskip(_mod, reason="pip install 'edgekit[serve]'")

import tritonclient.http as th  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VAL = sorted((Path(__file__).parent / "assets" / "coco8" / "images" / "val").glob("*.jpg"))
START_S = 90  # the engine loads on 2 shared cores: generous, but bounded


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@contextmanager
def server(artifact, *flags):
    """Start `edgekit serve` on a free loopback port, wait until ready, and always stop it."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgekit", "serve", str(artifact), "--host", "127.0.0.1", "--port", str(port), *flags]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {proc.stderr.read()}")
            if status(port, "GET", "/v2/health/ready")[0] == 200:
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"server not ready within {START_S} s")
        yield port, proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)


def status(port, method, path, body=None, headers=None):
    """(status, headers, body) of one loopback request; (None, {}, b'') when nothing listens yet."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    except (ConnectionError, OSError):
        return None, {}, b""
    finally:
        conn.close()


def bytes_input(data: bytes):
    i = th.InferInput("IMAGE", [1], "BYTES")
    i.set_data_from_numpy(np.array([data], dtype=object))
    return i


@pytest.fixture(scope="module")
def served(onnx160):
    with server(onnx160, "--max-batch", "4", "--max-delay-ms", "5") as (port, proc):
        yield port, proc


@pytest.fixture(scope="module")
def engine(onnx160):
    from edgekit import Engine

    with Engine(onnx160) as e:
        yield e


def test_serve_same_detections_as_engine(served, engine):
    port, _ = served
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    seen = 0
    for img in VAL:
        r = client.infer("model", [bytes_input(img.read_bytes())])
        ref = engine(img)
        boxes, scores, labels = r.as_numpy("BOXES"), r.as_numpy("SCORES"), r.as_numpy("LABELS")
        assert boxes.shape == ref.boxes.shape, img.name
        np.testing.assert_array_equal(labels, ref.class_ids)
        np.testing.assert_allclose(boxes, ref.boxes, atol=0.01)
        np.testing.assert_allclose(scores, ref.scores, atol=1e-5)
        seen += len(ref)
    assert seen > 0  # the comparison covered real detections


def test_serve_uint8_tensor_and_json_outputs(served, engine):
    import cv2

    port, _ = served
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    a = cv2.imread(str(VAL[1]))
    i = th.InferInput("IMAGE_HWC", list(a.shape), "UINT8")
    i.set_data_from_numpy(a)
    outs = [th.InferRequestedOutput(n, binary_data=False) for n in ("BOXES", "LABELS")]
    r = client.infer("model", [i], outputs=outs)
    ref = engine(a)
    assert r.as_numpy("SCORES") is None  # only what was asked for
    np.testing.assert_allclose(r.as_numpy("BOXES"), ref.boxes, atol=0.01)
    np.testing.assert_array_equal(r.as_numpy("LABELS"), ref.class_ids)


def test_serve_health_metadata_metrics(served, engine):
    port, _ = served
    client = th.InferenceServerClient(f"127.0.0.1:{port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("model")
    meta = client.get_model_metadata("model")
    assert meta["parameters"]["names"] == engine.names
    assert {o["name"] for o in meta["outputs"]} == {"BOXES", "SCORES", "LABELS"}
    assert {i["name"]: i["datatype"] for i in meta["inputs"]} == {"IMAGE": "BYTES", "IMAGE_HWC": "UINT8"}
    client.infer("model", [bytes_input(VAL[0].read_bytes())])
    code, headers, body = status(port, "GET", "/metrics")
    text = body.decode()
    assert code == 200
    ok = [line for line in text.splitlines() if line.startswith("edgekit_requests_total") and 'status="200"' in line]
    assert ok and float(ok[0].split()[-1]) >= 1
    for name in ("edgekit_queue_depth", "edgekit_batch_size_bucket", "edgekit_request_latency_seconds_bucket"):
        assert name in text


def _raw_infer(port, data: bytes):
    """One binary v2 request, as tritonclient sends it; returns (status, headers)."""
    head = json.dumps({"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES",
                                   "parameters": {"binary_data_size": len(data) + 4}}]}).encode()
    body = head + len(data).to_bytes(4, "little") + data
    code, headers, _ = status(port, "POST", "/v2/models/model/infer", body,
                              {"Inference-Header-Content-Length": str(len(head))})
    return code, headers


def test_serve_burst_over_max_queue_gets_503_then_recovers(onnx160, engine):
    data = VAL[0].read_bytes()
    with server(onnx160, "--max-queue", "2", "--max-batch", "1", "--max-delay-ms", "0") as (port, proc):
        with ThreadPoolExecutor(48) as pool:  # 96 requests at once against a queue of 2
            results = list(pool.map(lambda _: _raw_infer(port, data), range(96)))
        codes = [c for c, _ in results]
        assert set(codes) <= {200, 503}, codes
        assert codes.count(503) > 0 and codes.count(200) > 0
        assert all(h.get("retry-after") == "1" for c, h in results if c == 503)
        assert proc.poll() is None
        r = th.InferenceServerClient(f"127.0.0.1:{port}").infer("model", [bytes_input(data)])
        np.testing.assert_allclose(r.as_numpy("BOXES"), engine(VAL[0]).boxes, atol=0.01)
        text = status(port, "GET", "/metrics")[2].decode()
        assert 'status="503"' in text


def test_serve_sigterm_stops_cleanly(onnx160):
    with server(onnx160) as (port, proc):
        assert _raw_infer(port, VAL[0].read_bytes())[0] == 200
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(30)
        err = proc.stderr.read()
    assert rc == 0, err
    assert "Traceback" not in err
    assert status(port, "GET", "/v2/health/live")[0] is None  # nothing listens any more


BAD_REQUESTS = [  # (path, body, headers, status, message part)
    ("/v2/models/nope/infer", b'{"inputs": []}', {}, 404, "model 'nope' is not served here"),
    ("/v2/models/model/versions/7/infer", b'{}', {}, 404, "no version '7'"),
    ("/v2/models/model/infer", b"{not json", {}, 400, "not valid JSON"),
    ("/v2/models/model/infer", b'{"inputs": []}', {}, 400, "no 'inputs' list"),
    ("/v2/models/model/infer", b'{"inputs": [{"name": "X", "shape": [1], "datatype": "BYTES", "data": ["AA=="]}]}',
     {}, 400, "send exactly one input"),
    ("/v2/models/model/infer", b'{"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": ["bm9p"]}]}',
     {}, 400, "input IMAGE[0]: not an image"),
    ("/v2/models/model/infer", b'{"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", "data": ["%%"]}]}',
     {}, 400, "must be base64"),
    ("/v2/models/model/infer", b'{"inputs": [{"name": "IMAGE_HWC", "shape": [2, 2], "datatype": "UINT8", '
     b'"data": [1, 2, 3, 4]}]}', {}, 400, "shape must be [H, W, 3]"),
    ("/v2/models/model/infer", b'{"inputs": [{"name": "IMAGE_HWC", "shape": [2, 2, 3], "datatype": "UINT8", '
     b'"data": [1]}]}', {}, 400, "1 elements in 'data', shape [2, 2, 3] needs 12"),
    ("/v2/models/model/infer", b'{"inputs": [{"name": "IMAGE", "shape": [1], "datatype": "BYTES", '
     b'"parameters": {"binary_data_size": 99}}]}', {"Inference-Header-Content-Length": "ALL"}, 400, "runs past the end"),
    ("/v2/models/model/infer", b'{}', {"Inference-Header-Content-Length": "x"}, 400, "is not an integer"),
    ("/v2/nothing", None, {}, 404, "Not Found"),
]


@pytest.mark.parametrize("path,body,headers,code,msg", BAD_REQUESTS)
def test_bad_input_serve_request(served, path, body, headers, code, msg):
    port, proc = served
    headers = {k: str(len(body)) if v == "ALL" else v for k, v in headers.items()}  # ALL: the whole body is JSON
    got, _, out = status(port, "POST" if body is not None else "GET", path, body, headers)
    assert got == code, out
    assert msg in json.loads(out)["error"]
    assert proc.poll() is None


BAD_CLI = [  # (arguments, exit code, message part)
    (["missing.onnx"], 2, "model file not found"),
    (["{model}", "--max-queue", "0"], 2, "--max-queue must be >= 1"),
    (["{model}", "--max-batch", "0"], 2, "--max-batch must be >= 1"),
]


@pytest.mark.parametrize("argv,code,msg", BAD_CLI)
def test_bad_input_serve_cli(onnx160, tmp_path, capsys, argv, code, msg):
    from edgekit.cli.main import main

    argv = [a.format(model=onnx160) if "{" in a else str(tmp_path / a) if a.endswith(".onnx") else a for a in argv]
    assert main(["serve", *argv]) == code
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1


def test_bad_input_serve_without_extra(onnx160, monkeypatch, capsys):
    """Without fastapi the command still shows in --help, and running it names the pip extra."""
    from edgekit.cli.main import build_parser, main

    monkeypatch.setitem(sys.modules, "fastapi", None)
    assert "serve" in build_parser().format_help()
    assert main(["serve", str(onnx160)]) == 3
    assert "pip install 'edgekit[serve]'" in capsys.readouterr().err


def test_example_client_against_server(served, engine):
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from client_tritonclient import detect
    finally:
        sys.path.pop(0)
    port, _ = served
    boxes, scores, labels = detect(th.InferenceServerClient(f"127.0.0.1:{port}"), "model", str(VAL[0]))
    ref = engine(VAL[0])
    np.testing.assert_allclose(boxes, ref.boxes, atol=0.01)
    np.testing.assert_array_equal(labels, ref.class_ids)


def test_example_app_writes_annotated_video(onnx160, tmp_path):
    import cv2

    out = tmp_path / "annotated.mp4"
    r = subprocess.run([sys.executable, str(ROOT / "examples" / "detect_video.py"), str(onnx160),
                        str(VAL[0].parent), "-o", str(out), "--fps", "5"], env=_env(), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"{len(VAL)} frames" in r.stderr and "FPS end to end" in r.stderr
    cap = cv2.VideoCapture(str(out))
    try:
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(VAL)
    finally:
        cap.release()


def test_micro_batcher_batches_in_order_and_drains():
    """Queued items are gathered up to max_batch, each future gets its own row, stop() finishes the queue."""
    from edgekit.serve.batcher import MicroBatcher, QueueFull

    sizes = []

    def infer(blob):
        sizes.append(len(blob))
        return blob * 2

    b = MicroBatcher([infer], max_batch=4, max_delay_s=0.0, max_queue=6)
    futs = [b.submit(np.full((1, 3, 2, 2), k, np.float32)) for k in range(6)]
    with pytest.raises(QueueFull, match="queue full"):
        b.submit(np.zeros((1, 3, 2, 2), np.float32))
    b.start()
    assert [float(f.result(10)[0, 0, 0]) for f in futs] == [2.0 * k for k in range(6)]
    assert sizes == [4, 2]
    assert b.stop(10)
    with pytest.raises(QueueFull, match="shutting down"):
        b.submit(np.zeros((1, 3, 2, 2), np.float32))


def test_micro_batcher_failure_reaches_every_waiter():
    from edgekit.serve.batcher import MicroBatcher

    def infer(blob):
        raise RuntimeError("backend exploded")

    b = MicroBatcher([infer], max_batch=2, max_delay_s=0.0, max_queue=4)
    futs = [b.submit(np.zeros((1, 3, 2, 2), np.float32)) for _ in range(3)]
    b.start()
    for f in futs:
        with pytest.raises(RuntimeError, match="backend exploded"):
            f.result(10)
    assert b.stop(10)
