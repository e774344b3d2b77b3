"""The KServe v2 HTTP app (FastAPI): health, metadata, config, stats, repository index, infer with micro-batching,
/metrics, v2 error bodies.

A request is checked before any decoding: body size (413), every field of the v2 header (400, naming the field),
the size an image's header declares (413, naming the limit: the limits of edgekit.runtime.images).
"""
import asyncio
import json
import math
import os
import threading
import time

import numpy as np

from .. import __version__
from ..errors import DataError
from ..runtime.detections import padded_batch
from ..runtime.images import MAX_PIXELS, ImageTooLarge, check_bytes, check_size, decode_bytes
from .batcher import MicroBatcher, QueueFull
from .metrics import Metrics, Stats
from .protocol import V2Error, encode_response, read_inputs, split_body

# Triton model-config style: dims without the batch dimension (max_batch_size > 0 adds a leading -1)
INPUTS = [("IMAGE", "BYTES", [1]),  # one encoded image (JPEG, PNG, ...) per batch item
          ("IMAGE_HWC", "UINT8", [-1, -1, 3])]  # one decoded BGR image per batch item
OUTPUTS = [("BOXES", "FP32", [-1, 4]),  # x1 y1 x2 y2, original-image pixels
           ("SCORES", "FP32", [-1]),
           ("LABELS", "INT64", [-1])]  # class ids: names in the metadata's parameters; -1 pads a batch
OVERRIDES = {"conf": (float, 0.0, 1.0), "iou": (float, 0.0, 1.0), "max_det": (int, 1, 100_000)}
RETRY_AFTER_S = "1"
MAX_BODY_MB = 64.0


def _decode_encoded(data: bytes, where: str, max_pixels: int) -> np.ndarray:
    """One encoded image, its header's size checked first (413 over the limit, 400 not an image)."""
    try:
        check_bytes(data, where, max_pixels=max_pixels)
        return decode_bytes(data, where)
    except ImageTooLarge as e:
        raise V2Error(str(e), 413) from None
    except DataError as e:
        raise V2Error(str(e)) from None


def decode_images(inputs: dict, max_batch: int, max_pixels: int = MAX_PIXELS) -> tuple[list[np.ndarray], bool]:
    """The request's images as HWC uint8 BGR arrays, and whether it was sent with a batch dimension.

    IMAGE: shape [1] (one image) or [n, 1] (Triton's form with max_batch_size > 0); IMAGE_HWC: [H, W, 3] or
    [n, H, W, 3].
    """
    known = [n for n in ("IMAGE", "IMAGE_HWC") if n in inputs]
    if len(known) != 1 or len(inputs) != 1:
        raise V2Error(f"send exactly one input, IMAGE (BYTES) or IMAGE_HWC (UINT8); got {sorted(inputs)}")
    name = known[0]
    a = inputs[name]
    if name == "IMAGE":
        if a.dtype != object:
            raise V2Error("input IMAGE: datatype must be BYTES (one encoded image per batch item)")
        if a.shape != (1,) and (a.ndim != 2 or a.shape[1] != 1 or a.shape[0] < 1):
            raise V2Error(f"input IMAGE: shape must be [1] or [n, 1] (n images), got {list(a.shape)}")
        batched = a.ndim == 2
    else:
        if a.dtype != np.uint8:
            raise V2Error("input IMAGE_HWC: datatype must be UINT8")
        if a.ndim not in (3, 4) or a.shape[-1] != 3 or 0 in a.shape:
            raise V2Error(f"input IMAGE_HWC: shape must be [H, W, 3] or [n, H, W, 3] (BGR), got {list(a.shape)}")
        batched = a.ndim == 4
        h, w = a.shape[-3:-1]
        try:
            check_size(w, h, "input IMAGE_HWC", max_pixels=max_pixels)
        except ImageTooLarge as e:
            raise V2Error(str(e), 413) from None
    n = a.shape[0] if batched else 1
    if n > max_batch:
        raise V2Error(f"input {name}: a batch of {n} images is over this model's max_batch_size {max_batch}")
    if name == "IMAGE":
        return [_decode_encoded(b, f"input IMAGE[{k}]", max_pixels) for k, b in enumerate(a.reshape(-1))], batched
    return [np.ascontiguousarray(im) for im in (a if batched else a[None])], batched


