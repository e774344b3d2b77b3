"""One quantization run: calibration set, FP32 baseline, attempts judged by the accuracy gate, the final artifact.

The algorithm (quantizer.py) builds candidate artifacts through a backend's Quantizer in the order of the fallback
chain and hands each one to `Job.attempt`, which evaluates it through Engine on the eval split and keeps the result.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..eval import class_drops, evaluate, recall_drops
from ..eval.threshold import recall_drop_text
from ..data import Dataset, load_dataset
from ..data.calibration import CalibrationSet, calibration_from_folder, calibration_set
from ..errors import AccuracyGateError, ArtifactError, DataError
from ..io import atomic_dir, atomic_write_json, sha256_file
from ..runtime.meta import read_sidecar, write_sidecar
from .config import QuantizeConfig
from .diagnose import calibration_domain, describe
from .recipe import Recipe, recipe_for

# sidecar fields of the FP32 export that describe the network's interface and carry over unchanged
FAILED_SUFFIX = ".FAILED"  # folder suffix of an artifact kept after failing its gate (Engine refuses it)
CARRY = ("task", "arch", "family", "names", "nc", "imgsz", "stride", "letterbox", "input", "output", "opset", "dynamic")


class AttemptStopped(Exception):
    """A build that stopped without an artifact (accuracy control over its time budget); the message says why."""


@dataclass
class Attempt:
    label: str
    method: str
    precision: str
    folder: Path
    artifact: Path
    excluded: list[str] = field(default_factory=list)
    reverted: list[str] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    map50: float = 0.0
    map50_95: float = 0.0
    drop_points: float = 0.0
    passed: bool = False
    build_s: float = 0.0
    eval_s: float = 0.0
    precision_executed: str | None = None
    class_drops: list = field(default_factory=list)  # [(class, points)] over --max-class-drop: fails the gate
    recall_drops: list = field(default_factory=list)  # [{class, recall_fp32, recall, ...}] over --max-recall-drop
    path: str = "ptq"                # ptq | accuracy_control | fallback:<stage>: what produced the artifact
    stopped: str | None = None       # why the build stopped without an artifact (then it was not evaluated)
    threshold: dict | None = None    # its own deployment threshold (edgekit.eval.threshold)
    at_fp32_threshold: dict | None = None  # P/R/F1 at the FP32 artifact's threshold: what the recall gate compares
    matches: Path | None = None      # its per-image matches on the gate's images (in the job's work folder)

    @property
    def evaluated(self) -> bool:
        return self.stopped is None

    def summary(self) -> dict:
        done = self.evaluated  # a stopped attempt has no figures (never an Infinity in the JSON)
        return {"attempt": self.label, "path": self.path, "method": self.method, "precision": self.precision,
                "excluded": len(self.excluded), "reverted": len(self.reverted), "map50": self.map50 if done else None,
                "map50_95": self.map50_95 if done else None,
                "drop_points": round(self.drop_points, 3) if done else None, "passed": self.passed,
                "build_s": round(self.build_s, 1), "eval_s": round(self.eval_s, 1), "stopped": self.stopped,
                "recall_drops": self.recall_drops}


def split_fingerprint(ds: Dataset, split: str, limit: int | None) -> str:
    """Digest of a split's image names, sizes and labels: the key under which the FP32 mAP is cached."""
    h = hashlib.sha256()
    samples = ds.samples(split)[:limit] if limit else ds.samples(split)
    for s in samples:
        h.update(f"{s.image.name}:{s.image.stat().st_size}:".encode())
        h.update(s.classes.tobytes() + s.boxes.tobytes())
    return h.hexdigest()[:16]


def subset(ds: Dataset, samples: list, name: str = "subset") -> Dataset:
    """A Dataset over a list of samples (e.g. a validation subset), usable by `evaluate(..., split=name)`."""
    sub = Dataset(ds.source, ds.names, {name: []})
    sub._cache[name] = list(samples)
    return sub


