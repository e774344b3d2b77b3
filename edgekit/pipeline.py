"""train-export: for each trial (model x imgsz x strategy), train -> export -> quantize/convert -> eval; then speed
once per graph, interleaved on the target; then the table, the constraints and the choice.

A trial (edgekit.sweep.Trial) runs independently given this shared config and its stage-record folder
(`Pipeline.run_trial`), so an executor may run trials elsewhere; speed is measured afterwards on the target, one
measurement per graph (edgekit.sweep.speed). `--search halving` trains every trial to the first rung, keeps the best
1/3 of each model x imgsz group, continues those from their checkpoint to the next rung, and so on.

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
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AccuracyGateError, EdgekitError
from .io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from .sweep.trial import ROWS_FORMAT, Trial, model_name, relative_to, resolved, run_relative

DEFAULT_STRATEGIES = "scratch,head,schedule:0:backbone,1:none,full"
DEFAULT_IMGSZ = "256,320"  # two input sizes, so that the speed axis shows from the first run
DEMO_STRATEGIES = "head,full"  # the bundled demo: 2 strategies x 2 sizes stay within ~8 min on 2 cores


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


def split_list(text: str, what: str, cast=str) -> list:
    """'a, b,,c' -> ['a', 'b', 'c'] (cast each); an empty list or a bad item is an EdgekitError naming the option."""
    items = [t.strip() for t in str(text).split(",") if t.strip()]
    try:
        out = [cast(t) for t in items]
    except ValueError:
        raise EdgekitError(f"{what}: '{text}' is not a comma-separated list of {cast.__name__}s") from None
    if not out:
        raise EdgekitError(f"{what}: empty list")
    return out


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


PRECISIONS = ("fp32", "bf16", "fp16", "int8")
# the backends Pipeline.build builds by name; every other backend is swept through the build it declares
# (Backend.build, its `builds`), and train-export refuses up front one that declares none (torch, a plugin without one)
SWEPT_BACKENDS = ("onnxruntime", "openvino", "tensorrt")
TRAINING = (("torch", "train", "training"), ("ultralytics", "train", "training"), ("onnx", "train", "the ONNX export"))


def check_dependencies(target: str, backends: list[str], precisions: list[str] | None) -> None:
    """Before any work: MissingDependency, naming the pip extra, for the first package the sweep needs that is not
    installed: training and export, the mAP evaluator, each asked backend's runtime and, for INT8, its quantizer."""
    from . import _imports
    from .errors import MissingDependency
    from .quantize import BACKENDS as QUANTIZERS, quantizer_class
    from .runtime.backends import get_backend

    needs = [(m, _imports.install_hint(m, extra), why) for m, extra, why in TRAINING]
    if not any(_imports.available(m) for m in ("faster_coco_eval", "pycocotools")):
        needs.append(("faster_coco_eval", _imports.install_hint("faster_coco_eval"), "the mAP of every row"))
    for b in backends:
        cls = get_backend(b)
        if cls.module:
            needs.append((cls.module, cls.install_hint(), f"--backends {b}"))
        if "int8" in (precisions or DEFAULT_PRECISIONS) and b in QUANTIZERS:
            needs += [(m, _imports.install_hint(m), f"{why}, --precisions int8")
                      for m, why in quantizer_class(b).requires]
    for module, hint, why in needs:
        if not _imports.available(module):
            raise MissingDependency(f"{module} is not installed (train-export needs it for {why}): {hint}")


class _RungDone(Exception):
    """Raised from a training callback when a halving rung's epochs are done (train.json says 'interrupted')."""


