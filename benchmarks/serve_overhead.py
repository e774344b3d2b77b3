"""What `edgekit serve` costs over the in-process Engine: batch-1 latency and 8-client throughput, interleaved.

    python benchmarks/serve_overhead.py                       # bundled YOLOv8n exported at 640, ONNX Runtime CPU
    python benchmarks/serve_overhead.py --model out/model.onnx --rounds 6 --per-round 40

Latency (batch 1, one request at a time, the same encoded images): in-process = decode the bytes + Engine.predict;
served = tritonclient.http infer with the bytes (IMAGE, BYTES) against `edgekit serve` on 127.0.0.1 (default flags),
outputs read back. Rounds alternate the order (A B, then B A) so the noise of a shared CPU falls on both.
Throughput: 8 client threads, each with its own tritonclient connection, against the same server and against a
server with the in-process runner's layout (--workers = its streams, --threads = cores / streams), vs the
in-process throughput mode (edgekit.bench: Engine.prefetch + the backend's concurrent runner), images/s.
Prints a table and writes benchmarks/results/H_serve.md. Never imported by the tests.
"""
from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from itertools import cycle, islice
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
IMAGES = sorted((ROOT / "tests" / "assets" / "coco8" / "images" / "val").glob("*.jpg"))
OUT = ROOT / "benchmarks" / "results" / "H_serve.md"
NOTE = ("The 8 clients run on the same cores as the server: tritonclient's request building and response parsing "
        "(Python threads) take CPU from the server's decode, letterbox and inference, a cost the in-process mode does "
        "not pay; on a separate client machine the served figures would be higher. With a fixed-batch-1 artifact "
        "the server does not batch (max batch 1): its concurrency is --workers.")


def cpu_line() -> str:
    model, flags = platform.processor(), set()
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k.strip() == "model name":
                model = v.strip()
            elif k.strip() == "flags" and not flags:
                flags = set(v.split())
    isa = [x for x in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16") if x in flags]
    return f"{model}, {len(os.sched_getaffinity(0))} usable cores, flags: {' '.join(isa) or 'none of avx2/avx512/amx'}"


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs) * 1e3, q))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, model: Path, *flags):
        import tritonclient.http as th

        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        self.proc = subprocess.Popen([sys.executable, "-m", "edgekit", "serve", str(model), "--port", str(self.port),
                                      *flags], env=env, stderr=subprocess.PIPE, text=True)
        client = th.InferenceServerClient(f"127.0.0.1:{self.port}")
        for _ in range(600):
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.proc.stderr.read()}")
            try:
                if client.is_server_ready():
                    break
            except Exception:
                pass
            time.sleep(0.2)
        else:
            raise SystemExit("server not ready in 120 s")
        self.banner = self.proc.stderr.readline().strip()

    def client(self):
        import tritonclient.http as th

        return th.InferenceServerClient(f"127.0.0.1:{self.port}")

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(60)


def infer_bytes(client, data: bytes):
    import tritonclient.http as th

    i = th.InferInput("IMAGE", [1], "BYTES")
    i.set_data_from_numpy(np.array([data], dtype=object))
    r = client.infer("model", [i])
    return r.as_numpy("BOXES"), r.as_numpy("SCORES"), r.as_numpy("LABELS")


def latency_round(fn, blobs, n) -> list[float]:
    out = []
    for data in islice(cycle(blobs), n):
        t0 = time.perf_counter()
        fn(data)
        out.append(time.perf_counter() - t0)
    return out


def served_throughput(server: Server, blobs, n: int, clients: int) -> float:
    per = n // clients
    barrier = threading.Barrier(clients + 1)

    def work(k):
        c = server.client()
        mine = list(islice(cycle(blobs[k % len(blobs):] + blobs[:k % len(blobs)]), per))
        barrier.wait()
        for d in mine:
            infer_bytes(c, d)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    return per * clients / (time.perf_counter() - t0)


