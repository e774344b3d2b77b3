"""run_bench: per-stage latency, pipelined throughput per batch size, cold start, memory, size and device.

Latency mode runs one request at a time through Engine's own stages (decode, preprocess, infer,
postprocess) and times each. Throughput mode overlaps decode+preprocess (Engine.prefetch worker threads)
with the backend's own concurrency (runtime.concurrency) and postprocesses in order, as an app would.
"""
from __future__ import annotations

import datetime as _dt
from itertools import cycle, islice
from pathlib import Path

from ..runtime.images import list_images
from ..errors import EdgekitError
from ..runtime import Engine
from ..runtime.concurrency import make_runner
from .device import device_info
from .memory import device_memory_mb, peak_rss_mb, reset_device_peak, rss_mb
from .power import PowerSampler
from .environment import environment, loadavg
from .stability import combine, stability, windows
from .timing import STAGES, StageTimer, clock


def model_size_mb(artifact) -> float:
    """Size on disk of the model files (an OpenVINO .xml or an ncnn .param counts its .bin too; a folder counts its
    model files; sidecars excluded)."""
    p = Path(artifact)
    if p.is_dir():
        files = [f for f in p.iterdir()
                 if f.suffix.lower() in (".xml", ".bin", ".onnx", ".engine", ".plan", ".param", ".tflite", ".pte")]
    elif p.suffix.lower() in (".xml", ".param"):
        files = [p, p.with_suffix(".bin")]
    else:
        files = [p, p.with_name(p.name + ".data")]  # ONNX external weights, when present
    return round(sum(f.stat().st_size for f in set(files) if f.exists()) / 1e6, 3)


def resolve_images(images) -> list[Path]:
    if images is None:
        from ..assets import demo_images

        return demo_images()
    if isinstance(images, (str, Path)):
        p = Path(images)
        if not p.exists():
            raise EdgekitError(f"{p}: image folder not found")
        found = list_images(p) if p.is_dir() else [p]
    else:
        found = [Path(x) for x in images]
    if not found:
        raise EdgekitError(f"{images}: no images (.jpg, .png, ...) in this folder")
    return found


def latency_mode(engine: Engine, images: list[Path], batch: int, warmup: int, iters: int, warmup_s: float = 0.0,
                 min_time_s: float = 0.0) -> StageTimer:
    """One request of `batch` images at a time; every stage timed separately, and end to end.

    Warm-up: at least `warmup` iterations and `warmup_s` seconds; then at least `iters` iterations and `min_time_s`
    seconds are timed (trtexec's rule: 200 ms warm-up, >= 3 s and >= 10 iterations).
    """
    t = StageTimer(*STAGES)
    src = cycle(images)
    t_start, i, timing = clock(), 0, False
    while True:
        if not timing and i >= warmup and clock() - t_start >= warmup_s:
            t.clear()
            timing = True
        if timing and len(t.stamps) >= iters and clock() - t.start >= min_time_s:
            return t
        paths = list(islice(src, batch))
        t0 = clock()
        with t("decode"):
            arrays = [engine.decode(p) for p in paths]
        with t("preprocess"):
            blob, infos = engine.preprocess(arrays)
        with t("infer"):
            raw = engine.infer(blob)
        with t("postprocess"):
            engine.postprocess(raw, infos)
        t1 = clock()
        t.add("e2e", (t1 - t0) * 1e3)
        t.stamps.append(t1)
        i += 1


def pipeline(runner, sources, batch: int = 1, workers: int = 2, **overrides):
    """Yield Detections in order: decode+preprocess in Engine.prefetch threads, the runner's concurrent
    inference, postprocess in this thread. What an app serving a stream of images should run."""
    eng = runner.engine
    for raw, infos in runner.map(eng.prefetch(sources, batch, workers)):
        yield from eng.postprocess(raw, infos, **overrides)


