#!/usr/bin/env bash
# YOLO-NAS (super-gradients 3.7.1) beside edgekit's torch 2.14 / numpy 2 / onnx 1.2x stack.
#
# super-gradients 3.7.1 pins numpy<=1.23, onnx==1.15, onnxruntime==1.15, protobuf==3.20.3, torchmetrics==0.8 ...
# which would downgrade this stack, so it is installed WITHOUT its dependencies, followed by the packages it really
# imports (pip extra `edgekit[nas]`). pip will print "super-gradients 3.7.1 requires ... which is incompatible":
# expected. Tested: `import super_gradients`, models.get("yolo_nas_s", num_classes=N) forward and training
# (edgekit.train.nas) on torch 2.14.1, numpy 2.4, onnx 1.2x, Python 3.11.
#
# YOLO-NAS pretrained weights are NOT downloaded by edgekit (no network at run time) and Deci's weights are
# licensed for non-commercial use only: train from scratch or pass your own checkpoint.
#
# Usage: bash docker/install_nas.sh            (into the current environment)
#        PYTHON=/tmp/nasvenv/bin/python bash docker/install_nas.sh   (e.g. a venv made with --system-site-packages)
set -euo pipefail
PY="${PYTHON:-python}"
"$PY" -m pip install --no-deps "super-gradients==3.7.1"
# the real imports, unpinned (edgekit[nas] lists the same); data-gradients and onnxsim without their own pins
"$PY" -m pip install omegaconf hydra-core pycocotools einops treelib termcolor stringcase rapidfuzz json-tricks \
    jsonschema boto3 Deprecated torchmetrics tensorboard imagesize pandas seaborn
"$PY" -m pip install --no-deps data-gradients "onnxsim<1.0"
"$PY" -m pip install --no-deps "setuptools<81"   # super_gradients imports pkg_resources (gone in setuptools 81)
# super-gradients writes ~/sg_logs at import: keep this check's logs out of the home folder, as edgekit does
HOME="${TMPDIR:-/tmp}/edgekit-super-gradients" CRASH_HANDLER=FALSE UPLOAD_LOGS=FALSE "$PY" - <<'PY'
import torch
from super_gradients.training import models
m = models.get("yolo_nas_s", num_classes=3).eval()
with torch.no_grad():
    (boxes, scores), _ = m(torch.zeros(1, 3, 64, 64))
print("super_gradients OK: yolo_nas_s boxes", tuple(boxes.shape), "scores", tuple(scores.shape))
PY
echo "edgekit: YOLO-NAS route ready (edgekit.train.nas; tests: pytest tests/test_train.py -m slow -k nas)"