@dataclass
class Pipeline:
    out: Path
    data: Path
    model: Path
    strategies: list[str]
    epochs: int = 3
    imgsz: int | list = 320  # one size or a list: the sweep runs every size
    batch: int = 16
    target: str = "cpu"
    remote: str | None = None  # ssh://user@host[:port]/cpu: eval and bench of each row there (target: the device part)
    backends: list[str] = field(default_factory=lambda: ["openvino"])
    precisions: list[str] | None = None  # None: DEFAULT_PRECISIONS
    max_map_drop: float = 0.5
    max_class_drop: float | None = 3.0
    min_fps: float | None = None
    max_latency_ms: float | None = None
    budget_usd: float | None = None
    budget_hours: float | None = None
    gpu_hour_usd: float = 2.0
    calib_size: int = 300
    bench_iters: int = 30
    bench_rounds: tuple = (3, 5)  # (min, max) interleaved rounds per graph
    sustain: float | None = None  # seconds: each distinct graph also runs sustained; the ranking uses its last p50
    seed: int = 0
    opset: int | None = None
    resume: bool = False
    retry_failed: bool = False
    trust_checkpoint: bool = False  # --model loads without the restricted-unpickler check
    models: list | None = None  # several models; None: [model]
    search: str = "grid"  # or "halving"
    log: object = print
    executor: object = None  # edgekit.sweep.executor.LocalExecutor when None (tasks in this process)
    storage: object = None  # edgekit.sweep.storage.Storage holding `out` for every node; None: `out` itself
    report_dir: Path | None = None  # where report.{md,json} and pareto.png go (None: out)
    run_id: str | None = None  # set by each run(): a retried task skips the stages this run already finished
    _hashes: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _data_key: str | None = field(default=None, init=False, repr=False, compare=False)
    _dataset: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.out = Path(os.path.abspath(self.out))  # records name paths relative to it: the cwd never enters them
        self.models = [str(m) for m in (self.models or [self.model])]
        names = [slug(Path(model_name(m)).stem) for m in self.models]
        dup = next((m for m, n in zip(self.models, names) if names.count(n) > 1), None)
        if dup is not None:
            raise EdgekitError(f"--models: {dup}: two models would share the name '{Path(model_name(dup)).stem}' in "
                               f"the report and the run folder; give them distinct file names")
        self.imgszs = [int(x) for x in (self.imgsz if isinstance(self.imgsz, (list, tuple)) else [self.imgsz])]
        if self.search not in ("grid", "halving"):
            raise EdgekitError(f"--search: '{self.search}' is not one of grid, halving")

    @property
    def nested(self) -> bool:
        """Several models or sizes: trial folders and labels name model and size."""
        return len(self.models) > 1 or len(self.imgszs) > 1

    def trials(self) -> list[Trial]:
        return [Trial(m, z, s) for m in self.models for z in self.imgszs for s in self.strategies]

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

    def model_key(self, model=None) -> str:
        """sha256 of the starting weights (or architecture yaml) file, else its name (an Ultralytics yaml name)."""
        model = self.model if model is None else model
        return self.file_hash(model) if Path(model).is_file() else str(model)

    @property
    def _detail(self):
        """Where each stage's own messages go: the log's `detail` level if it has one (the CLI's), else the log."""
        return getattr(self.log, "detail", self.log)

    # stage records ----------------------------------------------------------------------------
    def _done(self, name: str, record: Path, inputs: dict) -> dict | None:
        """The record to reuse on resume: same inputs, and an intact output (or a recorded gate failure)."""
        if not record.exists():
            return None
        try:
            doc = json.loads(record.read_text())
        except json.JSONDecodeError:
            return None
        if not isinstance(doc, dict) or doc.get("inputs") != inputs:
            return None
        same_run = self.run_id is not None and doc.get("run") == self.run_id  # a retried task of this run
        if not (self.resume or same_run):
            return None
        if doc.get("status") == "FAILED":
            return None if self.retry_failed and not same_run else doc
        produced = doc.get("produced")
        if produced:
            if Path(produced["path"]).is_absolute():  # an older record: it names a folder that may not be this run's
                self.log(f"[resume] {name}: its record names {produced['path']}, not a path in this run: running again")
                return None
            p = self.at(produced["path"])
            if not p.exists() or self.content_hash(p) != produced["sha256"]:
                self.log(f"[resume] {name}: {p} is missing or changed since it was recorded: running again")
                return None
        return doc if doc.get("status") == "done" else None

    def stage(self, name: str, record: Path, inputs: dict, fn, output=None):
        """Run fn() unless a finished record with the same inputs and an intact output exists (resume).

        output(result) -> the file or folder the stage produced; its path relative to the run folder and its sha256 go
        into the record. Paths in fn's result are relative to the run folder too (callers resolve them with `at`),
        so a moved or copied run folder means the same thing. A failed accuracy gate is recorded (status FAILED, the
        error and the gate figures) and raised again on resume.
        """
        prev = self._done(name, record, inputs)
        if prev is not None and prev.get("status") == "FAILED":
            self._detail(f"[resume] {name}: failed its accuracy gate before, skipped (--retry-failed to try again)")
            err = AccuracyGateError(prev["error"])
            gate = prev.get("gate")
            err.result = resolved(gate, self.out) if gate else gate
            raise err
        if prev is not None:
            self._detail(f"[resume] {name}: done, skipped")
            return prev["result"]
        self._detail(f"[stage] {name} ...")
        t = time.perf_counter()
        try:
            result = fn()
        except AccuracyGateError as e:
            gate = gate_figures(getattr(e, "result", None))
            atomic_write_json(record, {"stage": name, "status": "FAILED", "inputs": inputs, "error": str(e),
                                       "gate": run_relative(gate, self.out) if gate else gate, "run": self.run_id,
                                       "seconds": round(time.perf_counter() - t, 2)})
            self.push(record.parent.parent)
            raise
        doc = {"stage": name, "status": "done", "inputs": inputs, "result": result, "run": self.run_id,
               "seconds": round(time.perf_counter() - t, 2)}
        if output is not None:
            p = Path(output(result))
            doc["produced"] = {"path": self.rel(p), "sha256": self.content_hash(p)}
        atomic_write_json(record, doc)
        self.push(record.parent.parent)
        return result

    # storage ----------------------------------------------------------------------------------
    def rel(self, path) -> str:
        """A path under the run folder, relative to it: the name records and the storage give it."""
        p = Path(os.path.abspath(path))
        if not p.is_relative_to(self.out):  # named through a symlink on one side only
            p, base = p.resolve(), self.out.resolve()
            if not p.is_relative_to(base):
                raise EdgekitError(f"{path}: a stage output outside the run folder {self.out} cannot be recorded")
            return p.relative_to(base).as_posix()
        return p.relative_to(self.out).as_posix()

    def at(self, rel) -> Path:
        """The path in this run folder that a record's run-relative name stands for."""
        return self.out / rel

    def push(self, folder: Path) -> None:
        """Upload a trial folder to a remote storage after a stage (nothing to do for a shared folder)."""
        if self.storage is not None and self.storage.is_remote:
            self.storage.push(self.rel(folder))

    def pull(self, path: Path) -> None:
        """Bring a trial folder (or an artifact) from a remote storage into this node's mirror."""
        if self.storage is not None and self.storage.is_remote:
            self.storage.pull(self.rel(path))

    # the sweep --------------------------------------------------------------------------------
    def check_model(self) -> None:
        """Refuse, before any work, a model whose checkpoints the sweep cannot export (YOLO-NAS, for now), a
        checkpoint the restricted unpickler refuses, and an architecture yaml that Ultralytics would turn into code
        (training checks its private copy again)."""
        from .checkpoint import UnsafeModelYaml, check_arch_yaml, check_checkpoint

        for m in self.models:
            if Path(m).suffix.lower() == ".pt" and Path(m).is_file():
                check_checkpoint(m, trust=self.trust_checkpoint)
            if Path(m).suffix.lower() in (".yaml", ".yml") and Path(m).is_file():
                try:
                    check_arch_yaml(m)
                except UnsafeModelYaml as e:
                    if e.names_code:
                        raise  # else merely broken (an unknown layer): its trial fails and is reported
            if str(m).startswith("yolo_nas"):
                raise EdgekitError(f"{m}: train-export sweeps Ultralytics models only for now; the YOLO-NAS route "
                                   f"is 'edgekit train {m} --data DATA.yaml' (it exports the ONNX too)")

    def claim(self):
        """Refuse a run folder inside or around the inputs, and hold it for this run (edgekit.outputs.claim_output).

        Only here, on the driver: tasks (in this process or in Ray workers) write under the folder it holds.
        """
        from contextlib import ExitStack

        from .outputs import claim_output, data_inputs

        inputs = data_inputs(self.dataset()) + list(self.models)  # the run reads its yaml once
        stack = ExitStack()
        with stack:
            for folder in dict.fromkeys([Path(self.out), Path(self.report_dir or self.out)]):
                stack.enter_context(claim_output(folder, inputs, command="train-export"))
            return stack.pop_all()

    def check(self) -> None:
        """Before any work: the models, the packages the run needs, the dataset (read and validated once)."""
        self.check_model()
        check_dependencies(self.target, self.backends, self.precisions)
        if self.remote:  # an unreachable device, a refused host key or another edgekit there: before any training
            from .target import parse_target

            device = parse_target(self.remote)
            device.check_version(device.probe()[0])
        ds = self.dataset()
        for split in ("train", "val"):
            ds.samples(split)

    def check_calibration(self) -> None:
        """Say once per run what the INT8 jobs' calibration set will be short of (the same for every trial and
        backend: the dataset's train split and --calib-size); the jobs themselves then keep quiet about it."""
        import warnings

        from .data.calibration import calibration_set

        if any(v.precision == "int8" for v in variants_for(self.target, self.backends, self.precisions)):
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                calibration_set(self.dataset(), (self.imgszs[0],) * 2, self.calib_size, "train", self.seed, True,
                                "val")

    def run(self) -> dict:
        with self.claim():
            return self._run()

    def _run(self) -> dict:
        from .sweep.executor import LocalExecutor

        self.check()  # before spending any time
        self.check_calibration()
        self.out.mkdir(parents=True, exist_ok=True)
        self.run_id = uuid.uuid4().hex  # each run() is a run: a second call does not count as a retry of the first
        self.executor = self.executor or LocalExecutor()
        trials = self.trials()
        rows, pruned, failed = self.execute(trials)
        self.measure_speed(rows)
        doc = self.report(rows + [failed_row(t, e) for t, e in failed.items()], pruned)
        if failed:
            t, e = next(iter(failed.items()))
            self.log(f"{len(failed)} of {len(trials)} trial(s) failed; the report lists them")
            raise e.cause if e.cause is not None and isinstance(e.cause, EdgekitError) else SweepFailed(
                f"{len(failed)} of {len(trials)} trial(s) failed; first: {t.label(self.nested)}: {e.error}")
        return doc

    def task_pipeline(self) -> "Pipeline":
        """The copy of this config that tasks receive: itself in this process, else without the executor and the
        console (a Ray worker logs to its own log file)."""
        from .sweep.executor import LocalExecutor

        if type(self.executor) is LocalExecutor:
            return self
        from dataclasses import replace

        return replace(self, executor=None, log=_task_log)

    def execute(self, trials: list[Trial]) -> tuple[list[dict], list[dict], dict]:
        """Train (grid, or halving rungs within each model x imgsz group, promoted as each group's rung completes),
        then export/build/evaluate each trained trial, through the executor; (rows, pruned, trial -> TaskFailed)."""
        from .sweep import rungs, survivors

        ex, task = self.executor, self.task_pipeline()
        steps = rungs(self.epochs) if self.search == "halving" else [self.epochs]
        pending, rows, failed, pruned, trained = {}, {}, {}, [], {}
        alive = {}
        for t in trials:
            alive.setdefault(t.group, []).append(t)
        scores: dict = {g: {} for g in alive}

        def train(t, i):
            last = i == len(steps) - 1
            h = ex.submit("train", _task_train, task, t, None if last else steps[i], i > 0,
                          steps[i - 1] if i else None)
            pending[h] = ("train", t, i)

        if len(steps) > 1:
            self.log(f"=== halving: rungs {steps} epoch(s), {len(trials)} trial(s) in {len(alive)} model x imgsz "
                     f"group(s)")
        for t in trials:
            train(t, 0)
        n_done = 0
        while pending:
            h, (ok, value) = ex.wait(list(pending))
            kind, t, i = pending.pop(h)
            label = t.label(self.nested)
            if not ok:
                failed[t] = value
                self.log(f"  {label}: {kind} failed: {value.error}")
                self._detail(value.detail)
            elif kind == "trial":
                rows[t] = value
                n_done += 1
                self.log(f"=== trial {n_done}/{len(trials)} done: {label} ({len(value)} row(s))")
            elif i == len(steps) - 1:
                trained[t] = value
                self.log(f"  {label}: trained {value.get('epochs')} epochs in {value.get('wall_s') or 0:.0f} s"
                         + (f" (resumed after epoch {value['resumed_from_epoch']})"
                            if value.get("resumed_from_epoch") else ""))
                pending[ex.submit("trial", _task_trial, task, t, value)] = ("trial", t, i)
            else:
                scores[t.group][t] = value.get("map50_95")
                self.log(f"  {label}: mAP50-95 {value.get('map50_95') or 0:.4f} after {steps[i]} epoch(s)")
                trained[t] = value
            if kind != "train" or i == len(steps) - 1:
                continue
            g = t.group
            alive[g] = [x for x in alive[g] if x not in failed]
            if any(x not in scores[g] for x in alive[g]):
                continue  # the group's rung is not complete yet
            keep, out = survivors(scores[g], {x: g for x in scores[g]}) if scores[g] else ([], [])
            for x in out:
                pruned.append({"model": model_name(x.model), "imgsz": x.imgsz, "strategy": x.strategy,
                               "rung": steps[i], "map50_95": scores[g][x], "train_wall_s": trained[x].get("wall_s"),
                               "cost_usd": trained[x].get("cost_usd")})
                self.log(f"  pruned {x.label(self.nested)} at rung {steps[i]} (mAP50-95 {scores[g][x] or 0:.4f})")
            alive[g], scores[g] = keep, {}
            for x in keep:
                train(x, i + 1)
        order = {t: k for k, t in enumerate(trials)}
        return ([r for t in sorted(rows, key=order.get) for r in rows[t]], pruned,
                {t: failed[t] for t in sorted(failed, key=order.get)})

    def train_inputs(self, t: Trial) -> dict:
        from ._imports import tool_versions

        device = "cpu" if not self.target.startswith("cuda") else self.target
        return {"data": self.data_key(), "weights": self.model_key(t.model), "strategy": t.strategy,
                "epochs": self.epochs, "imgsz": t.imgsz, "batch": self.batch, "seed": self.seed,
                "device": device, "gpu_hour_usd": self.gpu_hour_usd, "versions": tool_versions("ultralytics", "torch")}

    def train_trial(self, t: Trial, rung: int | None = None, resume: bool = False) -> dict:
        """Train a trial to self.epochs, or (rung) stop after `rung` of them keeping last.pt; resume: from last.pt."""
        from .train import train

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
            from .train.record import read_train_json

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
        from ._imports import tool_versions
        from .export import export_onnx
        from .sweep.speed import graph_key

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
                ci = acc["map50_95_ci"]
                self.log(f"  {name}: mAP50-95 {acc['map50_95']:.4f} [{ci[0]:.3f}, {ci[1]:.3f}]")
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

    @property
    def measured_on(self) -> str:
        """Where eval and bench run: the ssh:// device, or this machine's target device."""
        return self.remote or self.target

    def _evaluate(self, artifact: str, v: Variant, matches: Path) -> dict:
        """The eval stage: mAP of the artifact on the val split, its per-image matches saved; paths run-relative."""
        from .eval import evaluate

        if self.remote:
            from .target.ssh import remote_eval

            acc = remote_eval(self.remote, artifact, self.dataset(), ["--backend", v.backend], matches=matches)
            return {**acc, "matches": self.rel(matches), "artifact": self.rel(artifact)}
        acc = evaluate(artifact, self.dataset(), backend=v.backend, device=self.target, progress=False,
                       matches_path=matches)
        return {**acc, "matches": self.rel(acc["matches"]), "artifact": self.rel(acc["artifact"])}

    # speed ------------------------------------------------------------------------------------
    def bench_inputs(self, key: str, backend: str) -> dict:
        from ._imports import tool_versions

        return {"graph": key, "target": self.measured_on, "iters": self.bench_iters,
                "rounds": list(self.bench_rounds),
                "versions": tool_versions("onnxruntime", "openvino", "tensorrt")}

    def measure_speed(self, rows: list[dict]) -> None:
        """Time each distinct graph (rounds interleaved across graphs until stable) and give its rows the figures.

        The first row of a graph owns its bench record; the other rows of that graph say whose measurement they show.
        """
        from .sweep.executor import TaskFailed
        from .sweep.merge import apply_speed
        from .sweep.speed import interleaved, summarize

        owners: dict = {}
        for r in rows:
            b = r.pop("_bench", None)
            if b is None:
                continue
            owners.setdefault(b["graph"], {**b, "rows": []})["rows"].append(r)
        if self.storage is not None and self.storage.is_remote:
            for o in owners.values():  # the records written by other nodes, for resume and for the report
                self.pull(Path(o["record"]).parent)
        done, todo = {}, []
        for key, o in owners.items():
            prev = self._done(o["name"], Path(o["record"]), self.bench_inputs(key, o["backend"]))
            if prev is not None:
                self._detail(f"[resume] {o['name']}: done, skipped")
                done[key] = prev["result"]
            else:
                todo.append(key)
        if todo:
            self.log(f"timing {len(todo)} distinct graph(s), interleaved, {self.bench_rounds[0]}-{self.bench_rounds[1]} "
                     f"rounds of {self.bench_iters} iterations")

        task = self.task_pipeline()

        def measure(key):  # one round at a time: the next is submitted when this one has returned
            o = owners[key]
            return self.executor.run("bench", _task_bench, task, o["artifact"], o["backend"])

        for key in todo:
            self._detail(f"[stage] {owners[key]['name']} ...")
        lost: dict = {}  # graph -> why its device could not finish it (its rows become error rows; --resume redoes it)
        rounds = interleaved(todo, measure, *self.bench_rounds, log=self._detail, failed=lost,
                             catch=(TaskFailed,) if self.remote else ()) if todo else {}
        for key, e in lost.items():
            for r in owners.pop(key)["rows"]:
                r.update({"status": "error", "error": f"bench on {self.remote}: {e}"})
                self.log(f"  {r['model']}@{r['imgsz']} {r['strategy']} {r['backend']}-{r['precision']}: error: "
                         f"bench on {self.remote}: {e}")
        for key in todo:
            if key in lost:
                continue
            o = owners[key]
            nodes = sorted({r["bench_node"] for r in rounds[key]})
            done[key] = {**summarize(rounds[key]), "per_round": rounds[key], "bench_node": ",".join(nodes)}
            atomic_write_json(Path(o["record"]), {"stage": o["name"], "status": "done", "run": self.run_id,
                                                  "inputs": self.bench_inputs(key, o["backend"]),
                                                  "result": done[key]})
            self.push(Path(o["record"]).parent.parent)
        for key, o in owners.items():
            res = done[key]
            for r in o["rows"]:
                apply_speed(r, res, key, None if r is o["rows"][0] else o["name"].rsplit(" bench", 1)[0])
                self.log(f"  {r['model']}@{r['imgsz']} {r['strategy']} {r['backend']}-{r['precision']}: "
                         f"{r['fps_e2e']:.1f} FPS end to end (cv {res['fps_cv'] if res['fps_cv'] is not None else '-'})")
        if self.sustain:
            self.measure_sustained(owners)

    def sustain_inputs(self, key: str) -> dict:
        from ._imports import tool_versions

        return {"graph": key, "target": self.measured_on, "sustain_s": self.sustain,
                "versions": tool_versions("onnxruntime", "openvino", "tensorrt")}

    def measure_sustained(self, owners: dict) -> None:
        """--sustain: each distinct graph, after the short rounds, one request at a time for `sustain` seconds on the
        target (its own record, so a changed duration does not time the short rounds again); its rows get the last
        window's p50 (`sustained_p50_ms`), `throttled` and the p50 change from the first window to the last."""
        from .sweep.executor import TaskFailed

        task = self.task_pipeline()
        self.log(f"sustained: {len(owners)} distinct graph(s), {self.sustain:g} s each, one request at a time")
        for key, o in owners.items():
            record = Path(o["record"][:-len(".bench.json")] + ".sustain.json")
            name = o["name"].rsplit(" bench", 1)[0] + " sustained"
            prev = self._done(name, record, self.sustain_inputs(key))
            if prev is not None:
                self._detail(f"[resume] {name}: done, skipped")
                res = prev["result"]
            else:
                try:
                    res = self.executor.run("bench", _task_sustain, task, o["artifact"], o["backend"])
                except TaskFailed as e:  # the device was lost: the rows keep their short-run figures, no ranking
                    if not self.remote:
                        raise
                    for r in o["rows"]:
                        r["sustained_error"] = f"sustained bench on {self.remote}: {e}"
                    self.log(f"  {name}: error: sustained bench on {self.remote}: {e}")
                    continue
                atomic_write_json(record, {"stage": name, "status": "done", "run": self.run_id,
                                           "inputs": self.sustain_inputs(key), "result": res})
                self.push(record.parent.parent)
            last = res["windows"][-1] if res.get("windows") else {}
            for r in o["rows"]:
                r.update({"sustained_p50_ms": last.get("p50_ms"), "sustained_p90_ms": last.get("p90_ms"),
                          "sustained_p50_change": res.get("p50_change"), "throttled": res.get("throttled"),
                          "sustained_windows": len(res.get("windows") or [])})
            self.log(f"  {name}: p50 {last.get('p50_ms') or 0:.2f} ms in the last window "
                     f"({(res.get('p50_change') or 0):+.1%} vs the first)" + (", THROTTLING" if res.get("throttled")
                                                                               else ""))

    def build_inputs(self, onnx_path: Path, v: Variant) -> dict:
        """What a build's output depends on: the ONNX's content, the variant, the gate, the data and the recipe."""
        from ._imports import tool_versions
        from .quantize.recipe import recipe_for
        from .runtime.meta import read_sidecar

        recipe = recipe_for(read_sidecar(onnx_path).get("family")).path
        return {"onnx": self.file_hash(onnx_path), "variant": f"{v.backend}-{v.precision}", "target": self.target,
                "max_map_drop": self.max_map_drop, "max_class_drop": self.max_class_drop, "calib_size": self.calib_size, "data": self.data_key(),
                "recipe": self.file_hash(recipe) if recipe else None,
                "versions": tool_versions("onnx", "onnxruntime", "openvino", "nncf", "tensorrt",
                                          *self.converters(v.backend))}

    @staticmethod
    def converters(backend: str) -> tuple:
        """The libraries a declared-build backend's artifact comes from (its runtime and converters): none for the
        backends Pipeline.build builds by name."""
        from .runtime.backends import get_backend

        if backend in SWEPT_BACKENDS:
            return ()
        cls = get_backend(backend)
        return tuple(m for m in (cls.module, *cls.build_modules) if m)

    def _build_stage(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """The build stage's result: build()'s, its artifact named relative to the run folder."""
        built = self.build(onnx_path, v, sdir)
        self.profile(Path(built["artifact"]), v)
        return {**built, "artifact": self.rel(built["artifact"])}

    def profile(self, artifact: Path, v: Variant) -> None:
        """Give a built artifact (the exported ONNX for its onnxruntime fp32 row) the val split's drift profile
        through its own backend, unless it carries one (quantize and the OpenVINO conversion of a profiled ONNX add
        theirs); on a remote target, or with too few val images, it is left without (serve says so)."""
        from .drift.profile import KEY, attach_profile
        from .runtime.meta import read_sidecar

        if self.remote or read_sidecar(artifact).get(KEY):
            return
        try:
            attach_profile(artifact, self.dataset(), log=self._detail, backend=v.backend, device=self.target)
        except EdgekitError as e:  # the artifact stays usable; serve and monitor will say it has no profile
            self._detail(f"{self.rel(artifact)}: no drift profile ({e})")

    def build(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """The deployable artifact of one backend/precision: {"artifact", "accuracy" (set when the gate measured it)}."""
        if v.backend not in SWEPT_BACKENDS:
            return self.build_declared(onnx_path, v, sdir)
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
        import warnings

        from .data.calibration import CalibrationWarning

        with warnings.catch_warnings():  # said once for the run, by check_calibration
            warnings.simplefilter("ignore", CalibrationWarning)
            res = quantize(onnx_path, self.dataset(), backend=v.backend,
                           method="minmax" if v.backend == "onnxruntime" else "auto", calib_size=self.calib_size,
                           max_map_drop=self.max_map_drop, device=self.target, max_class_drop=self.max_class_drop,
                           out_dir=self.int8_dir(sdir, v.backend), force=True, log=self._detail)
        return {"artifact": str(res["artifact"]),
                "accuracy": {"map50": res["map50"], "map50_95": res["map50_95"], "images": res.get("images"),
                             "split": "val", "source": "accuracy gate of edgekit quantize"}}

    @staticmethod
    def int8_dir(sdir: Path, backend: str) -> Path:
        """Where a trial's INT8 job of `backend` writes (its artifact, and the FP32-baseline cache bf16 shares)."""
        return sdir / f"{backend}_int8"

    def build_bf16(self, onnx_path: Path, sdir: Path) -> dict:
        """The FP32 IR compiled for bf16, gated (Pipeline.gate) against the FP32 model on OpenVINO."""
        from .export.openvino import onnx_to_openvino
        from .quantize.job import BASELINE_FILE, fp32_baseline

        folder = onnx_to_openvino(onnx_path, sdir / "openvino_bf16", precision="bf16", device=self.target,
                                  log=self._detail)
        # the same cache file as the OpenVINO INT8 job of this trial: its FP32 baseline is evaluated once
        base = fp32_baseline(onnx_path, self.dataset(), "val", None, self._detail, "openvino", self.target,
                             self.int8_dir(sdir, "openvino") / BASELINE_FILE)
        return self.gate(folder, Variant("openvino", "bf16"), base)

    def build_declared(self, onnx_path: Path, v: Variant, sdir: Path) -> dict:
        """A backend's artifact as it declares it is built (Backend.build); a reduced precision gated against FP32
        on the same backend."""
        import warnings

        from .data.calibration import CalibrationWarning, calibration_set
        from .runtime.backends import get_backend
        from .runtime.meta import read_sidecar

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
        from .eval import evaluate

        v = Variant(backend, "fp32")
        stages = sdir / "stages"
        built = self.stage(f"{self.rel(sdir)}: {backend}-fp32 build", stages / f"{backend}-fp32.build.json",
                           self.build_inputs(onnx_path, v), lambda: self._build_stage(onnx_path, v, sdir),
                           output=lambda r: self.at(r["artifact"]))
        artifact = self.at(built["artifact"])

        def run():
            r = evaluate(artifact, self.dataset(), backend=backend, device=self.target, precision="fp32",
                         progress=False)
            return {k: r.get(k) for k in ("map50", "map50_95", "images", "backend", "device", "precision_executed",
                                          "per_class", "per_class_instances")}

        return self.stage(f"{self.rel(sdir)}: {backend}-fp32 gate baseline", stages / f"{backend}-fp32.baseline.json",
                          {"artifact": self.content_hash(artifact.parent), "backend": backend, "device": self.target,
                           "data": self.data_key(), "split": "val"}, run)

    def gate(self, artifact: Path, v: Variant, base: dict) -> dict:
        """A reduced-precision artifact against the FP32 baseline of its own backend (same split, same
        --max-map-drop and --max-class-drop): its sidecar gets `accuracy_gate` and PASSED/FAILED; AccuracyGateError
        when it fails."""
        from .eval import MIN_CLASS_BOXES, class_drops, evaluate
        from .runtime.meta import read_sidecar, write_sidecar

        ds = self.dataset()
        acc = evaluate(artifact, ds, backend=v.backend, device=self.target, progress=False)
        drop = (base["map50_95"] - acc["map50_95"]) * 100
        classes = [] if self.max_class_drop is None else class_drops(
            base.get("per_class"), acc.get("per_class"), base.get("per_class_instances"),
            MIN_CLASS_BOXES, self.max_class_drop)
        passed = drop <= self.max_map_drop + 1e-9 and not classes
        doc = read_sidecar(artifact)
        baseline = {k: base.get(k) for k in ("backend", "device", "precision_executed")}
        doc["accuracy_gate"] = {"split": "val", "data": str(ds.source), "images": acc["images"],
                                "max_map_drop": self.max_map_drop, "max_class_drop": self.max_class_drop,
                                "map50_fp32": base["map50"], "map50_95_fp32": base["map50_95"], "map50": acc["map50"],
                                "map50_95": acc["map50_95"], "drop_points": round(drop, 3),
                                "class_drops": [list(c) for c in classes], "baseline": baseline}
        doc["status"] = "PASSED" if passed else "FAILED"
        write_sidecar(artifact, {k: x for k, x in doc.items() if k != "format"})
        why = "".join(f"; class '{c}' lost {d:.1f} points (max {self.max_class_drop:g})" for c, d in classes)
        self._detail(f"{v.precision} gate: mAP50-95 {acc['map50_95']:.4f} vs FP32 {base['map50_95']:.4f} on "
                     f"{v.backend}: drop {drop:+.2f} points (max {self.max_map_drop:g}){why} -> {doc['status']}")
        if not passed:
            err = AccuracyGateError(f"{artifact}: {v.precision} loses {drop:.2f} mAP50-95 points against FP32 on "
                                    f"{v.backend} (max {self.max_map_drop:g}){why}; sidecar marked FAILED")
            err.result = {"artifact": str(artifact), "status": "FAILED", "map50_95_fp32": base["map50_95"],
                          "map50_95": acc["map50_95"], "drop_points": round(drop, 3),
                          "max_map_drop": self.max_map_drop}
            raise err
        return {"artifact": str(artifact),
                "accuracy": {"map50": acc["map50"], "map50_95": acc["map50_95"], "images": acc["images"],
                             "split": "val", "precision_executed": acc["precision_executed"],
                             "source": f"{v.precision} accuracy gate"}}

    # report -----------------------------------------------------------------------------------
    def limits(self) -> dict:
        return {"max_latency_ms": self.max_latency_ms, "min_fps": self.min_fps, "budget_usd": self.budget_usd,
                "budget_hours": self.budget_hours}

    def report(self, rows: list[dict], pruned: list | None = None) -> dict:
        def named(m):  # a file by its absolute path (the report may be read from elsewhere), else the name given
            return str(Path(m).absolute()) if Path(m).is_file() else str(m)

        config = {"data": named(self.data), "model": named(self.model), "models": [named(m) for m in self.models],
                  "strategies": self.strategies, "epochs": self.epochs, "imgsz": self.imgszs,
                  "search": self.search, "target": self.measured_on, "backends": self.backends,
                  "precisions": self.precisions, "max_map_drop": self.max_map_drop,
                  "max_class_drop": self.max_class_drop, **self.limits(), "seed": self.seed,
                  **({"sustain_s": self.sustain} if self.sustain else {})}
        extra = {"executor": self.executor.describe()} if self.executor is not None else {}
        return write_report(self.report_dir or self.out, rows, pruned, config, self.max_map_drop, self.limits(),
                            extra)


def write_report(out: Path, rows: list[dict], pruned: list | None, config: dict, max_map_drop: float, limits: dict,
                 extra: dict | None = None) -> dict:
    """Speed-ups, the recommendation under the limits, then report.json, pareto.png and report.md in `out`.

    rows name their files by paths this process can open; report.json (and the dict returned, its content) names
    them relative to `out`, the folder holding it, so that a moved run folder's report still points into it.
    """
    from .report import add_speedups, pareto_png, ranking_swaps, recommend, render_markdown

    add_speedups(rows)
    sustained = bool(config.get("sustain_s"))  # --sustain: ranked by the sustained p50
    rec = recommend(rows, max_map_drop=max_map_drop, sustained=sustained, **limits)
    if rec.get("artifact"):
        rec["artifact"] = relative_to(rec["artifact"], out)
    trained = {(r["model"], r["imgsz"], r["strategy"]): r.get("train_wall_s") or 0 for r in rows}
    doc = {"rows": [run_relative(r, out) for r in rows], "recommendation": rec, "pruned": list(pruned or []),
           "train_seconds_total": round(sum(trained.values()) + sum(p.get("train_wall_s") or 0
                                                                  for p in pruned or []), 1),
           "config": config, **(extra or {})}
    if sustained:
        swaps = ranking_swaps(rows)
        doc["sustained"] = {"duration_s": config["sustain_s"], "ranked_by": "sustained_p50_ms",
                            "agrees_with_short_run": not swaps, "swaps": swaps}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", doc)
    png = pareto_png(rows, out / "pareto.png", rec, max_latency_ms=limits.get("max_latency_ms"))
    atomic_write_text(out / "report.md", render_markdown(doc, png))
    return doc


def host_accuracy(device: dict, host: dict | None) -> dict:
    """A device row's mAP50-95 as the host measured it (its accuracy gate) and the device's minus the host's; {}
    where the host did not measure the artifact."""
    if not host or host.get("map50_95") is None:
        return {}
    return {"map50_95_host": host["map50_95"], "map50_95_host_source": host.get("source"),
            "map50_95_device_minus_host": round(device["map50_95"] - host["map50_95"], 5)}


def gate_figures(result: dict | None) -> dict | None:
    """The accuracy gate's figures from a quantize result: what a FAILED row and record keep."""
    if not result:
        return None
    keys = ("artifact", "status", "attempt", "map50_95_fp32", "map50_95", "drop_points", "max_map_drop")
    return {k: result[k] for k in keys if k in result}


def _stop_at(trainer, rung: int) -> None:
    """Training callback: end this run after `rung` epochs (last.pt and train.json are written by then)."""
    if trainer.epoch + 1 >= rung:
        raise _RungDone()


class SweepFailed(EdgekitError):
    """Some trials failed (after retries); the report was written and lists them."""


def failed_row(t: Trial, e) -> dict:
    """The report's row for a trial whose training or export failed: its error, no artifact."""
    return {"model": model_name(t.model), "imgsz": t.imgsz, "strategy": t.strategy, "backend": "-", "precision": "-",
            "status": "error", "error": e.error, "artifact": None}


def _task_log(msg: str) -> None:
    """The log of a task in a Ray worker: its stdout, which Ray keeps in the worker's log file."""
    print(msg, flush=True)


def _task_train(pipe: Pipeline, t: Trial, rung: int | None, resume: bool, restore: int | None) -> dict:
    """Executor task: train a trial (to a rung, or fully), continuing from the previous rung's checkpoint."""
    sdir = t.folder(pipe.out, pipe.nested)
    pipe.pull(sdir)
    if restore is not None:
        pipe._restore_rung(t, restore)
    return pipe.train_trial(t, rung, resume)


def _task_trial(pipe: Pipeline, t: Trial, tinfo: dict) -> list[dict]:
    """Executor task: export, build and evaluate each backend/precision of a trained trial."""
    pipe.pull(t.folder(pipe.out, pipe.nested))
    return pipe.run_trial(t, tinfo)


def _task_bench(pipe: Pipeline, artifact: str, backend: str) -> dict:
    """Executor task: one timing round of an artifact on this node's device; says which node it ran on."""
    from .bench import run_bench
    from .sweep.executor import node_name
    from .sweep.speed import one_round

    pipe.pull(Path(artifact))
    if pipe.remote:  # the device's edgekit times it, with the options a local round uses
        from .target.ssh import parse_target, remote_command

        device = parse_target(pipe.remote)
        res = remote_command(device, "bench", artifact, ["--backend", backend, "--iters", str(pipe.bench_iters),
                                                         "--warmup", "5", "--warmup-ms", "0"])
        return {**one_round(res), "bench_node": device.url}
    res = one_round(run_bench(artifact, device=pipe.target, backend=backend, iters=pipe.bench_iters, warmup=5,
                              log=None))
    return {**res, "bench_node": node_name()}


def _task_sustain(pipe: Pipeline, artifact: str, backend: str) -> dict:
    """Executor task: the sustained run of an artifact (`bench --sustain`) on this node's device, or on the SSH one."""
    from .bench.harness import resolve_images
    from .bench.sustain import run_sustained

    pipe.pull(Path(artifact))
    if pipe.remote:  # the device's edgekit runs it: a minimal short run, then the sustained one
        from .target.ssh import parse_target, remote_command

        device = parse_target(pipe.remote)
        res = remote_command(device, "bench", artifact, ["--backend", backend, "--iters", "1", "--warmup", "1",
                                                         "--warmup-ms", "0", "--sustain", f"{pipe.sustain:g}"])
        return res["sustained"]
    from .runtime import Engine

    engine = Engine(artifact, device=pipe.target, backend=backend)
    try:
        return run_sustained(engine, resolve_images(None), pipe.sustain)
    finally:
        engine.close()


def _json_or_none(path: Path):
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
