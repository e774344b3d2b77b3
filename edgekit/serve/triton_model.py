"""Triton Python-backend model for edgekit's pre- and post-processing (copied into the repository as model.py).

The model's config parameter "stage" picks the role:
- pre:  IMAGE (BYTES, one encoded image per batch item; each checked like edgekit serve checks it: the size its
        header declares is refused over edgekit's pixel limit before anything is decoded) -> images (the network input), LETTERBOX (FP64 [5]:
        gain, pad_left, pad_top, orig_h, orig_w);
- post: RAW (the network output) + LETTERBOX -> BOXES (FP32 [k, 4], x1 y1 x2 y2 in original-image pixels),
        SCORES (FP32 [k]), LABELS (INT64 [k]); a request holding several images is padded to its largest k
        (score 0, label -1).
The letterbox and decode/NMS are edgekit's own (edgekit_runtime/ beside this file is copied from
edgekit), so Triton sees exactly the pixels and boxes that edgekit's Engine does.
"""
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import triton_python_backend_utils as pb_utils  # noqa: E402  (provided by Triton's Python backend)


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        self.stage = config["parameters"]["stage"]["string_value"]
        self.meta = json.loads((HERE / "edgekit_meta.json").read_text())
        self.dtype = np.float16 if self.meta["input_dtype"] == "float16" else np.float32

    def execute(self, requests):
        responses = []
        for request in requests:
            try:
                outs = self.pre(request) if self.stage == "pre" else self.post(request)
                responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(k, v)
                                                                            for k, v in outs.items()]))
            except Exception as e:  # one bad image fails its request only
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(str(e))))
        return responses

    def pre(self, request):
        from edgekit_runtime.runtime.images import check_bytes, decode_bytes
        from edgekit_runtime.runtime.preprocess import preprocess

        encoded = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy().reshape(-1)
        images = []
        for k, b in enumerate(encoded):
            data, where = bytes(b), f"IMAGE[{k}]"
            if not data:
                raise ValueError(f"{where} is empty")
            check_bytes(data, where)  # header, declared size against the pixel limit, whole JPEG: before decoding
            images.append(decode_bytes(data, where))
        blob, infos = preprocess(images, tuple(self.meta["imgsz"]), self.meta["pad_value"], dtype=self.dtype)
        lb = np.array([[i.gain, i.pad_left, i.pad_top, *i.orig_shape] for i in infos], np.float64)
        return {"images": blob, "LETTERBOX": lb}

    def post(self, request):
        from edgekit_runtime.runtime.detections import padded_batch
        from edgekit_runtime.runtime.postprocess import postprocess
        from edgekit_runtime.runtime.preprocess import Letterbox

        raw = pb_utils.get_input_tensor_by_name(request, "RAW").as_numpy().astype(np.float32)
        lb = pb_utils.get_input_tensor_by_name(request, "LETTERBOX").as_numpy()
        infos = [Letterbox(float(g), int(pl), int(pt), (int(h), int(w))) for g, pl, pt, h, w in lb]
        m = self.meta
        dets = postprocess(raw, infos, m["names"], m["layout"], conf=m["conf"], iou=m["iou"], max_det=m["max_det"],
                           imgsz=tuple(m["imgsz"]))
        return padded_batch(dets)
