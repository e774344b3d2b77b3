"""train-export: for each strategy, train -> export -> quantize/convert -> eval -> bench; then the table and the choice.

Every stage writes its output atomically and a small `<stage>.json` record of its inputs, keyed by content: the
sha256 of every upstream file it consumes (dataset files, weights, best.pt, the ONNX, the artifact) and every option
that changes its output (epochs, imgsz, seed, recipe, calibration size, tool versions). A changed input therefore
invalidates everything downstream. With `resume=True` a stage is skipped only when its record has the same inputs
and the file it produced still exists with the recorded sha256. A failed accuracy gate is recorded too (status
FAILED) and is not retried on resume unless `retry_failed=True`.

The dataset key hashes the content of the data yaml/json and of every train/val image and label file (by name
relative to the dataset folder): names+sizes+mtimes would change on a plain copy or checkout (retraining for
nothing) and stay the same when a tool rewrites a file in place keeping its size and mtime (resuming on stale
results); content is portable and never stale, and sha256 reads about a GB/s, so it is small next to any training.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AccuracyGateError, EdgekitError
from .io import atomic_write_json, atomic_write_text, sha256_file

DEFAULT_STRATEGIES = "scratch,head,schedule:0:backbone,1:none,full"


def split_strategies(text: str) -> list[str]:
    """'scratch,schedule:0:backbone,2:none,full' -> ['scratch', 'schedule:0:backbone,2:none', 'full']."""
    out: list[str] = []
    for tok in (t.strip() for t in text.split(",")):
        if not tok:
            continue
        if re.match(r"^\d+:", tok) and out and out[-1].startswith("schedule"):
            out[-1] += "," + tok
        else:
            out.append(tok)
    return out


def slug(strategy: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", strategy).strip("-")


@dataclass
class Variant:
    backend: str
    precision: str


DEFAULT_PRECISIONS = ("fp32", "bf16", "int8")  # bf16: only where the target runs it (else the row is left out)


REFERENCE = "onnxruntime"  # its FP32 row, the exported ONNX itself, is measured on every target but CUDA


def variants_for(target: str, backends: list[str], precisions: list[str] | None = None) -> list[Variant]:
    """Backend x precision pairs that make sense on the target device (None: the default precisions).

    Each registered backend says which precisions it offers on the target (Backend.offers); names that are not
    registered, and backends not installed here, give no rows. An explicitly asked bf16 stays even where the
    target lacks it: its row then says why it was not built.
    """
    from .runtime.backends import BACKENDS, get_backend
    from .runtime.devices import parse_device

    explicit = precisions is not None
    precisions = list(precisions) if explicit else list(DEFAULT_PRECISIONS)
    out = []
    off_cuda = not parse_device(target)[0].startswith("cuda")
    if off_cuda and REFERENCE not in backends and get_backend(REFERENCE).installed():
        out.append(Variant(REFERENCE, "fp32"))
    for b in backends:
        cls = get_backend(b) if b in BACKENDS else None
        if cls is None or not cls.installed():
            continue
        offered = cls.offers(target, explicit)
        out += [Variant(b, p) for p in precisions if p in offered]
    return out


@dataclass
class Pipeline:
    out: Path
    data: Path
    model: Path
    strategies: list[str]
    epochs: int = 3
    imgsz: int = 320
    batch: int = 16
    target: str = "cpu"
    backends: list[str] = field(default_factory=lambda: ["openvino"])
    precisions: list[str] | None = None  # None: DEFAULT_PRECISIONS
    max_map_drop: float = 0.5
    min_fps: float | None = None
    budget_usd: float | None = None
    gpu_hour_usd: float = 2.0
    calib_size: int = 300
    bench_iters: int = 30
    seed: int = 0
    opset: int | None = None
    resume: bool = False
    retry_failed: bool = False
    trust_checkpoint: bool = False  # --model loads without the restricted-unpickler check
    log: object = print
    _hashes: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _data_key: str | None = field(default=None, init=False, repr=False, compare=False)
    _dataset: object = field(default=None, init=False, repr=False, compare=False)

    def dataset(self):
        """The dataset, read and validated once per run: every stage gets this object, not the yaml path."""
        if self._dataset is None:
            from .data import load_dataset

            self._dataset = load_dataset(self.data)
        return self._dataset

    # content keys -----------------------------------------------------------------------------
    def file_hash(self, path) -> str:
        """sha256 of a file, read once per (path, size, mtime) in this run."""
        p = Path(path).resolve()
        st = p.stat()
        key = (str(p), st.st_size, st.st_mtime_ns)
        if key not in self._hashes:
            self._hashes[key] = sha256_file(p)
        return self._hashes[key]

    def content_hash(self, path) -> str:
        """sha256 of a file (an OpenVINO .xml with its .bin), or of a folder's files (relative names and contents)."""
        p = Path(path)
        if p.suffix.lower() == ".xml" and p.with_suffix(".bin").exists():
            return hashlib.sha256(f"{self.file_hash(p)}\0{self.file_hash(p.with_suffix('.bin'))}".encode()).hexdigest()
        if not p.is_dir():
            return self.file_hash(p)
        h = hashlib.sha256()
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{self.file_hash(f)}\n".encode())
        return h.hexdigest()

    def data_key(self) -> str:
        """Content of the dataset: its yaml/json and every train/val image and label file, by relative name."""
        if self._data_key is None:
            ds = self.dataset()
            root = ds.source.parent
            h = hashlib.sha256(f"{ds.source.name}\0{self.file_hash(ds.source)}\n".encode())
            for split in ("train", "val"):
                for s in ds.samples(split):
                    label = self.file_hash(s.label) if s.label else "-"
                    h.update(f"{split}\0{os.path.relpath(s.image, root)}\0{self.file_hash(s.image)}\0{label}\n"
                             .encode())
            self._data_key = h.hexdigest()
        return self._data_key

    def model_key(self) -> str:
        """sha256 of the starting weights (or architecture yaml) file, else its name (an Ultralytics yaml name)."""
        return self.file_hash(self.model) if Path(self.model).is_file() else str(self.model)

    @property
    def _detail(self):
        """Where each stage's own messages go: the log's `detail` level if it has one (the CLI's), else the log."""
        return getattr(self.log, "detail", self.log)

    # stage records ----------------------------------------------------------------------------
    def _done(self, name: str, record: Path, inputs: dict) -> dict | None:
        """The record to reuse on resume: same inputs, and an intact output (or a recorded gate failure)."""
        if not (self.resume and record.exists()):
            return None
        try:
            doc = json.loads(record.read_text())
        except json.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or doc.get("inputs") != inputs:
            return None
        if doc.get("status") == "FAILED":
            return None if self.retry_failed else doc
        produced = doc.get("produced")
        if produced:
            p = Path(produced["path"])
            if not p.exists() or self.content_hash(p) != produced["sha256"]:
                self.log(f"[resume] {name}: {p} is missing or changed since it was recorded: running again")
                return None
        return doc if doc.get("status") == "done" else None

    def stage(self, name: str, record: Path, inputs: dict, fn, output=None):
        """Run fn() unless a finished record with the same inputs and an intact output exists (resume).

        output(result) -> the file or folder the stage produced; its sha256 goes into the record. A failed accuracy
        gate is recorded (status FAILED, the error and the gate figures) and raised again on resume.
        """
        prev = self._done(name, record, inputs)
        if prev is not None and prev.get("status") == "FAILED":
            self._detail(f"[resume] {name}: failed its accuracy gate before, skipped (--retry-failed to try again)")
            err = AccuracyGateError(prev["error"])
            err.result = prev.get("gate")
            raise err
        if prev is not None:
            self._detail(f"[resume] {name}: done, skipped")
            return prev["result"]
        self._detail(f"[stage] {name} ...")
        t = time.perf_counter()
        try:
            result = fn()
        except AccuracyGateError as e:
            atomic_write_json(record, {"stage": name, "status": "FAILED", "inputs": inputs, "error": str(e),
                                       "gate": gate_figures(getattr(e, "result", None)),
                                       "seconds": round(time.perf_counter() - t, 2)})
            raise
        doc = {"stage": name, "status": "done", "inputs": inputs, "result": result,
               "seconds": round(time.perf_counter() - t, 2)}
        if output is not None:
            p = Path(output(result))
            doc["produced"] = {"path": str(p), "sha256": self.content_hash(p)}
        atomic_write_json(record, doc)
        return result

    # stages -----------------------------------------------------------------------------------
    def check_model(self) -> None:
        """Refuse, before any work, a model whose checkpoints the sweep cannot export (YOLO-NAS, for now)."""
        if str(self.model).startswith("yolo_nas"):
            raise EdgekitError(f"{self.model}: train-export sweeps Ultralytics models only for now; the YOLO-NAS route "
                               f"is 'edgekit train {self.model} --data DATA.yaml' (it exports the ONNX too)")

    def run(self) -> dict:
        self.check_model()
        ds = self.dataset()  # validate before spending any time
        for split in ("train", "val"):
            ds.samples(split)
        self.out.mkdir(parents=True, exist_ok=True)
        rows = []
        for i, strategy in enumerate(self.strategies, 1):
            self.log(f"=== strategy {i}/{len(self.strategies)}: {strategy}")
            rows += self.run_strategy(strategy)
        report = self.report(rows)
        return report

    def run_strategy(self, strategy: str) -> list[dict]:
        from .bench import run_bench
        from .eval import evaluate
        from .export import export_onnx
        from .train import train

        from ._imports import tool_versions

        sdir = self.out / slug(strategy)
        device = "cpu" if not self.target.startswith("cuda") else self.target
        best = sdir / "train" / "best.pt"
        tinfo = self.stage(f"{strategy}: train", sdir / "stages" / "train.json",
                           {"data": self.data_key(), "weights": self.model_key(), "strategy": strategy,
                            "epochs": self.epochs, "imgsz": self.imgsz, "batch": self.batch, "seed": self.seed,
                            "device": device, "gpu_hour_usd": self.gpu_hour_usd,
                            "versions": tool_versions("ultralytics", "torch")},
                           lambda: train(self.model, self.dataset(), strategy=strategy, epochs=self.epochs,
                                         imgsz=self.imgsz, batch=self.batch, device=device, out_dir=sdir / "train",
                                         seed=self.seed, gpu_hour_usd=self.gpu_hour_usd, workers=0, log=self._detail,
                                         trust_checkpoint=self.trust_checkpoint),
                           output=lambda r: best)
        onnx_path = Path(self.stage(f"{strategy}: export", sdir / "stages" / "export.json",
                                    {"weights": self.file_hash(best), "imgsz": self.imgsz, "opset": self.opset,
                                     "versions": tool_versions("torch", "ultralytics", "onnx", "onnxslim")},
                                    lambda: str(export_onnx(best, sdir / "onnx", imgsz=self.imgsz, opset=self.opset,
                                                            log=self._detail, trust_checkpoint=self.trust_checkpoint)),
                                    output=Path))
        self.log(f"  trained {tinfo.get('epochs')} epochs in {tinfo.get('wall_s', 0):.0f} s, exported {onnx_path.name}")
        run_versions = tool_versions("onnxruntime", "openvino", "tensorrt")
        rows = []
        fp32_map = None
        for v in variants_for(self.target, self.backends, self.precisions):
            name = f"{v.backend}-{v.precision}"
            row = {"strategy": strategy, "backend": v.backend, "precision": v.precision,
                   "train_wall_s": tinfo.get("wall_s"), "gpu_hours": tinfo.get("gpu_hours"),
                   "cost_usd": tinfo.get("cost_usd"), "epochs": tinfo.get("epochs")}
            try:
                built = self.stage(f"{strategy}: {name} build", sdir / "stages" / f"{name}.build.json",
                                   self.build_inputs(onnx_path, v), lambda v=v: self.build(onnx_path, v, sdir),
                                   output=lambda r: r["artifact"])
                artifact = built["artifact"]
                used = {"artifact": self.content_hash(artifact), "backend": v.backend, "target": self.target,
                        "versions": run_versions}
                # a quantized artifact was already evaluated on the val split by its accuracy gate: reuse that
                acc = self.stage(f"{strategy}: {name} eval", sdir / "stages" / f"{name}.eval.json",
                                 {**used, "data": self.data_key()},
                                 lambda a=artifact, v=v, b=built: b["accuracy"] or evaluate(
                                     a, self.dataset(), backend=v.backend, device=self.target, progress=False))
                bench = self.stage(f"{strategy}: {name} bench", sdir / "stages" / f"{name}.bench.json",
                                   {**used, "iters": self.bench_iters},
                                   lambda a=artifact, v=v: run_bench(a, device=self.target, backend=v.backend,
                                                                     iters=self.bench_iters, warmup=5, log=self._detail))
                e2e = bench["latency_ms"]["e2e"]
                row.update({"map50": acc["map50"], "map50_95": acc["map50_95"], "eval_images": acc["images"],
                            "latency_p50_ms": round(bench["latency_ms"]["infer"]["p50"], 3),
                            "e2e_p50_ms": round(e2e["p50"], 3), "fps_e2e": round(bench["fps_e2e"], 2),
                            "model_mb": bench.get("model_mb"), "artifact": artifact, "status": "ok"})
                self.log(f"  {name}: mAP50-95 {acc['map50_95']:.4f}, {bench['fps_e2e']:.1f} FPS end to end")
                if v.precision == "fp32" and fp32_map is None:
                    fp32_map = acc["map50_95"]
            except AccuracyGateError as e:
                row.update({"status": "FAILED", "error": str(e), "artifact": None,
                            "gate": gate_figures(getattr(e, "result", None))})
                self.log(f"  {name}: FAILED its accuracy gate: {e}")
            except EdgekitError as e:
                row.update({"status": "error", "error": str(e), "artifact": None})
                self.log(f"  {name}: error: {e}")
            rows.append(row)
        return rows

    def build_inputs(self, onnx_path: Path, v: Variant) -> dict:
        """What a build's output depends on: the ONNX's content, the variant, the gate, the data and the recipe."""
        from ._imports import tool_versions
        from .quantize.recipe import recipe_for
        from .runtime.meta import read_sidecar

        recipe = recipe_for(read_sidecar(onnx_path).get("family")).path
        return {"onnx": self.file_hash(onnx_path), "variant": f"{v.backend}-{v.precision}", "target": self.target,
                "max_map_drop": self.max_map_drop, "calib_size": self.calib_size, "data": self.data_key(),
                "recipe": self.file_hash(recipe) if recipe else None,
                "versions": tool_versions("onnx", "onnxruntime", "openvino", "nncf", "tensorrt")}

    def build(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """The deployable artifact of one backend/precision: {"artifact", "accuracy" (set when the gate measured it)}."""
        if v.backend == "onnxruntime" and v.precision == "fp32":
            return {"artifact": str(onnx_path), "accuracy": None}
        if v.backend == "openvino" and v.precision == "bf16":
            return self.build_bf16(onnx_path, sdir)
        if v.backend == "openvino" and v.precision in ("fp32", "fp16"):
            from .export.openvino import onnx_to_openvino

            folder = onnx_to_openvino(onnx_path, sdir / f"openvino_{v.precision}", fp16=v.precision == "fp16",
                                      log=self._detail)
            return {"artifact": str(folder), "accuracy": None}
        from .quantize import quantize

        if v.backend == "tensorrt" and v.precision == "fp16":
            from .quantize.tensorrt import build_engine

            return {"artifact": str(build_engine(onnx_path, sdir / "tensorrt_fp16", precision="fp16")), "accuracy": None}
        res = quantize(onnx_path, self.dataset(), backend=v.backend, method="minmax" if v.backend == "onnxruntime" else "auto",
                       calib_size=self.calib_size, max_map_drop=self.max_map_drop, device=self.target,
                       out_dir=sdir / f"{v.backend}_int8", force=True, log=self._detail)
        return {"artifact": str(res["artifact"]),
                "accuracy": {"map50": res["map50"], "map50_95": res["map50_95"], "images": res.get("images"),
                             "split": "val", "source": "accuracy gate of edgekit quantize"}}

    def build_bf16(self, onnx_path: Path, sdir: Path) -> dict:
        """The FP32 IR compiled for bf16, gated like INT8 against the FP32 model on OpenVINO (same split, same drop)."""
        from .eval import evaluate
        from .export.openvino import onnx_to_openvino
        from .quantize.job import BASELINE_FILE, fp32_baseline
        from .runtime.meta import read_sidecar, write_sidecar

        folder = onnx_to_openvino(onnx_path, sdir / "openvino_bf16", precision="bf16", device=self.target,
                                  log=self._detail)
        ds = self.dataset()
        base = fp32_baseline(onnx_path, ds, "val", None, self._detail, "openvino", self.target, sdir / BASELINE_FILE)
        acc = evaluate(folder, ds, backend="openvino", device=self.target, progress=False)
        drop = (base["map50_95"] - acc["map50_95"]) * 100
        passed = drop <= self.max_map_drop + 1e-9
        doc = read_sidecar(folder)
        baseline = {k: base.get(k) for k in ("backend", "device", "precision_executed")}
        doc["accuracy_gate"] = {"split": "val", "data": str(ds.source), "images": acc["images"],
                                "max_map_drop": self.max_map_drop, "map50_fp32": base["map50"],
                                "map50_95_fp32": base["map50_95"], "map50": acc["map50"], "map50_95": acc["map50_95"],
                                "drop_points": round(drop, 3), "baseline": baseline}
        doc["status"] = "PASSED" if passed else "FAILED"
        write_sidecar(folder, {k: v for k, v in doc.items() if k != "format"})
        self._detail(f"bf16 gate: mAP50-95 {acc['map50_95']:.4f} vs FP32 {base['map50_95']:.4f} on OpenVINO: "
                 f"drop {drop:+.2f} points (max {self.max_map_drop:g}) -> {doc['status']}")
        if not passed:
            raise AccuracyGateError(f"{folder}: bf16 loses {drop:.2f} mAP50-95 points against FP32 on OpenVINO "
                                    f"(max {self.max_map_drop:g}); sidecar marked FAILED")
        return {"artifact": str(folder),
                "accuracy": {"map50": acc["map50"], "map50_95": acc["map50_95"], "images": acc["images"],
                             "split": "val", "precision_executed": acc["precision_executed"],
                             "source": "bf16 accuracy gate"}}

    # report -----------------------------------------------------------------------------------
    def report(self, rows: list[dict]) -> dict:
        from .report import add_speedups, pareto_png, recommend, render_markdown

        add_speedups(rows)
        rec = recommend(rows, min_fps=self.min_fps, max_map_drop=self.max_map_drop, budget_usd=self.budget_usd)
        doc = {"rows": rows, "recommendation": rec,
               "config": {"data": str(self.data), "model": str(self.model), "strategies": self.strategies,
                          "epochs": self.epochs, "imgsz": self.imgsz, "target": self.target, "backends": self.backends,
                          "precisions": self.precisions, "max_map_drop": self.max_map_drop, "min_fps": self.min_fps,
                          "budget_usd": self.budget_usd, "seed": self.seed}}
        atomic_write_json(self.out / "report.json", doc)
        png = pareto_png(rows, self.out / "pareto.png", rec)
        atomic_write_text(self.out / "report.md", render_markdown(doc, png))
        return doc


def gate_figures(result: dict | None) -> dict | None:
    """The accuracy gate's figures from a quantize result: what a FAILED row and record keep."""
    if not result:
        return None
    keys = ("artifact", "status", "attempt", "map50_95_fp32", "map50_95", "drop_points", "max_map_drop")
    return {k: result[k] for k in keys if k in result}
