"""What each backend declares (suffixes, devices, precisions, runner), and what iterates the registry."""
from __future__ import annotations

import numpy as np
import pytest

# variants_for, pinned to its outputs before the backends declared their own precisions: (target, installed
# backends, the CPU has BF16, --backends, --precisions, expected "backend:precision" rows in order)
INSTALLED = {"all": ("onnxruntime", "openvino", "tensorrt"), "ov": ("openvino",), "ort": ("onnxruntime",)}
PINNED = [
    ('cpu', 'all', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'all', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'all', False, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:int8'),
    ('cpu', 'all', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'ov', True, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'ov', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('cpu', 'ov', False, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:int8'),
    ('cpu', 'ov', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('cuda:0', 'all', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:int8'),
    ('cuda:0', 'all', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:fp16 tensorrt:int8'),
    ('cuda:0', 'all', False, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:int8'),
    ('cuda:0', 'all', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 tensorrt:fp16 tensorrt:int8'),
    ('cuda:0', 'ov', True, 'onnxruntime,openvino,tensorrt', None,
     ''),
    ('cuda:0', 'ov', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     ''),
    ('cuda:0', 'ov', False, 'onnxruntime,openvino,tensorrt', None,
     ''),
    ('cuda:0', 'ov', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     ''),
    ('GPU', 'all', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:bf16 openvino:int8'),
    ('GPU', 'all', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('GPU', 'all', False, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:int8'),
    ('GPU', 'all', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'onnxruntime:fp32 onnxruntime:int8 openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('GPU', 'ov', True, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:bf16 openvino:int8'),
    ('GPU', 'ov', True, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('GPU', 'ov', False, 'onnxruntime,openvino,tensorrt', None,
     'openvino:fp32 openvino:int8'),
    ('GPU', 'ov', False, 'onnxruntime,openvino,tensorrt', 'fp32,fp16,bf16,int8',
     'openvino:fp32 openvino:fp16 openvino:bf16 openvino:int8'),
    ('cpu', 'all', True, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('cpu', 'all', False, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('cuda:0', 'all', True, 'openvino', 'bf16',
     ''),
    ('cuda:0', 'all', False, 'openvino', 'bf16',
     ''),
    ('GPU', 'all', True, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('GPU', 'all', False, 'openvino', 'bf16',
     'onnxruntime:fp32 openvino:bf16'),
    ('cpu', 'all', True, 'tensorrt', None,
     'onnxruntime:fp32'),
    ('cpu', 'all', True, 'torch', None,
     'onnxruntime:fp32'),
    ('cpu', 'ov', True, 'tensorrt', None,
     ''),
    ('cpu', 'ov', True, 'torch', None,
     ''),
    ('cuda:0', 'all', True, 'tensorrt', None,
     'tensorrt:int8'),
    ('cuda:0', 'all', True, 'torch', None,
     ''),
    ('cuda:0', 'ov', True, 'tensorrt', None,
     ''),
    ('cuda:0', 'ov', True, 'torch', None,
     ''),
    ('GPU', 'all', True, 'tensorrt', None,
     'onnxruntime:fp32'),
    ('GPU', 'all', True, 'torch', None,
     'onnxruntime:fp32'),
    ('GPU', 'ov', True, 'tensorrt', None,
     ''),
    ('GPU', 'ov', True, 'torch', None,
     ''),
    ('cpu', 'ort', True, 'openvino', None,
     'onnxruntime:fp32'),
    ('cpu', 'ort', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8'),
    ('cpu', 'ort', True, 'tensorrt', None,
     'onnxruntime:fp32'),
    ('cuda:0', 'ort', True, 'openvino', None,
     ''),
    ('cuda:0', 'ort', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8'),
    ('cuda:0', 'ort', True, 'tensorrt', None,
     ''),
    ('GPU', 'ort', True, 'openvino', None,
     'onnxruntime:fp32'),
    ('GPU', 'ort', True, 'onnxruntime,openvino,tensorrt', None,
     'onnxruntime:fp32 onnxruntime:int8'),
    ('GPU', 'ort', True, 'tensorrt', None,
     'onnxruntime:fp32'),
]


@pytest.mark.parametrize("target, installed, bf16, backends, precisions, expected", PINNED)
def test_variants_for_pinned(monkeypatch, target, installed, bf16, backends, precisions, expected):
    import edgekit._imports as imports
    from edgekit.pipeline import variants_for
    from edgekit.runtime.backends import openvino as ovb

    pytest.importorskip("openvino")
    real = imports.available
    have = INSTALLED[installed]
    monkeypatch.setattr(imports, "available",
                        lambda m: m in have if m in INSTALLED["all"] else real(m))
    monkeypatch.setattr(ovb, "capabilities", lambda core, dev: ["FP32", "INT8"] + (["BF16"] if bf16 else []))
    got = variants_for(target, backends.split(","), precisions.split(",") if precisions else None)
    assert " ".join(f"{v.backend}:{v.precision}" for v in got) == expected