def inproc_throughput(runner, n: int) -> float:
    from edgekit.bench.harness import pipeline

    t0 = time.perf_counter()
    done = sum(1 for _ in pipeline(runner, islice(cycle(IMAGES), n), 1, 2))
    return done / (time.perf_counter() - t0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="an exported artifact (default: bundled YOLOv8n exported at --imgsz)")
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--per-round", type=int, default=40, help="latency requests per side per round")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--throughput-images", type=int, default=96, help="images per throughput measurement")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args(argv)

    from edgekit import Engine
    from edgekit.runtime.concurrency import cores as _cores, make_runner

    tmp = tempfile.TemporaryDirectory(prefix="edgekit-serve-bench-")
    model = Path(args.model) if args.model else None
    if model is None:
        from edgekit.assets import demo_weights
        from edgekit.export import export_onnx

        model = export_onnx(demo_weights(), tmp.name, imgsz=args.imgsz, parity_images=False, log=lambda *a: None)
    blobs = [p.read_bytes() for p in IMAGES]
    load0 = os.getloadavg()

    engine = Engine(model)
    runner = make_runner(model, "cpu", engine.backend_name).open()
    streams = runner.streams
    a = Server(model)
    b = Server(model, "--workers", str(streams), "--threads", str(max(1, _cores() // streams)))
    ca = a.client()

    def local(data):
        engine.predict([cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)])

    def served(data):
        infer_bytes(ca, data)

    for fn in (local, served):  # warm-up
        latency_round(fn, blobs, 10)
    lat = {"in-process": [], "served": []}
    for r in range(args.rounds):
        order = [("in-process", local), ("served", served)]
        for name, fn in (order if r % 2 == 0 else order[::-1]):
            lat[name] += latency_round(fn, blobs, args.per_round)
    thr = {"in-process throughput mode": [], "served, workers 1": [], f"served, workers {streams}": []}
    inproc_throughput(runner, 2 * streams)
    for r in range(max(2, args.rounds // 2)):
        sides = [("in-process throughput mode", lambda: inproc_throughput(runner, args.throughput_images)),
                 ("served, workers 1", lambda: served_throughput(a, blobs, args.throughput_images, args.clients)),
                 (f"served, workers {streams}",
                  lambda: served_throughput(b, blobs, args.throughput_images, args.clients))]
        for name, fn in (sides if r % 2 == 0 else sides[::-1]):
            thr[name].append(fn())
    banner_a, banner_b = a.banner, b.banner
    rc = (a.stop(), b.stop())
    runner.close()
    engine.close()
    load1 = os.getloadavg()

    p = {k: (pct(v, 50), pct(v, 99), len(v)) for k, v in lat.items()}
    ov50 = p["served"][0] / p["in-process"][0] - 1
    ov99 = p["served"][1] / p["in-process"][1] - 1
    ref = statistics.median(thr["in-process throughput mode"])
    lines = [
        "# H: `edgekit serve` overhead (KServe v2 over HTTP, tritonclient) vs in-process Engine",
        "",
        f"- Command: `python benchmarks/serve_overhead.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
        f"- Machine: {cpu_line()}; Python {platform.python_version()}",
        f"- **Shared machine**: other helpers' jobs ran at the same time (load average {load0[0]:.1f} at start, "
        f"{load1[0]:.1f} at end, on {len(os.sched_getaffinity(0))} cores); the two sides are interleaved round by "
        f"round so that the noise falls on both, but absolute figures are noisy.",
        f"- Artifact: {model.name} ({engine.meta.imgsz[0]}x{engine.meta.imgsz[1]}, {engine.backend_name} CPU, fixed "
        f"batch {engine.backend.fixed_batch}); images: the {len(IMAGES)} coco8 val JPEGs, cycled, sent encoded.",
        f"- Server (latency, throughput): `{banner_a}`; second server for throughput: `{banner_b}`; "
        f"SIGTERM exit codes {rc}.",
        "",
        "## Batch-1 latency, one request at a time (ms, end to end from the encoded image)",
        "",
        "| path | requests | p50 | p99 |",
        "|---|---:|---:|---:|",
        *[f"| {k} | {n} | {p50:.2f} | {p99:.2f} |" for k, (p50, p99, n) in p.items()],
        f"| **overhead** | | **{ov50:+.1%}** ({p['served'][0] - p['in-process'][0]:+.2f} ms) | "
        f"**{ov99:+.1%}** ({p['served'][1] - p['in-process'][1]:+.2f} ms) |",
        "",
        f"## Throughput, {args.clients} concurrent clients (images/s, median of {len(thr['served, workers 1'])} "
        f"interleaved rounds of {args.throughput_images} images)",
        "",
        "| path | images/s | vs in-process | rounds |",
        "|---|---:|---:|---|",
        *[f"| {k} | {statistics.median(v):.1f} | {statistics.median(v) / ref:.2f}x | "
          f"{', '.join(f'{x:.1f}' for x in v)} |" for k, v in thr.items()],
        "",
        f"In-process throughput mode: {runner.describe()} (edgekit.runtime.concurrency), batch 1, decode and letterbox "
        f"in Engine.prefetch threads. Served: decode + letterbox in the server's request threads, inference in its "
        f"micro-batcher's worker threads, postprocess in request threads; HTTP and (de)serialization on top.",
        "",
        NOTE,
        "",
    ]
    text = "\n".join(lines)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
