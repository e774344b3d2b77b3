"""Building and gating each variant's artifact, and its eval stage."""
from __future__ import annotations

from pathlib import Path

from ..errors import AccuracyGateError, EdgekitError
from .variants import SWEPT_BACKENDS, Variant


class Building:
    """Mixin of Pipeline: the build stage of each backend/precision (gated against FP32) and the eval stage."""

    def _evaluate(self, artifact: str, v: Variant, matches: Path) -> dict:
        """The eval stage: mAP of the artifact on the val split, its per-image matches saved; paths run-relative."""
        from ..eval import evaluate

        if self.remote:
            from ..target.ssh import remote_eval

            acc = remote_eval(self.remote, artifact, self.dataset(), ["--backend", v.backend], matches=matches)
            return {**acc, "matches": self.rel(matches), "artifact": self.rel(artifact)}
        acc = evaluate(artifact, self.dataset(), backend=v.backend, device=self.target, progress=False,
                       matches_path=matches)
        return {**acc, "matches": self.rel(acc["matches"]), "artifact": self.rel(acc["artifact"])}

    def build_inputs(self, onnx_path: Path, v: Variant) -> dict:
        """What a build's output depends on: the ONNX's content, the variant, the gate, the data and the recipe."""
        from .._imports import tool_versions
        from ..quantize.recipe import recipe_for
        from ..runtime.meta import read_sidecar

        recipe = recipe_for(read_sidecar(onnx_path).get("family")).path
        return {"onnx": self.file_hash(onnx_path), "variant": f"{v.backend}-{v.precision}", "target": self.target,
                "max_map_drop": self.max_map_drop, "max_class_drop": self.max_class_drop, "calib_size": self.calib_size, "data": self.data_key(),
                **({"max_recall_drop": self.max_recall_drop, "min_class_boxes": self.min_class_boxes,
                    "threshold": self.threshold_spec} if v.precision != "fp32" else {}),  # the recall gate's
                "recipe": self.file_hash(recipe) if recipe else None,
                "versions": tool_versions("onnx", "onnxruntime", "openvino", "nncf", "tensorrt",
                                          *self.converters(v.backend))}

    @property
    def threshold_spec(self) -> str:
        """How deployment thresholds are chosen (max_f1, precision:P, recall:R): the gates' FP32 threshold too."""
        from ..quantize.job import threshold_spec

        return threshold_spec(self.target_precision, self.target_recall)

    @staticmethod
    def converters(backend: str) -> tuple:
        """The libraries a declared-build backend's artifact comes from (its runtime and converters): none for the
        backends Pipeline.build builds by name."""
        from ..runtime.backends import get_backend

        if backend in SWEPT_BACKENDS:
            return ()
        cls = get_backend(backend)
        return tuple(m for m in (cls.module, *cls.build_modules) if m)

    def _build_stage(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """The build stage's result: build()'s, its artifact named relative to the run folder."""
        built = self.build(onnx_path, v, sdir)
        return {**built, "artifact": self.rel(built["artifact"])}

    def build(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """The deployable artifact of one backend/precision: {"artifact", "accuracy" (set when the gate measured it)}."""
        if v.backend not in SWEPT_BACKENDS:
            return self.build_declared(onnx_path, v, sdir)
        if v.backend == "onnxruntime" and v.precision == "fp32":
            return {"artifact": str(onnx_path), "accuracy": None}
        if v.backend == "openvino" and v.precision in ("bf16", "fp16"):
            return self.build_openvino_reduced(onnx_path, sdir, v.precision)
        if v.backend == "openvino" and v.precision == "fp32":
            from ..export.openvino import onnx_to_openvino

            folder = onnx_to_openvino(onnx_path, sdir / "openvino_fp32", log=self._detail)
            return {"artifact": str(folder), "accuracy": None}
        from ..quantize import quantize

        if v.backend == "tensorrt" and v.precision == "fp16":
            from ..quantize.tensorrt import build_engine

            return {"artifact": str(build_engine(onnx_path, sdir / "tensorrt_fp16", precision="fp16")), "accuracy": None}
        import warnings

        from ..data.calibration import CalibrationWarning

        with warnings.catch_warnings():  # said once for the run, by check_calibration
            warnings.simplefilter("ignore", CalibrationWarning)
            res = quantize(onnx_path, self.dataset(), backend=v.backend,
                           method="minmax" if v.backend == "onnxruntime" else "auto", calib_size=self.calib_size,
                           max_map_drop=self.max_map_drop, device=self.target, max_class_drop=self.max_class_drop,
                           max_recall_drop=self.max_recall_drop, min_class_boxes=self.min_class_boxes,
                           target_precision=self.target_precision, target_recall=self.target_recall,
                           out_dir=self.int8_dir(sdir, v.backend), force=True, log=self._detail)
        return {"artifact": str(res["artifact"]),
                "accuracy": {"map50": res["map50"], "map50_95": res["map50_95"], "images": res.get("images"),
                             "split": "val", "source": "accuracy gate of edgekit quantize"}}

    @staticmethod
    def int8_dir(sdir: Path, backend: str) -> Path:
        """Where a trial's INT8 job of `backend` writes (its artifact, and the FP32-baseline cache bf16 shares)."""
        return sdir / f"{backend}_int8"

    def build_openvino_reduced(self, onnx_path: Path, sdir: Path, precision: str) -> dict:
        """The IR with FP16 weights, or the FP32 IR compiled for bf16, gated (Pipeline.gate) against the FP32 model on
        OpenVINO."""
        from ..export.openvino import onnx_to_openvino
        from ..quantize.job import BASELINE_FILE, fp32_baseline

        folder = onnx_to_openvino(onnx_path, sdir / f"openvino_{precision}", precision=precision, device=self.target,
                                  log=self._detail)
        # the same cache file as the OpenVINO INT8 job of this trial: its FP32 baseline is evaluated once
        base = fp32_baseline(onnx_path, self.dataset(), "val", None, self._detail, "openvino", self.target,
                             self.int8_dir(sdir, "openvino") / BASELINE_FILE, self.target_precision,
                             self.target_recall)
        return self.gate(folder, Variant("openvino", precision), base)

    def build_declared(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """A backend's artifact as it declares it is built (Backend.build); a reduced precision gated against FP32
        on the same backend."""
        import warnings

        from ..data.calibration import CalibrationWarning, calibration_set
        from ..runtime.backends import get_backend
        from ..runtime.meta import read_sidecar

        cls = get_backend(v.backend)
        if v.precision not in cls.builds:
            raise EdgekitError(f"the {v.backend} backend builds {', '.join(cls.builds) or 'no artifacts'}, "
                               f"not {v.precision}")
        calib = None
        if v.precision in cls.calibrated:
            doc = read_sidecar(onnx_path)
            with warnings.catch_warnings():  # said once for the run, by check_calibration
                warnings.simplefilter("ignore", CalibrationWarning)
                calib = calibration_set(self.dataset(), tuple(doc["imgsz"]), self.calib_size, "train", self.seed,
                                        True, "val", int(doc.get("letterbox", {}).get("pad_value", 114)))
        opts = {"checkpoint": sdir / "train" / "best.pt", "trust_checkpoint": self.trust_checkpoint} \
            if cls.build_from == "checkpoint" else {}
        artifact = cls.build(onnx_path, v.precision, sdir / f"{v.backend}_{v.precision}", calib=calib,
                             log=self._detail, **opts)
        if v.precision == "fp32":
            return {"artifact": str(artifact), "accuracy": None}
        return self.gate(artifact, v, self.declared_baseline(onnx_path, v.backend, sdir))

    def declared_baseline(self, onnx_path: Path, backend: str, sdir: Path) -> dict:
        """The FP32 artifact of a declared-build backend (the fp32 row's build stage: built once per trial) and its
        mAP on the val split through the same backend (a stage of its own: evaluated once per trial)."""
        from ..eval import evaluate

        v = Variant(backend, "fp32")
        stages = sdir / "stages"
        built = self.stage(f"{self.rel(sdir)}: {backend}-fp32 build", stages / f"{backend}-fp32.build.json",
                           self.build_inputs(onnx_path, v), lambda: self._build_stage(onnx_path, v, sdir),
                           output=lambda r: self.at(r["artifact"]))
        artifact = self.at(built["artifact"])

        def run():
            r = evaluate(artifact, self.dataset(), backend=backend, device=self.target, precision="fp32",
                         progress=False, target_precision=self.target_precision, target_recall=self.target_recall)
            return {k: r.get(k) for k in ("map50", "map50_95", "images", "backend", "device", "precision_executed",
                                          "per_class", "per_class_instances", "threshold")}

        return self.stage(f"{self.rel(sdir)}: {backend}-fp32 gate baseline", stages / f"{backend}-fp32.baseline.json",
                          {"artifact": self.content_hash(artifact.parent), "backend": backend, "device": self.target,
                           "data": self.data_key(), "split": "val", "threshold": self.threshold_spec}, run)

    def gate(self, artifact: Path, v: Variant, base: dict) -> dict:
        """A reduced-precision artifact against the FP32 baseline of its own backend (same split, same
        --max-map-drop and --max-class-drop): its sidecar gets `accuracy_gate` and PASSED/FAILED; AccuracyGateError
        when it fails."""
        from ..eval import class_drops, evaluate, recall_drops
        from ..eval.threshold import recall_drop_text
        from ..runtime.meta import read_sidecar, write_sidecar

        ds = self.dataset()
        conf = base["threshold"]["conf"]  # the FP32 artifact's deployment threshold: recall is compared there
        acc = evaluate(artifact, ds, backend=v.backend, device=self.target, progress=False,
                       target_precision=self.target_precision, target_recall=self.target_recall, at_threshold=conf)
        drop = (base["map50_95"] - acc["map50_95"]) * 100
        classes = [] if self.max_class_drop is None else class_drops(
            base.get("per_class"), acc.get("per_class"), base.get("per_class_instances"),
            self.min_class_boxes, self.max_class_drop)
        recall = [] if self.max_recall_drop is None else recall_drops(
            base["threshold"], acc["at_threshold"], self.max_recall_drop, self.min_class_boxes)
        passed = drop <= self.max_map_drop + 1e-9 and not classes and not recall
        doc = read_sidecar(artifact)
        baseline = {k: base.get(k) for k in ("backend", "device", "precision_executed")}
        doc["accuracy_gate"] = {"split": "val", "data": str(ds.source), "images": acc["images"],
                                "max_map_drop": self.max_map_drop, "max_class_drop": self.max_class_drop,
                                "map50_fp32": base["map50"], "map50_95_fp32": base["map50_95"], "map50": acc["map50"],
                                "map50_95": acc["map50_95"], "drop_points": round(drop, 3),
                                "class_drops": [list(c) for c in classes], "baseline": baseline,
                                "max_recall_drop": self.max_recall_drop, "min_class_boxes": self.min_class_boxes,
                                "threshold_fp32": base["threshold"], "at_fp32_threshold": acc["at_threshold"],
                                "recall_drops": recall}
        doc["status"] = "PASSED" if passed else "FAILED"
        doc["threshold"] = acc["threshold"]
        write_sidecar(artifact, {k: x for k, x in doc.items() if k != "format"})
        why = "".join(f"; class '{c}' lost {d:.1f} points (max {self.max_class_drop:g})" for c, d in classes)
        why += recall_drop_text(recall, conf, self.max_recall_drop)
        self._detail(f"{v.precision} gate: mAP50-95 {acc['map50_95']:.4f} vs FP32 {base['map50_95']:.4f} on "
                     f"{v.backend}: drop {drop:+.2f} points (max {self.max_map_drop:g}){why} -> {doc['status']}")
        if not passed:
            err = AccuracyGateError(f"{artifact}: {v.precision} loses {drop:.2f} mAP50-95 points against FP32 on "
                                    f"{v.backend} (max {self.max_map_drop:g}){why}; sidecar marked FAILED")
            err.result = {"artifact": str(artifact), "status": "FAILED", "map50_95_fp32": base["map50_95"],
                          "map50_95": acc["map50_95"], "drop_points": round(drop, 3),
                          "max_map_drop": self.max_map_drop, "recall_drops": recall}
            raise err
        return {"artifact": str(artifact),
                "accuracy": {"map50": acc["map50"], "map50_95": acc["map50_95"], "images": acc["images"],
                             "split": "val", "precision_executed": acc["precision_executed"],
                             "source": f"{v.precision} accuracy gate"}}

