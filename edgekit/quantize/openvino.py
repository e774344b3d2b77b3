"""OpenVINO INT8 with NNCF: recipe ignored scope, recipe fallbacks, accuracy control on the gate's metric, FP16 last."""
from __future__ import annotations

import time
from pathlib import Path

from .._imports import require
from ..errors import EdgekitError
from .job import AttemptStopped, Job, subset
from .quantizer import Quantizer

# OpenVINO op type -> ONNX op type, so that recipe 'types' read the same for every backend
_OV_TO_ONNX = {"Convolution": "Conv", "GroupConvolution": "Conv", "Multiply": "Mul", "Subtract": "Sub",
               "Divide": "Div", "SoftMax": "Softmax", "Interpolate": "Resize", "VariadicSplit": "Split"}
_SKIP = {"Constant", "Parameter", "Result"}
# --method -> NNCF activation range estimator (auto keeps NNCF's defaults)
_RANGES = {"minmax": "MINMAX", "percentile": "MEAN_QUANTILE", "entropy": "HISTOGRAM"}


def read_onnx(path):
    """ONNX -> ov.Model through convert_model, whose fusions (Sigmoid*x -> Swish) let INT8 convs absorb activations.

    core.read_model keeps SiLU as Sigmoid + Multiply; NNCF then leaves a float Swish + FakeQuantize subgraph after
    every conv that costs about a quarter of the INT8 latency on CPU.
    """
    ov = require("openvino", "OpenVINO INT8 quantization")
    return ov.convert_model(str(path))


def graph_nodes(model) -> list[tuple[str, str]]:
    """(friendly name, ONNX-style type) of every computing op of an ov.Model."""
    return [(op.get_friendly_name(), _OV_TO_ONNX.get(op.get_type_name(), op.get_type_name()))
            for op in model.get_ordered_ops() if op.get_type_name() not in _SKIP]


def _consumers(fq) -> set[str]:
    """Friendly names of the ops a FakeQuantize feeds (through Convert/Reshape)."""
    out = set()
    for port in fq.outputs():
        for target in port.get_target_inputs():
            node = target.get_node()
            while node.get_type_name() in ("Convert", "Reshape") and node.outputs():
                nxt = [t.get_node() for t in node.outputs()[0].get_target_inputs()]
                if not nxt:
                    break
                node = nxt[0]
            out.add(node.get_friendly_name())
    return out


