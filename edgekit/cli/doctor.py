NAME = "doctor"
HELP = "versions, installed backends and devices"


def add_arguments(p):
    p.add_argument("--target", default=None, metavar="ssh://user@host[:port][/device]",
                   help="report what a device reached over SSH can run (its own edgekit; known_hosts is checked); "
                        "refused when its edgekit version differs from this host's")
    p.add_argument("--json", default=None, help="write the report to this file ('-' for stdout)")


def run(args):
    from ..bench.device import doctor_report
    from ._common import emit_json, say

    if args.target:
        from ..target.ssh import parse_target

        target = parse_target(args.target)
        version, _ = target.probe()
        target.check_version(version)
        r = target.edgekit_json("doctor", [])
        r["target"] = target.url
        say(f"target: {target.url} (device {target.device})")
    else:
        r = doctor_report()
    say(f"edgekit {r['edgekit']}  python {r['python']}  {r['platform']}")
    cpu = r["cpu"]
    say(f"cpu: {cpu['model']} ({cpu.get('arch')}, {cpu['cores']} cores; "
        f"{', '.join(cpu['isa']) or 'no AVX flags found'})")
    say("backends:")
    for name, b in r["backends"].items():
        state = b["version"] if b["installed"] else f"missing: {b['install']}"
        devs = f"  devices: {', '.join(b['devices'])}" if b.get("devices") else ""
        precs = {p for ps in (b.get("precisions") or {}).values() for p in ps}
        devs += f"  precisions: {', '.join(sorted(precs))}" if precs else ""
        err = f"  ({b['error']})" if b.get("error") else ""
        say(f"  {name:<12} {state}{devs}{err}")
    say("packages: " + ", ".join(f"{k} {v}" for k, v in r["packages"].items()))
    if r["gpus"]:
        for g in r["gpus"]:
            say(f"gpu: {g}")
    else:
        say("gpu: none found")
    emit_json(r, args.json)
    return 0
