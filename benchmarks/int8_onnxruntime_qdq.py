"""ONNX Runtime static INT8 (QDQ) vs the FP32 ONNX on this CPU: accuracy drop through the gate, and latency.

    python benchmarks/int8_onnxruntime_qdq.py --onnx runs/int8_bench/fp32/model.onnx --data coco128/data.yaml

ORT's CPU INT8 kernels need VNNI (or ARM dot-product) to beat FP32; without them QDQ is often slower. This script
measures instead of assuming. Inference only (Engine.infer on one preprocessed blob), interleaved rounds.
Not imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from int8_openvino_vs_ultralytics import time_interleaved  # noqa: E402


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--onnx", required=True, help="FP32 model.onnx from 'edgekit export'")
    p.add_argument("--data", required=True)
    p.add_argument("--method", default="auto")
    p.add_argument("--max-map-drop", type=float, default=0.5)
    p.add_argument("--iters", type=int, default=100)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--out", default="runs/int8_onnxruntime")
    a = p.parse_args()
    from edgekit.bench.device import cpu_info
    from edgekit.data import load_dataset
    from edgekit.runtime.images import read_image
    from edgekit.errors import AccuracyGateError
    from edgekit.quantize import quantize
    from edgekit.runtime import Engine

    out = Path(a.out)
    try:
        q = quantize(a.onnx, a.data, backend="onnxruntime", method=a.method, max_map_drop=a.max_map_drop,
                     out_dir=out, log=lambda m: print(m, flush=True))
    except AccuracyGateError as e:
        q = e.result
    ds = load_dataset(a.data)
    engines = {"fp32_onnxruntime": Engine(a.onnx, backend="onnxruntime"),
               "int8_qdq_onnxruntime": Engine(q["artifact"], backend="onnxruntime")}
    blob, _ = engines["fp32_onnxruntime"].preprocess([read_image(ds.samples("val")[0].image)])
    lat = time_interleaved(engines, blob, a.iters, 10, a.rounds)
    q.pop("excluded", None)
    res = {"machine": cpu_info(), "quantize": q, "latency_ms_infer": lat,
           "speedup_p50_vs_fp32": round(lat["fp32_onnxruntime"]["p50"] / lat["int8_qdq_onnxruntime"]["p50"], 3)}
    for k, v in lat.items():
        print(f"{k}: infer p50 {v['p50']:.1f} ms  p90 {v['p90']:.1f} ms")
    print(f"INT8/FP32 speedup (p50): {res['speedup_p50_vs_fp32']:.2f}x; drop {q['drop_points']:+.2f} points, {q['status']}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