def quantized_ops(model) -> set[str]:
    """Names of the ops that consume a FakeQuantize output (the layers that run in INT8)."""
    return set().union(*[_consumers(op) for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"])


def fq_layer_snr(xml: Path, calib, device: str = "CPU") -> dict[str, float]:
    """SNR (dB) of every activation FakeQuantize (its float input vs its quantized output) over the calibration
    items, keyed by the ops it feeds (the lowest SNR when an op has several)."""
    import numpy as np

    from .diagnose import snr_db

    ov = require("openvino", "OpenVINO INT8 quantization")
    model = ov.Core().read_model(str(xml))
    fqs = [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"
           and op.input_value(0).get_node().get_type_name() not in ("Constant", "Convert")]  # weights are constants
    layers = [_consumers(fq) for fq in fqs]  # before the outputs below add Result consumers
    start = len(model.outputs)
    model.add_outputs([o for fq in fqs for o in (fq.input_value(0), fq.output(0))])
    compiled = ov.Core().compile_model(model, device, {"INFERENCE_PRECISION_HINT": "f32"})
    pairs: list[list[tuple]] = [[] for _ in fqs]
    for item in calib.items:
        res = compiled(calib.transform(item))
        for k in range(len(fqs)):
            pairs[k].append((res[compiled.outputs[start + 2 * k]], res[compiled.outputs[start + 2 * k + 1]]))
    out: dict[str, float] = {}
    for names, pr in zip(layers, pairs):
        snr = snr_db(np.concatenate([a.ravel() for a, _ in pr]), np.concatenate([b.ravel() for _, b in pr]))
        for name in names:
            out[name] = min(out.get(name, float("inf")), snr)
    return out


def _params(job: Job, method: str):
    nncf = require("nncf", "OpenVINO INT8 quantization")
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.range_estimator import RangeEstimatorParametersSet

    cfg = job.recipe.backend("openvino")
    preset = {"mixed": nncf.QuantizationPreset.MIXED, "performance": nncf.QuantizationPreset.PERFORMANCE}
    p = str(cfg.get("preset", "mixed")).lower()
    if p not in preset:
        raise EdgekitError(f"{job.recipe.path}: backends.openvino.preset must be mixed or performance, got '{p}'")
    kw = dict(preset=preset[p], subset_size=min(int(cfg.get("subset_size", 300)), len(job.calib)),
              fast_bias_correction=bool(cfg.get("fast_bias_correction", True)))
    if str(cfg.get("model_type") or "").lower() == "transformer":
        kw["model_type"] = nncf.ModelType.TRANSFORMER
    if method in _RANGES:
        kw["advanced"] = AdvancedQuantizationParameters(
            activations_range_estimator_params=getattr(RangeEstimatorParametersSet, _RANGES[method]))
    elif method != "auto":
        raise EdgekitError(f"unknown --method '{method}' (choose auto, minmax, entropy, percentile)")
    return nncf, kw


class StatisticsCache:
    """NNCF's calibration statistics by statistic and target point, collected once per job and method.

    Every attempt of a job quantizes the same ONNX on the same calibration set; they differ in the layers kept in
    float, so an attempt needs the points the first one measured, less those of the layers kept in float, plus
    sometimes a point a quantizer moved to (yolov8n: /model.11/Concat's output once its consumer stays float): only
    the missing points are collected. The statistics pass over the calibration images is most of an
    attempt's build time (NNCF runs it again in every nncf.quantize call).
    """

    def __init__(self):
        self.stats: dict[tuple[str, str], object] = {}  # (method, key) -> TensorStatistic
        self.collected_images = 0  # images inferred for statistics, over all attempts (the cost the cache saves)

    @staticmethod
    def key(point, collector) -> str:
        """NNCF's own key for a cached statistic (OVStatisticsAggregator._get_statistics_key)."""
        tp = point.target_point
        return f"{collector._stat_container.__name__}_{tp.target_node_name}_{tp.type}_{tp.port_id}"

    def fill(self, model, graph, points, dataset, method: str) -> int:
        """Set every collector of `points` from the cache, collecting the missing points first; returns how many
        statistic points were collected now."""
        from copy import deepcopy

        from nncf.common.factory import StatisticsAggregatorFactory
        from nncf.common.tensor_statistics.statistic_point import StatisticPointsContainer

        def collectors(sp):
            return [tc for tcs in sp.algorithm_to_tensor_collectors.values() for tc in tcs]

        missing = StatisticPointsContainer()
        n_missing = 0
        for sps in points.data.values():
            for sp in sps:
                if any((method, self.key(sp, tc)) not in self.stats for tc in collectors(sp)):
                    missing.add_statistic_point(sp)
                    n_missing += 1
        if n_missing:
            agg = StatisticsAggregatorFactory.create(model, dataset)
            agg.register_statistic_points(missing)
            agg.collect_statistics(model, graph)
            self.collected_images += agg._get_iterations_number() or 0
            for _, sp, tc in missing.get_tensor_collectors():
                self.stats[(method, self.key(sp, tc))] = tc.get_statistics()
        for _, sp, tc in points.get_tensor_collectors():
            tc.set_cache(deepcopy(self.stats[(method, self.key(sp, tc))]))
        return n_missing


def _ptq(job: Job, keep_float: list[str], method: str, cache: StatisticsCache, compress_weights: bool = True):
    """nncf.quantize's OpenVINO path (PostTrainingQuantization on the ov.Model) with the statistics from `cache`."""
    nncf, kw = _params(job, method)
    from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
    from nncf.openvino.graph.nncf_graph_builder import GraphConverter
    from nncf.openvino.graph.node_utils import get_number_if_op
    from nncf.openvino.quantization.backend_parameters import BackendParameters, is_weight_compression_needed
    from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters
    from nncf.quantization.algorithms.post_training.algorithm import PostTrainingQuantization

    model = remove_friendly_name_duplicates(read_onnx(job.onnx))
    ignored = nncf.IgnoredScope(names=keep_float, validate=False)
    adv = kw.pop("advanced", None) or AdvancedQuantizationParameters()
    adv.backend_params[BackendParameters.COMPRESS_WEIGHTS] = compress_weights  # accuracy control reverts FQs
    if get_number_if_op(model) > 0:  # NNCF quantizes If bodies separately: no cache there
        return nncf.quantize(model, job.calib.to_nncf(), ignored_scope=ignored, advanced_parameters=adv, **kw)
    algo = PostTrainingQuantization(ignored_scope=ignored, advanced_parameters=adv, **kw)
    graph = GraphConverter.create_nncf_graph(model)
    points = algo.get_statistic_points(model, graph)
    dataset = job.calib.to_nncf()
    cache.fill(model, graph, points, dataset, method)
    q = algo.apply(model, graph, points, dataset)
    if is_weight_compression_needed(adv):  # INT8 weight constants, as nncf.quantize leaves them
        from openvino._offline_transformations import compress_quantize_weights_transformation

        compress_quantize_weights_transformation(q)
    return q


def _quantize(job: Job, keep_float: list[str], method: str, folder: Path, cache: StatisticsCache):
    """INT8 of the ONNX with the named nodes ignored; writes folder/model.xml, returns the ov.Model."""
    ov = require("openvino", "OpenVINO INT8 quantization")
    q = _ptq(job, keep_float, method, cache)
    ov.save_model(q, str(folder / "model.xml"), compress_to_fp16=False)
    return q


class _OverBudget(Exception):
    pass


def _restorer_limits(job: Job, ac: dict, groups: int) -> dict:
    """NNCF's iterations and ranking subset, capped so that ranking fits in about half of the budget left.

    Ranking evaluates each group of quantizers on the ranking subset: groups x subset x (seconds per image of the
    last evaluation); the hard stop (validate() refuses to start past the budget) is what bounds the time.
    """
    iters, rank = int(ac.get("max_iterations", 8)), int(ac.get("ranking_subset_size", 32))
    last = next((a for a in reversed(job.attempts) if a.evaluated and a.eval_s > 0), None)
    left = job.remaining_s()
    if left is not None and last is not None and groups:
        per_image = last.eval_s / max(job.baseline.get("images") or 1, 1)
        rank = max(4, min(rank, int(0.5 * max(left, 0) / (groups * per_image))))
    return {"max_num_iterations": iters, "ranking_subset_size": rank}


def per_image_map(matches_file) -> list[float] | None:
    """mAP50-95 of each image on its own (0 where it has no box): NNCF's per-item metric, from which it picks the
    images it ranks layers on; None when the file is missing."""
    import numpy as np

    from ..eval.bootstrap import Matches

    if matches_file is None or not Path(matches_file).is_file():
        return None
    m = Matches.load(matches_file)
    return [float(v) if np.isfinite(v) else 0.0 for v in m.map50_95_batch(np.eye(m.n_images))]


def _accuracy_control(job: Job, keep_float: list[str], method: str, folder: Path, plain_int8: set[str] | None,
                      cache: StatisticsCache):
    """NNCF's accuracy restorer on the recipe's INT8 model, with edgekit's evaluate (through Engine) as the
    validation function.

    What nncf.quantize_with_accuracy_control would measure again is reused: the calibration statistics (`cache`),
    the FP32 model's mAP and per-image figures on the gate's images (the cached baseline) and the recipe attempt's
    (the same model, images, backend and precision). Within what is left of --quantize-budget-s: a validation that
    would start past it stops the run inside NNCF's loop (AttemptStopped).
    """
    ov = require("openvino", "OpenVINO INT8 quantization")
    nncf, _ = _params(job, method)
    from nncf.openvino.graph.model_utils import remove_friendly_name_duplicates
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters
    from nncf.quantization.algorithms.accuracy_control.algorithm import QuantizationAccuracyRestorer
    from nncf.quantization.algorithms.accuracy_control.evaluator import Evaluator, MetricResults
    from openvino._offline_transformations import compress_quantize_weights_transformation

    from ..eval import evaluate
    from ..runtime import Engine
    from ..runtime.backends.openvino import OpenVINOBackend
    from ..runtime.meta import load_meta

    ac = dict(job.recipe.backend("openvino").get("accuracy_control") or {})
    val = job.ds.samples(job.eval_split)[:job.eval_limit] if job.eval_limit else job.ds.samples(job.eval_split)
    val = val[:int(ac.get("validation_subset", 300))]
    meta = load_meta(job.onnx)
    whole = len(val) == job.baseline.get("images")  # the gate's images: its cached figures stand for them

    budget, t0, first, phase = job.config.budget_s, time.perf_counter(), [], ["measuring the FP32 model"]
    left = job.remaining_s()
    record = {"validation_images": len(val), "max_drop": job.max_map_drop / 100, "budget_s": budget,
              "validations": 0, "fp32_from_cache": False, "int8_from_cache": False}
    matches = job.work / "accuracy-control.matches.npz"
    fp32_items = per_image_map(job.baseline.get("matches_file")) if whole else None

    def validate(compiled, items) -> tuple[float, list[float]]:  # NNCF compiles with f32 for the float part
        items = list(items)
        probe = not first  # NNCF's first call (one item) probes the initial (FP32) model; an error there is caught
        if probe:
            first.append(compiled)
        if compiled is first[0] and len(items) == len(val) and fp32_items is not None:
            record["fp32_from_cache"] = True
            return job.baseline["map50_95"], fp32_items
        if left is not None and not probe and time.perf_counter() - t0 > left:
            raise _OverBudget
        record["validations"] += 1
        with Engine.from_backend(OpenVINOBackend.from_compiled(compiled, job.onnx, meta, int8=True)) as engine:
            r = evaluate(None, subset(job.ds, items), split="subset", engine=engine, progress=False, resamples=0,
                         matches_path=matches)
        return r["map50_95"], per_image_map(matches)

    params = AdvancedAccuracyRestorerParameters(**_restorer_limits(job, ac, len(plain_int8 or ())))
    record.update(max_num_iterations=params.max_num_iterations, ranking_subset_size=params.ranking_subset_size)
    model = remove_friendly_name_duplicates(read_onnx(job.onnx))
    quantized = _ptq(job, keep_float, method, cache, compress_weights=False)  # FakeQuantize weights: revertible
    recipe = next((a for a in job.attempts if a.path == "ptq" and a.method == method and a.evaluated
                   and a.excluded == list(keep_float)), None)
    recipe_items = per_image_map(recipe.matches) if recipe is not None and whole else None
    try:
        evaluator = Evaluator(validate)
        evaluator.enable_iteration_count()
        initial = evaluator.collect_metric_results(model, nncf.Dataset(val), model_name="initial")
        size = evaluator.num_passed_iterations
        evaluator.disable_iteration_count()
        if recipe_items is not None:
            record["int8_from_cache"] = True
            after = MetricResults(recipe.map50_95, recipe_items, 0.0, recipe.eval_s)
        else:
            phase[0] = "measuring the INT8 model"
            after = evaluator.collect_metric_results(quantized, nncf.Dataset(val), model_name="quantized")
        phase[0] = "ranking and reverting layers"
        restorer = QuantizationAccuracyRestorer(params.ranking_subset_size, params.max_num_iterations,
                                                job.max_map_drop / 100, nncf.DropType.ABSOLUTE,
                                                params.num_ranking_workers, params.restore_mode)
        q = restorer.apply(model, initial, quantized, after, nncf.Dataset(val), size, evaluator)
    except _OverBudget:
        raise AttemptStopped(f"budget: --quantize-budget-s {budget:g} spent after {time.perf_counter() - t0:.0f} s "
                             f"and {record['validations']} validations, {phase[0]}") from None
    compress_quantize_weights_transformation(q)
    ov.save_model(q, str(folder / "model.xml"), compress_to_fp16=False)
    reverted = sorted(plain_int8 - quantized_ops(q)) if plain_int8 is not None else []
    record["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return reverted, record


class OpenVINOQuantizer(Quantizer):
    """NNCF INT8 (the recipe's method), NNCF accuracy control on the gate's metric, FP16 last."""

    name = "openvino"
    requires = (("openvino", "OpenVINO INT8 quantization"), ("nncf", "OpenVINO INT8 quantization"))
    float_fallback = "fp16"

    def __init__(self):
        self.plain_int8: set[str] | None = None  # ops the recipe attempt runs in INT8: what accuracy control reverts
        self.stats = StatisticsCache()  # calibration statistics shared by the job's attempts

    def nodes(self, job: Job) -> list[tuple[str, str]]:
        return graph_nodes(read_onnx(job.onnx))

    def methods(self, job: Job) -> list[str]:
        return [str(job.recipe.backend("openvino").get("method", "auto"))]

    def build_attempt(self, job: Job, folder: Path, keep_float: list[str], method: str) -> Path:
        q = _quantize(job, keep_float, method, folder, self.stats)
        if self.plain_int8 is None:  # the first attempt is the recipe's
            self.plain_int8 = quantized_ops(q)
        return folder / "model.xml"

    def accuracy_control(self, job: Job, folder: Path, keep_float: list[str], method: str):
        """The recipe's scope, then NNCF reverts the layers that cost most mAP until the drop is within the gate."""
        reverted, record = _accuracy_control(job, keep_float, method, folder, self.plain_int8, self.stats)
        if reverted:
            job.log(f"accuracy control reverted {len(reverted)} layers to float: {', '.join(reverted[:8])}"
                    f"{' ...' if len(reverted) > 8 else ''}")
        return folder / "model.xml", {"reverted": reverted, "extra": {"accuracy_control": record}}

    def layer_snr(self, job: Job, artifact: Path, images: list[Path]) -> dict[str, float]:
        import dataclasses

        return fq_layer_snr(artifact, dataclasses.replace(job.calib, items=list(images)))

    def build_float(self, job: Job, folder: Path, precision: str) -> Path:
        ov = require("openvino", "OpenVINO INT8 quantization")
        ov.save_model(read_onnx(job.onnx), str(folder / "model.xml"), compress_to_fp16=True)
        return folder / "model.xml"