def _number(key: str, v, typ, lo, hi):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (typ is int and not float(v).is_integer()):
        raise V2Error(f"parameters.{key}: expected {'an integer' if typ is int else 'a number'}, got {v!r:.40}")
    if not (math.isfinite(v) and lo <= v <= hi):
        raise V2Error(f"parameters.{key}: {v!r} is outside {lo}..{hi}")
    return typ(v)


def request_options(head: dict) -> dict:
    """Check the request's id, parameters and outputs; returns the conf / iou / max_det overrides."""
    if "id" in head and not isinstance(head["id"], str):
        raise V2Error(f"'id' must be a string, got {head['id']!r:.40}")
    params = head.get("parameters", {})
    if not isinstance(params, dict):
        raise V2Error(f"'parameters' must be a JSON object, got {params!r:.60}")
    if not isinstance(params.get("binary_data_output", False), bool):
        raise V2Error(f"parameters.binary_data_output must be true or false, got {params['binary_data_output']!r:.40}")
    outputs = head.get("outputs", [])
    if not isinstance(outputs, list):
        raise V2Error("'outputs' must be a JSON array")
    names = [o[0] for o in OUTPUTS]
    for k, o in enumerate(outputs):
        if not isinstance(o, dict) or o.get("name") not in names:
            raise V2Error(f"outputs[{k}]: expected an object whose name is one of {', '.join(names)}, got {o!r:.60}")
        op = o.get("parameters", {})
        if not isinstance(op, dict) or not isinstance(op.get("binary_data", False), bool):
            raise V2Error(f"outputs[{k}].parameters: expected an object with binary_data true or false, got {op!r:.60}")
    return {k: _number(k, params[k], *spec) for k, spec in OVERRIDES.items() if k in params}


