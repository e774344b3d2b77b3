"""The KServe v2 HTTP app (FastAPI): health, metadata, infer with micro-batching, /metrics, v2 error bodies."""
import asyncio
import time

import cv2
import numpy as np

from .. import __version__
from .batcher import MicroBatcher, QueueFull
from .metrics import Metrics
from .protocol import V2Error, encode_response, read_inputs, split_body

INPUTS = [
    {"name": "IMAGE", "datatype": "BYTES", "shape": [1]},  # one encoded image (JPEG, PNG, ...)
    {"name": "IMAGE_HWC", "datatype": "UINT8", "shape": [-1, -1, 3]},  # one decoded BGR image
]
OUTPUTS = [
    {"name": "BOXES", "datatype": "FP32", "shape": [-1, 4]},  # x1 y1 x2 y2, original-image pixels
    {"name": "SCORES", "datatype": "FP32", "shape": [-1]},
    {"name": "LABELS", "datatype": "INT64", "shape": [-1]},  # class ids: names in the metadata's parameters
]
OVERRIDES = {"conf": float, "iou": float, "max_det": int}
RETRY_AFTER_S = "1"


def decode_one(inputs: dict) -> np.ndarray:
    """The request's single image as an HWC uint8 BGR array."""
    known = [n for n in ("IMAGE", "IMAGE_HWC") if n in inputs]
    if len(known) != 1 or len(inputs) != 1:
        raise V2Error(f"send exactly one input, IMAGE (BYTES) or IMAGE_HWC (UINT8); got {sorted(inputs)}")
    if known[0] == "IMAGE":
        items = inputs["IMAGE"]
        if len(items) != 1:
            raise V2Error(f"input IMAGE: one encoded image per request (the server batches), got {len(items)}")
        img = cv2.imdecode(np.frombuffer(items[0], np.uint8), cv2.IMREAD_COLOR) if items[0] else None
        if img is None or img.size == 0:
            raise V2Error("input IMAGE: not a decodable image")
        return img
    a = inputs["IMAGE_HWC"]
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8:
        raise V2Error("input IMAGE_HWC: datatype must be UINT8")
    if a.ndim == 4 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 3 or a.shape[2] != 3 or a.shape[0] == 0 or a.shape[1] == 0:
        raise V2Error(f"input IMAGE_HWC: shape must be [H, W, 3] (BGR), got {list(a.shape)}")
    return np.ascontiguousarray(a)


def overrides_of(head: dict) -> dict:
    """Per-request conf / iou / max_det from the request's parameters."""
    params = head.get("parameters") or {}
    out = {}
    for k, typ in OVERRIDES.items():
        if k in params:
            try:
                out[k] = typ(params[k])
            except (TypeError, ValueError):
                raise V2Error(f"parameter {k}: expected a number, got {params[k]!r}") from None
    return out


class Service:
    """Everything a request needs: the engine (pre/post), the batcher and the metrics."""

    def __init__(self, name: str, engines: list, max_batch: int, max_delay_s: float, max_queue: int):
        self.name, self.engines, self.engine = name, engines, engines[0]
        fixed = self.engine.backend.fixed_batch
        if fixed:  # a fixed-batch model gains nothing from bigger batches: do not wait to fill them
            max_batch = min(max_batch, fixed)
        self.max_batch = max_batch
        self.batcher = MicroBatcher([e.infer for e in engines], max_batch, max_delay_s, max_queue)
        self.metrics = Metrics(name, max_batch, self.batcher.depth)
        self.batcher.on_batch = self.metrics.on_batch
        self.ready = False

    def metadata(self) -> dict:
        m = self.engine.meta
        return {"name": self.name, "versions": ["1"], "platform": f"edgekit_{self.engine.backend_name}",
                "inputs": INPUTS, "outputs": OUTPUTS,
                "parameters": {"names": m.names, "imgsz": list(m.imgsz), "precision": m.precision,
                               "boxes": "x1 y1 x2 y2 in original-image pixels", "image_hwc_color": "BGR",
                               "max_batch": self.max_batch}}

    def prepare(self, body: bytes, header_length):
        """Parse, decode and letterbox (runs in a worker thread): (head, blob, letterbox, overrides)."""
        head, tail = split_body(body, header_length)
        img = decode_one(read_inputs(head, tail))
        blob, infos = self.engine.preprocess([img])
        return head, blob, infos[0], overrides_of(head)

    def finish(self, head: dict, raw: np.ndarray, info, overrides: dict):
        det = self.engine.postprocess(raw[None], [info], **overrides)[0]
        outs = {"BOXES": det.boxes.astype(np.float32).reshape(-1, 4), "SCORES": det.scores.astype(np.float32),
                "LABELS": det.class_ids.astype(np.int64)}
        return encode_response(self.name, head, outs)


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
        return {"name": "edgekit", "version": __version__, "extensions": ["binary_tensor_data"]}

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

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(request: Request, name: str, version: str | None = None):
        t0 = time.perf_counter()
        status = 500
        try:
            check(name, version)
            if service.batcher.queue.full():  # refuse before spending CPU on decoding
                raise QueueFull(f"queue full ({service.batcher.queue.maxsize} requests waiting)")
            body = await request.body()
            head, blob, info, ov = await run_in_threadpool(service.prepare, body,
                                                           request.headers.get("inference-header-content-length"))
            fut = service.batcher.submit(blob)
            raw = await asyncio.wrap_future(fut)
            content, headers = await run_in_threadpool(service.finish, head, raw, info, ov)
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
            service.metrics.on_request(status, time.perf_counter() - t0 if status == 200 else None)

    @app.get("/metrics")
    async def metrics():
        body, ctype = service.metrics.render()
        return Response(content=body, media_type=ctype)

    return app
