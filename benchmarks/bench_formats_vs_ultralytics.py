"""edgekit's NCNN, LiteRT and ExecuTorch artifacts next to Ultralytics' own exports of the same weights, interleaved.

    python benchmarks/bench_formats_vs_ultralytics.py --data /work/shared/data/coco128 \
        --weights /work/shared/data/weights/yolov8n_coco.pt --rounds 3 --images 64 --chunk 16 \
        --work runs/bench_formats --json benchmarks/results/N_vs_ultralytics.json [--litert-pkgs /work/litert-pkgs]

Artifacts (cached in --work; a rerun reuses them):
  edgekit      `edgekit export` at 640, then Backend.build per backend x precision (INT8 calibrated on --calib train
               images through edgekit's letterbox);
  Ultralytics  YOLO(weights).export(format=ncnn|litert|executorch, imgsz=640[, half=True]) run offline (no downloads,
               no auto-install: edgekit._ultralytics); a format whose export fails is reported blocked with the reason.
Accuracy (coco128 val, all images): `edgekit eval` of every artifact; Ultralytics' own val of its artifacts; and
`edgekit eval` of Ultralytics' artifacts where edgekit loads them, so both sides are compared with one metric.
Speed: for each pair (edgekit's artifact, Ultralytics' export of the same format and weight precision), the first
--images val images are cut into slices of --chunk; on each slice the order alternates (Ultralytics then edgekit,
then the reverse) so the noise of a shared CPU falls on both alike. Both run one image at a time, sequentially,
decode to boxes, same conf/iou/max_det, same threads (--ncnn-threads N sets every ncnn net's OpenMP threads on both
sides; LiteRT: the Interpreter threads Ultralytics uses, its NUM_THREADS, on both; the rest at their default):
  A  Ultralytics  YOLO(export).predict(stream=True, batch=1): per-image wall time between results, and its own
     r.speed["inference"];
  B  edgekit      Engine in latency mode (bench.harness.latency_mode): every stage timed, e2e per image.
The timing runs before the accuracy passes (with the artifacts cached, first in the process). End-to-end FPS = images / summed wall time per round; the ratio edgekit / Ultralytics is taken per round, then the
median over rounds. edgekit-only artifacts (no Ultralytics counterpart) are timed in the same slices.
Never imported by the tests.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_ultralytics import cpu_flags, edgekit_latency, merge, ultralytics_pass  # noqa: E402

EDGEKIT = [("ncnn", "fp32"), ("ncnn", "fp16"), ("litert", "fp32"), ("litert", "fp16"), ("litert", "int8-dynamic"),
           ("litert", "int8"), ("executorch", "fp32"), ("executorch", "int8")]
# Ultralytics' exports: (format, weight precision) -> export kwargs. ncnn half=True writes fp16 weights; LiteRT
# (litert-torch) exports FP32, quantize="w8a32" (dynamic-range INT8 weights) and quantize=8 (static INT8, calibrated on
# the `data=` split: DATA is replaced by the dataset's yaml, 64 of coco128's 128 train images as edgekit's --calib),
# and no FP16 file (its FP32 model runs as FP16 on a GPU delegate); ExecuTorch exports FP32 only.
ULTRALYTICS = {("ncnn", "fp32"): {}, ("ncnn", "fp16"): {"half": True}, ("litert", "fp32"): {},
               ("litert", "int8-dynamic"): {"quantize": "w8a32"},
               ("litert", "int8"): {"quantize": 8, "data": "DATA", "split": "train", "fraction": 0.5},
               ("executorch", "fp32"): {}}
SUFFIX = {"ncnn": "_ncnn_model", "executorch": "_executorch_model", "litert": ".tflite"}


def artifact_mb(path: Path) -> float:
    """Size of the model files (a folder: every file in it but metadata; an ncnn .param counts its .bin)."""
    path = Path(path)
    if path.is_dir():
        files = [p for p in path.rglob("*") if p.is_file() and p.suffix not in (".yaml", ".json", ".py")]
    else:
        files = [path] + ([path.with_suffix(".bin")] if path.suffix == ".param" else [])
    return round(sum(p.stat().st_size for p in files) / 1e6, 2)


def build_edgekit(weights: Path, data: str, work: Path, calib_size: int, log) -> dict:
    """(backend, precision) -> artifact path (or the error) for every EDGEKIT row, built once into work/edgekit."""
    from edgekit.data import load_dataset
    from edgekit.data.calibration import calibration_set
    from edgekit.export import export_onnx
    from edgekit.runtime.backends import get_backend

    onnx = work / "edgekit" / "onnx" / "model.onnx"
    if not onnx.exists():
        onnx = export_onnx(weights, onnx.parent, imgsz=640, log=log)
    calib = None
    out = {}
    for backend, prec in EDGEKIT:
        cls = get_backend(backend)
        folder = work / "edgekit" / f"{backend}_{prec}"
        hits = [p for p in folder.glob("model.*") if p.suffix in cls.suffixes] if folder.is_dir() else []
        if hits:
            out[backend, prec] = hits[0]
            continue
        if prec in cls.calibrated and calib is None:
            calib = calibration_set(load_dataset(data), (640, 640), size=calib_size, force=True)
        t = time.perf_counter()
        try:
            out[backend, prec] = cls.build(onnx, prec, folder, calib=calib if prec in cls.calibrated else None,
                                           checkpoint=weights, log=log)
            log(f"edgekit {backend} {prec}: built in {time.perf_counter() - t:.0f} s")
        except Exception as e:  # reported in the table, the other rows still run
            out[backend, prec] = f"{type(e).__name__}: {e}"
            log(f"edgekit {backend} {prec}: build failed: {out[backend, prec]}")
    return out


def export_ultralytics(weights: Path, work: Path, log, data: str, litert_pkgs: str | None = None) -> dict:
    """(format, precision) -> Ultralytics' export (or why it failed), exported once into work/ultralytics.

    LiteRT: litert-torch (with jax, transformers, ...) is not in edgekit's environment; with `litert_pkgs` (a folder
    from `pip install --target DIR`) that one export runs in a subprocess with DIR on its PYTHONPATH, offline too."""
    from edgekit._ultralytics import ultralytics

    ul = ultralytics()
    out = {}
    for (fmt, prec), kwargs in ULTRALYTICS.items():
        target = work / "ultralytics" / f"{weights.stem}_{prec}{SUFFIX[fmt]}"  # Ultralytics reads the suffix
        if target.exists():
            out[fmt, prec] = target
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if kwargs.get("data") == "DATA":  # calibration through a view of the dataset: its caches land in the view
            from edgekit.data import load_dataset

            kwargs = {**kwargs, "data": str(load_dataset(data).to_ultralytics_yaml(work / "data_calib.yaml"))}
        with tempfile.TemporaryDirectory() as tmp:  # Ultralytics writes beside the weights: keep it out of shared/
            local = Path(tmp) / weights.name
            shutil.copy(weights, local)
            try:
                if fmt == "litert" and litert_pkgs:
                    made = export_isolated(local, fmt, kwargs, litert_pkgs)
                else:
                    made = Path(ul.YOLO(str(local)).export(format=fmt, imgsz=640, batch=1, verbose=False, **kwargs))
            except BaseException as e:  # SystemExit/ModuleNotFoundError when a converter is missing
                out[fmt, prec] = f"{type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}"
                log(f"Ultralytics {fmt} {prec}: export failed: {out[fmt, prec]}")
                continue
            (shutil.copytree if made.is_dir() else shutil.copy2)(made, target)
        out[fmt, prec] = target
        log(f"Ultralytics {fmt} {prec}: exported {target.name}")
    return out


ISOLATED = """import json, sys
from edgekit._ultralytics import ultralytics
import torch, numpy
assert torch.__file__.startswith(sys.argv[4]) and numpy.__file__.startswith(sys.argv[4]), (torch.__file__, numpy.__file__)
path = ultralytics().YOLO(sys.argv[1]).export(format=sys.argv[2], imgsz=640, batch=1, verbose=False,
                                             **json.loads(sys.argv[3]))
