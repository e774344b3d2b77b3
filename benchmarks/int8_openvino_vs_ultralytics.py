"""edgekit INT8 OpenVINO vs FP32 and vs Ultralytics' own INT8 OpenVINO export: same calibration images, same eval.

    python benchmarks/int8_openvino_vs_ultralytics.py --weights yolov8n_coco.pt --data coco128/data.yaml \
        --imgsz 640 --out runs/int8_bench

Both INT8 models are calibrated on the data's *train* split (Ultralytics: export(..., split="train", fraction=1.0))
and judged on its val split through edgekit's Engine and `evaluate` (one letterbox, one decode/NMS, one mAP library).
Latency is inference only (Engine.infer on a preprocessed blob), OpenVINO CPU, LATENCY hint, batch 1; the models are
timed interleaved in rounds so that load from other processes hits them alike. Not imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="Ultralytics .pt (e.g. yolov8n_coco.pt)")
    p.add_argument("--data", required=True, help="data.yaml with train and val splits (e.g. coco128)")
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--calib-size", type=int, default=300)
    p.add_argument("--max-map-drop", type=float, default=0.5)
    p.add_argument("--iters", type=int, default=150, help="timed iterations per model")
    p.add_argument("--warmup", type=int, default=20)
    p.add_argument("--rounds", type=int, default=15, help="interleaving rounds (iters are spread over them)")
    p.add_argument("--skip-ultralytics", action="store_true")
    p.add_argument("--timing-only", action="store_true", help="re-time the artifacts of a previous run in --out")
    p.add_argument("--out", default="runs/int8_openvino_bench")
    return p.parse_args()


def ultralytics_int8(weights: Path, data: Path, imgsz: int, out: Path) -> Path:
    """Ultralytics' INT8 OpenVINO export, calibrated on the train split (its default is the val split)."""
    from edgekit._ultralytics import ultralytics

    ul = ultralytics()
    work = out / "ultralytics"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    local = work / weights.name
    shutil.copy2(weights, local)
    t0 = time.perf_counter()
    folder = Path(ul.YOLO(str(local)).export(format="openvino", quantize=8, data=str(data), imgsz=imgsz, batch=1,
                                             split="train", fraction=1.0, verbose=False))
    print(f"ultralytics int8 export: {time.perf_counter() - t0:.0f} s -> {folder}", flush=True)
    return next(folder.glob("*.xml"))


def time_interleaved(models: dict, blob: np.ndarray, iters: int, warmup: int, rounds: int) -> dict:
    """Inference-only latency per model (ms), measured in alternating rounds."""
    from edgekit.bench.timing import summarize

    for eng in models.values():
        for _ in range(warmup):
            eng.infer(blob)
    per_round = max(1, iters // rounds)
    samples = {k: [] for k in models}
    for r in range(rounds):
        keys = list(models)[r % len(models):] + list(models)[:r % len(models)]
        for k in keys:
            eng = models[k]
            for _ in range(per_round):
                t0 = time.perf_counter()
                eng.infer(blob)
                samples[k].append((time.perf_counter() - t0) * 1e3)
    return {k: summarize(v) for k, v in samples.items()}


def main() -> int:
    a = parse()
    from edgekit.eval import evaluate
    from edgekit.bench.device import cpu_info
    from edgekit.data import load_dataset
    from edgekit.export import export_onnx
    from edgekit.quantize import quantize

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    weights, data = Path(a.weights).resolve(), Path(a.data).resolve()
    ds = load_dataset(data)
    res = {"machine": cpu_info(), "args": vars(a)}
    if a.timing_only:
        res = json.loads((out / "results.json").read_text())
        artifacts = res["artifacts"]
        res.setdefault("latency_reruns", []).append(res.get("latency_ms_infer"))
        return timing(res, artifacts, ds, a, out)

    onnx = out / "fp32" / "model.onnx"
    if not onnx.exists():
        export_onnx(weights, onnx.parent, imgsz=a.imgsz, parity_images=False)
    t0 = time.perf_counter()
    q = quantize(onnx, data, backend="openvino", calib_size=a.calib_size, max_map_drop=a.max_map_drop,
                 out_dir=out, log=lambda m: print(m, flush=True))
    res["edgekit"] = {**q, "wall_s": round(time.perf_counter() - t0, 1)}
    res["edgekit"].pop("excluded", None)

    artifacts = {"fp32_openvino": str(onnx), "int8_edgekit": q["artifact"]}
    if not a.skip_ultralytics:
        t0 = time.perf_counter()
        artifacts["int8_ultralytics"] = str(ultralytics_int8(weights, data, a.imgsz, out))
        res["ultralytics_export_s"] = round(time.perf_counter() - t0, 1)

    res["accuracy"] = {"fp32_onnxruntime": {"map50": q["map50_fp32"], "map50_95": q["map50_95_fp32"]}}
    for k in ("int8_edgekit", "int8_ultralytics", "fp32_openvino"):
        if k in artifacts:
            r = evaluate(artifacts[k], ds, split="val", backend="openvino", progress=False)
            res["accuracy"][k] = {"map50": r["map50"], "map50_95": r["map50_95"], "images": r["images"]}
            print(f"{k}: mAP50 {r['map50']:.4f}  mAP50-95 {r['map50_95']:.4f}", flush=True)

    res["artifacts"] = artifacts
    return timing(res, artifacts, ds, a, out)


def timing(res: dict, artifacts: dict, ds, a, out: Path) -> int:
    from edgekit.runtime.images import read_image
    from edgekit.runtime import Engine

    res["timing_args"] = {"iters": a.iters, "warmup": a.warmup, "rounds": a.rounds}
    img = read_image(ds.samples("val")[0].image)
    engines = {k: Engine(p, backend="openvino") for k, p in artifacts.items()}
    blob, _ = engines["fp32_openvino"].preprocess([img])
    lat = time_interleaved(engines, blob, a.iters, a.warmup, a.rounds)
    res["latency_ms_infer"] = lat
    base = lat["fp32_openvino"]["p50"]
    res["speedup_p50_vs_fp32"] = {k: round(base / v["p50"], 3) for k, v in lat.items()}
    for k, v in lat.items():
        print(f"{k}: infer p50 {v['p50']:.1f} ms  p90 {v['p90']:.1f} ms  ({res['speedup_p50_vs_fp32'][k]:.2f}x vs FP32)")
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
