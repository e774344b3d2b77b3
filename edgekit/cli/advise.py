NAME = "advise"
HELP = "profile a dataset, measure its distance from COCO, and say which training strategies are worth trying"


def add_arguments(p):
    p.add_argument("--data", required=True, help="Ultralytics data.yaml or COCO .json")
    p.add_argument("--budget-usd", type=float, default=None,
                   help="training budget in USD: is training from scratch affordable (default: no limit)")
    p.add_argument("--deadline-days", type=float, default=None,
                   help="days until the model is needed: can training from scratch finish (default: no limit)")
    p.add_argument("--target", default="cpu", help="deployment device (cpu, cuda:0, GPU, NPU)")
    p.add_argument("--gpu-hour-usd", type=float, default=2.0, help="price of one GPU-hour (default 2.0)")
    p.add_argument("--imgsz", type=int, default=640, help="input size the training cost is estimated at (default 640)")
    p.add_argument("--json", default=None, help="write the advice to this file ('-' for stdout)")


def run(args):
    from ..advise import advise
    from ..outputs import check_output_file, data_inputs
    from ._common import emit_json, log, say

    check_output_file(args.json, data_inputs(args.data))
    r = advise(args.data, args.budget_usd, args.deadline_days, args.target, args.gpu_hour_usd, args.imgsz, log=log)
    p = r["profile"]
    say(f"dataset: {r['data']}  ({p['nc']} classes)")
    for split, s in p["splits"].items():
        say(f"  {split:<5} {s['images']:>7} images {s['boxes']:>8} boxes  {s['classes_present']} classes present")
    if p["box_size_px"]:
        b = p["box_size_px"]
        say(f"  box size (sqrt area, px): p10 {b['p10']:.0f}  median {b['median']:.0f}  p90 {b['p90']:.0f}  "
            f"small<32px {b['small_frac']:.0%}")
    if p["imbalance"]:
        say(f"  imbalance: {p['imbalance']:.1f}:1")
    for prob in p["problems"]:
        say(f"  problem: {prob}")
    say(f"domain: Fréchet distance {r['domain']['frechet_distance']:.2f} to COCO ({r['domain']['band']}), "
        f"{r['domain']['class_name_overlap_coco']:.0%} COCO class names"
        + (f"; the {r['domain_decided_by']} decided the band" if r["domain_decided_by"] != "frechet" else ""))
    say(r["verdict"])
    for reason in r["reasons"]:
        say(f"  - {reason}")
    say(f"input sizes to try: {', '.join(map(str, r['imgsz']))}" + ("  (tile the images: boxes are tiny)" if r["tiling"]
                                                                   else "") + f"; models: {', '.join(r['models'])}")
    say(f"try: edgekit train-export --data {args.data} {r['train_export_args']}")
    emit_json(r, args.json)
    return 0
