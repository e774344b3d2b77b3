"""The quantizer protocol and the one algorithm that drives it (NNCF's shape: the algorithm once, thin backends).

`run(job, quantizer)` tries, until one attempt passes the accuracy gate (cheapest first):
1. plain post-training quantization with the recipe's float scope, for each method the backend tries (ranked on a
   validation subset under --method auto when there are several): path "ptq";
2. when that fails, the layers that lose most (lowest SNR, diagnose.py) are compared and kept in float on top of the
   recipe's scope: path "fallback:worst-layers";
3. the recipe's fallback stages (each adding to the scope, the worst layers included): "fallback:<stage>";
4. accuracy control where the backend has it: path "accuracy_control";
5. the backend's float fallback: "fallback:<precision>".
Steps 3 and 4 share --quantize-budget-s, counted from the start of step 3: an INT8 stage that would start after the
budget is recorded as skipped (one that has started runs to its end), accuracy control gets what is left and stops
inside NNCF's loop when it is spent; the float fallback always runs. A backend that reuses its calibration
statistics between attempts (OpenVINO) makes steps 2-3 cost an evaluation each, so they come before accuracy control,
which evaluates the model once per group of quantizers it ranks.
A backend module supplies only a `Quantizer`: how to build one INT8 attempt for a scope and a method.
"""
from __future__ import annotations

import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

from .job import Job

# sidecar fields an artifact needs to be evaluated by Engine during method selection
_EVAL_FIELDS = ("names", "imgsz", "stride", "letterbox", "input", "output")


class Quantizer(ABC):
    """How one backend builds INT8 candidates; instances live for one job and may keep state between attempts."""

    name: str = ""                       # its name in edgekit.quantize.REGISTRY
    requires: tuple[tuple[str, str], ...] = ()  # (module, what needs it): checked before any work, with the extra
    default_device: str = "cpu"          # where its artifacts are evaluated when --device is not given
    tries_other_methods: bool = False    # after the chosen method, try the recipe's other methods (attempts method-X)
    float_fallback: str | None = None    # precision of the last attempt when no INT8 one passes (e.g. "fp16")
    sweep_method: str = "auto"           # the --method train-export asks for
    # optional: accuracy_control(job, folder, keep_float, method) -> artifact or (artifact, found) as Job.attempt takes
    accuracy_control: Callable | None = None

    def check_available(self) -> None:
        """Raise the one-line install hint when one of the backend's libraries is missing."""
        from .._imports import require

        for module, purpose in self.requires:
            require(module, purpose)

    def prepare(self, job: Job) -> None:
        """Work shared by every attempt (pre-processing, sidecar facts); runs once, before `nodes`."""

    @abstractmethod
    def nodes(self, job: Job) -> list[tuple[str, str]]:
        """(name, ONNX-style op type) of the graph that the recipe's float scopes are matched against."""

    @abstractmethod
    def methods(self, job: Job) -> list[str]:
        """Calibration methods the recipe lists for this backend, its choice first."""

    @abstractmethod
    def build_attempt(self, job: Job, folder: Path, keep_float: list[str], method: str) -> Path:
        """Build one INT8 candidate into `folder` with the named nodes kept in float; returns the artifact path."""

    def attempt_extra(self, job: Job) -> dict:
        """Fields every INT8 attempt adds to its sidecar's 'quantization' section."""
        return {}

    def build_float(self, job: Job, folder: Path, precision: str) -> Path:
        """Build the `float_fallback` artifact into `folder`; returns its path."""
        raise NotImplementedError(f"{self.name} has no float fallback")

    def layer_snr(self, job: Job, artifact: Path, images: list[Path]) -> dict[str, float] | None:
        """SNR in dB of each quantized layer's input (float vs quantized) over `images`, keyed by the node names
        `nodes()` lists; None where the backend cannot compare (then no layer is named)."""
        return None


def method_order(job: Job, q: Quantizer) -> list[str]:
    """Methods tried with the recipe's scope: --method (unless auto), then the recipe's if the backend tries others."""
    chosen = [job.method] if job.method != "auto" else []
    order = list(dict.fromkeys(chosen + q.methods(job)))
    return order if q.tries_other_methods else order[:1]


