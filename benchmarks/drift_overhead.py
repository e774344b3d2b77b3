"""What drift tracking costs `edgekit serve`: batch-1 request latency with tracking on and off, interleaved.

    python benchmarks/drift_overhead.py [--imgsz 320] [--rounds 8] [--per-round 40] [--window 64]

The bundled YOLOv8n is exported at --imgsz with the demo val split's drift profile; two servers of that artifact run
side by side on 127.0.0.1, one with drift tracking (default flags, --drift-window N) and one with --no-drift. One
client sends the demo val images (IMAGE, BYTES) one request at a time; rounds alternate which server goes first
(A B, then B A), so the noise of a shared CPU falls on both. Reports p50 / p90 per side over all rounds, the ratio
of the p50s, the per-round p50 ratios (their median and range), the CPU, its flags and the load average before and
after. Never imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from serve_overhead import Server, cpu_line, infer_bytes, latency_round  # noqa: E402


def in_process(model, blobs, window, rounds, per_round) -> dict:
    """Per frame, in process: Engine's decode + predict (e2e), and each piece of work drift tracking adds: image
    statistics, the embedding output (infer_embed vs infer, alternated), tracker.add (window scoring every N/8)."""
    import cv2

    from edgekit.drift import DriftTracker, load_profile
    from edgekit.drift.scores import image_stats
    from edgekit.runtime import Engine

    t = {"e2e": [], "image_stats": [], "infer": [], "infer_embed": [], "tracker_add": []}
    with Engine(model) as eng:
        tracker = DriftTracker(load_profile(model), window)
        for k in range(rounds * per_round):
            data = blobs[k % len(blobs)]
            t0 = time.perf_counter()
            im = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            blob, infos = eng.preprocess([im])
            d = eng.postprocess(eng.infer(blob), infos)[0]
            t["e2e"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            stats = image_stats(im)
            t["image_stats"].append(time.perf_counter() - t0)
            for name in (("infer", "infer_embed") if k % 2 else ("infer_embed", "infer")):
                t0 = time.perf_counter()
                out = getattr(eng, name)(blob)
                t[name].append(time.perf_counter() - t0)
                emb = out[1] if name == "infer_embed" else None
                if emb is not None:
                    keep = emb
            t0 = time.perf_counter()
            tracker.add(keep[0], d.scores, d.class_ids, stats)
            t["tracker_add"].append(time.perf_counter() - t0)
    return t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--imgsz", type=int, default=320)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--per-round", type=int, default=40)
    ap.add_argument("--window", type=int, default=64)
    args = ap.parse_args(argv)

    from edgekit.assets import demo_data, demo_images, demo_weights
    from edgekit.export import export_onnx

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="edgekit-drift-bench-") as tmp:
        model = export_onnx(demo_weights(), tmp, imgsz=args.imgsz, parity_images=False, log=lambda *a: None,
                            profile=demo_data())
        blobs = [p.read_bytes() for p in demo_images()]
        on = Server(model, "--drift-window", str(args.window), "--max-batch", "1")
        off = Server(model, "--no-drift", "--max-batch", "1")
        c_on, c_off = on.client(), off.client()
        sides = {"drift on": lambda d: infer_bytes(c_on, d), "drift off": lambda d: infer_bytes(c_off, d)}
        for fn in sides.values():  # warm-up (and a full first window on the tracking side)
            latency_round(fn, blobs, args.window + 8)
        lat = {k: [] for k in sides}
        ratios = []
        t0 = time.perf_counter()
        for r in range(args.rounds):
            order = list(sides.items())
            this = {}
            for name, fn in (order if r % 2 == 0 else order[::-1]):
                this[name] = latency_round(fn, blobs, args.per_round)
                lat[name] += this[name]
            ratios.append(np.median(this["drift on"]) / np.median(this["drift off"]))
        wall = time.perf_counter() - t0
        with urllib.request.urlopen(f"http://127.0.0.1:{on.port}/v2/models/model/drift", timeout=30) as r:
            verdict = json.loads(r.read())["verdict"]
        on.stop()
        off.stop()
        inproc = in_process(model, blobs, args.window, args.rounds, args.per_round)
    load1 = os.getloadavg()
    p = {k: (float(np.percentile(v, 50)) * 1e3, float(np.percentile(v, 90)) * 1e3) for k, v in lat.items()}
    print(f"CPU: {cpu_line()}")
    print(f"load average before {', '.join(f'{x:.2f}' for x in load0)}; after {', '.join(f'{x:.2f}' for x in load1)}")
    print(f"imgsz {args.imgsz}, window {args.window}, {args.rounds} rounds x {args.per_round} requests per side, "
          f"{wall:.0f} s\n")
    print("| side | requests | p50 ms | p90 ms |\n|---|---|---|---|")
    for k, (a, b) in p.items():
        print(f"| {k} | {len(lat[k])} | {a:.2f} | {b:.2f} |")
    print(f"\np50 on / off: {p['drift on'][0] / p['drift off'][0]:.3f}; per-round p50 ratios: median "
          f"{statistics.median(ratios):.3f}, range {min(ratios):.3f}-{max(ratios):.3f}")
    print(f"verdict after the run (demo val frames): {verdict}")
    med = {k: float(np.median(v)) * 1e3 for k, v in inproc.items()}
    mean_add = float(np.mean(inproc["tracker_add"])) * 1e3
    added = med["image_stats"] + (med["infer_embed"] - med["infer"]) + mean_add
    print(f"\nin process, per frame ({len(inproc['e2e'])} frames; medians, tracker.add as a mean since it scores the "
          f"window every N/8 frames): Engine decode + predict {med['e2e']:.2f} ms; image statistics "
          f"{med['image_stats']:.3f} ms; infer_embed {med['infer_embed']:.2f} vs infer {med['infer']:.2f} ms; "
          f"tracker.add {mean_add:.3f} ms (median {med['tracker_add']:.3f}); added in all {added:.3f} ms = "
          f"{added / med['e2e']:.2%} of the e2e p50")
    return 0


if __name__ == "__main__":
    sys.exit(main())
