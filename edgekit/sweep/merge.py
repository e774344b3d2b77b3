"""`edgekit report --merge`: one report from the stage records of several train-export runs.

Each trial folder keeps `stages/rows.json` (its rows before speed) and, for the first row of each graph, the
`<backend>-<precision>.bench.json` speed record. A run may have been made on another machine or moved: its records
name files relative to the run folder (format /2), which is found from where rows.json lies now, whatever the
working directory; the absolute paths of a format /1 record are rebased from the root it was written in.
A row takes the speed of its graph as its own run measured it (the first row of the graph owns the record, as in
`Pipeline.measure_speed`), else from another of the given runs; a graph timed nowhere leaves its rows untimed, never
recommended. Runs on other data or for another target, and one trial with two different accuracies, are refused:
their figures are not comparable.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import EdgekitError
from .trial import ROWS_FORMAT, Trial, resolved, slug

FORMAT_V1 = "edgekit-trial-rows/1"  # absolute paths under "root"

SPEED_KEYS = ("latency_p50_ms", "latency_p90_ms", "infer_p50_ms", "fps_e2e", "fps_cv", "model_mb")
ROW_KEY = ("model", "imgsz", "strategy", "backend", "precision")


def _read_json(path: Path) -> dict:
    """A JSON object from a file; an unreadable or malformed one is an error naming it."""
    try:
        doc = json.loads(path.read_text())
    except OSError as e:
        raise EdgekitError(f"{path}: cannot read: {e.strerror or e}") from None
    except json.JSONDecodeError as e:
        raise EdgekitError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    if not isinstance(doc, dict):
        raise EdgekitError(f"{path}: not a JSON object")
    return doc


def rebase(obj, old: str, new: str):
    """A copy of obj with every string path at or under `old` moved under `new`."""
    if isinstance(obj, str):
        if obj == old:
            return new
        for sep in {"/", os.sep}:
            if obj.startswith(old.rstrip(sep) + sep):
                return new + sep + obj[len(old.rstrip(sep)) + 1:]
        return obj
    if isinstance(obj, dict):
        return {k: rebase(v, old, new) for k, v in obj.items()}
    if isinstance(obj, list):
        return [rebase(v, old, new) for v in obj]
    return obj


def _run_folder(path: Path, doc: dict) -> Path:
    """The run folder a rows.json lies in now: its trial folder less the trial's place under the old root."""
    trial_dir = path.parent.parent
    root = str(doc["root"])
    for r in doc.get("rows") or []:  # a row's matches / bench record sit in <trial folder>/stages
        for p in (r.get("matches"), (r.get("_bench") or {}).get("record")):
            if isinstance(p, str) and p.startswith(root.rstrip("/") + "/"):
                depth = len(Path(p).parent.parent.relative_to(root).parts)
                if 0 < depth <= len(trial_dir.parents):
                    return trial_dir.parents[depth - 1]
    t = doc["trial"]  # no produced row: the folder layout says (nested runs name model and size)
    nested = Trial(t["model"], t["imgsz"], t["strategy"]).folder(Path("."), True)
    if trial_dir.name == slug(t["strategy"]) and trial_dir.parent.name == nested.parent.name:
        return trial_dir.parent.parent
    return trial_dir.parent


def _trial_run_folder(path: Path, doc: dict) -> Path:
    """The run folder of a format /2 rows.json: its trial folder less the trial's recorded place in the run."""
    place = doc["trial_dir"]
    parts = Path(place).parts if isinstance(place, str) else ()
    trial_dir = path.parent.parent
    if not parts or Path(place).is_absolute() or ".." in parts or trial_dir.parts[-len(parts):] != parts:
        raise EdgekitError(f"{path}: trial_dir: {place!r} is not where this record lies in its run folder")
    return trial_dir.parents[len(parts) - 1]


def _rows_doc(path: Path) -> dict:
    """A trial's rows.json, checked for what merging needs."""
    doc = _read_json(path)
    if doc.get("format") not in (ROWS_FORMAT, FORMAT_V1):
        raise EdgekitError(f"{path}: format {doc.get('format')!r} is not {ROWS_FORMAT}")
    place = "trial_dir" if doc["format"] == ROWS_FORMAT else "root"
    missing = [k for k in (place, "trial", "data", "target", "rows") if k not in doc]
    if missing:
        raise EdgekitError(f"{path}: missing key(s) {', '.join(missing)}")
    trial = doc["trial"]
    if not isinstance(trial, dict) or any(k not in trial for k in ("model", "imgsz", "strategy")):
        raise EdgekitError(f"{path}: trial: needs model, imgsz and strategy")
    if not isinstance(doc["rows"], list) or not all(isinstance(r, dict) for r in doc["rows"]):
        raise EdgekitError(f"{path}: rows: not a list of objects")
    for i, r in enumerate(doc["rows"]):
        missing = [k for k in ROW_KEY if k not in r]
        if missing:
            raise EdgekitError(f"{path}: rows[{i}]: missing key(s) {', '.join(missing)}")
        b = r.get("_bench")
        if b is not None and not (isinstance(b, dict) and isinstance(b.get("graph"), str) and b.get("record")):
            raise EdgekitError(f"{path}: rows[{i}]._bench: needs graph and record")
    return doc