def baseline_backend(backend: str) -> str:
    """The backend whose FP32 run of the ONNX is a quantized artifact's baseline: what the backend declares
    (Backend.baseline_backend; None: its own), ONNX Runtime for a quantizer whose backend is not registered."""
    from ..runtime.backends import get_backend, names

    if backend not in names():
        return "onnxruntime"
    return get_backend(backend).baseline_backend or backend


BASELINE_FILE = ".fp32-baseline.json"  # beside a job's output: FP32 mAPs by baseline_key, so reruns skip them
BASELINE_MATCHES = ".fp32-baseline.matches"  # beside it: each baseline's per-image matches (accuracy control's FP32)
DOMAIN_FILE = ".calibration-domain.json"  # beside it: calibration-to-eval distances by the images compared


def baseline_key(onnx_path: Path, backend: str, device: str, ds: Dataset, split: str, limit: int | None) -> str:
    """Cache key of an FP32 baseline: backend, device, split, limit, the split's content and the ONNX's content."""
    return (f"{backend}@{device}|{split}|{limit or 'all'}|{split_fingerprint(ds, split, limit)}|"
            f"onnx:{sha256_file(onnx_path)[:16]}")


def _read_cache(cache: Path) -> dict:
    """The baselines cached in `cache`; an unreadable cache counts as empty (its baselines are measured again)."""
    try:
        doc = json.loads(cache.read_text())
    except (OSError, ValueError):
        return {}
    return doc if isinstance(doc, dict) else {}


def threshold_spec(target_precision: float | None, target_recall: float | None) -> str:
    """How a deployment threshold is chosen, as a cache key: max_f1, precision:P or recall:R."""
    if target_precision is not None:
        return f"precision:{target_precision:g}"
    return f"recall:{target_recall:g}" if target_recall is not None else "max_f1"


def fp32_baseline(onnx_path: Path, ds: Dataset, split: str, limit: int | None, log, backend: str, device: str,
                  cache: Path, target_precision: float | None = None, target_recall: float | None = None) -> dict:
    """mAP and deployment threshold of the FP32 ONNX through Engine on `backend` in FP32, cached in the JSON file
    `cache` (never the ONNX's); 'threshold' is chosen as the targets ask (max F1 without one)."""
    cache = Path(cache)
    doc = _read_cache(cache)
    key = baseline_key(onnx_path, backend, device, ds, split, limit)
    spec = threshold_spec(target_precision, target_recall)
    cached = doc.get(key)
    matches = cache.parent / BASELINE_MATCHES / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.npz"
    if cached and spec in (cached.get("thresholds") or {}):  # a cache from before thresholds is measured again
        log(f"FP32 baseline on {backend} (cached in {cache}): mAP50-95 {cached['map50_95']:.4f}")
        return {**cached, "threshold": cached["thresholds"][spec], "matches_file": str(matches) if matches.is_file() else None}
    log(f"FP32 baseline: evaluating {onnx_path.name} on '{split}' with {backend} ({device})")
    matches.parent.mkdir(parents=True, exist_ok=True)
    r = evaluate(onnx_path, ds, split=split, limit=limit, backend=backend, device=device, precision="fp32",
                 progress=False, target_precision=target_precision, target_recall=target_recall, resamples=0,
                 matches_path=matches)
    res = {k: r[k] for k in ("map50", "map50_95", "images", "boxes", "backend", "device", "precision_executed",
                             "evaluator", "per_class", "per_class_instances")}
    res["thresholds"] = {**((cached or {}).get("thresholds") or {}), spec: r["threshold"]}
    res["data"] = str(ds.source)
    atomic_write_json(cache, {**doc, key: res})
    log(f"FP32 baseline: mAP50 {res['map50']:.4f}  mAP50-95 {res['map50_95']:.4f} ({res['images']} images, "
        f"{backend} {res['precision_executed']}); threshold {r['threshold']['conf']:g} ({r['threshold']['chosen_by']})")
    return {**res, "threshold": r["threshold"], "matches_file": str(matches)}


