NAME = "deploy"
HELP = "write a Triton model repository for an artifact (model, pre/post-processing, ensemble)"
DESCRIPTION = (HELP + ". The repository holds the model (onnxruntime, openvino or tensorrt_plan backend) with its "
               "config.pbtxt, edgekit's letterbox and decode + NMS as Python-backend models, and an ensemble NAME "
               "taking one encoded image (IMAGE, BYTES) and returning BOXES, SCORES, LABELS in original-image pixels.")


def add_arguments(p):
    p.add_argument("artifact", help="model.onnx, OpenVINO .xml or folder, .engine (with its sidecar or embedded metadata)")
    p.add_argument("--triton", required=True, metavar="DIR",
                   help="the model repository to add the model to (created if absent; its other models are kept, and "
                        "NAME, NAME_model, NAME_pre, NAME_post are replaced only if an earlier deploy wrote them)")
    p.add_argument("--name", default=None, help="ensemble name (default: the artifact's file or folder name)")
    p.add_argument("--backend", default=None, help="onnxruntime, openvino, tensorrt (default: from the file type)")
    p.add_argument("--max-batch", type=int, default=8, help="max_batch_size when the model's batch is dynamic (default 8)")
    p.add_argument("--max-delay-ms", type=float, default=2.0, help="dynamic batching queue delay (default 2 ms)")
    p.add_argument("--instances", type=int, default=1, help="instance_group count per model (default 1)")
    p.add_argument("--conf", type=float, default=0.25, help="score threshold of the post-processing (default 0.25)")
    p.add_argument("--iou", type=float, default=0.7, help="NMS IoU threshold (default 0.7)")
    p.add_argument("--force", action="store_true",
                   help="also replace model folders of those names that edgekit did not write")


def run(args):
    from ..errors import EdgekitError
    from ..serve.server import model_name
    from ..serve.triton import write_triton_repo
    from ._common import log

    for flag, v in (("--max-batch", args.max_batch), ("--instances", args.instances)):
        if v < 1:
            raise EdgekitError(f"{flag} must be >= 1, got {v}")
    from ..outputs import artifact_inputs, claim_output

    with claim_output(args.triton, artifact_inputs(args.artifact), command="deploy", what="--triton"):
        out = write_triton_repo(args.artifact, args.triton, name=args.name, backend=args.backend,
                                max_batch=args.max_batch, instances=args.instances,
                                delay_us=int(args.max_delay_ms * 1000), conf=args.conf, iou=args.iou,
                                force=args.force)
    name = args.name or model_name(args.artifact)
    log(f"wrote {name}, {name}_model, {name}_pre, {name}_post into the Triton model repository {out} "
        f"(see {out / name / 'README.md'} for the docker run line)")
    return 0
