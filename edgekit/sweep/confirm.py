"""Trust the pick as it will run: each row's deployment threshold, and the pick confirmed on images that chose nothing.

Threshold: each produced row's confidence threshold is chosen on val from the row's own saved matches (the file the
paired statistics read), by max F1 or by --target-precision / --target-recall (edgekit.eval.threshold), and recorded
in the artifact's sidecar, so Engine, serve and the speed measurement run at it.

Confirmation: val chooses everything (the rows' ranking, the gates, the thresholds), so the pick's val mAP is the best
of N noisy draws. When the data has a test split (or --holdout-frac set part of val aside as one), the pick and the
next candidates in the recommendation's order (TOP rows: the pick, then what the rule picks once the rows before are
gone) are evaluated on it, each in a stage of its own keyed by content, and the report says whether their order by
val mAP50-95 holds on test. A pair with equal mAP50-95 (as recorded, 5 decimals) on val or on test is a tie: it never
counts as a disagreement. Without a test split the report says the pick's val figure is optimistic.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

TOP = 3
ROW_KEY = ("model", "imgsz", "strategy", "backend", "precision")
TIES = ("rows with equal mAP50-95 (5 decimals) on val or on test are tied: a tie never counts as a disagreement")


# the deployment threshold of a row ---------------------------------------------------------------
def row_threshold(matches, names: list[str], target_precision: float | None = None,
                  target_recall: float | None = None) -> dict:
    """The row's deployment threshold with P, R and F1 there, overall and per class, from its saved val matches."""
    from ..eval.bootstrap import Matches
    from ..eval.threshold import choose_threshold

    return choose_threshold(Matches.load(matches), list(names), target_precision, target_recall)


def threshold_fields(thr: dict) -> dict:
    """The row's fields for a threshold: threshold (the conf), precision/recall/f1_at_threshold, how it was chosen,
    per_class_at_threshold; threshold_reached False when no conf met the target (the closest one was taken)."""
    return {"threshold": thr["conf"], "precision_at_threshold": thr["precision"],
            "recall_at_threshold": thr["recall"], "f1_at_threshold": thr["f1"],
            "threshold_chosen_by": thr["chosen_by"],
            **({} if thr.get("reached", True) else {"threshold_reached": False}),
            "per_class_at_threshold": thr["per_class"]}


def row_threshold_doc(row: dict) -> dict:
    """A row's threshold as the sidecar and the recommendation carry it: {conf, precision, recall, f1, chosen_by,
    per_class}."""
    return {"conf": row["threshold"], "precision": row["precision_at_threshold"],
            "recall": row["recall_at_threshold"], "f1": row["f1_at_threshold"], "chosen_by": row["threshold_chosen_by"],
            **({"reached": False} if row.get("threshold_reached") is False else {}),
            "per_class": row.get("per_class_at_threshold")}


def record_threshold(artifact, thr: dict) -> None:
    """The threshold in the artifact's sidecar (Engine, serve and bench default to it), unless it is there already."""
    from ..runtime.meta import read_sidecar, write_sidecar

    doc = read_sidecar(artifact)
    if doc.get("threshold") != json.loads(json.dumps(thr)):
        write_sidecar(artifact, {**{k: v for k, v in doc.items() if k != "format"}, "threshold": thr})


def sidecar_digest(path: Path) -> str | None:
    """sha256 of an edgekit sidecar less its deployment threshold (written by the eval stage after the build, so the
    build's record still matches); None for any other file."""
    from ..runtime.meta import SIDECAR_FORMAT

    if path.suffix.lower() != ".json":
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != SIDECAR_FORMAT:
        return None
    doc.pop("threshold", None)
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# the recommendation's order ----------------------------------------------------------------------
def same_row(row: dict, rec: dict) -> bool:
    return all(row.get(k) == rec.get(k) for k in ROW_KEY)


def recommendation_order(rows: list[dict], recommend, n: int = TOP) -> list[dict]:
    """The pick, then what `recommend` (rows -> recommendation) picks once the rows before are gone: n rows at most."""
    left, out = list(rows), []
    while len(out) < n:
        rec = recommend(left)
        r = next((x for x in left if rec.get("artifact") and same_row(x, rec)), None)
        if r is None:
            break
        out.append(r)
        left = [x for x in left if x is not r]
    return out