def _bench_doc(path: Path) -> dict | None:
    """A finished speed record (None when it is not one); a finished one lacking figures is an error naming it."""
    doc = _read_json(path)
    graph, res = (doc.get("inputs") or {}).get("graph"), doc.get("result")
    if doc.get("status") != "done" or not graph or not isinstance(res, dict):
        return None
    missing = [k for k in SPEED_KEYS + ("rounds", "stable") if k not in res]
    if missing:
        raise EdgekitError(f"{path}: result: missing key(s) {', '.join(missing)}")
    return doc if res["fps_e2e"] is not None else None


def load_run(folder) -> dict:
    """Every trial's rows.json under `folder` (recursively), paths rebased onto where its run folder is now.

    {"dir": folder, "trials": [{"path", "run", "doc"}], "benches": {graph: [(record path, run, result)]},
    "reports": {run: report.json or None}}; `run` is the run folder as found under `folder`.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise EdgekitError(f"{folder}: no such folder")
    paths = sorted(folder.rglob("stages/rows.json"))
    if not paths:
        raise EdgekitError(f"{folder}: no train-export stage records (<trial>/stages/rows.json) under it")
    trials, reports, benches = [], {}, {}
    for path in paths:
        raw = _rows_doc(path)
        if raw["format"] == FORMAT_V1:
            run = _run_folder(path, raw)
            doc = rebase(raw, str(raw["root"]), str(run.resolve()))
        else:
            run = _trial_run_folder(path, raw)
            doc = {**raw, "rows": [resolved(r, run.resolve()) for r in raw["rows"]]}
        trials.append({"path": path, "run": run, "doc": doc})
        if run not in reports:
            rp = run / "report.json"
            reports[run] = _read_json(rp) if rp.exists() else None
        for rec in sorted(path.parent.glob("*.bench.json")):
            b = _bench_doc(rec)
            if b is not None:
                benches.setdefault(b["inputs"]["graph"], []).append((rec, run, b))
    return {"dir": folder, "trials": trials, "benches": benches, "reports": reports}


def _trial_order(report: dict | None):
    """Sort key for a run's trials: their order in the run's report (the order they ran in), else their folders."""
    seen: dict = {}
    for r in (report or {}).get("rows") or []:
        seen.setdefault((r.get("model"), r.get("imgsz"), r.get("strategy")), len(seen))

    def key(t):
        tr = t["doc"]["trial"]
        return seen.get((tr["model"], tr["imgsz"], tr["strategy"]), len(seen)), str(t["path"])
    return key


def _check_comparable(runs: list[dict]) -> None:
    """Refuse trials made on other data or for another target than the first one's."""
    first = runs[0]["trials"][0]
    for run in runs:
        for t in run["trials"]:
            for field, what in (("data", "data (dataset content keys {a:.12} vs {b:.12})"),
                                ("target", "targets ({a} vs {b})")):
                a, b = first["doc"][field], t["doc"][field]
                if a != b:
                    raise EdgekitError(f"{first['run']} and {t['run']} were made on different "
                                       f"{what.format(a=a, b=b)}: their mAP and FPS are not comparable")


def apply_speed(row: dict, res: dict, graph: str, shared_with: str | None = None) -> None:
    """Give a row the figures of its graph's bench result, as `Pipeline.measure_speed` does."""
    row.update({k: res[k] for k in SPEED_KEYS})
    row.update({"e2e_p50_ms": res["latency_p50_ms"], "bench_rounds": res["rounds"], "bench_stable": res["stable"],
                "bench_graph": graph[:12], "bench_node": res.get("bench_node"), "bench_conf": res.get("conf")})
    if shared_with is not None:
        row["speed_shared_with"] = shared_with


def _shared_name(bench_doc: dict) -> str:
    return str(bench_doc.get("stage", "")).rsplit(" bench", 1)[0]


def _time_run(trials: list[dict], benches: dict, run: Path) -> list[tuple[dict, dict, Path]]:
    """(row, its _bench, trial's rows.json) of a run in order, speed given from the run's own records where it can."""
    out, owners = [], {}
    for t in trials:
        for r in t["doc"]["rows"]:
            row = dict(r)
            b = row.pop("_bench", None)
            out.append((row, b, t["path"]))
            if b is not None:
                owners.setdefault(b["graph"], (row, b))
    for graph, (owner, b) in owners.items():
        mine = [x for x in benches.get(graph, []) if x[1] == run]
        own = next((x for x in mine if x[0].resolve() == Path(b["record"]).resolve()), None)
        pick = own or max(mine, key=lambda x: x[0].stat().st_mtime_ns, default=None)
        for row, rb, _ in out:
            if rb is not None and rb["graph"] == graph and pick is not None:
                shared = None if (row is owner and pick is own) else _shared_name(pick[2])
                apply_speed(row, pick[2]["result"], graph, shared)
    return out


