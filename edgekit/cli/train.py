"""`edgekit train`: fine-tune with a strategy; writes DIR/best.pt and DIR/train.json."""
NAME = "train"
HELP = "fine-tune a detector with a strategy (scratch, head, freeze:N, schedule, full, lora, auto)"
DESCRIPTION = HELP + (". Strategies: scratch (random init), full, head (backbone+neck frozen), freeze:N (first N "
                      "modules), schedule:\"0:backbone,5:none\" (from epoch E freeze group G and those before it), "
                      "lora[:R[:ALPHA]] (adapters on the backbone, merged before saving), auto (chosen from the data).")


def add_arguments(p):
    p.add_argument("weights", help="Ultralytics .pt weights, or an architecture yaml (yolov8n.yaml) for scratch")
    p.add_argument("--data", required=True, help="Ultralytics data.yaml")
    p.add_argument("--strategy", default=None, help="training strategy (default full; on --resume the recorded one)")
    p.add_argument("--epochs", type=int, default=100, help="training epochs (default 100)")
    p.add_argument("--imgsz", type=int, default=640, help="training input size in pixels (default 640)")
    p.add_argument("--batch", type=int, default=16, help="images per training batch (default 16)")
    p.add_argument("--device", default="cpu", help="cpu, 0, 0,1, cuda:0 (default cpu)")
    p.add_argument("--patience", type=int, default=50, help="early stopping: epochs without improvement (default 50)")
    p.add_argument("--workers", type=int, default=0, help="dataloader workers (default 0)")
    p.add_argument("--backbone-lr-mult", type=float, default=1.0, help="backbone learning-rate multiplier (default 1)")
    p.add_argument("--skip-bad", action="store_true", help="report bad samples and train without them")
    p.add_argument("--resume", action="store_true", help="continue DIR/last.pt with the same strategy")
    p.add_argument("--gpu-hour-usd", type=float, default=2.0, help="price of one GPU-hour for cost_usd (default 2.0)")
    p.add_argument("--cpu-hour-usd", type=float, default=0.0, help="price of one CPU machine-hour (default 0)")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a .pt without the restricted-unpickler check: only for a file you trust (it can run code)")
    p.add_argument("-o", "--output", default="runs/train", help="output folder DIR (default runs/train)")


def run(args):
    from ..outputs import claim_output
    from ..train import train
    from ..train.run import train_inputs
    from ._common import log

    with claim_output(args.output, train_inputs(args.weights, args.data, args.resume), command="train"):
        train(args.weights, args.data, strategy=args.strategy, epochs=args.epochs, imgsz=args.imgsz,
              batch=args.batch, device=args.device, out_dir=args.output, patience=args.patience, resume=args.resume,
              gpu_hour_usd=args.gpu_hour_usd, cpu_hour_usd=args.cpu_hour_usd, workers=args.workers,
              backbone_lr_mult=args.backbone_lr_mult, skip_bad=args.skip_bad, log=log,
              trust_checkpoint=args.trust_checkpoint)
    return 0