def rank_swaps(rows: list[dict]) -> list[dict]:
    """Pairs ranked one way by val mAP50-95 and the other way on test (ties on either split are not swaps)."""
    out = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            val = round(a["map50_95"] - b["map50_95"], 5)
            test = round(a["test_map50_95"] - b["test_map50_95"], 5)
            if val * test < 0:
                hi, lo = (a, b) if val > 0 else (b, a)
                out.append({"val_higher": _name(hi), "test_higher": _name(lo),
                            "val_map50_95": [hi["map50_95"], lo["map50_95"]],
                            "test_map50_95": [hi["test_map50_95"], lo["test_map50_95"]]})
    return out


def _name(r: dict) -> str:
    return f"{r.get('model')}@{r.get('imgsz')} {r['strategy']}, {r['backend']} {r['precision']}"


# evaluation on test ------------------------------------------------------------------------------
def confirm_key(pipe) -> str:
    """Content of the test split (each image and label, by name relative to the dataset) and how it was made."""
    ds = pipe.dataset()
    root = ds.source.parent
    h = hashlib.sha256(json.dumps(pipe.holdout or "test split", sort_keys=True).encode())
    for s in ds.samples("test"):
        label = pipe.file_hash(s.label) if s.label else "-"
        rel = Path(s.image).resolve().relative_to(root.resolve()).as_posix() \
            if Path(s.image).resolve().is_relative_to(root.resolve()) else s.image.name
        h.update(f"{rel}\0{pipe.file_hash(s.image)}\0{label}\n".encode())
    return h.hexdigest()


def confirm_on_test(pipe, top: list[dict]) -> dict:
    """Each of the top rows evaluated on the test split, a stage each (--resume reuses it): {split, images,
    figures: [{map50, map50_95, map50_95_ci, images, at_threshold}]}."""
    from .._imports import tool_versions

    key = confirm_key(pipe)
    figures = []
    for r in top:
        name = f"{r['backend']}-{r['precision']}"
        stages = Path(r["matches"]).parent
        pipe.pull(Path(r["artifact"]))  # a remote storage (--executor ray): the driver evaluates its own copy
        inputs = {"artifact": pipe.content_hash(r["artifact"]), "backend": r["backend"], "target": pipe.measured_on,
                  "test": key, "eval": "test-v1",
                  "versions": tool_versions("onnxruntime", "openvino", "tensorrt")}
        res = pipe.stage(f"{r['model']}@{r['imgsz']} {r['strategy']}: {name} test", stages / f"{name}.test.json",
                         inputs, lambda r=r, m=stages / f"{name}.test.matches.npz": _evaluate_test(pipe, r, m),
                         output=lambda res: pipe.at(res["matches"]))
        figures.append({**res, "at_threshold": _at_threshold(pipe.at(res["matches"]), r, pipe.dataset().names)})
    return {"split": "holdout" if pipe.holdout else "test", "images": len(pipe.dataset().samples("test")),
            "figures": figures}


def _evaluate_test(pipe, row: dict, matches: Path) -> dict:
    """mAP of a row's artifact on the test split (here or on the SSH device), its per-image matches saved."""
    ds = pipe.dataset()
    if pipe.remote:
        from ..target.ssh import remote_eval

        acc = remote_eval(pipe.remote, row["artifact"], ds, ["--backend", row["backend"]], split="test",
                          matches=matches)
    else:
        from ..eval import evaluate

        acc = evaluate(row["artifact"], ds, split="test", backend=row["backend"], device=pipe.target, progress=False,
                       matches_path=matches)
    return {"map50": acc["map50"], "map50_95": acc["map50_95"], "map50_95_ci": acc.get("map50_95_ci"),
            "images": acc["images"], "matches": pipe.rel(matches)}


def _at_threshold(matches: Path, row: dict, names: list[str]) -> dict | None:
    """P, R and F1 on test at the row's val threshold, from the saved test matches (a changed threshold needs no
    inference)."""
    from ..eval.bootstrap import Matches
    from ..eval.threshold import at_conf

    if row.get("threshold") is None:
        return None
    at = at_conf(Matches.load(matches), list(names), row["threshold"])
    return {k: at[k] for k in ("conf", "precision", "recall", "f1")}