print("EXPORTED", path)
"""


def export_isolated(weights: Path, fmt: str, kwargs: dict, pkgs: str) -> Path:
    """Ultralytics' export in a subprocess whose PYTHONPATH adds `pkgs` after edgekit's own paths (nothing there
    may replace torch or numpy: the script checks both still come from this environment), offline."""
    import subprocess
    import sysconfig

    shadow = [n for n in ("torch", "numpy", "ultralytics") if (Path(pkgs) / n).exists()]
    if shadow:
        raise RuntimeError(f"{pkgs} holds {', '.join(shadow)}: it would shadow this environment's; remove them")
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH"), pkgs) if p),
           "YOLO_OFFLINE": "1", "YOLO_AUTOINSTALL": "False", "HTTPS_PROXY": "http://127.0.0.1:9",
           "HTTP_PROXY": "http://127.0.0.1:9"}  # any download fails at once
    res = subprocess.run([sys.executable, "-c", ISOLATED, str(weights), fmt, json.dumps(kwargs),
                          sysconfig.get_paths()["purelib"]], env=env, capture_output=True, text=True)
    made = [ln.split(" ", 1)[1] for ln in res.stdout.splitlines() if ln.startswith("EXPORTED ")]
    if res.returncode != 0 or not made:
        tail = [ln for ln in (res.stderr + res.stdout).strip().splitlines() if ln.strip()][-3:]
        raise RuntimeError(f"isolated export exited {res.returncode}: {' | '.join(tail)}")
    return Path(made[-1])


@contextmanager
def ncnn_threads(n: int | None):
    """While Ultralytics (and edgekit) create ncnn nets: num_threads n on each (None: ncnn's default, its physical
    cores); Ultralytics' NCNN backend has no thread setting of its own."""
    if not n:
        yield
        return
    import ncnn

    original = ncnn.Net

    class Net(original):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.opt.num_threads = n

    ncnn.Net = Net
    try:
        yield
    finally:
        ncnn.Net = original


