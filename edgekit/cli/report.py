NAME = "report"
HELP = ("rebuild one train-export report (table, recommendation, report.md/json, pareto.png) from the stage records "
        "of several runs")
DESCRIPTION = (HELP + ". Each run may have been made on another machine or moved since: paths are rebased onto "
               "where its folder is now. Rows keep the speed their graph was measured at (in their own run, else in "
               "another given run); rows never timed are shown untimed and never recommended.")


def add_arguments(p):
    p.add_argument("--merge", nargs="+", required=True, metavar="DIR",
                   help="train-export output folders (or folders holding several of them)")
    p.add_argument("-o", "--output", required=True, help="folder for report.md, report.json and pareto.png")
    p.add_argument("--max-latency-ms", type=float, default=None,
                   help="hard limit on the end-to-end p50 latency (batch 1) on the target: rows over it are never "
                        "recommended")
    p.add_argument("--min-fps", type=float, default=None, help="hard limit on end-to-end FPS")
    p.add_argument("--max-map-drop", type=float, default=0.5, help="mAP50-95 points (0.5 = half a point)")
    p.add_argument("--budget-usd", type=float, default=None, help="hard limit on a row's training cost")
    p.add_argument("--budget-hours", type=float, default=None, help="hard limit on a row's training wall time")
    p.add_argument("--json", default=None, help="also write the report to this file ('-' for stdout)")


def run(args):
    from pathlib import Path

    from ..errors import EdgekitError
    from ..outputs import check_output_file, check_outputs
    from ..sweep.report import render_table, write_report
    from ..sweep.merge import merge_runs
    from ._common import emit_json, log, say

    out = Path(args.output)
    check_args(args)
    rows, pruned, config = merge_runs(args.merge)
    if str(out.resolve()) in config["merged_from"]:
        raise EdgekitError(f"-o: {out} is one of the merged runs: its own report.json would be overwritten; "
                           f"give another folder")
    check_outputs(out, config["merged_from"], files=["report.md", "report.json", "pareto.png"])
    check_output_file(args.json, config["merged_from"])
    limits = {"max_latency_ms": args.max_latency_ms, "min_fps": args.min_fps, "budget_usd": args.budget_usd,
              "budget_hours": args.budget_hours}
    config = {**config, "max_map_drop": args.max_map_drop, **limits}
    untimed = sum(1 for r in rows if r.get("untimed"))
    if untimed:
        log(f"{untimed} row(s) untimed: no run among --merge measured their graph; they are never recommended")
    nodes = sorted({r["bench_node"] for r in rows if r.get("bench_node")})
    if len(nodes) > 1:
        log(f"speeds were measured on {len(nodes)} nodes ({', '.join(nodes)}): their FPS compare only if these are "
            f"the same device")
    doc = write_report(out, rows, pruned, config, args.max_map_drop, limits)
    say(render_table(doc["rows"]))
    say()
    say(doc["recommendation"]["why"])
    wrote = [out / n for n in ("report.md", "report.json", "pareto.png") if (out / n).exists()]
    say(f"\nwrote {', '.join(map(str, wrote))}")
    emit_json(doc, args.json)
    return 0


def check_args(args) -> None:
    """Every option checked before any work: one line naming it, exit 2."""
    from pathlib import Path

    from ..errors import EdgekitError
    from . import _checks

    _checks.at_least("--max-map-drop", args.max_map_drop, 0, " mAP points")
    for name, unit in (("max_latency_ms", " ms"), ("min_fps", " FPS"), ("budget_usd", ""), ("budget_hours", " h")):
        _checks.above(f"--{name.replace('_', '-')}", getattr(args, name), 0, unit)
    if Path(args.output).exists() and not Path(args.output).is_dir():
        raise EdgekitError(f"-o: {args.output}: is a file, not a folder")
    for d in args.merge:
        if not Path(d).is_dir():
            raise EdgekitError(f"{d}: no such folder")