class Service:
    """Everything a request needs: the engine (pre/post), the batcher, the metrics and Triton's statistics."""

    def __init__(self, name: str, engines: list, max_batch: int, max_delay_s: float, max_queue: int,
                 max_body_mb: float = MAX_BODY_MB, max_pixels: int = MAX_PIXELS, drift=None, frames=None):
        """drift: a Drift (edgekit.serve.drift) or None (tracking off); frames: a FrameSaver or None."""
        self.name, self.engines, self.engine = name, engines, engines[0]
        self.drift, self.frames = drift, frames
        fixed = self.engine.backend.fixed_batch
        if fixed:  # a fixed-batch model gains nothing from bigger batches: do not wait to fill them
            max_batch = min(max_batch, fixed)
        self.max_batch, self.max_delay_s = max_batch, max_delay_s
        self.max_body = int(max_body_mb * 2 ** 20)
        self.max_pixels = max_pixels
        embed = drift is not None and drift.tracker is not None and drift.tracker.ref.emb is not None
        self.batcher = MicroBatcher([e.infer_embed if embed else e.infer for e in engines], max_batch, max_delay_s,
                                    max_queue)
        self.metrics = Metrics(name, max_batch, self.batcher.depth)
        if drift is not None and drift.tracker is not None:
            self.metrics.track_drift(drift.tracker)
        self.stats = Stats(name)
        self.batcher.on_batch = self._on_batch
        self._decoding = threading.BoundedSemaphore(max(2, os.cpu_count() or 2))  # bounds decoded images in memory
        self.ready = False

    def _on_batch(self, size: int, seconds: float) -> None:
        self.metrics.on_batch(size, seconds)
        self.stats.on_batch(size, seconds)

    def precision(self) -> tuple[str, str | None]:
        """(the artifact's precision, what the backend executes): an INT8 graph is int8 whatever a sidecar says."""
        done = self.engine.precision_executed
        declared = self.engine.meta.precision
        return ("int8" if done and done.startswith("int8") else declared), done

    def _parameters(self) -> dict:
        m = self.engine.meta
        precision, executed = self.precision()
        return {"names": m.names, "imgsz": list(m.imgsz), "precision": precision, "precision_executed": executed,
                "boxes": "x1 y1 x2 y2 in original-image pixels", "image_hwc_color": "BGR",
                "max_batch": self.max_batch, "max_body_mb": self.max_body / 2 ** 20, "max_pixels": self.max_pixels}

    def metadata(self) -> dict:
        def tensors(spec):
            return [{"name": n, "datatype": dt, "shape": [-1, *dims]} for n, dt, dims in spec]

        return {"name": self.name, "versions": ["1"], "platform": f"edgekit_{self.engine.backend_name}",
                "inputs": tensors(INPUTS), "outputs": tensors(OUTPUTS), "parameters": self._parameters()}

    def config(self) -> dict:
        """The model configuration in Triton's JSON form (GET /v2/models/NAME/config)."""
        def tensors(spec, is_input):
            return [{"name": n, "data_type": "TYPE_STRING" if dt == "BYTES" else f"TYPE_{dt}", "dims": dims,
                     **({"format": "FORMAT_NONE", "optional": True} if is_input else {})} for n, dt, dims in spec]

        gpu = not str(self.engine.device).lower().startswith("cpu")
        return {"name": self.name, "platform": "", "backend": f"edgekit_{self.engine.backend_name}",
                "version_policy": {"latest": {"num_versions": 1}}, "max_batch_size": self.max_batch,
                "input": tensors(INPUTS, True), "output": tensors(OUTPUTS, False),
                "dynamic_batching": {"preferred_batch_size": [],
                                     "max_queue_delay_microseconds": int(self.max_delay_s * 1e6),
                                     "default_queue_policy": {"max_queue_size": self.batcher.queue.maxsize}},
                "instance_group": [{"name": f"{self.name}_0", "kind": "KIND_GPU" if gpu else "KIND_CPU",
                                    "count": len(self.engines)}],
                "default_model_filename": self.engine.path.name,
                "parameters": {k: {"string_value": v if isinstance(v, str) else json.dumps(v)}
                               for k, v in self._parameters().items()}}

    def prepare(self, body: bytes, header_length):
        """Parse, check, decode and letterbox (in a worker thread): (head, blobs, letterboxes, batched, overrides)."""
        head, tail = split_body(body, header_length)
        overrides = request_options(head)
        inputs = read_inputs(head, tail)
        with self._decoding:
            images, batched = decode_images(inputs, self.max_batch, self.max_pixels)
            prepped = [self.engine.preprocess([im]) for im in images]
            seen = self.drift.observe(images, self.frames) if self.drift is not None else None
        return head, [b for b, _ in prepped], [i[0] for _, i in prepped], batched, overrides, seen

    def finish(self, head: dict, raws: list, infos: list, batched: bool, overrides: dict, seen=None):
        embs = None
        if raws and isinstance(raws[0], tuple):  # (detection row, embedding row) from Engine.infer_embed
            raws, embs = [r[0] for r in raws], [r[1] for r in raws]
        dets = self.engine.postprocess(np.stack(raws), infos, **overrides)
        if seen is not None:
            self.drift.update(self.engine, raws, embs, infos, dets, overrides, seen, self.frames)
        if batched:
            outs = padded_batch(dets)
        else:
            det = dets[0]
            outs = {"BOXES": det.boxes.astype(np.float32).reshape(-1, 4), "SCORES": det.scores.astype(np.float32),
                    "LABELS": det.class_ids.astype(np.int64)}
        return encode_response(self.name, head, outs)


async def read_body(request, limit: int, option: str = "serve --max-body-mb") -> bytes:
    """The request body; 413 past `limit` bytes, whose excess is read and dropped, never kept or decoded."""
    declared = request.headers.get("content-length")
    too_big = V2Error(f"request body is over the limit of {limit / 2 ** 20:g} MB ({option})", 413)
    over = declared is not None and declared.isdigit() and int(declared) > limit
    chunks, got = [], 0
    async for chunk in request.stream():  # past the limit, the rest is read and dropped, so the client gets the 413
        got += len(chunk)
        over = over or got > limit
        if over:
            chunks.clear()
            if got > 4 * limit:
                break
        else:
            chunks.append(chunk)
    if over:
        raise too_big
    return b"".join(chunks)


