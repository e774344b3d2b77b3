"""train-export: for each strategy, train -> export -> quantize/convert -> eval -> bench; then the table and the choice.

Every stage writes its output atomically and a small `<stage>.json` record holding the stage's inputs; with
`resume=True` a stage whose record exists with the same inputs is skipped.
"""
from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AccuracyGateError, EdgekitError
from .io import atomic_write_json, atomic_write_text

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


def variants_for(target: str, backends: list[str], precisions: list[str]) -> list[Variant]:
    """Backend x precision pairs that make sense on the target device."""
    from ._imports import available

    out = []
    gpu = target.lower().startswith("cuda")
    if not gpu and "onnxruntime" not in backends and available("onnxruntime"):
        out.append(Variant("onnxruntime", "fp32"))  # the exported ONNX itself: the reference row, always measured
    for b in backends:
        for p in precisions:
            if b == "onnxruntime" and p in ("fp32", "int8") and available("onnxruntime"):
                out.append(Variant(b, p))
            elif b == "openvino" and not gpu and p in ("fp32", "fp16", "int8") and available("openvino"):
                if p == "fp16" and target.lower() == "cpu":
                    continue  # FP16 weights run as FP32 on CPU: nothing to learn
                out.append(Variant(b, p))
            elif b == "tensorrt" and gpu and p in ("fp16", "int8") and available("tensorrt"):
                out.append(Variant(b, p))
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
    precisions: list[str] = field(default_factory=lambda: ["fp32", "int8"])
    max_map_drop: float = 0.5
    min_fps: float | None = None
    budget_usd: float | None = None
    gpu_hour_usd: float = 2.0
    calib_size: int = 300
    bench_iters: int = 30
    resume: bool = False
    log: object = print

    @property
    def _detail(self):
        """Where each stage's own messages go: the log's `detail` level if it has one (the CLI's), else the log."""
        return getattr(self.log, "detail", self.log)

    # stage records ----------------------------------------------------------------------------
    def _done(self, record: Path, inputs: dict) -> dict | None:
        if not (self.resume and record.exists()):
            return None
        try:
            doc = json.loads(record.read_text())
        except json.JSONDecodeError:
            return None
        return doc if doc.get("inputs") == inputs else None

    def stage(self, name: str, record: Path, inputs: dict, fn):
        """Run fn() unless a finished record with the same inputs exists (resume)."""
        prev = self._done(record, inputs)
        if prev is not None:
            self.log(f"[resume] {name}: done, skipped")
            return prev["result"]
        self.log(f"[stage] {name} ...")
        t = time.perf_counter()
        result = fn()
        atomic_write_json(record, {"stage": name, "inputs": inputs, "result": result,
                                   "seconds": round(time.perf_counter() - t, 2)})
        return result

    # stages -----------------------------------------------------------------------------------
    def run(self) -> dict:
        from .data import load_dataset

        ds = load_dataset(self.data)  # validate before spending any time
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
        from .bench.accuracy import evaluate
        from .export import export_onnx
        from .train import train

        sdir = self.out / slug(strategy)
        base = {"data": str(self.data), "model": str(self.model), "strategy": strategy, "imgsz": self.imgsz}
        tinfo = self.stage(f"{strategy}: train", sdir / "stages" / "train.json",
                           {**base, "epochs": self.epochs, "batch": self.batch},
                           lambda: train(self.model, self.data, strategy=strategy, epochs=self.epochs, imgsz=self.imgsz,
                                         batch=self.batch, device="cpu" if not self.target.startswith("cuda") else self.target,
                                         out_dir=sdir / "train", gpu_hour_usd=self.gpu_hour_usd, workers=0, log=self._detail))
        best = sdir / "train" / "best.pt"
        onnx_path = Path(self.stage(f"{strategy}: export", sdir / "stages" / "export.json", base,
                                    lambda: str(export_onnx(best, sdir / "onnx", imgsz=self.imgsz, log=self._detail))))
        rows = []
        fp32_map = None
        for v in variants_for(self.target, self.backends, self.precisions):
            name = f"{v.backend}-{v.precision}"
            row = {"strategy": strategy, "backend": v.backend, "precision": v.precision,
                   "train_wall_s": tinfo.get("wall_s"), "gpu_hours": tinfo.get("gpu_hours"),
                   "cost_usd": tinfo.get("cost_usd"), "epochs": tinfo.get("epochs")}
            try:
                built = self.stage(f"{strategy}: {name} build", sdir / "stages" / f"{name}.build.json",
                                   {**base, "variant": name, "max_map_drop": self.max_map_drop},
                                   lambda v=v: self.build(onnx_path, v, sdir))
                artifact = built["artifact"]
                # a quantized artifact was already evaluated on the val split by its accuracy gate: reuse that
                acc = self.stage(f"{strategy}: {name} eval", sdir / "stages" / f"{name}.eval.json",
                                 {**base, "artifact": artifact},
                                 lambda a=artifact, v=v, b=built: b["accuracy"] or evaluate(
                                     a, self.data, backend=v.backend, device=self.target, progress=False))
                bench = self.stage(f"{strategy}: {name} bench", sdir / "stages" / f"{name}.bench.json",
                                   {**base, "artifact": artifact, "iters": self.bench_iters},
                                   lambda a=artifact, v=v: run_bench(a, device=self.target, backend=v.backend,
                                                                     iters=self.bench_iters, warmup=5, log=self._detail))
                e2e = bench["latency_ms"]["e2e"]
                row.update({"map50": acc["map50"], "map50_95": acc["map50_95"], "eval_images": acc["images"],
                            "latency_p50_ms": round(bench["latency_ms"]["infer"]["p50"], 3),
                            "e2e_p50_ms": round(e2e["p50"], 3), "fps_e2e": round(bench["fps_e2e"], 2),
                            "model_mb": bench.get("model_mb"), "artifact": artifact, "status": "ok"})
                if v.precision == "fp32" and fp32_map is None:
                    fp32_map = acc["map50_95"]
            except AccuracyGateError as e:
                row.update({"status": "FAILED", "error": str(e), "artifact": None})
                self.log(f"  {name}: accuracy gate failed: {e}")
            except EdgekitError as e:
                row.update({"status": "error", "error": str(e), "artifact": None})
                self.log(f"  {name}: {e}")
            rows.append(row)
        return rows

    def build(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """The deployable artifact of one backend/precision: {"artifact", "accuracy" (set when the gate measured it)}."""
        if v.backend == "onnxruntime" and v.precision == "fp32":
            return {"artifact": str(onnx_path), "accuracy": None}
        if v.backend == "openvino" and v.precision in ("fp32", "fp16"):
            from .export.openvino import onnx_to_openvino

            folder = onnx_to_openvino(onnx_path, sdir / f"openvino_{v.precision}", fp16=v.precision == "fp16",
                                      log=self._detail)
            return {"artifact": str(folder), "accuracy": None}
        from .quantize import quantize

        if v.backend == "tensorrt" and v.precision == "fp16":
            from .quantize.tensorrt import build_engine

            return {"artifact": str(build_engine(onnx_path, sdir / "tensorrt_fp16", precision="fp16")), "accuracy": None}
        res = quantize(onnx_path, self.data, backend=v.backend, method="minmax" if v.backend == "onnxruntime" else "auto",
                       calib_size=self.calib_size, max_map_drop=self.max_map_drop, device=self.target,
                       out_dir=sdir / f"{v.backend}_int8", force=True, log=self._detail)
        return {"artifact": str(res["artifact"]),
                "accuracy": {"map50": res["map50"], "map50_95": res["map50_95"], "images": res.get("images"),
                             "split": "val", "source": "accuracy gate of edgekit quantize"}}

    # report -----------------------------------------------------------------------------------
    def report(self, rows: list[dict]) -> dict:
        from .report import add_speedups, pareto_png, recommend, render_markdown

        add_speedups(rows)
        rec = recommend(rows, min_fps=self.min_fps, max_map_drop=self.max_map_drop, budget_usd=self.budget_usd)
        doc = {"rows": rows, "recommendation": rec,
               "config": {"data": str(self.data), "model": str(self.model), "strategies": self.strategies,
                          "epochs": self.epochs, "imgsz": self.imgsz, "target": self.target, "backends": self.backends,
                          "precisions": self.precisions, "max_map_drop": self.max_map_drop, "min_fps": self.min_fps,
                          "budget_usd": self.budget_usd}}
        atomic_write_json(self.out / "report.json", doc)
        png = pareto_png(rows, self.out / "pareto.png", rec)
        atomic_write_text(self.out / "report.md", render_markdown(doc, png))
        return doc
