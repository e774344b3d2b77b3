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
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AccuracyGateError, EdgekitError
from .io import atomic_path, atomic_write_json, atomic_write_text, sha256_file
from .sweep.trial import Trial, model_name

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
    seed: int = 0
    opset: int | None = None
    resume: bool = False
    retry_failed: bool = False
    trust_checkpoint: bool = False  # --model loads without the restricted-unpickler check
    models: list | None = None  # several models; None: [model]
    search: str = "grid"  # or "halving"
    log: object = print
    _hashes: dict = field(default_factory=dict, init=False, repr=False, compare=False)
    _data_key: str | None = field(default=None, init=False, repr=False, compare=False)
    _dataset: object = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
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

    # the sweep --------------------------------------------------------------------------------
    def check_model(self) -> None:
        """Refuse, before any work, a model whose checkpoints the sweep cannot export (YOLO-NAS, for now)."""
        for m in self.models:
            if str(m).startswith("yolo_nas"):
                raise EdgekitError(f"{m}: train-export sweeps Ultralytics models only for now; the YOLO-NAS route "
                                   f"is 'edgekit train {m} --data DATA.yaml' (it exports the ONNX too)")

    def run(self) -> dict:
        self.check_model()
        ds = self.dataset()  # validate before spending any time
        for split in ("train", "val"):
            ds.samples(split)
        self.out.mkdir(parents=True, exist_ok=True)
        trials, pruned, trained = self.trials(), [], {}
        if self.search == "halving":
            trials, pruned, trained = self.halve(trials)
        rows = []
        for i, t in enumerate(trials, 1):
            self.log(f"=== trial {i}/{len(trials)}: {t.label(self.nested)}")
            rows += self.run_trial(t, trained.get(t))
        self.measure_speed(rows)
        return self.report(rows, pruned)

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

        def run():
            from .train.record import read_train_json

            callbacks = {} if final else {"on_fit_epoch_end": lambda tr: _stop_at(tr, rung)}
            try:
                doc = train(t.model, self.dataset(), strategy=t.strategy, epochs=self.epochs, imgsz=t.imgsz,
                            batch=self.batch, device=device, out_dir=tdir / "train", seed=self.seed,
                            gpu_hour_usd=self.gpu_hour_usd, workers=0, log=self._detail,
                            trust_checkpoint=self.trust_checkpoint, resume=resume,
                            **({"callbacks": callbacks} if callbacks else {}))
            except _RungDone:
                doc = read_train_json(tdir / "train")
                with atomic_path(ckpt) as tmp:
                    shutil.copy2(tdir / "train" / "last.pt", tmp)
                recs = doc.get("epoch_records") or [{}]
                doc = {**doc, "rung": rung, "map50_95": recs[-1].get("map50_95"), "map50": recs[-1].get("map50")}
            return {k: v for k, v in doc.items() if k != "epoch_records"}

        return self.stage(name, record, inputs, run, output=lambda r: ckpt)

    def halve(self, trials: list[Trial]) -> tuple[list[Trial], list[dict], dict]:
        """Successive halving over epochs within each model x imgsz group: (the trials left, the pruned ones, the
        survivors' final train results)."""
        from .sweep import rungs, survivors

        alive, pruned, done = list(trials), [], {}
        steps = rungs(self.epochs)
        for i, r in enumerate(steps):
            last = i == len(steps) - 1
            self.log(f"=== halving rung {i + 1}/{len(steps)}: {len(alive)} trial(s) to {r} epoch(s)")
            scores = {}
            for t in alive:
                if i:
                    self._restore_rung(t, steps[i - 1])
                done[t] = self.train_trial(t, None if last else r, resume=i > 0)
                scores[t] = done[t].get("map50_95")
                self.log(f"  {t.label(self.nested)}: mAP50-95 {scores[t] or 0:.4f} after {r} epoch(s)")
            if last:
                break
            alive, out = survivors(scores, {t: t.group for t in alive})
            for t in out:
                pruned.append({"model": model_name(t.model), "imgsz": t.imgsz, "strategy": t.strategy, "rung": r,
                               "map50_95": scores[t], "train_wall_s": done[t].get("wall_s"),
                               "cost_usd": done[t].get("cost_usd")})
                self.log(f"  pruned {t.label(self.nested)} at rung {r} (mAP50-95 {scores[t] or 0:.4f})")
        return alive, pruned, {t: done[t] for t in alive}

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
        from .eval import evaluate
        from .export import export_onnx

        from ._imports import tool_versions

        sdir = t.folder(self.out, self.nested)
        label = t.label(self.nested)
        best = sdir / "train" / "best.pt"
        tinfo = tinfo or self.train_trial(t)
        onnx_path = Path(self.stage(f"{label}: export", sdir / "stages" / "export.json",
                                    {"weights": self.file_hash(best), "imgsz": t.imgsz, "opset": self.opset,
                                     "versions": tool_versions("torch", "ultralytics", "onnx", "onnxslim")},
                                    lambda: str(export_onnx(best, sdir / "onnx", imgsz=t.imgsz, opset=self.opset,
                                                            log=self._detail, trust_checkpoint=self.trust_checkpoint)),
                                    output=Path))
        self.log(f"  trained {tinfo.get('epochs')} epochs in {tinfo.get('wall_s', 0):.0f} s, exported {onnx_path.name}")
        run_versions = tool_versions("onnxruntime", "openvino", "tensorrt")
        rows = []
        for v in variants_for(self.target, self.backends, self.precisions):
            name = f"{v.backend}-{v.precision}"
            row = {"model": model_name(t.model), "imgsz": t.imgsz, "strategy": t.strategy, "backend": v.backend,
                   "precision": v.precision, "train_wall_s": tinfo.get("wall_s"), "gpu_hours": tinfo.get("gpu_hours"),
                   "cost_usd": tinfo.get("cost_usd"), "epochs": tinfo.get("epochs")}
            try:
                built = self.stage(f"{label}: {name} build", sdir / "stages" / f"{name}.build.json",
                                   self.build_inputs(onnx_path, v), lambda v=v: self.build(onnx_path, v, sdir),
                                   output=lambda r: r["artifact"])
                artifact = built["artifact"]
                used = {"artifact": self.content_hash(artifact), "backend": v.backend, "target": self.target,
                        "versions": run_versions}
                matches = sdir / "stages" / f"{name}.matches.npz"
                # every row is evaluated here, the same way (a gate's own figure is not reused): its per-image
                # matches feed the bootstrap interval and the paired comparisons of the recommendation
                acc = self.stage(f"{label}: {name} eval", sdir / "stages" / f"{name}.eval.json",
                                 {**used, "data": self.data_key(), "eval": "matches-v1"},
                                 lambda a=artifact, v=v: evaluate(a, self.dataset(), backend=v.backend,
                                                                  device=self.target, progress=False,
                                                                  matches_path=matches),
                                 output=lambda r: r["matches"])
                row.update({"map50": acc["map50"], "map50_95": acc["map50_95"], "map50_95_ci": acc["map50_95_ci"],
                            "per_class": acc["per_class"], "per_size": acc["per_size"], "eval_images": acc["images"],
                            "matches": acc["matches"], "artifact": artifact, "status": "ok",
                            "_bench": {"artifact": artifact, "backend": v.backend, "precision": v.precision,
                                       "record": str(sdir / "stages" / f"{name}.bench.json"),
                                       "name": f"{label}: {name} bench"}})
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
        return rows

    # speed ------------------------------------------------------------------------------------
    def bench_inputs(self, key: str, backend: str) -> dict:
        from ._imports import tool_versions

        return {"graph": key, "target": self.target, "iters": self.bench_iters, "rounds": list(self.bench_rounds),
                "versions": tool_versions("onnxruntime", "openvino", "tensorrt")}

    def measure_speed(self, rows: list[dict]) -> None:
        """Time each distinct graph (rounds interleaved across graphs until stable) and give its rows the figures.

        The first row of a graph owns its bench record; the other rows of that graph say whose measurement they show.
        """
        from .bench import run_bench
        from .sweep.speed import graph_key, interleaved, one_round, summarize

        owners: dict = {}
        for r in rows:
            b = r.pop("_bench", None)
            if b is None:
                continue
            key = graph_key(b["artifact"], b["backend"], b["precision"], self.target)
            owners.setdefault(key, {**b, "rows": []})["rows"].append(r)
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

        def measure(key):
            o = owners[key]
            return one_round(run_bench(o["artifact"], device=self.target, backend=o["backend"],
                                       iters=self.bench_iters, warmup=5, log=None))

        for key in todo:
            self._detail(f"[stage] {owners[key]['name']} ...")
        rounds = interleaved(todo, measure, *self.bench_rounds, log=self._detail) if todo else {}
        for key in todo:
            o = owners[key]
            done[key] = {**summarize(rounds[key]), "per_round": rounds[key]}
            atomic_write_json(Path(o["record"]), {"stage": o["name"], "status": "done",
                                                  "inputs": self.bench_inputs(key, o["backend"]),
                                                  "result": done[key]})
        for key, o in owners.items():
            res = done[key]
            for r in o["rows"]:
                r.update({k: res[k] for k in ("latency_p50_ms", "latency_p90_ms", "infer_p50_ms", "fps_e2e", "fps_cv",
                                              "model_mb")})
                r.update({"e2e_p50_ms": res["latency_p50_ms"], "bench_rounds": res["rounds"],
                          "bench_stable": res["stable"], "bench_graph": key[:12]})
                if r is not o["rows"][0]:
                    r["speed_shared_with"] = o["name"].rsplit(" bench", 1)[0]
                self.log(f"  {r['model']}@{r['imgsz']} {r['strategy']} {r['backend']}-{r['precision']}: "
                         f"{r['fps_e2e']:.1f} FPS end to end (cv {res['fps_cv'] if res['fps_cv'] is not None else '-'})")

    def build_inputs(self, onnx_path: Path, v: Variant) -> dict:
        """What a build's output depends on: the ONNX's content, the variant, the gate, the data and the recipe."""
        from ._imports import tool_versions
        from .quantize.recipe import recipe_for
        from .runtime.meta import read_sidecar

        recipe = recipe_for(read_sidecar(onnx_path).get("family")).path
        return {"onnx": self.file_hash(onnx_path), "variant": f"{v.backend}-{v.precision}", "target": self.target,
                "max_map_drop": self.max_map_drop, "max_class_drop": self.max_class_drop, "calib_size": self.calib_size, "data": self.data_key(),
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
                       max_class_drop=self.max_class_drop,
                       out_dir=self.int8_dir(sdir, v.backend), force=True, log=self._detail)
        return {"artifact": str(res["artifact"]),
                "accuracy": {"map50": res["map50"], "map50_95": res["map50_95"], "images": res.get("images"),
                             "split": "val", "source": "accuracy gate of edgekit quantize"}}

    @staticmethod
    def int8_dir(sdir: Path, backend: str) -> Path:
        """Where a trial's INT8 job of `backend` writes (its artifact, and the FP32-baseline cache bf16 shares)."""
        return sdir / f"{backend}_int8"

    def build_bf16(self, onnx_path: Path, sdir: Path) -> dict:
        """The FP32 IR compiled for bf16, gated like INT8 against the FP32 model on OpenVINO (same split, same drop)."""
        from .eval import evaluate
        from .export.openvino import onnx_to_openvino
        from .quantize.job import BASELINE_FILE, fp32_baseline
        from .runtime.meta import read_sidecar, write_sidecar

        folder = onnx_to_openvino(onnx_path, sdir / "openvino_bf16", precision="bf16", device=self.target,
                                  log=self._detail)
        ds = self.dataset()
        # the same cache file as the OpenVINO INT8 job of this trial: its FP32 baseline is evaluated once
        base = fp32_baseline(onnx_path, ds, "val", None, self._detail, "openvino", self.target,
                             self.int8_dir(sdir, "openvino") / BASELINE_FILE)
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
    def limits(self) -> dict:
        return {"max_latency_ms": self.max_latency_ms, "min_fps": self.min_fps, "budget_usd": self.budget_usd,
                "budget_hours": self.budget_hours}

    def report(self, rows: list[dict], pruned: list | None = None) -> dict:
        from .report import add_speedups, pareto_png, recommend, render_markdown

        add_speedups(rows)
        rec = recommend(rows, max_map_drop=self.max_map_drop, **self.limits())
        trained = {(r["model"], r["imgsz"], r["strategy"]): r.get("train_wall_s") or 0 for r in rows}
        doc = {"rows": rows, "recommendation": rec, "pruned": list(pruned or []),
               "train_seconds_total": round(sum(trained.values()) + sum(p.get("train_wall_s") or 0
                                                                      for p in pruned or []), 1),
               "config": {"data": str(self.data), "model": str(self.model), "models": self.models,
                          "strategies": self.strategies, "epochs": self.epochs, "imgsz": self.imgszs,
                          "search": self.search, "target": self.target, "backends": self.backends,
                          "precisions": self.precisions, "max_map_drop": self.max_map_drop,
                          "max_class_drop": self.max_class_drop, **self.limits(), "seed": self.seed}}
        atomic_write_json(self.out / "report.json", doc)
        png = pareto_png(rows, self.out / "pareto.png", rec, max_latency_ms=self.max_latency_ms)
        atomic_write_text(self.out / "report.md", render_markdown(doc, png))
        return doc


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