def create_app(service: Service):
    import fastapi
    from fastapi import Request
    from fastapi.responses import JSONResponse, Response
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        service.batcher.start()
        service.ready = True
        try:
            yield
        finally:
            service.ready = False
            await run_in_threadpool(service.batcher.stop)

    app = fastapi.FastAPI(title="edgekit serve", version=__version__, lifespan=lifespan, docs_url=None,
                          redoc_url=None, openapi_url=None)

    def error(msg: str, status: int, headers=None):
        return JSONResponse({"error": msg}, status_code=status, headers=headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, exc):
        return error(str(exc.detail), exc.status_code)

    @app.exception_handler(V2Error)
    async def v2_error(request, exc):
        return error(str(exc), exc.status, exc.headers)

    def check(name: str, version: str | None = None):
        if name != service.name:
            raise V2Error(f"model '{name}' is not served here (this server serves '{service.name}')", 404)
        if version not in (None, "", "1"):
            raise V2Error(f"model '{name}' has no version '{version}' (only '1')", 404)

    @app.get("/v2/health/live")
    async def live():
        return Response(status_code=200)

    @app.get("/v2/health/ready")
    async def ready():
        return Response(status_code=200 if service.ready else 503)

    @app.get("/v2")
    async def server_metadata():
        return {"name": "edgekit", "version": __version__,
                "extensions": ["binary_tensor_data", "model_configuration", "statistics"]}

    @app.get("/v2/models/stats")  # every model's: declared before /v2/models/{name}, which would take it
    async def all_stats():
        return {"model_stats": [service.stats.doc()]}

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None):
        check(name, version)
        return service.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None):
        check(name, version)
        return Response(status_code=200 if service.ready else 503)

    @app.get("/v2/models/{name}/config")
    @app.get("/v2/models/{name}/versions/{version}/config")
    async def model_config(name: str, version: str | None = None):
        check(name, version)
        return service.config()

    @app.get("/v2/models/{name}/stats")
    @app.get("/v2/models/{name}/versions/{version}/stats")
    async def model_stats(name: str, version: str | None = None):
        check(name, version)
        return {"model_stats": [service.stats.doc()]}

    @app.post("/v2/repository/index")
    async def repository_index(request: Request):
        body = await read_body(request, 2 ** 16, "a repository index request")
        try:
            doc = json.loads(body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise V2Error(f"request body is not valid JSON: {e}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("ready", False), bool):
            raise V2Error("request body must be a JSON object, with 'ready' true or false")
        if doc.get("ready") and not service.ready:
            return []
        return [{"name": service.name, "version": "1", "state": "READY" if service.ready else "UNAVAILABLE",
                 "reason": ""}]

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None):
        check(name, version)
        t0 = time.perf_counter()
        status = 500
        stats = service.stats
        try:
            queue = service.batcher.queue
            if queue.full():  # refuse before reading and decoding
                raise QueueFull(f"queue full ({queue.maxsize} requests waiting)")
            body = await read_body(request, service.max_body)
            t_in = time.perf_counter()
            head, blobs, infos, batched, ov, seen = await run_in_threadpool(
                service.prepare, body, request.headers.get("inference-header-content-length"))
            stats.add("compute_input", time.perf_counter() - t_in)
            if queue.maxsize - queue.qsize() < len(blobs):
                raise QueueFull(f"queue full ({queue.maxsize} requests waiting)")
            futs = [service.batcher.submit(b) for b in blobs]
            raws = [await asyncio.wrap_future(f) for f in futs]
            stats.add("queue", max(f.queue_s for f in futs))
            stats.add("compute_infer", max(f.infer_s for f in futs))
            t_out = time.perf_counter()
            content, headers = await run_in_threadpool(service.finish, head, raws, infos, batched, ov, seen)
            stats.add("compute_output", time.perf_counter() - t_out)
            status = 200
            return Response(content=content, headers=headers, media_type=headers.pop("Content-Type"))
        except QueueFull as e:
            status = 503
            raise V2Error(f"server busy: {e}; retry after {RETRY_AFTER_S} s", 503,
                          {"Retry-After": RETRY_AFTER_S}) from None
        except V2Error as e:
            status = e.status
            raise
        except Exception as e:  # an engine failure: a v2 error, never a dropped connection
            raise V2Error(f"inference failed: {type(e).__name__}: {e}", 500) from None
        finally:
            took = time.perf_counter() - t0
            stats.add("success" if status == 200 else "fail", took)
            service.metrics.on_request(status, took if status == 200 else None)

    @app.get("/v2/models/{name}/drift")
    @app.get("/v2/models/{name}/versions/{version}/drift")
    async def model_drift(name: str, version: str | None = None):
        check(name, version)
        if service.drift is None:
            return {"model": service.name, "verdict": "off", "reason": "drift tracking is off (serve --no-drift)"}
        return {"model": service.name, **service.drift.verdict()}

    @app.get("/metrics")
    async def metrics():
        body, ctype = service.metrics.render()
        return Response(content=body, media_type=ctype)

    return app