def engine_options(backend: str, threads: int | None) -> dict:
    """edgekit's Engine options: the same ncnn threads as Ultralytics' nets (ncnn_threads); for LiteRT the threads
    Ultralytics gives its Interpreter (its NUM_THREADS: cores - 1, 1 here); nothing else."""
    if backend == "litert":
        from edgekit._ultralytics import ultralytics

        ultralytics()
        from ultralytics.utils import NUM_THREADS

        return {"threads": NUM_THREADS}
    return {"threads": threads} if backend == "ncnn" and threads else {}


def accuracy(ek: dict, ul: dict, data: str, work: Path, log, threads: int | None) -> dict:
    """mAP50-95 and mAP50 of every artifact: edgekit eval (both sides' artifacts) and Ultralytics val (its own)."""
    from edgekit._ultralytics import ultralytics
    from edgekit.data import load_dataset
    from edgekit.eval import evaluate
    from edgekit.runtime import Engine

    cache = work / "accuracy.json"  # per artifact, reused by a rerun (delete it after rebuilding an artifact)
    res = json.loads(cache.read_text()) if cache.exists() else {}
    data_abs = load_dataset(data).to_ultralytics_yaml(work / "data_abs.yaml")
    for side, arts in (("edgekit", ek), ("ultralytics", ul)):
        for (backend, prec), path in arts.items():
            if not isinstance(path, Path):
                continue
            if f"{side} {backend} {prec}" in res:
                continue
            row = res.setdefault(f"{side} {backend} {prec}", {})
            try:
                engine = Engine(path, device="cpu", backend=backend, **engine_options(backend, threads))
                r = evaluate(path, data, backend=backend, progress=False, resamples=200, engine=engine)
                engine.close()
                row.update(edgekit_map50_95=r["map50_95"], edgekit_map50=r["map50"], images=r["images"],
                           precision_executed=r.get("precision_executed"))
            except Exception as e:
                row["edgekit_eval_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            if side == "ultralytics":
                try:
                    v = ultralytics().YOLO(str(path), task="detect").val(
                        data=str(data_abs), imgsz=640, batch=1, plots=False, verbose=False, device="cpu",
                        project=str(work / "ul_val"), name=f"{backend}_{prec}", exist_ok=True)
                    row.update(ultralytics_map50_95=round(float(v.box.map), 5),
                               ultralytics_map50=round(float(v.box.map50), 5))
                except Exception as e:
                    row["ultralytics_val_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            log(f"accuracy {side} {backend} {prec}: {row}")
            cache.write_text(json.dumps(res, indent=1))
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="coco128 folder or its data.yaml (val: accuracy and timing)")
    ap.add_argument("--weights", required=True, help="yolov8n COCO .pt")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--images", type=int, default=64, help="val images timed per round (the first N)")
    ap.add_argument("--chunk", type=int, default=16, help="images per interleaved slice")
    ap.add_argument("--calib", type=int, default=64, help="train images to calibrate INT8 on")
    ap.add_argument("--work", default="runs/bench_formats", help="where the artifacts are built and cached")
    ap.add_argument("--ncnn-threads", type=int, default=0,
                    help="OpenMP threads of every ncnn net, both sides (default 0: ncnn's own, its physical cores)")
    ap.add_argument("--only", default=None, help="time only these rows, e.g. 'ncnn fp32,executorch fp32'")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--litert-pkgs", default=None,
                    help="folder of `pip install --target DIR litert-torch` (its dependencies the env lacks): "
                         "Ultralytics' LiteRT export runs in a subprocess with it on PYTHONPATH")
    ap.add_argument("--json", default=None, help="write all figures here")
    args = ap.parse_args()

    from edgekit.bench.device import device_info
    from edgekit.runtime.images import list_images

    def log(msg):
        print(msg, flush=True)

    data = Path(args.data)
    data_yaml = str(data / "data.yaml" if data.is_dir() else data)
    val_dir = (data if data.is_dir() else data.parent) / "images" / "val"
    files = list_images(val_dir)[: args.images]
    work = Path(args.work).resolve()
    work.mkdir(parents=True, exist_ok=True)
    weights = Path(args.weights).resolve()
    ek = build_edgekit(weights, data_yaml, work, args.calib, log)
    ul_arts = export_ultralytics(weights, work, log, data_yaml, args.litert_pkgs)
    report = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "images_timed": len(files),
              "machine": device_info("cpu", "ncnn"), "cpu_flags": cpu_flags(), "python": platform.python_version(),
              "load_avg_start": os.getloadavg(), "versions": versions(),
              "artifacts": {f"edgekit {b} {p}": {"path": str(v), "mb": artifact_mb(v)} if isinstance(v, Path)
                            else {"error": v} for (b, p), v in ek.items()}}
    report["artifacts"].update({f"ultralytics {b} {p}": {"path": str(v), "mb": artifact_mb(v)}
                                if isinstance(v, Path) else {"error": v} for (b, p), v in ul_arts.items()})
    log(f"CPU flags: {' '.join(report['cpu_flags'])}; load average {report['load_avg_start']}")
    report["ncnn_threads"] = args.ncnn_threads or "ncnn default"
    report["litert_threads"] = engine_options("litert", None)["threads"]
    if args.litert_pkgs:
        from importlib.metadata import distributions

        report["litert_pkgs"] = {"path": str(Path(args.litert_pkgs).resolve()), "versions": {
            d.metadata["Name"]: d.version for d in distributions(path=[str(args.litert_pkgs)])}}
    with ncnn_threads(args.ncnn_threads):  # timed first, before the evals have loaded anything else
        time_all(args, ek, ul_arts, files, work, report, log)
        if not args.skip_accuracy:
            report["accuracy"] = accuracy(ek, ul_arts, data_yaml, work, log, args.ncnn_threads)
    report["load_avg_end"] = os.getloadavg()
    if args.json:
        from edgekit.io import atomic_write_json

        atomic_write_json(args.json, report)
    print_table(report)
    return 0


