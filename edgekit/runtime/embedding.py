"""Which output of a model is which: the detection tensor, and the pooled-backbone embedding edgekit export adds.

Backends pick the detection output by name (the sidecar's `output.name`) or, without it, as the first output that
is not EMBED_OUTPUT; never by position alone, so artifacts with and without the embedding load alike.
"""
from __future__ import annotations

EMBED_OUTPUT = "edgekit_embedding"
EMBED_NODES = (f"{EMBED_OUTPUT}/GlobalAveragePool", f"{EMBED_OUTPUT}/Flatten")


def detection_index(names: list, meta=None) -> int:
    """Index of the detection output among a model's output names (sets of names for OpenVINO ports)."""
    def has(entry, name):
        return name in entry if isinstance(entry, (set, frozenset, list, tuple)) else entry == name

    want = ((meta.raw.get("output") or {}).get("name") if meta is not None and isinstance(meta.raw, dict) else None)
    if want:
        for i, n in enumerate(names):
            if has(n, want):
                return i
    return next((i for i, n in enumerate(names) if not has(n, EMBED_OUTPUT)), 0)


def embedding_index(names: list) -> int | None:
    """Index of EMBED_OUTPUT among a model's output names, or None."""
    for i, n in enumerate(names):
        if (EMBED_OUTPUT in n) if isinstance(n, (set, frozenset, list, tuple)) else n == EMBED_OUTPUT:
            return i
    return None


def strip_embedding(path) -> bool:
    """Remove EMBED_OUTPUT and its two nodes from the ONNX file at `path` (in place); True if it had them.

    For converters that do not carry a second output (ncnn, LiteRT: Backend.carries_embedding False): their
    artifacts track drift on image statistics and confidences only.
    """
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    keep = [o for o in g.output if o.name != EMBED_OUTPUT]
    if len(keep) == len(g.output):
        return False
    del g.output[:]
    g.output.extend(keep)
    nodes = [n for n in g.node if n.name not in EMBED_NODES]
    del g.node[:]
    g.node.extend(nodes)
    onnx.save(model, str(path))
    return True
