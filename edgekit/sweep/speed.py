"""Speed measured once per graph: the key of an artifact's structure, and interleaved rounds until stable.

Rows of one model at one input size differ only in their weights (head, full, schedule train the same network): the
compute does not depend on the weight values, so such rows share one measurement instead of showing noise as a
difference. The key is the graph with its weight values stripped (ONNX: nodes and attributes, each weight input
replaced by its shape and type; OpenVINO IR: the .xml, which holds the structure while the .bin holds the values), plus backend and
precision. A quantized graph with other layers kept in float has another structure, hence its own measurement.
Keying on (arch, imgsz, backend, precision) instead would merge INT8 graphs whose fallbacks excluded different
layers; keying on the file's content would time identical graphs several times.
"""
from __future__ import annotations

import hashlib
import re
import statistics
from pathlib import Path

CV_STABLE = 0.10  # a shared 2-core CPU rarely holds 5 % between rounds of 30 images


def _onnx_structure(path: Path) -> bytes:
    """The nodes with each weight input replaced by its shape and type (the values, and the names an optimizer
    gives to weights it found equal and merged, depend on training, not on the compute), plus the graph's I/O."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    weights = {t.name: f"\u00a7{list(t.dims)}:{t.data_type}" for t in g.initializer}
    parts = [str(list(g.input)), str(list(g.output))]
    for n in g.node:
        n = onnx.NodeProto.FromString(n.SerializeToString())
        ins = [weights.get(i, i) for i in n.input]
        del n.input[:]
        n.input.extend(ins)
        n.ClearField("doc_string")
        parts.append(n.SerializeToString().hex())
    return "\n".join(parts).encode()


def _ir_structure(xml: Path) -> bytes:
    """The IR's layers and edges without rt_info, layer names (the converter numbers them per session) and where
    each constant sits in the .bin."""
    text = re.sub(r"<rt_info>.*?</rt_info>", "", xml.read_text(errors="replace"), flags=re.S)
    return re.sub(r'\s(offset|size|name)="[^"]*"', "", text).encode()


def graph_key(artifact, backend: str, precision: str, target: str) -> str:
    """sha256 of the artifact's structure without weight values, with backend, precision and target."""
    p = Path(artifact)
    if p.is_dir():
        xmls = sorted(p.rglob("*.xml"))
        onnxs = sorted(p.rglob("*.onnx"))
        p = xmls[0] if xmls else onnxs[0] if onnxs else p
    if p.suffix == ".onnx":
        body = _onnx_structure(p)
    elif p.suffix == ".xml":
        body = _ir_structure(p)
    else:  # an engine file: no structure to read, its bytes are the key
        body = p.read_bytes()
    h = hashlib.sha256(body)
    h.update(f"\0{backend}\0{precision}\0{target}".encode())
    return h.hexdigest()


def summarize(rounds: list[dict]) -> dict:
    """One measurement from its rounds: medians of e2e p50/p90 and FPS, and the FPS coefficient of variation."""
    fps = [r["fps_e2e"] for r in rounds]
    cv = statistics.stdev(fps) / statistics.mean(fps) if len(fps) > 1 and statistics.mean(fps) > 0 else None
    med = statistics.median
    return {"fps_e2e": round(med(fps), 2), "fps_cv": round(cv, 4) if cv is not None else None,
            "latency_p50_ms": round(med(r["e2e_p50"] for r in rounds), 3),
            "latency_p90_ms": round(med(r["e2e_p90"] for r in rounds), 3),
            "infer_p50_ms": round(med(r["infer_p50"] for r in rounds), 3), "model_mb": rounds[-1].get("model_mb"),
            "rounds": len(rounds), "stable": cv is not None and cv <= CV_STABLE, "conf": rounds[-1].get("conf")}


def one_round(bench: dict) -> dict:
    """The figures a round keeps from an `edgekit bench` result."""
    lat = bench["latency_ms"]
    return {"fps_e2e": bench["fps_e2e"], "e2e_p50": lat["e2e"]["p50"], "e2e_p90": lat["e2e"]["p90"],
            "infer_p50": lat["infer"]["p50"], "model_mb": bench.get("model_mb"), "bench_stable": bench.get("stable"),
            "bench_cv": bench.get("cv"), "conf": bench.get("conf")}


def interleaved(keys: list, measure, min_rounds: int = 3, max_rounds: int = 6, log=None, failed: dict | None = None,
                catch: tuple = ()) -> dict:
    """Rounds over the keys in turn (each key once per round) until each FPS CV <= CV_STABLE or max_rounds.

    measure(key) -> one round's figures (one_round); returns key -> list of rounds. A key whose measure raises one
    of `catch` (a device lost mid-bench) leaves the rounds: its exception goes to `failed`, the other keys go on.
    """
    rounds: dict = {k: [] for k in keys}
    pending = list(keys)
    for i in range(max_rounds):
        for k in list(pending):
            try:
                rounds[k].append(measure(k))
            except catch as e:
                failed[k] = e
                pending.remove(k)
                del rounds[k]
        if i + 1 >= min_rounds:
            pending = [k for k in pending if not summarize(rounds[k])["stable"]]
            if not pending:
                break
        if log:
            log(f"[bench] round {i + 1}: {len(pending)} graph(s) to time again")
    return rounds
