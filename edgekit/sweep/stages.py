"""Stage records and content keys: each stage of a trial runs once per set of inputs (sha256 of every upstream file
and every option), writes its output atomically and a `<stage>.json` record; run-relative paths; storage push/pull."""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from ..errors import AccuracyGateError, EdgekitError
from ..io import atomic_write_json, sha256_file
from .trial import resolved, run_relative


class StageRecords:
    """Mixin of Pipeline: content keys, stage records (resume) and the run folder's storage."""

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
        from .confirm import sidecar_digest

        for f in sorted(x for x in p.rglob("*") if x.is_file()):  # a sidecar less its threshold (the eval stage's)
            h.update(f"{f.relative_to(p).as_posix()}\0{sidecar_digest(f) or self.file_hash(f)}\n".encode())
        return h.hexdigest()

    def data_key(self) -> str:
        """Content of the dataset: its yaml/json and every train/val image and label file, by relative name."""
        if self._data_key is None:
            ds = self.dataset()
            root = ds.source.parent
            h = hashlib.sha256(f"{ds.source.name}\0{self.file_hash(ds.source)}\n".encode())
            if self.holdout:  # val is val less the holdout: say which, so that another holdout is another key
                h.update(f"holdout\0{self.holdout['frac']}\0{self.holdout['seed']}\0{self.holdout['key']}\n".encode())
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


def gate_figures(result: dict | None) -> dict | None:
    """The accuracy gate's figures from a quantize result: what a FAILED row and record keep."""
    if not result:
        return None
    keys = ("artifact", "status", "attempt", "map50_95_fp32", "map50_95", "drop_points", "max_map_drop",
            "recall_drops")
    return {k: result[k] for k in keys if k in result}


def _json_or_none(path: Path):
    """A JSON file's content, or None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None