def time_all(args, ek: dict, ul_arts: dict, files: list, work: Path, report: dict, log) -> None:
    """The interleaved timing of every built edgekit artifact, next to Ultralytics' export of its format."""
    from edgekit._ultralytics import ultralytics
    from edgekit.runtime import Engine


    ul = ultralytics()
    chunks = [files[i:i + args.chunk] for i in range(0, len(files), args.chunk)]
    lists = []
    for i, ch in enumerate(chunks):  # Ultralytics streams a .txt list of files like a folder (batch 1)
        lists.append(work / f"chunk{i}.txt")
        lists[-1].write_text("\n".join(str(f) for f in ch) + "\n")
    report["speed"] = {}
    for (backend, prec), path in ek.items():
        if not isinstance(path, Path) or (args.only and f"{backend} {prec}" not in args.only.split(",")):
            continue
        other = ul_arts.get((backend, prec))
        yolo = ul.YOLO(str(other), task="detect") if isinstance(other, Path) else None
        engine = Engine(path, device="cpu", backend=backend, **engine_options(backend, args.ncnn_threads))
        if yolo is not None:
            ultralytics_pass(yolo, lists[0])  # load and warm up
        edgekit_latency(engine, files[:4])
        rounds = []
        for r in range(args.rounds):
            acc = {"ul": [], "ek": []}
            for i, ch in enumerate(chunks):  # interleave slice by slice: A B, then B A
                order = ["ul", "ek"] if (r + i) % 2 == 0 else ["ek", "ul"]
                for step in order:
                    if step == "ul" and yolo is not None:
                        acc["ul"].append(ultralytics_pass(yolo, lists[i], speeds=True))
                    elif step == "ek":
                        acc["ek"].append(edgekit_latency(engine, ch))
            res = {"edgekit": merge(acc["ek"]), "load_avg": os.getloadavg()[0]}
            line = (f"edgekit {backend} {prec} round {r + 1}: {res['edgekit']['fps']:.2f} img/s e2e, infer p50 "
                    f"{res['edgekit']['stages_p50_ms']['infer']:.1f} ms")
            if yolo is not None:
                res["ultralytics"] = merge(acc["ul"])
                res["ultralytics"]["infer_p50_ms"] = statistics.median(x for p in acc["ul"] for x in p["infer_ms"])
                res["fps_ratio"] = res["edgekit"]["fps"] / res["ultralytics"]["fps"]
                res["infer_ratio"] = res["edgekit"]["stages_p50_ms"]["infer"] / res["ultralytics"]["infer_p50_ms"]
                line += (f" | Ultralytics {res['ultralytics']['fps']:.2f} img/s, infer p50 "
                         f"{res['ultralytics']['infer_p50_ms']:.1f} ms | e2e FPS ratio {res['fps_ratio']:.2f}")
            log(line + f" | load {res['load_avg']:.1f}")
            rounds.append(res)
        row = {"rounds": rounds, "edgekit_backend": engine.backend.info() if hasattr(engine, "backend") else None,
               "edgekit_fps_median": statistics.median(x["edgekit"]["fps"] for x in rounds),
               "edgekit_infer_p50_median": statistics.median(x["edgekit"]["stages_p50_ms"]["infer"] for x in rounds),
               "edgekit_e2e_p50_median": statistics.median(x["edgekit"]["p50_ms"] for x in rounds)}
        if yolo is not None:
            row.update(ultralytics_fps_median=statistics.median(x["ultralytics"]["fps"] for x in rounds),
                       ultralytics_infer_p50_median=statistics.median(x["ultralytics"]["infer_p50_ms"] for x in rounds),
                       fps_ratio_median=statistics.median(x["fps_ratio"] for x in rounds),
                       fps_ratios=[round(x["fps_ratio"], 3) for x in rounds],
                       infer_ratio_median=statistics.median(x["infer_ratio"] for x in rounds))
        report["speed"][f"{backend} {prec}"] = row
        engine.close()


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for dist in ("edgekit", "ultralytics", "torch", "ncnn", "pnnx", "ai-edge-litert", "ai-edge-quantizer", "onnx2tf",
                 "tensorflow-cpu", "executorch", "torchao", "litert-torch"):
        try:
            out[dist] = version(dist)
        except PackageNotFoundError:
            out[dist] = None
    return out