# the report's part -------------------------------------------------------------------------------
def confirmation(top: list[dict], confirm, n_rows: int) -> dict:
    """The report's `confirmation`: test figures of the top rows (given to them too: test_map50_95 ...) and whether
    their val order holds on test; without a test split (confirm None), that the pick's val mAP is optimistic."""
    if confirm is None or not top:
        return {"split": None, "rows_compared": n_rows, "val_optimistic": bool(top)}
    res = confirm(top)
    entries = []
    for rank, (r, f) in enumerate(zip(top, res["figures"]), 1):
        r.update({"test_map50_95": f["map50_95"], "test_map50": f["map50"], "test_map50_95_ci": f.get("map50_95_ci"),
                  "test_rank": rank, **({"test_at_threshold": f["at_threshold"]} if f.get("at_threshold") else {})})
        entries.append({**{k: r.get(k) for k in ROW_KEY}, "rank": rank, "map50_95": r["map50_95"],
                        "test_map50_95": f["map50_95"], "test_map50_95_ci": f.get("map50_95_ci"),
                        "threshold": row_threshold_doc(r) if r.get("threshold") is not None else None,
                        "test_at_threshold": f.get("at_threshold")})
    swaps = rank_swaps(top)
    return {"split": res["split"], "images": res["images"], "rows_compared": n_rows, "rows": entries,
            "test_rank_agrees": not swaps, "swaps": swaps, "ties": TIES}


def why_sentence(c: dict, pick: dict) -> str:
    """One sentence for the recommendation's `why`: the pick's test figure and whether the order holds, or that its
    val figure is optimistic."""
    if c.get("split") is None:
        return (f"Its val mAP50-95 is optimistic: it is the best of {c['rows_compared']} row(s) compared on the same "
                f"val images (a test split in the data, or --holdout-frac, confirms it on images that chose nothing)."
                if c.get("val_optimistic") else "")
    where = "held-out val" if c["split"] == "holdout" else "test"
    n = len(c["rows"])
    return (f"On {c['images']} {where} images it scores mAP50-95 {pick['test_map50_95']:.3f} (val "
            f"{pick['map50_95']:.3f}); " + ("the only candidate, nothing to rank." if n < 2 else
                                            f"the order of the top {n} by val mAP50-95 "
                                            + ("holds on test." if c["test_rank_agrees"] else
                                               "does NOT hold on test (see Confirmation).")))


def markdown_lines(doc: dict) -> list[str]:
    """The readable report's Confirmation section."""
    c = doc.get("confirmation")
    if not c or c.get("split") is None:
        return []
    where = "held-out val (--holdout-frac)" if c["split"] == "holdout" else "test"
    lines = ["## Confirmation on unseen images", "",
             f"The pick and the next candidate(s) in the recommendation's order, evaluated on {c['images']} {where} "
             f"images that chose nothing (selection, gates and thresholds used val only). P, R, F1 on test at each "
             f"row's val threshold.", "",
             "| rank | row | val mAP50-95 | test mAP50-95 | conf | test P | test R | test F1 |",
             "|---|---|---|---|---|---|---|---|"]
    for e in c["rows"]:
        at = e.get("test_at_threshold") or {}
        cells = [at.get(k) for k in ("precision", "recall", "f1")]
        lines.append(f"| {e['rank']} | {_name(e)} | {e['map50_95']:.4f} | {e['test_map50_95']:.4f} | "
                     f"{at.get('conf', '-')} | " + " | ".join("-" if v is None else f"{v:.3f}" for v in cells) + " |")
    lines.append("")
    if c["test_rank_agrees"]:
        lines.append(f"The order by val mAP50-95 holds on test ({c['ties']}).")
    else:
        lines.append(f"The test ranking DISAGREES with val's ({c['ties']}):")
        lines += [f"- {w['val_higher']} is above {w['test_higher']} on val ({w['val_map50_95'][0]:.4f} vs "
                  f"{w['val_map50_95'][1]:.4f}) and below it on test ({w['test_map50_95'][0]:.4f} vs "
                  f"{w['test_map50_95'][1]:.4f})" for w in c["swaps"]]
    return lines + [""]


def pick_fields(pick: dict, c: dict) -> dict:
    """What the recommendation adds about its pick: its threshold (per class too), test_map50_95, test_rank_agrees."""
    return {"threshold": row_threshold_doc(pick) if pick.get("threshold") is not None else None,
            "test_map50_95": pick.get("test_map50_95"), "test_rank_agrees": c.get("test_rank_agrees")}


def report_row(row: dict, top: bool) -> dict:
    """A row as report.json lists it: per-class figures at the threshold for the top rows only."""
    return row if top else {k: v for k, v in row.items() if k != "per_class_at_threshold"}
