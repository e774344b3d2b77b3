NAME = "export"
HELP = "export Ultralytics weights to ONNX with a metadata sidecar and a parity check"


def add_arguments(p):
    p.add_argument("weights", help="Ultralytics .pt checkpoint (YOLOv8, YOLO11, RT-DETR)")
    from ._common import SizeAction

    p.add_argument("--imgsz", nargs="+", action=SizeAction, default=[640], metavar="N|H,W",
                   help="input size: N, or H,W (default 640)")
    p.add_argument("--dynamic", action="store_true", help="dynamic batch and image size")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: Ultralytics' choice)")
    p.add_argument("--no-simplify", action="store_true", help="skip onnxslim")
    p.add_argument("--parity-images", default=None, help="folder of images for the PyTorch parity check (default: demo)")
    p.add_argument("--parity-tol", type=float, default=1e-3, help="max abs difference of class scores (default 1e-3)")
    p.add_argument("--no-parity", action="store_true", help="skip the parity check")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a .pt without the restricted-unpickler check: only for a file you trust (it can run code)")
    p.add_argument("--data", default=None, metavar="DATA",
                   help="data.yaml / COCO json (its val split) or a folder of images: compute the drift profile "
                        "the artifact carries for 'serve' and 'monitor' (default: none)")
    p.add_argument("-o", "--output", default=".", help="output folder (default: current folder)")


def run(args):
    from ..export import export_onnx
    from ..export.onnx import export_inputs
    from ..outputs import claim_output
    from ._common import log

    imgsz = args.imgsz[0] if len(args.imgsz) == 1 else tuple(args.imgsz[:2])
    inputs = export_inputs(args.weights, args.parity_images)
    files = ["model.onnx", "model.json"]
    if args.data:
        from pathlib import Path

        from ..outputs import data_inputs

        inputs += [args.data] if Path(args.data).is_dir() else data_inputs(args.data)
        files.append("model.drift.npz")
    with claim_output(args.output, inputs, files=files, command="export"):
        export_onnx(args.weights, args.output, imgsz=imgsz, opset=args.opset, dynamic=args.dynamic,
                    simplify=not args.no_simplify, parity_images=False if args.no_parity else args.parity_images,
                    parity_tol=args.parity_tol, log=log, trust_checkpoint=args.trust_checkpoint, profile=args.data)
    return 0