def throughput_mode(runner, images: list[Path], batch: int, warmup: int, n_images: int, workers: int,
                    min_time_s: float = 0.0) -> dict:
    """Images/s end to end (prefetch -> concurrent infer -> ordered postprocess) and inference only.

    The end-to-end run lasts at least `n_images` images and `min_time_s` seconds (a second round sized from the
    first one's rate); each image's completion time feeds the stability windows.
    """
    eng = runner.engine
    stamps: list[float] = []

    def e2e(n, record=True):
        for _ in pipeline(runner, islice(cycle(images), n), batch, workers):
            if record:
                stamps.append(clock())

    e2e(max(warmup, batch * max(1, runner.streams or 1)), record=False)
    t0 = clock()
    e2e(n_images)
    while (left := min_time_s - (clock() - t0)) > 0:
        rate = len(stamps) / max(clock() - t0, 1e-9)
        e2e(max(batch, -(-int(rate * left * 1.05 + 1) // batch) * batch))
    t_e2e = clock() - t0
    done = len(stamps)
    blob, _ = eng.preprocess([eng.decode(p) for p in islice(cycle(images), batch)])
    n_req = max(1, -(-n_images // batch))
    t0 = clock()
    for _ in runner.map((blob, None) for _ in range(n_req)):
        pass
    t_inf = clock() - t0
    return {"e2e": done / t_e2e, "infer_only": n_req * batch / t_inf, "images": done,
            "stability": stability(windows(stamps, start=t0))}


def _r(x, nd=2):
    return None if x is None else round(float(x), nd)


def _check_settings(batches, warmup: int, iters: int) -> list[int]:
    batches = [int(b) for b in batches] or [1]
    if any(b < 1 for b in batches) or warmup < 0 or iters < 1:
        raise EdgekitError(f"bad benchmark settings: batches {batches}, warmup {warmup}, iters {iters}")
    return batches


def cold_start(artifact, device: str, backend: str | None, first: Path, log, **options) -> tuple[Engine, dict]:
    """Load the artifact, then run the first image end to end (includes importing the backend library if new)."""
    t0 = clock()
    engine = Engine(artifact, device=device, backend=backend, **options)
    t1 = clock()
    engine.predict([first])
    t2 = clock()
    log(f"bench {artifact} [{engine.backend_name} {device}]: loaded in {(t1 - t0) * 1e3:.0f} ms, "
        f"first image {(t2 - t1) * 1e3:.0f} ms")
    return engine, {"cold_start_ms": _r((t2 - t0) * 1e3), "load_ms": _r((t1 - t0) * 1e3),
                    "first_inference_ms": _r((t2 - t1) * 1e3)}


def describe_engine(engine: Engine, artifact, device: str, warmup: int, iters: int, images, paths) -> dict:
    """What was benchmarked: the artifact, its backend, device, precision, input size, the confidence threshold its
    NMS ran at (the artifact's deployment threshold unless given) and images."""
    return {"artifact": str(artifact), "backend": engine.backend_name,
            "device": device_info(device, engine.backend_name),
            "precision": engine.meta.precision, "precision_executed": engine.precision_executed,
            "imgsz": list(engine.meta.imgsz), "fixed_batch": engine.backend.fixed_batch, "conf": engine.conf,
            "warmup": warmup, "iters": iters,
            "images": {"source": str(images) if images is not None else "edgekit demo val images",
                       "count": len(paths)}}


def throughput_runs(artifact, device: str, backend: str, streams, batches: list[int], paths, warmup: int,
                    n_images: int, workers: int, log, min_time_s: float = 0.0,
                    **options) -> tuple[dict, dict, dict, dict, dict]:
    """Throughput per batch size through the backend's concurrency runner: (e2e, infer only, power, runner info,
    stability verdict per batch size)."""
    thr, thr_inf, power, stab = {}, {}, {}, {}
    runner = make_runner(artifact, device, backend, streams, **options)
    with runner:
        desc = runner.describe()
        for b in batches:
            n = -(-n_images // b) * b
            with PowerSampler(device) as ps:
                r = throughput_mode(runner, paths, b, warmup, n, workers, min_time_s)
            thr[str(b)], thr_inf[str(b)], stab[str(b)] = _r(r["e2e"]), _r(r["infer_only"]), r["stability"]
            if ps.mean_w is not None:
                power[str(b)] = {"mean_w": ps.mean_w, "source": ps.source}
            log(f"throughput mode: batch {b}: {thr[str(b)]} images/s end to end, {thr_inf[str(b)]} inference only "
                f"({desc['concurrency']}, streams {runner.streams})")
        desc = runner.describe()
    return thr, thr_inf, power, desc, stab


def modes(lb: int, desc: dict, workers: int, n_images: int) -> dict:
    """How each mode ran, for the reader of the JSON."""
    return {
        "latency": {"batch": lb, "in_flight": 1, "stages": list(STAGES),
                    "note": "per request of `batch` images; e2e = decode + preprocess + infer + postprocess"},
        "throughput": {**desc, "prefetch_workers": workers, "images_per_batch_size": n_images,
                       "note": "e2e: decode+preprocess in worker threads overlapping concurrent inference, "
                               "postprocess in order; infer_only: the same preprocessed batch repeated"},
    }


def rates(lat: dict, lb: int, thr: dict, thr_inf: dict) -> dict:
    """FPS figures from the latency summary (batch lb) and the throughput runs."""
    e2e_mean, inf_mean = lat["e2e"]["mean"], lat["infer"]["mean"]
    return {"fps_e2e": thr[str(lb)], "fps_e2e_sequential": _r(1e3 * lb / e2e_mean) if e2e_mean else None,
            "fps_infer_only": _r(1e3 * lb / inf_mean) if inf_mean else None,
            "throughput": thr, "throughput_infer_only": thr_inf}


def energy(power: dict, thr: dict) -> dict:
    """Mean power per batch size and joules per image, where a power reading exists."""
    if not power:
        return {}
    return {"power_w": power,
            "energy_j_per_image": {b: _r(p["mean_w"] / thr[b], 4) for b, p in power.items() if thr[b]}}


def accuracy(artifact, data, device: str, backend: str, precision: str | None, log) -> dict:
    """mAP of the artifact on `data`, through edgekit.eval."""
    from ..eval import evaluate

    log(f"accuracy: {data}")
    acc = evaluate(artifact, data, device=device, backend=backend, progress=False, precision=precision)
    return {"map50": acc["map50"], "map50_95": acc["map50_95"],
            "accuracy": {k: acc[k] for k in ("images", "boxes", "split", "data", "evaluator", "precision_executed")}}


OPENVINO_ONLY = ("hint", "nireq")


def check_knobs(artifact, device: str, backend: str | None, options: dict) -> None:
    """--hint and --nireq are OpenVINO settings: refuse them for another backend rather than ignore them."""
    given = [k for k in OPENVINO_ONLY if options.get(k)]
    if not given:
        return
    from ..runtime.backends import pick_backend

    backend = backend or pick_backend(Path(artifact), device)
    if backend != "openvino":
        raise EdgekitError(f"--{given[0]} is an OpenVINO setting; the {backend} backend has none "
                           f"(use --threads / --streams, or --backend openvino)")


def stability_block(lat: StageTimer, thr_stab: dict) -> dict:
    """The verdict of each mode and the overall one: {"stable", "cv", "stability": {...}}."""
    lat_v = stability(windows(lat.stamps, lat.samples["e2e"], start=lat.start))
    stable, reasons = combine([lat_v, *thr_stab.values()])
    return {"stable": stable, "cv": lat_v["cv"], "unstable_reasons": reasons,
            "stability": {"latency": lat_v, "throughput": thr_stab}}


def dataset_images(data, split: str = "val") -> list[Path]:
    """The image files of one split of a dataset (YOLO data.yaml or COCO json)."""
    from ..data import load_dataset

    return [s.image for s in load_dataset(data).samples(split)]


def run_bench(artifact, device: str = "cpu", backend: str | None = None, batches=(1,), warmup: int = 10,
              iters: int = 100, images=None, data=None, streams: int | None = None, workers: int = 2,
              log=print, warmup_s: float = 0.0, min_time_s: float = 0.0, perf_counters: bool = False,
              **options) -> dict:
    """Benchmark one artifact; returns the `edgekit bench --json` dict (times in ms, rates in images/s).

    Steps: cold start, latency mode (per stage), throughput mode per batch size, memory, energy, accuracy (data),
    per-layer times (perf_counters). Every mode is timed in windows for the stability verdict; the environment
    record (CPU flags, versions, settings, load before and after) goes with it. Backend options: hint, nireq,
    threads (and precision, imgsz, ... as Engine takes them).
    """
    batches = _check_settings(batches, warmup, iters)
    paths = resolve_images(images)
    log = log or (lambda *a, **k: None)
    check_knobs(artifact, device, backend, options)
    load0 = loadavg()
    rss0 = rss_mb()
    reset_device_peak(device)
    engine, cold = cold_start(artifact, device, backend, paths[0], log, **options)
    bname = engine.backend_name
    res = {**describe_engine(engine, artifact, device, warmup, iters, images, paths), **cold,
           "model_mb": model_size_mb(artifact), "warmup_s": warmup_s, "min_time_s": min_time_s}

    lb = batches[0]
    log(f"latency mode: batch {lb}, one request at a time, warm-up {warmup} iterations / {warmup_s:g} s, "
        f"then at least {iters} iterations and {min_time_s:g} s")
    lat = latency_mode(engine, paths, lb, warmup, iters, warmup_s, min_time_s)
    res["latency_ms"] = lat.summary()
    rss_engine = rss_mb()
    env_engine = environment(engine, threads=options.get("threads"))
    engine.close()

    n_images = max(iters, 1)
    thr, thr_inf, power, desc, thr_stab = throughput_runs(artifact, device, bname, streams, batches, paths, warmup,
                                                          n_images, workers, log, min_time_s, **options)
    res["mode"] = modes(lb, desc, workers, n_images)
    res.update(rates(res["latency_ms"], lb, thr, thr_inf))
    res.update(stability_block(lat, thr_stab))
    res["peak_rss_mb"] = peak_rss_mb()
    res["rss_mb"] = {"before_load": rss0, "after_latency_run": rss_engine}
    res["device_memory_mb"] = device_memory_mb(device)
    res.update(energy(power, thr))
    if data is not None:
        res.update(accuracy(artifact, data, device, bname, options.get("precision"), log))
    if perf_counters:
        res["perf_counters"] = layers(artifact, device, bname, paths[0], lb, **options)
    res["environment"] = {**env_engine, "throughput_runner": desc, "load_avg_before": load0,
                          "load_avg_after": loadavg()}
    return stamp(res)


def layers(artifact, device: str, backend: str, image: Path, batch: int, **options) -> dict:
    """Per-layer times (perfcounters.layer_profile) on a real image, at the latency batch size."""
    from .perfcounters import layer_profile

    return layer_profile(artifact, device, backend, lambda e: e.preprocess([e.decode(image)] * batch)[0], **options)


def stamp(res: dict) -> dict:
    """The edgekit version and the creation time (UTC) of a result."""
    from .. import __version__

    res["edgekit"] = __version__
    res["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    return res


def run_scenario_bench(artifact, cfg, device: str = "cpu", backend: str | None = None, images=None, data=None,
                       split: str = "val", streams: int | None = None, log=print, log_dir=None,
                       perf_counters: bool = False, **options) -> dict:
    """One MLPerf LoadGen scenario (bench.loadgen) over real images: a dataset split (data) or a folder (images)."""
    from .loadgen import run_scenario

    cfg.check()
    log = log or (lambda *a, **k: None)
    paths = dataset_images(data, split) if data is not None else resolve_images(images)
    source = f"{data} ({split})" if data is not None else images
    check_knobs(artifact, device, backend, options)
    load0 = loadavg()
    engine, cold = cold_start(artifact, device, backend, paths[0], log, **options)
    bname = engine.backend_name
    try:
        res = {**describe_engine(engine, artifact, device, 0, 0, source, paths), **cold,
               "model_mb": model_size_mb(artifact)}
        if cfg.scenario == "singlestream":
            desc = {"concurrency": "one Engine, one sample at a time", "streams": 1}
            out = run_scenario(engine, None, paths, cfg, log, log_dir)
            env = environment(engine, threads=options.get("threads"))
        else:
            engine.close()
            with make_runner(artifact, device, bname, streams, **options) as runner:
                desc = runner.describe()
                out = run_scenario(None, runner, paths, cfg, log, log_dir)
                env = environment(runner.engine, threads=options.get("threads"))
    finally:
        engine.close()
    lg = out["loadgen"]
    res.update(out)
    res.update({"fps_e2e": _r(lg["samples_per_second"]), "throughput": {}, "stable": out["stability"]["stable"],
                "cv": out["stability"]["cv"],
                "unstable_reasons": [] if out["stability"]["stable"] else [out["stability"]["reason"]],
                "mode": {"scenario": {**desc, "workers": out["workers"], "scenario": cfg.scenario}}})
    res["environment"] = {**env, "throughput_runner": desc, "load_avg_before": load0, "load_avg_after": loadavg()}
    if perf_counters:
        res["perf_counters"] = layers(artifact, device, bname, paths[0], 1, **options)
    log(f"LoadGen {lg['scenario']}: {lg['validity']}; {lg['metric']['name']}: {lg['metric']['value']}")
    return stamp(res)

