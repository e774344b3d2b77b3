#!/usr/bin/env bash
# The LiteRT (TFLite) converters beside edgekit's numpy 2 / onnx 1.2x / protobuf 7 stack (edgekit[litert-build]).
#
# onnx2tf 1.29 pins numpy==1.26.4, onnx==1.19.1, onnxruntime==1.23.0, protobuf==4.25.5, opencv 4.11, tensorflow 2.19
# and tf_keras 2.21 requires the full `tensorflow` wheel: installed with their pins, they would downgrade this stack.
# So the extra installs what they really import (tensorflow-cpu 2.21, onnx-graphsurgeon 0.6, sng4onnx, the LiteRT
# runtime and ai-edge-quantizer) and this script adds onnx2tf and tf_keras WITHOUT their dependencies. pip will print
# "onnx2tf 1.29.24 requires ... which is incompatible": expected. Tested: yolov8n ONNX -> fp32/fp16 .tflite matching
# ONNX Runtime, on numpy 2.4.6, onnx 1.23.2, protobuf 7.36.2, Python 3.11.
#
# Usage: bash docker/install_litert_build.sh     (into the current environment; edgekit installed)
set -euo pipefail
PY="${PYTHON:-python}"
"$PY" -m pip install "ai-edge-litert>=2.3" "ai-edge-quantizer>=0.10" "tensorflow-cpu>=2.21" "onnx-graphsurgeon>=0.6" \
    "sng4onnx>=2.0"
"$PY" -m pip install --no-deps "onnx2tf==1.29.24" "tf_keras==2.21.0"
"$PY" -c "import onnx2tf, tf_keras, ai_edge_litert, ai_edge_quantizer; print('onnx2tf', onnx2tf.__version__, 'OK')"
