NAME = "doctor"
HELP = "versions, installed backends and devices"


def add_arguments(p):
    p.add_argument("--json", default=None, help="write the report to this file ('-' for stdout)")


def run(args):
    from ..bench.device import doctor_report
    from ._common import emit_json

    r = doctor_report()
    print(f"edgekit {r['edgekit']}  python {r['python']}  {r['platform']}")
    print(f"cpu: {r['cpu']['model']} ({r['cpu']['cores']} cores; {', '.join(r['cpu']['isa']) or 'no AVX flags found'})")
    print("backends:")
    for name, b in r["backends"].items():
        state = b["version"] if b["installed"] else f"missing: {b['install']}"
        devs = f"  devices: {', '.join(b['devices'])}" if b.get("devices") else ""
        err = f"  ({b['error']})" if b.get("error") else ""
        print(f"  {name:<12} {state}{devs}{err}")
    print("packages: " + ", ".join(f"{k} {v}" for k, v in r["packages"].items()))
    if r["gpus"]:
        for g in r["gpus"]:
            print(f"gpu: {g}")
    else:
        print("gpu: none found")
    emit_json(r, args.json)
    return 0