def check_gate_options(config: QuantizeConfig) -> None:
    """One line naming the option whose value cannot work."""
    from ..eval.threshold import check_gate_options as check

    check(config.max_recall_drop, config.min_class_boxes, config.target_precision, config.target_recall,
          config.max_class_drop)
    if config.budget_s is not None and config.budget_s <= 0:
        raise ArtifactError(f"--quantize-budget-s must be > 0 seconds, got {config.budget_s:g}")


class Job:
    """State shared by a backend's attempts; `finish()` writes the chosen artifact and its sidecar."""

    def __init__(self, onnx_path, data, config: QuantizeConfig, log: Callable = print, device: str = "cpu"):
        self.onnx = Path(onnx_path)
        if not self.onnx.exists():
            raise ArtifactError(f"{self.onnx}: model file not found")
        if self.onnx.suffix.lower() != ".onnx":
            raise ArtifactError(f"{self.onnx}: quantize takes the FP32 ONNX written by 'edgekit export'")
        self.fp32 = read_sidecar(self.onnx)
        if not self.fp32:
            raise ArtifactError(f"{self.onnx}: no sidecar {self.onnx.with_suffix('.json').name}: "
                                f"export with 'edgekit export' so names, imgsz and letterbox are known")
        max_map_drop, eval_split = config.max_map_drop, config.eval_split
        if max_map_drop is not None and max_map_drop < 0:
            raise ArtifactError(f"--max-map-drop must be >= 0 mAP points, got {max_map_drop}")
        self.config, backend = config, config.backend
        self.backend, self.method, self.max_map_drop = backend, config.method, max_map_drop
        self.eval_split, self.eval_limit, self.log, self.device = eval_split, config.eval_limit, log, device
        self.max_class_drop: float | None = config.max_class_drop  # points, for classes with >= min_class_boxes
        self.max_recall_drop: float | None = config.max_recall_drop
        self.min_class_boxes = config.min_class_boxes
        check_gate_options(config)
        self.ds = data if isinstance(data, Dataset) else load_dataset(data)
        if len(self.fp32["names"]) != self.ds.nc:
            raise DataError(self.ds.source, f"dataset has {self.ds.nc} classes but {self.onnx.name} has "
                                            f"{len(self.fp32['names'])}: calibrate with the data the model was trained for")
        self.ds.samples(eval_split)  # fail early on a missing eval split
        self.out_dir = Path(config.out_dir) if config.out_dir else self.onnx.parent
        if config.calib_from is not None and self.out_dir.resolve().is_relative_to(Path(config.calib_from).resolve()):
            raise ArtifactError(f"{self.out_dir}: the output folder is inside --calib-from {config.calib_from} "
                                f"(the calibration images are read only): write elsewhere with -o")
        self.recipe: Recipe = recipe_for(self.fp32.get("family"))
        imgsz = tuple(self.fp32["imgsz"])
        pad = int(self.fp32.get("letterbox", {}).get("pad_value", 114))
        calib_split, seed = config.calib_split, config.seed
        if config.calib_from is not None:
            self.calib: CalibrationSet = calibration_from_folder(config.calib_from, imgsz, config.calib_size, seed,
                                                                 config.force, pad)
            where = f"folder {self.calib.info['folder']} ({self.calib.info['images_in_folder']} images)"
        else:
            self.calib = calibration_set(self.ds, imgsz, config.calib_size, calib_split, seed, config.force,
                                         eval_split, pad)
            where = (f"'{calib_split}' ({self.calib.info['classes_covered']}/{self.calib.info['classes_in_split']} "
                     f"classes)")
        self.manifest = self.calib.manifest()
        val = self.ds.samples(eval_split)[:self.eval_limit] if self.eval_limit else self.ds.samples(eval_split)
        self.manifest["domain"] = calibration_domain(list(self.calib.items), [s.image for s in val], seed,
                                                     self.out_dir / DOMAIN_FILE)
        log(f"calibration: {len(self.calib)} images from {where}, seed {seed}, "
            f"sha256 {self.manifest['sha256'][:12]}; recipe '{self.recipe.name}'")
        base_backend = baseline_backend(backend)
        self.baseline = fp32_baseline(self.onnx, self.ds, eval_split, self.eval_limit, log, base_backend,
                                      device if base_backend == backend else "cpu", self.out_dir / BASELINE_FILE,
                                      config.target_precision, config.target_recall)
        self.diagnosis: list[dict] | None = None  # worst layers by SNR of the first failed INT8 attempt
        self.deadline: float | None = None  # when --quantize-budget-s runs out (set as the recipe's stages start)
        self.work = self.out_dir / f".quantize-{backend}.work"
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        self.attempts: list[Attempt] = []
        self.sidecar_extra: dict = {}  # top-level sidecar sections a backend adds (TensorRT: version, GPU)

    # attempts ---------------------------------------------------------------------------------
    @property
    def passed(self) -> bool:
        return any(a.passed for a in self.attempts)

    @property
    def engine_backend(self) -> str:
        return self.backend

    def start_budget(self) -> None:
        """Start --quantize-budget-s: the recipe's INT8 stages and accuracy control after them share it."""
        if self.config.budget_s is not None:
            self.deadline = time.perf_counter() + self.config.budget_s

    def remaining_s(self) -> float | None:
        """Seconds left of --quantize-budget-s (None: unbounded or not started)."""
        return None if self.deadline is None else self.deadline - time.perf_counter()

    def over_budget(self) -> str | None:
        """Why no more INT8 attempt may start, or None."""
        left = self.remaining_s()
        if left is None or left > 0:
            return None
        return f"budget: --quantize-budget-s {self.config.budget_s:g} spent ({-left:.0f} s over) before it started"

    def gate_ok(self, drop_points: float) -> bool:
        return self.max_map_drop is None or drop_points <= self.max_map_drop + 1e-9

    def attempt(self, label: str, build: Callable[[Path], Path], method: str, precision: str = "int8",
                excluded=(), reverted=(), extra: dict | None = None, path: str = "ptq") -> Attempt:
        """Build one candidate into its own folder, evaluate it through Engine, record it.

        `build(folder)` returns the artifact path, or (path, {"reverted": [...], "extra": {...}}) when the build
        itself finds out more (accuracy control), or raises AttemptStopped (recorded, not evaluated).
        """
        folder = self.work / f"{len(self.attempts) + 1:02d}-{label}"
        folder.mkdir(parents=True)
        self.log(f"[{self.backend} {len(self.attempts) + 1}] {label}: building ({precision}, method {method}, "
                 f"{len(excluded)} ops kept in float)")
        t0 = time.perf_counter()
        try:
            if precision == "int8" and self.over_budget():
                raise AttemptStopped(self.over_budget())
            built = build(folder)
        except AttemptStopped as e:
            a = Attempt(label, method, precision, folder, folder, list(excluded), list(reverted), dict(extra or {}),
                        path=path, stopped=str(e), drop_points=float("inf"))
            a.build_s = time.perf_counter() - t0
            self.attempts.append(a)
            self.log(f"[{self.backend} {len(self.attempts)}] {label}: stopped, {e}  [build {a.build_s:.0f}s]")
            return a
        found = {}
        if isinstance(built, tuple):
            built, found = built
        artifact = Path(built)
        a = Attempt(label, method, precision, folder, artifact, list(found.get("excluded", excluded)),
                    list(found.get("reverted", reverted)), {**(extra or {}), **found.get("extra", {})}, path=path)
        a.build_s = found.get("build_s", time.perf_counter() - t0)
        write_sidecar(artifact, self.sidecar(a, status="EVALUATING"))
        t0 = time.perf_counter()
        from ..runtime import Engine

        fp32_thr = self.baseline["threshold"]
        a.matches = self.work / f"{folder.name}.matches.npz"
        with Engine(artifact, device=self.device, backend=self.engine_backend, allow_failed=True) as eng:  # the gate
            r = evaluate(artifact, self.ds, split=self.eval_split, limit=self.eval_limit, device=self.device,
                         engine=eng, target_precision=self.config.target_precision, resamples=0,
                         target_recall=self.config.target_recall, at_threshold=fp32_thr["conf"], matches_path=a.matches)
        a.eval_s = time.perf_counter() - t0
        a.map50, a.map50_95, a.precision_executed = r["map50"], r["map50_95"], r.get("precision_executed")
        a.threshold, a.at_fp32_threshold = r["threshold"], r["at_threshold"]
        a.drop_points = (self.baseline["map50_95"] - a.map50_95) * 100
        self.judge(a, r)
        self.attempts.append(a)
        limit = "no gate" if self.max_map_drop is None else f"max {self.max_map_drop:g}"
        self.log(f"[{self.backend} {len(self.attempts)}] {label}: mAP50-95 {a.map50_95:.4f} vs FP32 "
                 f"{self.baseline['map50_95']:.4f}: drop {a.drop_points:+.2f} points ({limit}){self.why(a)} -> "
                 f"{'PASSED' if a.passed else 'failed'}  [build {a.build_s:.0f}s, eval {a.eval_s:.0f}s]")
        return a

    def judge(self, a: Attempt, r: dict) -> None:
        """The gate: mAP50-95 drop, then (with a gate) each large class's AP and its recall at the FP32 threshold."""
        a.passed = self.gate_ok(a.drop_points)
        if self.max_map_drop is None:
            return
        if self.max_class_drop is not None:  # a collapsed class fails it too
            a.class_drops = class_drops(self.baseline.get("per_class"), r.get("per_class"),
                                        self.baseline.get("per_class_instances"), self.min_class_boxes,
                                        self.max_class_drop)
        if self.max_recall_drop is not None:
            a.recall_drops = recall_drops(self.baseline["threshold"], a.at_fp32_threshold, self.max_recall_drop,
                                          self.min_class_boxes)
        a.passed = a.passed and not a.class_drops and not a.recall_drops

    def why(self, a: Attempt) -> str:
        """The per-class reasons an attempt failed, for its log line and the gate's message."""
        conf = self.baseline["threshold"]["conf"]
        cls = "".join(f"; class '{c}' lost {d:.1f} points (max {self.max_class_drop:g})" for c, d in a.class_drops)
        return cls + recall_drop_text(a.recall_drops, conf, self.max_recall_drop)

    # output -----------------------------------------------------------------------------------
    def sidecar(self, a: Attempt, status: str) -> dict:
        from .._imports import tool_versions

        doc = {k: self.fp32[k] for k in CARRY if k in self.fp32}
        doc.update({
            "precision": a.precision,
            "precision_executed": a.precision_executed,
            "backend": self.backend,
            "threshold": a.threshold,
            "source": {"onnx": str(self.onnx.resolve()), "sha256": sha256_file(self.onnx),
                       "weights": self.fp32.get("source")},
            "quantization": {"method": a.method, "attempt": a.label, "path": a.path, "build_s": round(a.build_s, 1),
                             "layer_snr": self.diagnosis, "recipe": self.recipe.summary(),
                             "excluded": a.excluded, "reverted": a.reverted, "calibration": self.manifest,
                             "fallbacks": [x.summary() for x in self.attempts if x is not a], **a.extra},
            "accuracy_gate": {"split": self.eval_split, "limit": self.eval_limit, "data": str(self.ds.source),
                              "images": self.baseline.get("images"), "max_map_drop": self.max_map_drop,
                              "map50_fp32": self.baseline["map50"], "map50_95_fp32": self.baseline["map50_95"],
                              "baseline": {k: self.baseline.get(k)
                                           for k in ("backend", "device", "precision_executed")},
                              "map50": a.map50, "map50_95": a.map50_95, "drop_points": round(a.drop_points, 3),
                              "max_class_drop": self.max_class_drop, "max_recall_drop": self.max_recall_drop,
                              "min_class_boxes": self.min_class_boxes, "threshold_fp32": self.baseline["threshold"],
                              "at_fp32_threshold": a.at_fp32_threshold, "recall_drops": a.recall_drops},
            **self.sidecar_extra,
            "status": status,
            "versions": tool_versions("onnx", "onnxruntime", "openvino", "nncf", "tensorrt"),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        })
        return doc

    def final_name(self, precision: str, passed: bool) -> Path:
        """model_int8_openvino for a passing artifact; model_int8_openvino.FAILED for one that failed its gate."""
        name = f"{self.onnx.stem}_{precision}_{self.backend}"
        return self.out_dir / (name if passed else f"{name}{FAILED_SUFFIX}")

    def finish(self) -> dict:
        """Keep the first passing attempt (else the least bad, under a .FAILED name), move it into place."""
        if not self.attempts:
            raise ArtifactError(f"{self.onnx}: no {self.backend} artifact was built")
        ok = [a for a in self.attempts if a.passed]
        best = ok[0] if ok else min((a for a in self.attempts if a.evaluated), key=lambda a: a.drop_points)
        status = "PASSED" if ok else "FAILED"
        final = self.final_name(best.precision, bool(ok))
        write_sidecar(best.artifact, self.sidecar(best, status))
        with atomic_dir(final) as tmp:
            for p in best.folder.iterdir():
                shutil.move(str(p), tmp / p.name)
        if ok:  # a failure from an earlier run is superseded (a passing artifact is never removed by a failure)
            shutil.rmtree(self.final_name(best.precision, False), ignore_errors=True)
        shutil.rmtree(self.work, ignore_errors=True)
        artifact = final / best.artifact.name
        if ok:  # the deployable artifact carries the val split's drift profile, at its own threshold
            self.profile(artifact)
        res = {"artifact": str(artifact), "backend": self.backend, "precision": best.precision,
               "method": best.method, "map50_fp32": self.baseline["map50"], "map50_95_fp32": self.baseline["map50_95"],
               "map50": best.map50, "map50_95": best.map50_95, "drop_points": round(best.drop_points, 3),
               "images": self.baseline.get("images"), "max_map_drop": self.max_map_drop, "status": status, "attempt": best.label,
               "fallbacks": [a.summary() for a in self.attempts], "excluded": best.excluded,
               "reverted": best.reverted, "calib": {k: v for k, v in self.manifest.items() if k != "files"},
               "recipe": self.recipe.name, "path": best.path, "build_s": round(best.build_s, 1),
               "threshold": best.threshold, "threshold_fp32": self.baseline["threshold"],
               "recall_drops": best.recall_drops, "layer_snr": self.diagnosis}
        self.log(f"{status}: {artifact} ({best.precision}, {best.label}), mAP50-95 {best.map50_95:.4f} "
                 f"(FP32 {self.baseline['map50_95']:.4f}, drop {best.drop_points:+.2f} points)")
        if not ok:
            also = f"or a class more than {self.max_class_drop:g} " if self.max_class_drop is not None else ""
            rec = (f"or a class more than {self.max_recall_drop:g} recall points "
                   if self.max_recall_drop is not None else "")
            layers = f"; worst layers by SNR: {describe(self.diagnosis)}" if self.diagnosis else ""
            err = AccuracyGateError(f"{artifact}: every attempt lost more than {self.max_map_drop:g} mAP50-95 points "
                                    f"{also}{rec}(best: {best.label}, {best.drop_points:.2f}{self.why(best)}){layers}; "
                                    f"sidecar marked FAILED, kept for inspection only (Engine refuses it without "
                                    f"allow_failed=True)")
            err.result = res
            raise err
        return res

    def profile(self, artifact: Path) -> None:
        """The val split's drift profile through the artifact's own backend; with too few val images (a profile
        needs MIN_IMAGES) the artifact goes without one, said in the log (serve and monitor say 'no profile')."""
        from ..drift.profile import attach_profile

        try:
            attach_profile(artifact, self.ds, log=self.log, backend=self.engine_backend, device=self.device)
        except DataError as e:
            self.log(f"no drift profile for {artifact.name}: {e}")

    def cleanup(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)
