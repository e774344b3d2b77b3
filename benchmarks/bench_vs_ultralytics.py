"""End-to-end speed of the same OpenVINO models through Ultralytics' predict and through edgekit, interleaved.

    python benchmarks/bench_vs_ultralytics.py --data /work/shared/data/coco128 \
        --weights /work/shared/data/weights/yolov8n_coco.pt \
        --int8 /work/shared/data/weights/yolov8n_int8_openvino_model --rounds 3 --json runs/bench_vs_ul.json

Per model (FP32: Ultralytics' own OpenVINO export of the weights; INT8: the given folder, Ultralytics' own INT8
export) and per round, over the val images of the dataset at batch 1:
  A  Ultralytics  YOLO(folder).predict(source=val_dir, stream=True, batch=1): images/s over the whole pass,
     and per-image latency = time between consecutive results (its loop is sequential: read, preprocess,
     infer, postprocess);
  B  edgekit pipelined (bench.harness.pipeline: Engine.prefetch decode+preprocess threads, OpenVINO
     AsyncInferQueue with PERFORMANCE_HINT THROUGHPUT, ordered postprocess): images/s;
  C  edgekit latency mode (one image at a time, every stage, LATENCY hint): e2e p50.
The images are cut into slices of --chunk; on each slice the order alternates (A B C, then C B A) so that the
noise of a shared CPU falls on all three alike; images/s = images / summed wall time, ratios per round.
Never imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path


def export_fp32(weights: Path, work: Path) -> Path:
    from edgekit._ultralytics import ultralytics

    target = work / f"{weights.stem}_fp32_openvino_model"  # Ultralytics recognises OpenVINO folders by the suffix
    if (target / "metadata.yaml").exists():
        return target
    ul = ultralytics()
    with tempfile.TemporaryDirectory() as tmp:  # Ultralytics writes beside the weights: keep it out of shared/
        local = Path(tmp) / weights.name
        shutil.copy(weights, local)
        out = Path(ul.YOLO(str(local)).export(format="openvino", imgsz=640, batch=1, half=False, verbose=False))
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out, target)
    return target


def ultralytics_pass(model, val_dir: Path) -> dict:
    t0 = last = time.perf_counter()
    lat, dets = [], 0
    for r in model.predict(source=str(val_dir), stream=True, batch=1, verbose=False, device="cpu"):
        now = time.perf_counter()
        lat.append((now - last) * 1e3)
        last = now
        dets += len(r.boxes)
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "lat_ms": lat, "images": len(lat), "detections": dets}


def edgekit_pipelined(runner, files) -> dict:
    from edgekit.bench.harness import pipeline

    t0 = time.perf_counter()
    dets = n = 0
    for d in pipeline(runner, files, batch=1, workers=2):
        dets += len(d)
        n += 1
    return {"wall_s": time.perf_counter() - t0, "images": n, "detections": dets}


def edgekit_latency(engine, files) -> dict:
    from edgekit.bench.harness import latency_mode

    t = latency_mode(engine, files, batch=1, warmup=0, iters=len(files))
    return {"lat_ms": list(t.samples["e2e"]), "images": len(files), "wall_s": sum(t.samples["e2e"]) / 1e3,
            "stages": {k: list(v) for k, v in t.samples.items()}}


def merge(parts: list[dict]) -> dict:
    """Totals over chunks: images/s = images / summed wall time; p50 over all per-image latencies."""
    n = sum(p["images"] for p in parts)
    out = {"images": n, "fps": n / sum(p["wall_s"] for p in parts),
           "detections": sum(p.get("detections", 0) for p in parts)}
    lat = [x for p in parts for x in p.get("lat_ms", [])]
    if lat:
        out["p50_ms"] = statistics.median(lat)
    if parts and "stages" in parts[0]:
        out["stages_p50_ms"] = {k: round(statistics.median([x for p in parts for x in p["stages"][k]]), 2)
                                for k in parts[0]["stages"]}
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="coco128 folder (or its data.yaml); its images/val are used")
    ap.add_argument("--weights", required=True, help="yolov8n .pt (exported to OpenVINO FP32 by Ultralytics)")
    ap.add_argument("--int8", default=None, help="Ultralytics INT8 OpenVINO folder of the same model")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=32, help="images per interleaved slice (A B C on each slice)")
    ap.add_argument("--work", default="runs/bench_vs_ultralytics", help="where the FP32 export is cached")
    ap.add_argument("--json", default=None, help="write all figures here")
    args = ap.parse_args()

    from edgekit._ultralytics import ultralytics
    from edgekit.runtime.concurrency import make_runner
    from edgekit.bench.device import device_info
    from edgekit.runtime.images import list_images
    from edgekit.runtime import Engine

    data = Path(args.data)
    val_dir = (data.parent if data.is_file() else data) / "images" / "val"
    files = list_images(val_dir)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    weights = Path(args.weights)
    models = {"FP32": export_fp32(weights, work)}
    int8 = Path(args.int8) if args.int8 else weights.parent / f"{weights.stem.split('_')[0]}_int8_openvino_model"
    if int8.exists():
        models["INT8"] = int8
    ul = ultralytics()
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "images": len(files),
              "val_dir": str(val_dir), "machine": device_info("cpu", "openvino"), "python": platform.python_version(),
              "models": {}}
    print(f"{len(files)} images from {val_dir}; machine: {report['machine']['cpu']}")

    for tag, folder in models.items():
        yolo = ul.YOLO(str(folder), task="detect")
        engine = Engine(folder, device="cpu", backend="openvino")  # LATENCY hint: latency mode
        runner = make_runner(folder, "cpu", "openvino").open()  # THROUGHPUT hint + AsyncInferQueue
        for _ in yolo.predict(source=str(files[0]), stream=True, batch=1, verbose=False, device="cpu"):
            pass  # Ultralytics' own warm-up happens on its first batch
        edgekit_pipelined(runner, files[:8])
        edgekit_latency(engine, files[:8])
        chunks = [files[i:i + args.chunk] for i in range(0, len(files), args.chunk)]
        lists = []
        for i, ch in enumerate(chunks):  # Ultralytics streams a .txt list of files like a folder (batch 1)
            lists.append(work / f"chunk{i}.txt")
            lists[-1].write_text("\n".join(str(f) for f in ch) + "\n")
        rounds = []
        for r in range(args.rounds):
            acc = {"ul": [], "ek": [], "lat": []}
            for i, ch in enumerate(chunks):  # interleave chunk by chunk: A B C, then C B A
                order = ["ul", "ek", "lat"] if (r + i) % 2 == 0 else ["lat", "ek", "ul"]
                for step in order:
                    if step == "ul":
                        acc["ul"].append(ultralytics_pass(yolo, lists[i]))
                    elif step == "ek":
                        acc["ek"].append(edgekit_pipelined(runner, ch))
                    else:
                        acc["lat"].append(edgekit_latency(engine, ch))
            res = {"ultralytics": merge(acc["ul"]), "edgekit_pipelined": merge(acc["ek"]),
                   "edgekit_latency": merge(acc["lat"])}
            res["throughput_ratio"] = res["edgekit_pipelined"]["fps"] / res["ultralytics"]["fps"]
            res["p50_ratio"] = res["edgekit_latency"]["p50_ms"] / res["ultralytics"]["p50_ms"]
            rounds.append(res)
            print(f"{tag} round {r + 1}: Ultralytics {res['ultralytics']['fps']:.2f} img/s, p50 "
                  f"{res['ultralytics']['p50_ms']:.1f} ms | edgekit pipelined {res['edgekit_pipelined']['fps']:.2f} "
                  f"img/s ({res['throughput_ratio']:.2f}x), latency-mode p50 {res['edgekit_latency']['p50_ms']:.1f} ms "
                  f"({res['p50_ratio']:.2f}x of Ultralytics') | detections UL {res['ultralytics']['detections']} "
                  f"edgekit {res['edgekit_pipelined']['detections']}", flush=True)
        runner.close()
        engine.close()
        report["models"][tag] = {
            "folder": str(folder), "concurrency": runner.describe(), "rounds": rounds,
            "median_throughput_ratio": statistics.median(x["throughput_ratio"] for x in rounds),
            "median_p50_ratio": statistics.median(x["p50_ratio"] for x in rounds),
        }
        m = report["models"][tag]
        print(f"{tag}: median end-to-end throughput ratio edgekit/Ultralytics {m['median_throughput_ratio']:.2f}x; "
              f"median p50 latency ratio {m['median_p50_ratio']:.2f} (below 1 = edgekit faster)", flush=True)
    if args.json:
        from edgekit.io import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
