"""KServe v2 (Triton HTTP) request and response bodies, with Triton's binary-data extension; no web framework here."""
from __future__ import annotations

import json
import struct

import numpy as np

HEADER_LEN = "Inference-Header-Content-Length"

DTYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
          "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
          "FP32": np.float32, "FP64": np.float64}
V2_OF = {np.dtype(v): k for k, v in DTYPES.items()}


class V2Error(Exception):
    """An error answered as {"error": message} with an HTTP status (400 bad request, 503 busy...)."""

    def __init__(self, message: str, status: int = 400, headers: dict | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}


def split_body(body: bytes, header_length) -> tuple[dict, bytes]:
    """A request body -> (JSON header, binary tail); header_length comes from Inference-Header-Content-Length."""
    n = len(body)
    if header_length is not None:
        try:
            n = int(header_length)
        except ValueError:
            raise V2Error(f"{HEADER_LEN} is not an integer: {header_length!r}") from None
        if not 0 <= n <= len(body):
            raise V2Error(f"{HEADER_LEN} {n} is outside the body of {len(body)} bytes")
    try:
        head = json.loads(body[:n] or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise V2Error(f"request header is not valid JSON: {e}") from None
    if not isinstance(head, dict):
        raise V2Error("request header must be a JSON object")
    return head, body[n:]


def unpack_bytes(raw: bytes) -> list[bytes]:
    """Triton's BYTES serialization (4-byte little-endian length, then the bytes, repeated) -> list of bytes."""
    out, i = [], 0
    while i < len(raw):
        if i + 4 > len(raw):
            raise V2Error("BYTES tensor is truncated (length prefix cut off)")
        (k,) = struct.unpack_from("<I", raw, i)
        i += 4
        if i + k > len(raw):
            raise V2Error(f"BYTES tensor is truncated (element of {k} bytes, {len(raw) - i} left)")
        out.append(raw[i:i + k])
        i += k
    return out


def pack_bytes(items) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def read_inputs(head: dict, tail: bytes) -> dict:
    """{name: numpy array (numeric) or list of bytes (BYTES)} from a v2 request."""
    inputs = head.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error("request has no 'inputs' list")
    out, offset = {}, 0
    for t in inputs:
        if not isinstance(t, dict) or not {"name", "shape", "datatype"} <= t.keys():
            raise V2Error("each input needs 'name', 'shape' and 'datatype'")
        name, dt, shape = t["name"], t["datatype"], t["shape"]
        if not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape):
            raise V2Error(f"input {name}: shape must be a list of non-negative integers, got {shape!r}")
        size = (t.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            if offset + int(size) > len(tail):
                raise V2Error(f"input {name}: binary_data_size {size} runs past the end of the body")
            raw, offset = tail[offset:offset + int(size)], offset + int(size)
            out[name] = _from_binary(name, dt, shape, raw)
        elif "data" in t:
            out[name] = _from_json(name, dt, shape, t["data"])
        else:
            raise V2Error(f"input {name}: neither 'data' nor binary_data_size")
    return out


def _from_binary(name, dt, shape, raw):
    if dt == "BYTES":
        return unpack_bytes(raw)
    if dt not in DTYPES:
        raise V2Error(f"input {name}: unsupported datatype {dt}")
    a = np.frombuffer(raw, DTYPES[dt])
    if a.size != int(np.prod(shape)):
        raise V2Error(f"input {name}: {a.size} elements in the binary data, shape {shape} needs {int(np.prod(shape))}")
    return a.reshape(shape)


def _from_json(name, dt, shape, data):
    if dt == "BYTES":  # JSON cannot carry raw bytes: edgekit reads base64 strings here
        import base64
        import binascii

        flat = np.asarray(data, dtype=object).ravel().tolist()
        try:
            return [base64.b64decode(s, validate=True) for s in flat]
        except (binascii.Error, TypeError, ValueError):
            raise V2Error(f"input {name}: BYTES sent as JSON must be base64 strings (or use binary data)") from None
    if dt not in DTYPES:
        raise V2Error(f"input {name}: unsupported datatype {dt}")
    try:
        return np.asarray(data, DTYPES[dt]).reshape(shape)
    except (ValueError, TypeError) as e:
        raise V2Error(f"input {name}: data does not fit datatype {dt} and shape {shape} ({e})") from None


def wants_binary(head: dict, name: str) -> bool:
    """Triton's rule: an output is binary when its request says so, or when binary_data_output is set."""
    for o in head.get("outputs") or []:
        if o.get("name") == name and "binary_data" in (o.get("parameters") or {}):
            return bool(o["parameters"]["binary_data"])
    return bool((head.get("parameters") or {}).get("binary_data_output", False))


def encode_response(model: str, head: dict, outputs: dict[str, np.ndarray], version: str = "1"):
    """(body bytes, extra headers) for a v2 response; outputs the request named only, binary where asked."""
    asked = [o.get("name") for o in head.get("outputs") or []]
    names = [n for n in outputs if not asked or n in asked]
    doc = {"model_name": model, "model_version": version, "outputs": []}
    if "id" in head:
        doc["id"] = head["id"]
    blobs = []
    for n in names:
        a = np.ascontiguousarray(outputs[n])
        o = {"name": n, "datatype": V2_OF[a.dtype], "shape": list(a.shape)}
        if wants_binary(head, n):
            b = a.tobytes()
            o["parameters"] = {"binary_data_size": len(b)}
            blobs.append(b)
        else:
            o["data"] = a.ravel().tolist()
        doc["outputs"].append(o)
    js = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return js, {"Content-Type": "application/json"}
    return js + b"".join(blobs), {HEADER_LEN: str(len(js)), "Content-Type": "application/octet-stream"}
