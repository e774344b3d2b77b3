"""The accuracy gate on a non-COCO domain: fine-tune YOLOv8n briefly on DeepPCB, export, quantize with the gate.

    python benchmarks/int8_gate_deeppcb.py --weights yolov8n_coco.pt --data deeppcb/data.yaml --out runs/deeppcb

Shows, per backend, every attempt of the fallback chain (what stayed in float, mAP before/after, drop, verdict).
Not imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path


def parse():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--imgsz", type=int, default=320)
    p.add_argument("--backends", default="openvino,onnxruntime")
    p.add_argument("--max-map-drop", type=float, nargs="+", default=[0.5])
    p.add_argument("--calib-size", type=int, default=300)
    p.add_argument("--out", default="runs/int8_gate_deeppcb")
    return p.parse_args()


def finetune(weights: Path, data: Path, epochs: int, imgsz: int, out: Path) -> Path:
    from edgekit._ultralytics import ultralytics

    best = out / "train" / "weights" / "best.pt"
    if best.exists():
        return best
    ul = ultralytics()
    local = out / weights.name
    shutil.copy2(weights, local)
    t0 = time.perf_counter()
    ul.YOLO(str(local)).train(data=str(data), epochs=epochs, imgsz=imgsz, batch=16, workers=0, device="cpu",
                              plots=False, project=str(out), name="train", exist_ok=True, verbose=False, seed=0)
    print(f"fine-tuned {epochs} epochs at {imgsz} in {time.perf_counter() - t0:.0f} s", flush=True)
    return best


def main() -> int:
    a = parse()
    from edgekit.errors import AccuracyGateError
    from edgekit.export import export_onnx
    from edgekit.quantize import quantize

    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(a.data).resolve()
    t0 = time.perf_counter()
    best = finetune(Path(a.weights).resolve(), data, a.epochs, a.imgsz, out)
    res = {"train_s": round(time.perf_counter() - t0, 1), "runs": []}
    onnx = out / "fp32" / "model.onnx"
    if not onnx.exists():
        export_onnx(best, onnx.parent, imgsz=a.imgsz, parity_images=False)
    for backend in a.backends.split(","):
        for drop in a.max_map_drop:
            t0 = time.perf_counter()
            try:
                r = quantize(onnx, data, backend=backend, calib_size=a.calib_size, max_map_drop=drop,
                             out_dir=out / f"{backend}_{drop:g}", log=lambda m: print(m, flush=True))
            except AccuracyGateError as e:
                r = e.result
            r = {**r, "wall_s": round(time.perf_counter() - t0, 1), "excluded_count": len(r["excluded"])}
            res["runs"].append(r)
            print(json.dumps({k: r[k] for k in ("backend", "max_map_drop", "status", "attempt", "map50_95_fp32",
                                                "map50_95", "drop_points", "excluded_count", "reverted")}), flush=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    print(f"wrote {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
