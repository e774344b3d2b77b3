"""mAP of the same ONNX and OpenVINO files through edgekit eval and through Ultralytics' val, side by side.

    python benchmarks/eval_vs_ultralytics.py --data ../shared/data/coco128/data.yaml \
        --weights ../shared/data/weights/yolov8n_coco.pt --imgsz 640 -o runs/bench_eval
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--imgsz", type=int, default=640)
    ap.add_argument("-o", "--output", default="runs/bench_eval")
    args = ap.parse_args()

    from edgekit._ultralytics import ultralytics
    from edgekit.eval import evaluate
    from edgekit.data import load_dataset
    from edgekit.export import export_onnx

    ul = ultralytics()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(args.weights, out / "onnx", imgsz=args.imgsz)
    with tempfile.TemporaryDirectory() as tmp:  # Ultralytics writes its export beside the weights
        local = Path(tmp) / Path(args.weights).name
        shutil.copy(args.weights, local)
        ov_dir = Path(ul.YOLO(str(local)).export(format="openvino", imgsz=args.imgsz, batch=1, verbose=False))
        target = out / "yolov8n_fp32_openvino_model"  # Ultralytics recognises OpenVINO folders by this suffix
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(ov_dir, target)
    data_abs = load_dataset(args.data).to_ultralytics_yaml(out / "data_abs.yaml")
    rows = []
    for name, artifact, backend in (("ONNX (ORT CPU)", onnx_path, "onnxruntime"),
                                    ("OpenVINO FP32 IR (Ultralytics export)", target, "openvino")):
        t = time.perf_counter()
        ek = evaluate(artifact, args.data, backend=backend)
        t_ek = time.perf_counter() - t
        t = time.perf_counter()
        r = ul.YOLO(str(artifact), task="detect").val(data=str(data_abs), imgsz=args.imgsz, batch=1, plots=False,
                                                       verbose=False, device="cpu", project=str(out / "ul_val"))
        t_ul = time.perf_counter() - t
        rows.append({"artifact": name, "path": str(artifact), "images": ek["images"],
                     "edgekit_map50": ek["map50"], "edgekit_map50_95": ek["map50_95"],
                     "ultralytics_map50": round(float(r.box.map50), 5), "ultralytics_map50_95": round(float(r.box.map), 5),
                     "diff_map50_95": round(ek["map50_95"] - float(r.box.map), 5), "edgekit_s": round(t_ek, 1),
                     "ultralytics_s": round(t_ul, 1)})
    print("\n| artifact | images | edgekit mAP50 | edgekit mAP50-95 | Ultralytics mAP50 | Ultralytics mAP50-95 | diff 50-95 |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['artifact']} | {r['images']} | {r['edgekit_map50']:.4f} | {r['edgekit_map50_95']:.4f} | "
              f"{r['ultralytics_map50']:.4f} | {r['ultralytics_map50_95']:.4f} | {r['diff_map50_95']:+.4f} |")
    (out / "eval_vs_ultralytics.json").write_text(json.dumps(rows, indent=2))
    ok = all(abs(r["diff_map50_95"]) <= 0.005 for r in rows)
    print("within 0.005 mAP50-95:", ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