def _label(row: dict) -> str:
    return f"{row['model']}@{row['imgsz']} {row['strategy']} {row['backend']}-{row['precision']}"


def _dedupe(rows: list[tuple[dict, dict, Path]]) -> list[tuple[dict, dict, Path]]:
    """One row per (model, imgsz, strategy, backend, precision); the same trial with another mAP50-95 is refused."""
    kept: dict = {}
    for row, b, path in rows:
        key = tuple(row.get(k) for k in ROW_KEY)
        if key not in kept:
            kept[key] = (row, b, path)
            continue
        first, _, fpath = kept[key]
        if first.get("map50_95") != row.get("map50_95") or first.get("status") != row.get("status"):
            def fig(r):
                return f"{r['map50_95']:.4f}" if r.get("map50_95") is not None else f"none ({r.get('status')})"
            raise EdgekitError(f"{fpath} and {path}: {_label(row)} has mAP50-95 {fig(first)} in one and {fig(row)} "
                               f"in the other; merge runs of one sweep, not two versions of a trial")
        if first.get("fps_e2e") is None and row.get("fps_e2e") is not None:  # keep the copy that has its speed
            kept[key] = (row, b, path)
    return list(kept.values())


def _unique(values) -> list:
    out = []
    for v in values:
        if v is not None and v not in out:
            out.append(v)
    return out


def _config(runs: list[dict], rows: list[dict]) -> dict:
    """The merged report's config: where each run is, and what its runs' own configs said, united."""
    confs = [rep["config"] for run in runs for rep in run["reports"].values() if rep and rep.get("config")]
    trials = [t["doc"] for run in runs for t in run["trials"]]

    def one(values):
        vals = _unique(values)
        return vals[0] if len(vals) == 1 else vals

    data = one(c.get("data") for c in confs) or f"sha256:{trials[0]['data'][:12]}"
    return {"merged_from": _unique(str(folder.resolve()) for r in runs for folder in r["reports"]),
            "data": ", ".join(map(str, data)) if isinstance(data, list) else data, "data_key": trials[0]["data"],
            "models": _unique(t["trial"]["model"] for t in trials),
            "strategies": _unique(t["trial"]["strategy"] for t in trials),
            "epochs": one(r.get("epochs") for r in rows if r.get("epochs") is not None),
            "imgsz": sorted(_unique(t["trial"]["imgsz"] for t in trials)),
            "search": one(c.get("search") for c in confs) or "grid", "target": trials[0]["target"],
            "backends": _unique(r["backend"] for r in rows if r.get("backend") not in (None, "-")),
            "precisions": _unique(r["precision"] for r in rows if r.get("precision") not in (None, "-")),
            "max_class_drop": one(c.get("max_class_drop") for c in confs), "seed": one(c.get("seed") for c in confs)}


def _failed_trials(runs: list[dict], have: set) -> list[dict]:
    """Rows of trials that failed before producing rows.json (training or export), from their run's report."""
    out = []
    for run in runs:
        for folder, rep in run["reports"].items():
            for r in (rep or {}).get("rows") or []:
                trial = (r.get("model"), r.get("imgsz"), r.get("strategy"))
                if r.get("backend") == "-" and trial not in have:
                    out.append(dict(r))
                    have.add(trial)
    return out


def merge_runs(dirs) -> tuple[list[dict], list[dict], dict]:
    """(rows, pruned, config) of one report over the runs under `dirs`; rows carry their speed where measured."""
    runs = [load_run(d) for d in dirs]
    _check_comparable(runs)
    timed = []
    for run in runs:
        by_run: dict = {}
        for t in run["trials"]:
            by_run.setdefault(t["run"], []).append(t)
        for folder, trials in by_run.items():
            trials = sorted(trials, key=_trial_order(run["reports"].get(folder)))
            timed += _time_run(trials, run["benches"], folder)
    for row, b, _ in timed:  # graphs their own run never timed: another run's measurement of the same graph
        if b is None or row.get("fps_e2e") is not None:
            continue
        found = next((rec for run in runs for rec in run["benches"].get(b["graph"], [])), None)
        if found is not None:
            apply_speed(row, found[2]["result"], b["graph"], f"{_shared_name(found[2])} in {found[1]}")
    rows = []
    for row, b, _ in _dedupe(timed):
        if row.get("status") == "ok" and row.get("fps_e2e") is None:
            row["untimed"] = True  # no measurement of its graph in any given run: shown, never recommended
        rows.append(row)
    rows += _failed_trials(runs, {(r.get("model"), r.get("imgsz"), r.get("strategy")) for r in rows})
    pruned = []
    for run in runs:
        for rep in run["reports"].values():
            pruned += [p for p in (rep or {}).get("pruned") or [] if p not in pruned]
    return rows, pruned, _config(runs, rows)
