"""KServe v2 (Triton HTTP) request and response bodies, with Triton's binary-data extension; no web framework here."""
from __future__ import annotations

import json
import math
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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _params(obj: dict, where: str) -> dict:
    """An object's 'parameters' (a JSON object, or absent)."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise V2Error(f"{where}: 'parameters' must be a JSON object, got {params!r:.60}")
    return params


def read_inputs(head: dict, tail: bytes) -> dict:
    """{name: numpy array (BYTES: an object array of bytes)} from a v2 request; V2Error (400) naming the field.

    Every field is checked before any tensor is built: name, datatype, shape (whose element count must match the
    data), binary_data_size (a non-negative integer; the sizes must add up to the binary part of the body exactly).
    """
    inputs = head.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise V2Error("request has no 'inputs' list")
    out, offset = {}, 0
    for k, t in enumerate(inputs):
        if not isinstance(t, dict) or not {"name", "shape", "datatype"} <= t.keys():
            raise V2Error(f"inputs[{k}]: each input needs 'name', 'shape' and 'datatype'")
        name, dt, shape = t["name"], t["datatype"], t["shape"]
        if not isinstance(name, str) or not name:
            raise V2Error(f"inputs[{k}].name must be a non-empty string, got {name!r:.60}")
        if name in out:
            raise V2Error(f"input {name}: given twice")
        if dt != "BYTES" and dt not in DTYPES:
            raise V2Error(f"input {name}: unsupported datatype {dt!r:.30} (expected BYTES or one of "
                          f"{', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise V2Error(f"input {name}: shape must be a list of non-negative integers, got {shape!r:.60}")
        count = math.prod(shape)
        params = _params(t, f"input {name}")
        if "shared_memory_region" in params:
            raise V2Error(f"input {name}: shared memory is not supported here (send the data in the body)")
        size = params.get("binary_data_size")
        if size is not None:
            if not _is_int(size) or size < 0:
                raise V2Error(f"input {name}: parameters.binary_data_size must be a non-negative integer, "
                              f"got {size!r:.30}")
            if offset + size > len(tail):
                raise V2Error(f"input {name}: binary_data_size {size} runs past the end of the body "
                              f"({len(tail) - offset} bytes left)")
            out[name] = _from_binary(name, dt, shape, count, tail[offset:offset + size])
            offset += size
        elif "data" in t:
            out[name] = _from_json(name, dt, shape, count, t["data"])
        else:
            raise V2Error(f"input {name}: neither 'data' nor parameters.binary_data_size")
    if offset != len(tail):
        raise V2Error(f"binary data: the body holds {len(tail)} bytes after the JSON header, the inputs' "
                      f"binary_data_size add up to {offset}")
    return out


def _from_binary(name, dt, shape, count, raw):
    if dt == "BYTES":
        items = unpack_bytes(raw)
        if len(items) != count:
            raise V2Error(f"input {name}: {len(items)} BYTES elements in the binary data, shape {shape} needs {count}")
        return _objects(items, shape)
    need = count * np.dtype(DTYPES[dt]).itemsize
    if len(raw) != need:
        raise V2Error(f"input {name}: binary_data_size {len(raw)}, shape {shape} of {dt} needs {need} bytes")
    return np.frombuffer(raw, DTYPES[dt]).reshape(shape)


def _objects(items: list[bytes], shape) -> np.ndarray:
    """A BYTES tensor: an object array of bytes in the request's shape."""
    a = np.empty(len(items), object)
    a[:] = items
    return a.reshape(shape)


def _flat(data, name) -> list:
    """The elements of a v2 JSON tensor, flat (the protocol allows nested lists in row-major order)."""
    if not isinstance(data, list):
        raise V2Error(f"input {name}: 'data' must be a JSON array")
    if not any(isinstance(x, list) for x in data):
        return data
    return [y for x in data for y in (_flat(x, name) if isinstance(x, list) else [x])]


def _from_json(name, dt, shape, count, data):
    flat = _flat(data, name)
    if len(flat) != count:
        raise V2Error(f"input {name}: {len(flat)} elements in 'data', shape {shape} needs {count}")
    if dt == "BYTES":  # JSON cannot carry raw bytes: edgekit reads base64 strings here
        import base64
        import binascii

        try:
            return _objects([base64.b64decode(s, validate=True) for s in flat], shape)
        except (binascii.Error, TypeError, ValueError):
            raise V2Error(f"input {name}: BYTES sent as JSON must be base64 strings (or use binary data)") from None
    np_dt = np.dtype(DTYPES[dt])
    if not flat:
        return np.zeros(shape, np_dt)
    try:
        a = np.array(flat)
    except (ValueError, OverflowError, TypeError):
        a = np.array([], object)
    kinds = {"b": "b", "i": "iu", "u": "iu"}.get(np_dt.kind, "iuf")
    # numpy reads [true, 1] as the integers [1, 1]: a JSON boolean is a value of BOOL only, and BOOL takes only those
    mixed = any(isinstance(v, bool) != (kinds == "b") for v in flat)
    if mixed or a.dtype.kind not in kinds or (np_dt.kind == "f" and a.dtype.kind == "b"):
        bad = next((v for v in flat if not isinstance(v, (bool, int, float)) or isinstance(v, bool) != (kinds == "b")
                    or (kinds == "iu" and not isinstance(v, int))), None)
        raise V2Error(f"input {name}: value {bad!r:.30} in 'data' is not of datatype {dt}")
    if kinds == "iu":
        info = np.iinfo(np_dt)
        lo, hi = a.min(), a.max()
        if lo < info.min or hi > info.max:
            raise V2Error(f"input {name}: value {int(hi) if hi > info.max else int(lo)} in 'data' is outside "
                          f"{dt}'s range {info.min}..{info.max}")
    return a.astype(np_dt).reshape(shape)


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