def select_methods(job: Job, q: Quantizer, order: list[str], keep: list[str]) -> dict[str, tuple[float, Path, float]]:
    """--method auto: each method's INT8 candidate (built into work/select-METHOD), its mAP50-95 on a subset and
    its build seconds."""
    from ..eval import evaluate
    from ..runtime.meta import write_sidecar

    n = int(job.recipe.backend(job.backend).get("select_subset", 32))
    n = min(n, job.eval_limit) if job.eval_limit else n
    job.log(f"method auto: trying {', '.join(order)} on the first {n} '{job.eval_split}' images")
    built = {}
    for m in order:
        folder = job.work / f"select-{m}"
        folder.mkdir()
        t0 = time.perf_counter()
        artifact = q.build_attempt(job, folder, keep, m)
        build_s = time.perf_counter() - t0
        write_sidecar(artifact, {**{k: job.fp32[k] for k in _EVAL_FIELDS if k in job.fp32}, "precision": "int8"})
        r = evaluate(artifact, job.ds, split=job.eval_split, limit=n, backend=job.backend, progress=False)
        built[m] = (r["map50_95"], artifact, build_s)
        job.log(f"  {m}: mAP50-95 {r['map50_95']:.4f} on {r['images']} images")
    return built


def reuse(artifact: Path, build_s: float) -> Callable[[Path], tuple]:
    """A build that copies a candidate method selection already built (its folder, less its evaluation sidecar);
    its build time is the candidate's."""
    def build(folder: Path) -> tuple:
        for p in artifact.parent.iterdir():
            if p != artifact.with_suffix(".json"):
                shutil.copy2(p, folder / p.name)
        return folder / artifact.name, {"build_s": build_s}
    return build


def run(job: Job, q: Quantizer) -> None:
    """Attempts in the fallback chain's order until one passes the gate (labels as the sidecar records them)."""
    q.prepare(job)
    nodes = q.nodes(job)
    base = job.recipe.keep_float
    keep = base.match(nodes)
    order = method_order(job, q)
    selected = select_methods(job, q, order, keep) if job.method == "auto" and len(order) > 1 else {}
    scores = {m: score for m, (score, _, _) in selected.items()}
    if scores:
        order = sorted(order, key=lambda m: -scores[m])
    extra = {**q.attempt_extra(job), **({"method_selection": scores} if scores else {})}
    for i, m in enumerate(order):
        build = reuse(*selected[m][1:]) if m in selected else (lambda f, m=m: q.build_attempt(job, f, keep, m))
        job.attempt("recipe" if i == 0 else f"method-{m}", build, m, excluded=keep, extra=extra, path="ptq")
        if job.passed:
            return
    best = max(job.attempts, key=lambda a: a.map50_95)
    method = best.method
    worst = [d["layer"] for d in diagnose(job, q, best) if d["layer"] not in keep]
    if worst:
        names = keep + worst
        job.attempt("fallback-worst-layers", lambda f: q.build_attempt(job, f, names, method), method,
                    excluded=names, extra=extra, path="fallback:worst-layers")
        if job.passed:
            return
    job.start_budget()
    scope = base
    for stage, more in job.recipe.fallback:
        scope = scope + more
        matched = scope.match(nodes)
        names = matched + [n for n in worst if n not in matched]
        job.attempt(f"fallback-{stage}", lambda f, n=names: q.build_attempt(job, f, n, method), method,
                    excluded=names, extra=extra, path=f"fallback:{stage}")
        if job.passed:
            return
    if q.accuracy_control is not None and job.max_map_drop is not None:
        job.attempt("accuracy-control", lambda f: q.accuracy_control(job, f, keep, method), method, excluded=keep,
                    path="accuracy_control")
        if job.passed:
            return
    if q.float_fallback:
        job.attempt(q.float_fallback, lambda f: q.build_float(job, f, q.float_fallback), "none",
                    precision=q.float_fallback, path=f"fallback:{q.float_fallback}")


def diagnose(job: Job, q: Quantizer, failed) -> list[dict]:
    """The WORST layers of a failed INT8 attempt by SNR on a few calibration images (job.diagnosis; [] if none)."""
    from .diagnose import DIAGNOSE_IMAGES, describe, worst_layers

    if not failed.evaluated or failed.precision != "int8":
        return []
    snr = q.layer_snr(job, failed.artifact, list(job.calib.items[:DIAGNOSE_IMAGES]))
    if snr is None:
        job.log(f"layer comparison: not available for {job.backend}")
        return []
    job.diagnosis = worst_layers(snr)
    job.log(f"worst layers of '{failed.label}' by SNR (float vs int8, {min(DIAGNOSE_IMAGES, len(job.calib))} "
            f"calibration images): {describe(job.diagnosis)}")
    return job.diagnosis
