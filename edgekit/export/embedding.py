"""A second ONNX output for drift tracking: the backbone's last feature map, global-average-pooled.

The tensor is the output of the backbone's last module (for YOLOv8/YOLO11 the SPPF layer), found by the node names
the Ultralytics export gives (`/model.<i>/...`): the tensor made inside module i and read outside it. The pooled
(batch, channels) tensor is appended after the detection output, named EMBED_OUTPUT, so the deployed graph itself
gives the features `edgekit serve` compares with the training data's profile, at the cost of one pooling.
"""
from __future__ import annotations

from ..runtime.embedding import EMBED_NODES, EMBED_OUTPUT


def module_output(graph, index: int) -> str | None:
    """The one tensor made inside `/model.<index>/` and read by a node outside it; None when not exactly one."""
    prefix = f"/model.{index}/"
    made = {o for n in graph.node if n.name.startswith(prefix) for o in n.output}
    used = {i for n in graph.node if not n.name.startswith(prefix) for i in n.input}
    out = sorted(made & used)
    return out[0] if len(out) == 1 else None


def add_embedding_output(model, index: int) -> int | None:
    """Append GlobalAveragePool + Flatten of module `index`'s output as graph output EMBED_OUTPUT (in place).

    Returns the channel count, or None (graph left unchanged) when the module's output cannot be told apart.
    """
    import onnx
    from onnx import helper

    g = model.graph
    if any(o.name == EMBED_OUTPUT for o in g.output):
        return None
    src = module_output(g, index)
    if src is None:
        return None
    inferred = onnx.shape_inference.infer_shapes(model)
    info = {v.name: v for v in (*inferred.graph.value_info, *inferred.graph.output)}.get(src)
    dims = [d.dim_value for d in info.type.tensor_type.shape.dim] if info is not None else []
    if len(dims) != 4 or not dims[1]:
        return None
    pooled = f"{EMBED_OUTPUT}/pooled"
    g.node.append(helper.make_node("GlobalAveragePool", [src], [pooled], name=EMBED_NODES[0]))
    g.node.append(helper.make_node("Flatten", [pooled], [EMBED_OUTPUT], name=EMBED_NODES[1], axis=1))
    batch = g.output[0].type.tensor_type.shape.dim[0]
    g.output.append(helper.make_tensor_value_info(EMBED_OUTPUT, onnx.TensorProto.FLOAT,
                                                  [batch.dim_param or batch.dim_value or "batch", dims[1]]))
    return dims[1]
