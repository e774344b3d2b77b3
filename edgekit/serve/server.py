"""Run the v2 app under uvicorn: load the engines first, bind loopback by default, stop gracefully on SIGTERM."""
from __future__ import annotations

import signal
import sys
from pathlib import Path

from .._imports import require
from ..drift.tracker import DEFAULT_WINDOW
from ..errors import EdgekitError


class ServeError(EdgekitError):
    """The server could not start (port taken, bad address)."""


def model_name(artifact) -> str:
    """model.onnx -> 'model'; an OpenVINO folder -> its folder name."""
    p = Path(artifact)
    return p.name if p.is_dir() else p.stem


def build_service(artifact, name: str | None = None, device: str = "cpu", backend: str | None = None,
                  workers: int = 1, max_batch: int = 8, max_delay_ms: float = 2.0, max_queue: int = 64,
                  allow_failed: bool = False, max_body_mb: float | None = None, max_pixels: int | None = None,
                  drift_window: int | None = DEFAULT_WINDOW, frames=None, **engine_options):
    """One Engine per inference worker (a backend need not be thread-safe), and the Service around them.

    drift_window: frames per rolling drift window (None: drift tracking off); frames: a FrameSaver or None.
    """
    from ..runtime import Engine
    from .app import Service

    engines = [Engine(artifact, device=device, backend=backend, allow_failed=allow_failed, **engine_options)
               for _ in range(max(1, workers))]
    limits = {k: v for k, v in (("max_body_mb", max_body_mb), ("max_pixels", max_pixels)) if v is not None}
    drift = None
    if drift_window:
        from .drift import Drift

        drift = Drift(engines[0], drift_window)
    return Service(name or model_name(artifact), engines, max_batch, max_delay_ms / 1000.0, max_queue, **limits,
                   drift=drift, frames=frames if drift is not None and drift.tracker is not None else None)


def serve(artifact, host: str = "127.0.0.1", port: int = 8000, graceful_s: float = 30.0, log=None, **kw) -> int:
    """Serve until SIGTERM/SIGINT; in-flight and queued requests finish first (up to graceful_s). Returns 0."""
    for mod in ("fastapi", "uvicorn", "prometheus_client"):
        require(mod, "edgekit serve")
    import uvicorn

    from .app import create_app

    service = build_service(artifact, **kw)
    app = create_app(service)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False,
                            timeout_graceful_shutdown=graceful_s, lifespan="on")
    server = uvicorn.Server(config)
    e = service.engine
    (log or _stderr)(f"serving '{service.name}' ({e.path}, {e.backend_name} {e.device}, imgsz {e.meta.imgsz[0]}x"
                     f"{e.meta.imgsz[1]}, max batch {service.max_batch}) on http://{host}:{port}/v2/models/{service.name}")
    if service.drift is not None:
        t = service.drift.tracker
        (log or _stderr)(f"drift: {service.drift.reason}" if t is None else
                         f"drift: windows of {t.window} frames against the profile of {t.profile.images} images "
                         f"({'embedding, ' if t.ref.emb is not None else 'no embedding: '}confidences, classes, "
                         f"image statistics); GET /v2/models/{service.name}/drift")
    # uvicorn handles SIGTERM (graceful shutdown), then re-raises it to the handler found at start: make that
    # handler a no-op so a requested stop exits 0 rather than 143
    previous = signal.signal(signal.SIGTERM, lambda *a: None)
    try:
        server.run()
    except SystemExit:  # uvicorn exits when it cannot bind
        raise ServeError(f"cannot listen on {host}:{port} (address in use or not allowed)") from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        for eng in service.engines:
            eng.close()
    if not server.started:
        raise ServeError(f"server on {host}:{port} did not start")
    return 0


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)