def print_table(report: dict) -> None:
    """The markdown table of RESULTS.md from the report."""
    acc, arts = report.get("accuracy", {}), report["artifacts"]
    print("\n| format | precision | mAP50-95 edgekit | mAP50-95 Ultralytics (edgekit eval / UL val) | infer p50 ms "
          "edgekit / UL | e2e FPS edgekit / UL | e2e FPS ratio (median) | MB edgekit / UL |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for key, row in report["speed"].items():
        backend, prec = key.split()
        e = acc.get(f"edgekit {key}", {})
        u = acc.get(f"ultralytics {key}", {})
        ua = arts.get(f"ultralytics {key}", {})
        ul_map = (f"{u.get('edgekit_map50_95', float('nan')):.4f} / {u.get('ultralytics_map50_95', float('nan')):.4f}"
                  if u else ("blocked" if "error" in ua else "-"))
        ul = "ultralytics_fps_median" in row
        print(f"| {backend} | {prec} | {e.get('edgekit_map50_95', float('nan')):.4f} | {ul_map} | "
              f"{row['edgekit_infer_p50_median']:.0f} / {row['ultralytics_infer_p50_median']:.0f} | " if ul else
              f"| {backend} | {prec} | {e.get('edgekit_map50_95', float('nan')):.4f} | {ul_map} | "
              f"{row['edgekit_infer_p50_median']:.0f} / - | ", end="")
        print(f"{row['edgekit_fps_median']:.2f} / {row['ultralytics_fps_median']:.2f} | {row['fps_ratio_median']:.2f} "
              f"| {arts[f'edgekit {key}']['mb']} / {ua.get('mb', '-')} |" if ul else
              f"{row['edgekit_fps_median']:.2f} / - | - | {arts[f'edgekit {key}']['mb']} / {ua.get('mb', '-')} |")


if __name__ == "__main__":
    sys.exit(main())
