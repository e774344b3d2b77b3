"""One trial's steps: train (to a halving rung, or fully), export, then build and evaluate each variant."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from ..errors import AccuracyGateError, EdgekitError
from ..io import atomic_path, atomic_write_json
from .confirm import record_threshold, row_threshold, threshold_fields
from .stages import _json_or_none, gate_figures
from .trial import ROWS_FORMAT, Trial, model_name, run_relative
from .variants import variants_for


class _RungDone(Exception):
    """Raised from a training callback when a halving rung's epochs are done (train.json says 'interrupted')."""


class TrialSteps:
    """Mixin of Pipeline: a trial's training and its per-variant build and eval stages."""

    def train_inputs(self, t: Trial) -> dict:
        from .._imports import tool_versions

        device = "cpu" if not self.target.startswith("cuda") else self.target
        return {"data": self.data_key(), "weights": self.model_key(t.model), "strategy": t.strategy,
                "epochs": self.epochs, "imgsz": t.imgsz, "batch": self.batch, "seed": self.seed,
                "device": device, "gpu_hour_usd": self.gpu_hour_usd, "versions": tool_versions("ultralytics", "torch")}

    def train_trial(self, t: Trial, rung: int | None = None, resume: bool = False) -> dict:
        """Train a trial to self.epochs, or (rung) stop after `rung` of them keeping last.pt; resume: from last.pt."""
        from ..train import train

        tdir = t.folder(self.out, self.nested)
        inputs = self.train_inputs(t)
        device = inputs["device"]
        final = rung is None or rung >= self.epochs
        name = f"{t.label(self.nested)}: train" + ("" if final else f" to rung {rung}")
        record = tdir / "stages" / ("train.json" if final else f"train@{rung}.json")
        if not final:
            inputs = {**inputs, "rung": rung}
        ckpt = tdir / "train" / ("best.pt" if final else f"rung{rung}.pt")

        started = record.with_name(record.stem + ".started.json")

        def run():
            from ..train.record import read_train_json

            callbacks = {} if final else {"on_fit_epoch_end": lambda tr: _stop_at(tr, rung)}
            # this training finished with these inputs before (and none was started since), and its checkpoint has
            # gone or changed since: what is left (last.pt, a train.json saying "done") cannot be continued, so it
            # trains from the start; a retraining that was interrupted in turn continues like any other
            old = _json_or_none(record) or {}
            redo = old.get("inputs") == inputs and old.get("run") == (_json_or_none(started) or {}).get("run")
            # a retried task (its worker died) or a --resume after a crash continues from the last finished epoch
            again = (not redo and not resume and self._started(started, inputs)
                     and (tdir / "train" / "last.pt").exists())
            done_epochs = len(read_train_json(tdir / "train").get("epoch_records") or []) if again else 0
            atomic_write_json(started, {"stage": name, "status": "started", "inputs": inputs, "run": self.run_id})
            self.push(tdir)
            try:
                doc = train(t.model, self.dataset(), strategy=t.strategy, epochs=self.epochs, imgsz=t.imgsz,
                            batch=self.batch, device=device, out_dir=tdir / "train", seed=self.seed,
                            gpu_hour_usd=self.gpu_hour_usd, workers=0, log=self._detail,
                            trust_checkpoint=self.trust_checkpoint,
                            resume=(resume and not redo) or (again and done_epochs > 0),
                            **({"callbacks": callbacks} if callbacks else {}))
            except _RungDone:
                doc = read_train_json(tdir / "train")
                with atomic_path(ckpt) as tmp:
                    shutil.copy2(tdir / "train" / "last.pt", tmp)
                recs = doc.get("epoch_records") or [{}]
                doc = {**doc, "rung": rung, "map50_95": recs[-1].get("map50_95"), "map50": recs[-1].get("map50")}
            if again and done_epochs:
                doc = {**doc, "resumed_from_epoch": done_epochs}
            doc = {k: v for k, v in doc.items() if k != "epoch_records"}
            return {**doc, "best": self.rel(ckpt)} if doc.get("best") else doc

        return self.stage(name, record, inputs, run, output=lambda r: ckpt)

    def _started(self, marker: Path, inputs: dict) -> bool:
        """Whether a training with these inputs was started before by this run (or any run, with --resume)."""
        doc = _json_or_none(marker)
        return isinstance(doc, dict) and doc.get("inputs") == inputs and (self.resume or doc.get("run") == self.run_id)

    def _restore_rung(self, t: Trial, rung: int) -> None:
        """Continue from the rung's own checkpoint: put it back as last.pt if a later, unfinished run moved it."""
        tdir = t.folder(self.out, self.nested) / "train"
        src, last = tdir / f"rung{rung}.pt", tdir / "last.pt"
        if src.exists() and (not last.exists() or self.file_hash(src) != self.file_hash(last)):
            with atomic_path(last) as tmp:
                shutil.copy2(src, tmp)

    def run_trial(self, t: Trial, tinfo: dict | None = None) -> list[dict]:
        """Train (tinfo: the halving already did) -> export -> build and evaluate each backend/precision.

        Rows come back without speed; `measure_speed` adds it. Each row keeps in `_bench` what to time.
        """
        from .._imports import tool_versions
        from ..export import export_onnx
        from .speed import graph_key

        sdir = t.folder(self.out, self.nested)
        label = t.label(self.nested)
        best = sdir / "train" / "best.pt"
        trained_here = tinfo is None
        tinfo = tinfo or self.train_trial(t)
        onnx_path = self.at(self.stage(f"{label}: export", sdir / "stages" / "export.json",
                                       {"weights": self.file_hash(best), "imgsz": t.imgsz, "opset": self.opset,
                                        "versions": tool_versions("torch", "ultralytics", "onnx", "onnxslim")},
                                       lambda: self.rel(export_onnx(best, sdir / "onnx", imgsz=t.imgsz,
                                                                    opset=self.opset, log=self._detail,
                                                                    trust_checkpoint=self.trust_checkpoint)),
                                       output=self.at))
        # the executor already said how the training went when it trained this trial: say it once
        self.log(f"  {label}: " + (f"trained {tinfo.get('epochs')} epochs in {tinfo.get('wall_s') or 0:.0f} s, "
                                   if trained_here else "") + f"exported {onnx_path.name}")
        run_versions = tool_versions("onnxruntime", "openvino", "tensorrt")
        rows = []
        for v in variants_for(self.target, self.backends, self.precisions):
            name = f"{v.backend}-{v.precision}"
            row = {"model": model_name(t.model), "imgsz": t.imgsz, "strategy": t.strategy, "backend": v.backend,
                   "precision": v.precision, "train_wall_s": tinfo.get("wall_s"), "gpu_hours": tinfo.get("gpu_hours"),
                   "cost_usd": tinfo.get("cost_usd"), "epochs": tinfo.get("epochs")}
            try:
                built = self.stage(f"{label}: {name} build", sdir / "stages" / f"{name}.build.json",
                                   self.build_inputs(onnx_path, v),
                                   lambda v=v: self._build_stage(onnx_path, v, sdir),
                                   output=lambda r: self.at(r["artifact"]))
                artifact = str(self.at(built["artifact"]))
                used = {"artifact": self.content_hash(artifact), "backend": v.backend,
                        "target": self.measured_on, "versions": run_versions}
                matches = sdir / "stages" / f"{name}.matches.npz"
                # every row is evaluated here, the same way (a gate's own figure is not reused): its per-image
                # matches feed the bootstrap interval and the paired comparisons of the recommendation
                acc = self.stage(f"{label}: {name} eval", sdir / "stages" / f"{name}.eval.json",
                                 {**used, "data": self.data_key(), "eval": "matches-v1"},
                                 lambda a=artifact, v=v: self._evaluate(a, v, matches),
                                 output=lambda r: self.at(r["matches"]))
                row.update({"map50": acc["map50"], "map50_95": acc["map50_95"], "map50_95_ci": acc["map50_95_ci"],
                            "per_class": acc["per_class"], "per_size": acc["per_size"], "eval_images": acc["images"],
                            "matches": str(self.at(acc["matches"])), "artifact": artifact, "status": "ok",
                            "_bench": {"artifact": artifact, "backend": v.backend, "precision": v.precision,
                                       "record": str(sdir / "stages" / f"{name}.bench.json"),
                                       "name": f"{label}: {name} bench"}})
                row["_bench"]["graph"] = graph_key(artifact, v.backend, v.precision, self.measured_on)
                row.update(host_accuracy(acc, built.get("accuracy")) if self.remote else {})
                thr = self.threshold(artifact, row["matches"])
                row.update(threshold_fields(thr))
                ci = acc["map50_95_ci"]
                self.log(f"  {name}: mAP50-95 {acc['map50_95']:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]; at conf "
                         f"{thr['conf']:g}: P {thr['precision']:.3f} R {thr['recall']:.3f} F1 {thr['f1']:.3f}")
            except AccuracyGateError as e:
                row.update({"status": "FAILED", "error": str(e), "artifact": None,
                            "gate": gate_figures(getattr(e, "result", None))})
                self.log(f"  {name}: FAILED its accuracy gate: {e}")
            except EdgekitError as e:
                row.update({"status": "error", "error": str(e), "artifact": None})
                self.log(f"  {name}: error: {e}")
            rows.append(row)
        doc = {"format": ROWS_FORMAT, "trial_dir": self.rel(sdir),
               "trial": {"model": model_name(t.model), "imgsz": t.imgsz, "strategy": t.strategy},
               "data": self.data_key(), "target": self.measured_on, "rows": [run_relative(r, self.out) for r in rows]}
        path = sdir / "stages" / "rows.json"
        if _json_or_none(path) != json.loads(json.dumps(doc)):  # resumed with nothing new: left untouched
            atomic_write_json(path, doc)
            self.push(sdir)
        return rows

    def threshold(self, artifact: str, matches: str) -> dict:
        """The row's deployment threshold from its val matches (no inference), recorded in the artifact's sidecar."""
        thr = row_threshold(matches, self.dataset().names, self.target_precision, self.target_recall)
        record_threshold(artifact, thr)
        return thr


def host_accuracy(device: dict, host: dict | None) -> dict:
    """A device row's mAP50-95 as the host measured it (its accuracy gate) and the device's minus the host's; {}
    where the host did not measure the artifact."""
    if not host or host.get("map50_95") is None:
        return {}
    return {"map50_95_host": host["map50_95"], "map50_95_host_source": host.get("source"),
            "map50_95_device_minus_host": round(device["map50_95"] - host["map50_95"], 5)}


def _stop_at(trainer, rung: int) -> None:
    """Training callback: end this run after `rung` epochs (last.pt and train.json are written by then)."""
    if trainer.epoch + 1 >= rung:
        raise _RungDone()
