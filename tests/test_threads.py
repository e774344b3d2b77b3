"""One Engine called from 4 threads returns, image by image, what it returns called from one thread."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

THREADS, ROUNDS = 4, 3


@pytest.fixture(scope="module")
def images(coco8) -> list[Path]:
    folder = Path(coco8).parent / "images"
    return sorted(folder.glob("*/*.jpg"))


def _artifact(kind, onnx160, weights, request):
    if kind == "onnxruntime":
        pytest.importorskip("onnxruntime")
        return onnx160, {"backend": "onnxruntime"}
    if kind.startswith("openvino"):
        pytest.importorskip("openvino")
        opts = {"backend": "openvino", "hint": "THROUGHPUT"} if kind.endswith("throughput") else {"backend": "openvino"}
        return (request.getfixturevalue("int8_ir160") if "int8" in kind else onnx160), opts
    pytest.importorskip("torch")
    pytest.importorskip("ultralytics")
    return weights, {"backend": "torch", "imgsz": 160}


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["onnxruntime", "openvino-fp32", "openvino-fp32-throughput", "openvino-int8",
                                  "openvino-int8-throughput", "torch"])
def test_four_threads_match_one_thread_image_by_image(kind, onnx160, weights, images, request):
    from edgekit import Engine

    path, opts = _artifact(kind, onnx160, weights, request)
    with Engine(path, conf=0.05, **opts) as eng:
        ref = {p: eng(p) for p in images}
        jobs = [p for r in range(ROUNDS) for p in (images if r % 2 else images[::-1])] * THREADS
        with ThreadPoolExecutor(THREADS) as pool:
            got = list(pool.map(lambda p: (p, eng(p)), jobs))  # raises here if any call raised
    assert len(got) == len(jobs)
    for p, det in got:
        want = ref[p]
        assert len(det) == len(want), p.name
        assert np.array_equal(det.class_ids, want.class_ids), p.name
        assert np.allclose(det.boxes, want.boxes, atol=1e-4), p.name
        assert np.allclose(det.scores, want.scores, atol=1e-4), p.name


def test_openvino_request_pool_is_sized_by_the_plugin(onnx160):
    pytest.importorskip("openvino")
    from edgekit import Engine

    with Engine(onnx160, backend="openvino", hint="THROUGHPUT") as eng:
        n = int(eng.backend.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        assert eng.backend._requests.qsize() == n >= 1


def test_threads_see_their_own_image_on_openvino(onnx160, images):
    """Distinct inputs in flight together: each thread gets the raw output of its own blob."""
    pytest.importorskip("openvino")
    from edgekit import Engine

    with Engine(onnx160, backend="openvino", hint="THROUGHPUT") as eng:
        blobs = [eng.preprocess([eng.decode(p)])[0] for p in images]
        ref = [eng.infer(b) for b in blobs]
        idx = list(range(len(blobs))) * 6
        with ThreadPoolExecutor(THREADS) as pool:
            outs = list(pool.map(lambda i: (i, eng.infer(blobs[i])), idx))
    for i, out in outs:
        assert np.allclose(out, ref[i], atol=1e-4), images[i].name
