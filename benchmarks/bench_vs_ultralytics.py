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

Both sides run at the same executed precision (--precision): `f32` compiles Ultralytics' model with
INFERENCE_PRECISION_HINT f32 (OpenVINO would otherwise run an FP32 IR in bf16 on a CPU with AVX512_BF16/AMX) against
edgekit's default (FP32 executes f32); `bf16` is Ultralytics' default compile against edgekit's precision="bf16"
(skipped where OpenVINO's default is not bf16). The precision each side's compiled model reports is read back and
printed, and the detection counts of the two sides must match.
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
from contextlib import contextmanager
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


@contextmanager
def ultralytics_compile(hint: str | None):
    """While Ultralytics loads its OpenVINO model: add INFERENCE_PRECISION_HINT `hint` to its compile config (None:
    its own default); yields the list of models it compiled, to read back what they execute."""
    import openvino as ov

    original = ov.Core.compile_model
    compiled = []

    def compile_model(self, *args, **kwargs):
        if hint:
            kwargs["config"] = {**(kwargs.get("config") or {}), "INFERENCE_PRECISION_HINT": hint}
        m = original(self, *args, **kwargs)
        compiled.append(m)
        return m

    ov.Core.compile_model = compile_model
    try:
        yield compiled
    finally:
        ov.Core.compile_model = original


def ultralytics_pass(model, val_dir: Path, speeds: bool = False) -> dict:
    """One predict pass at batch 1; speeds: also Ultralytics' own per-image inference time (r.speed)."""
    t0 = last = time.perf_counter()
    lat, infer, dets = [], [], 0
    for r in model.predict(source=str(val_dir), stream=True, batch=1, verbose=False, device="cpu"):
        now = time.perf_counter()
        lat.append((now - last) * 1e3)
        last = now
        dets += len(r.boxes)
        infer.append(r.speed["inference"])
    wall = time.perf_counter() - t0
    out = {"wall_s": wall, "lat_ms": lat, "images": len(lat), "detections": dets}
    return {**out, "infer_ms": infer} if speeds else out


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
    ap.add_argument("--int8", default=None,
                    help="Ultralytics INT8 OpenVINO folder of the same model (default: WEIGHTS' "
                         "folder/<model>_int8_openvino_model if present; 'none': skip)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=32, help="images per interleaved slice (A B C on each slice)")
    ap.add_argument("--work", default="runs/bench_vs_ultralytics", help="where the FP32 export is cached")
    ap.add_argument("--json", default=None, help="write all figures here")
    ap.add_argument("--precision", default="f32,bf16",
                    help="executed precisions to compare at, comma-separated: f32 (Ultralytics compiled with "
                         "INFERENCE_PRECISION_HINT f32 vs edgekit's default) and/or bf16 (Ultralytics' default vs "
                         "edgekit precision='bf16'); default f32,bf16")
    args = ap.parse_args()
    precisions = [p.strip() for p in args.precision.split(",") if p.strip()]
    if not precisions or set(precisions) - {"f32", "bf16"}:
        ap.error(f"--precision: expected f32, bf16 or f32,bf16, got '{args.precision}'")

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
    if int8.exists() and args.int8 != "none":
        models["INT8"] = int8
    ul = ultralytics()
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "images": len(files),
              "val_dir": str(val_dir), "machine": device_info("cpu", "openvino"), "python": platform.python_version(),
              "models": {}}
    print(f"{len(files)} images from {val_dir}; machine: {report['machine']['cpu']}")

    report["cpu_flags"] = cpu_flags()
    print(f"CPU flags: {' '.join(report['cpu_flags']) or 'none of interest'}")
    for (tag, folder), prec in [(m, p) for m in models.items() for p in precisions]:
        from edgekit.runtime.backends.openvino import executed_precision

        yolo = ul.YOLO(str(folder), task="detect")
        with ultralytics_compile("f32" if prec == "f32" else None) as ul_compiled:
            for _ in yolo.predict(source=str(files[0]), stream=True, batch=1, verbose=False, device="cpu"):
                pass  # Ultralytics loads and compiles its model on its first batch, and warms up
        ul_exec = executed_precision(ul_compiled[-1]) if ul_compiled else None
        if prec == "bf16" and ul_exec != "bf16":
            print(f"{tag} bf16: skipped, OpenVINO's default here executes {ul_exec}, not bf16", flush=True)
            continue
        opts = {"precision": "bf16"} if prec == "bf16" else {}
        engine = Engine(folder, device="cpu", backend="openvino", **opts)  # LATENCY hint: latency mode
        runner = make_runner(folder, "cpu", "openvino", **opts).open()  # THROUGHPUT hint + AsyncInferQueue
        ek_exec = float_part(engine.precision_executed)
        ek_runner_exec = float_part(runner.engines[0].precision_executed) if getattr(runner, "engines", None) else None
        print(f"{tag} at {prec}: executed precision Ultralytics {ul_exec}, edgekit latency {ek_exec}, "
              f"edgekit pipelined {ek_runner_exec or ek_exec}", flush=True)
        if ul_exec != ek_exec or (ek_runner_exec and ek_runner_exec != ek_exec):
            print(f"{tag} at {prec}: the two sides do not execute the same precision; skipped", flush=True)
            runner.close()
            engine.close()
            continue
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
            res["same_detections"] = res["ultralytics"]["detections"] == res["edgekit_pipelined"]["detections"]
            print(f"{tag} {prec} round {r + 1}: Ultralytics {res['ultralytics']['fps']:.2f} img/s, p50 "
                  f"{res['ultralytics']['p50_ms']:.1f} ms | edgekit pipelined {res['edgekit_pipelined']['fps']:.2f} "
                  f"img/s ({res['throughput_ratio']:.2f}x), latency-mode p50 {res['edgekit_latency']['p50_ms']:.1f} ms "
                  f"({res['p50_ratio']:.2f}x of Ultralytics') | detections UL {res['ultralytics']['detections']} "
                  f"edgekit {res['edgekit_pipelined']['detections']}{'' if res['same_detections'] else '  DIFFERENT'}",
                  flush=True)
        runner.close()
        engine.close()
        report["models"][f"{tag} {prec}"] = {
            "folder": str(folder), "precision": prec, "executed_ultralytics": ul_exec, "executed_edgekit": ek_exec,
            "same_detections": all(x["same_detections"] for x in rounds),
            "concurrency": runner.describe(), "rounds": rounds,
            "median_throughput_ratio": statistics.median(x["throughput_ratio"] for x in rounds),
            "median_p50_ratio": statistics.median(x["p50_ratio"] for x in rounds),
        }
        m = report["models"][f"{tag} {prec}"]
        print(f"{tag} {prec} (executed: Ultralytics {ul_exec}, edgekit {ek_exec}; detections "
              f"{'match' if m['same_detections'] else 'DIFFER'}): median end-to-end throughput ratio "
              f"edgekit/Ultralytics {m['median_throughput_ratio']:.2f}x; "
              f"median p50 latency ratio {m['median_p50_ratio']:.2f} (below 1 = edgekit faster)", flush=True)
    if args.json:
        from edgekit.io import atomic_write_json

        atomic_write_json(args.json, report)
    return 0


def float_part(executed: str | None) -> str | None:
    """'int8+bf16' -> 'bf16': the precision the float layers execute in."""
    return executed.split("+")[-1] if executed else None


def cpu_flags() -> list[str]:
    """The ISA flags that decide OpenVINO's CPU kernels, from /proc/cpuinfo."""
    wanted = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16",
              "amx_tile", "amx_bf16", "amx_int8", "amx_fp16")
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [f for f in wanted if f in flags]


if __name__ == "__main__":
    sys.exit(main())
