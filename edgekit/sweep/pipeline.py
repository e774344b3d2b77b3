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

import os
import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import EdgekitError
from .build import Building
from .measure import Measuring
from .report import write_report
from .stages import StageRecords
from .steps import TrialSteps
from .trial import Trial, model_name
from .variants import check_dependencies, variants_for

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
class Pipeline(StageRecords, TrialSteps, Building, Measuring):
    """train-export's configuration and its orchestration (checks, scheduling: grid or halving, the report); the
    stages themselves are its parts: stages.StageRecords, steps.TrialSteps, build.Building, measure.Measuring."""

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
    max_recall_drop: float | None = 5.0  # recall points at the FP32 threshold a class may lose (reduced precisions)
    min_class_boxes: int = 20  # classes with fewer val boxes never fail the per-class gates
    target_precision: float | None = None  # each row's deployment threshold: by this precision, or recall, or max F1
    target_recall: float | None = None
    holdout_frac: float | None = None  # data without a test split: this part of val confirms the pick, nothing else
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
    holdout: dict | None = field(default=None, init=False, repr=False, compare=False)  # what --holdout-frac set aside

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
            from ..data import load_dataset

            ds = load_dataset(self.data)
            if self.holdout_frac is not None:  # val less the holdout from here on; the holdout is the test split
                from ..data.holdout import hold_out

                ds, self.holdout = hold_out(ds, self.holdout_frac, file_hash=self.file_hash)
            self._dataset = ds
        return self._dataset

    def has_test(self) -> bool:
        """Whether the pick can be confirmed: the data has a test split, or --holdout-frac made one."""
        return "test" in self.dataset().split_paths

    # the sweep --------------------------------------------------------------------------------
    def check_model(self) -> None:
        """Refuse, before any work, a model whose checkpoints the sweep cannot export (YOLO-NAS, for now), a
        checkpoint the restricted unpickler refuses, and an architecture yaml that Ultralytics would turn into code
        (training checks its private copy again)."""
        from ..checkpoint import UnsafeModelYaml, check_arch_yaml, check_checkpoint

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

        from ..outputs import claim_output, data_inputs

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
            from ..target import parse_target

            device = parse_target(self.remote)
            device.check_version(device.probe()[0])
        ds = self.dataset()
        for split in ("train", "val") + (("test",) if self.has_test() else ()):
            ds.samples(split)

    def check_calibration(self) -> None:
        """Say once per run what the INT8 jobs' calibration set will be short of (the same for every trial and
        backend: the dataset's train split and --calib-size); the jobs themselves then keep quiet about it."""
        import warnings

        from ..data.calibration import calibration_set

        if any(v.precision == "int8" for v in variants_for(self.target, self.backends, self.precisions)):
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                calibration_set(self.dataset(), (self.imgszs[0],) * 2, self.calib_size, "train", self.seed, True,
                                "val")

    def run(self) -> dict:
        with self.claim():
            return self._run()

    def _run(self) -> dict:
        from .executor import LocalExecutor

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
        from .executor import LocalExecutor

        if type(self.executor) is LocalExecutor:
            return self
        from dataclasses import replace

        return replace(self, executor=None, log=_task_log)

    def execute(self, trials: list[Trial]) -> tuple[list[dict], list[dict], dict]:
        """Train (grid, or halving rungs within each model x imgsz group, promoted as each group's rung completes),
        then export/build/evaluate each trained trial, through the executor; (rows, pruned, trial -> TaskFailed)."""
        from . import rungs, survivors

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

    @property
    def measured_on(self) -> str:
        """Where eval and bench run: the ssh:// device, or this machine's target device."""
        return self.remote or self.target

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
                  "max_class_drop": self.max_class_drop, "max_recall_drop": self.max_recall_drop,
                  "min_class_boxes": self.min_class_boxes, "threshold": self.threshold_spec,
                  "holdout": self.holdout, **self.limits(), "seed": self.seed,
                  **({"sustain_s": self.sustain} if self.sustain else {})}
        extra = {"executor": self.executor.describe()} if self.executor is not None else {}
        from .confirm import confirm_on_test

        confirm = (lambda top: confirm_on_test(self, top)) if self.has_test() else None
        return write_report(self.report_dir or self.out, rows, pruned, config, self.max_map_drop, self.limits(),
                            extra, confirm)


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
