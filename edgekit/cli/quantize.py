NAME = "quantize"
HELP = "INT8 artifact for OpenVINO, ONNX Runtime or TensorRT, gated by the mAP drop on a held-out split"
DESCRIPTION = ("Calibrate on a class-balanced sample of the train split, quantize with the architecture's recipe, "
               "evaluate through edgekit's runtime and fall back (more layers in float, another method, FP16) until "
               "the mAP50-95 drop is within --max-map-drop. Exit code 4 when no artifact passes.")


def add_arguments(p):
    from ..quantize import METHODS, names

    p.add_argument("model", help="FP32 model.onnx written by 'edgekit export' (its model.json sidecar beside it)")
    p.add_argument("--data", required=True, help="Ultralytics data.yaml or COCO .json")
    p.add_argument("--backend", required=True,
                   help=f"runtime the INT8 artifact is built for: {', '.join(names())} (those with a quantizer)")
    p.add_argument("--method", default="auto", choices=list(METHODS),
                   help="activation range calibration (auto: the recipe's choice; ONNX Runtime tries all three)")
    p.add_argument("--calib-size", type=int, default=300, help="calibration images (default 300, capped at the split)")
    p.add_argument("--calib-split", default="train", help="split to calibrate on (default train)")
    p.add_argument("--calib-from", default=None, metavar="DIR",
                   help="calibrate on this folder of unlabeled images (e.g. deployment frames; read only) instead")
    p.add_argument("--max-map-drop", type=float, default=0.5,
                   help="largest allowed mAP50-95 drop in points vs FP32 (0.5 = half a point; default 0.5)")
    p.add_argument("--max-class-drop", type=float, default=3.0,
                   help="also fail when a class with >= --min-class-boxes val boxes loses more than this many AP "
                        "points (default 3.0)")
    p.add_argument("--max-recall-drop", type=float, default=5.0,
                   help="also fail when such a class loses more than this many recall points at the FP32 artifact's "
                        "threshold (default 5.0)")
    p.add_argument("--min-class-boxes", type=int, default=20,
                   help="classes with fewer val boxes never fail the per-class gates (default 20)")
    p.add_argument("--target-precision", type=float, default=None, metavar="P",
                   help="deployment threshold: the highest recall at precision >= P (default: max F1)")
    p.add_argument("--target-recall", type=float, default=None, metavar="R",
                   help="deployment threshold: the highest precision at recall >= R (default: max F1)")
    p.add_argument("--quantize-budget-s", type=float, default=240.0,
                   help="seconds for the INT8 fallbacks tried when plain INT8 and its worst layers kept in float "
                        "fail: the recipe's stages, then accuracy control with what is left; then FP16 (default 240)")
    p.add_argument("--eval-split", default="val", help="held-out split the gate evaluates on (default val)")
    p.add_argument("--eval-limit", type=int, default=None, help="evaluate only the first N images of the eval split")
    p.add_argument("--seed", type=int, default=0, help="calibration sampling seed (default 0)")
    p.add_argument("--device", default=None, help="device the artifact is evaluated on (default: the backend's, cpu; cuda:0 for TensorRT)")
    p.add_argument("--force", action="store_true", help="calibrate even on fewer than 16 images")
    p.add_argument("-o", "--output", default=None, help="output folder (default: the model's folder)")
    p.add_argument("--json", default=None, help="write the result to this file ('-' for stdout)")


def run(args):
    from .._imports import require, require_any
    from ..errors import AccuracyGateError
    from ..outputs import check_output_file, claim_output
    from ..quantize import QuantizeConfig, output_claim, quantize
    from ._common import emit_json, log, say

    check_args(args)
    if args.backend == "openvino":  # first, so that a bare install is told the one extra that has both
        require("nncf", "OpenVINO INT8 quantization")
    require_any(("faster_coco_eval", "pycocotools"), "the accuracy gate's mAP")  # before any calibration work
    try:
        config = QuantizeConfig(backend=args.backend, method=args.method, calib_size=args.calib_size,
                                calib_split=args.calib_split, seed=args.seed, force=args.force,
                                max_map_drop=args.max_map_drop, max_class_drop=args.max_class_drop,
                                max_recall_drop=args.max_recall_drop, min_class_boxes=args.min_class_boxes,
                                target_precision=args.target_precision, target_recall=args.target_recall,
                                budget_s=args.quantize_budget_s, calib_from=args.calib_from,
                                eval_split=args.eval_split,
                                eval_limit=args.eval_limit, device=args.device, out_dir=args.output)
        claim = output_claim(args.model, args.data, config)
        check_output_file(args.json, claim["inputs"])
        with claim_output(**claim, command="quantize"):
            res = quantize(args.model, args.data, config, log=log)
    except AccuracyGateError as e:
        emit_json(getattr(e, "result", None), args.json)
        raise
    say(f"{res['artifact']}  {res['precision']} {res['backend']}  mAP50-95 {res['map50_95']:.4f} "
        f"(FP32 {res['map50_95_fp32']:.4f}, drop {res['drop_points']:+.2f} points)  {res['status']}  "
        f"[{res['path']}, built in {res['build_s']:.0f} s; threshold conf {res['threshold']['conf']:g}]")
    emit_json(res, args.json)
    return 0


def check_args(args) -> None:
    """Every option checked before any work: one line naming it, exit 2."""
    from ..errors import EdgekitError
    from ..quantize import names as quantizers
    from ..runtime.backends import get_backend, names as backends
    from . import _checks

    if args.backend not in quantizers():
        why = "has no quantizer (edgekit quantize builds no INT8 artifact for it)" if args.backend in backends() \
            else "is not a backend"
        raise EdgekitError(f"--backend: {args.backend} {why}; choose from {', '.join(quantizers())}")
    _checks.readable_file("MODEL", args.model)
    _checks.readable_file("--data", args.data)
    for name, low in (("calib_size", 1), ("eval_limit", 1), ("seed", 0)):
        _checks.at_least(f"--{name.replace('_', '-')}", getattr(args, name), low)
    _checks.at_least("--max-map-drop", args.max_map_drop, 0, " mAP points")
    _checks.at_least("--max-class-drop", args.max_class_drop, 0, " AP points")
    if args.device is not None:
        _checks.device("--device", args.device, get_backend(args.backend).device_kinds)
