"""Each artifact in its own runtime: ExecuTorch (Python runtime + XNNPACK), LiteRT interpreter, onnxruntime,
Core ML (macOS only). Plus what each runtime can tell about itself: per-op latency (ETDump, onnxruntime
profiling), graph op summaries (MIL program, TFLite flatbuffer, ONNX graph) and a peak-memory probe.

A runner takes and returns NCHW float32 numpy arrays at the artifact's fixed size; layout and dtype
conversions happen inside.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .spec import ArtifactInfo, ExportError

Runner = Callable[[np.ndarray], np.ndarray]


class CoreMLNotRunnable(ExportError):
    """Core ML models run only on macOS/iOS; on Linux an .mlpackage can be converted and inspected, not run."""


def runtime_name(info: ArtifactInfo) -> str:
    return {"executorch": "executorch-xnnpack (Python runtime)", "tflite": "litert interpreter",
            "coreml": "coreml", "onnx": "onnxruntime (CPUExecutionProvider)"}[info.target]


def load_runner(path: str | Path, info: ArtifactInfo, threads: int | None = None) -> Runner:
    """A callable running the artifact once. Raises :class:`CoreMLNotRunnable` for Core ML off macOS."""
    path = str(path)
    loader = {"executorch": _executorch_runner, "tflite": _tflite_runner, "coreml": _coreml_runner,
              "onnx": _onnx_runner}[info.target]
    return loader(path, info, threads)


def _executorch_runner(path: str, info: ArtifactInfo, threads: int | None) -> Runner:
    import torch
    from executorch.runtime import Runtime

    if threads:
        set_executorch_threads(threads)
    method = Runtime.get().load_program(path).load_method("forward")
    dtype = torch.float16 if info.io_dtype == "float16" else torch.float32

    def run(x: np.ndarray) -> np.ndarray:
        y = method.execute([torch.from_numpy(np.ascontiguousarray(x)).to(dtype)])[0]
        return y.float().numpy()

    return run


def set_executorch_threads(threads: int) -> None:
    """XNNPACK's threadpool is process-wide in the Python runtime."""
    from executorch.extension.pybindings import portable_lib

    portable_lib._unsafe_reset_threadpool(int(threads))


def _io_quant(detail: dict[str, Any]) -> tuple[float, int, Any] | None:
    """(scale, zero point, dtype) of an integer input/output tensor, None for float I/O."""
    dtype = np.dtype(detail["dtype"])
    if dtype.kind not in "iu":
        return None
    scale, zero = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero), dtype


def litert_delegation(path: str | Path) -> dict[str, Any]:
    """Which ops of a ``.tflite`` LiteRT's default XNNPACK delegate runs, and which it leaves to LiteRT's own
    kernels, in the form of ExecuTorch's delegation report. Each op left out splits the graph into one more
    delegated subgraph (XNNPACK takes no int8 GELU, for one), so an int8 artifact that is not faster than its
    fp32 one shows here where the graph leaves the delegate. Ops are named with their output type."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path), num_threads=1)
    interp.allocate_tensors()
    types = {t["index"]: np.dtype(t["dtype"]).name for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # the model's ops, then one DELEGATE node per delegated subgraph
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    produced = {i for o in delegates for i in o["outputs"]}
    needed = {i for o in delegates for i in o["inputs"]} | set(interp._interpreter.OutputIndices())
    names = {}
    outside: collections.Counter[str] = collections.Counter()
    # An op LiteRT runs itself: no delegate computes its output, and a delegate, the model output or another
    # such op reads it. Walked from the end, so chains of them are found in one pass.
    for o in reversed([o for o in ops if o["op_name"] != "DELEGATE"]):
        name = f"{o['op_name']} {types.get(o['outputs'][0], '?')}" if len(o["outputs"]) else o["op_name"]
        names[o["index"]] = name
        outs = set(o["outputs"])
        if outs & needed and not outs & produced:
            outside[name] += 1
            needed |= {i for i in o["inputs"] if i >= 0}
    total = collections.Counter(names.values())
    by_op = {k: {"delegated": v - outside[k], "non_delegated": outside[k]} for k, v in sorted(total.items())}
    non = sum(outside.values())
    return {
        "backend": "XNNPACK delegate (LiteRT)",
        "delegated_subgraphs": len(delegates),
        "delegated_ops": len(names) - non,
        "non_delegated_ops": non,
        "percent_delegated": round(100.0 * (len(names) - non) / max(1, len(names)), 2),
        "not_delegated": dict(outside.most_common()),
        "by_operator": by_op,
    }


def _tflite_runner(path: str, info: ArtifactInfo, threads: int | None) -> Runner:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=path, num_threads=threads or None)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    nhwc = info.layout == "nhwc"

    in_q, out_q = _io_quant(inp), _io_quant(out)

    def run(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1) if nhwc else x, np.float32)
        if in_q is not None:  # int8 I/O: litert folded the input quantize into the model; the app quantizes
            scale, zero, dtype = in_q
            info_ = np.iinfo(dtype)
            x = np.clip(np.round(x / scale) + zero, info_.min, info_.max).astype(dtype)
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out_q is not None:
            scale, zero, _ = out_q
            y = (y.astype(np.float32) - zero) * scale
        return np.ascontiguousarray(y.transpose(0, 3, 1, 2) if nhwc else y, dtype=np.float32)

    return run


def _onnx_runner(path: str, info: ArtifactInfo, threads: int | None, profile_prefix: str | None = None) -> Runner:
    import onnxruntime as ort

    so = ort.SessionOptions()
    if threads:
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    run_ = lambda x: sess.run(None, {name: np.ascontiguousarray(x, np.float32)})[0]  # noqa: E731
    run_.session = sess  # type: ignore[attr-defined]
    return run_


def _coreml_runner(path: str, info: ArtifactInfo, threads: int | None) -> Runner:
    if sys.platform != "darwin":
        raise CoreMLNotRunnable("Core ML runs only on macOS/iOS: converted, not run")
    import coremltools as ct

    units = getattr(ct.ComputeUnit, (info.target_config or {}).get("compute_units") or "ALL")
    model = ct.models.MLModel(path, compute_units=units)

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict({info.input_name: x.astype(np.float32)})[info.output_name], np.float32)

    return run


# --------------------------------------------------------------------------------- latency
def measure_latency(run: Runner, x: np.ndarray, runs: int = 20, warmup: int = 3) -> dict[str, float]:
    """Wall time of single inferences after warm-up: median, p90, mean, min (ms)."""
    for _ in range(warmup):
        run(x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        run(x)
        times.append((time.perf_counter() - t) * 1e3)
    a = np.asarray(times)
    return {"median": float(np.median(a)), "p90": float(np.percentile(a, 90)), "mean": float(a.mean()),
            "min": float(a.min()), "runs": int(runs), "warmup": int(warmup)}


def interleaved_latency(paths: list[Path], threads: int | None = None, rounds: int = 7,
                        progress: bool = False) -> list[dict[str, Any]]:
    """Median / p90 latency (ms) of each artifact in rounds that run every artifact once (so a background load
    that comes and goes hits all of them alike), with each non-fp32 artifact's speed-up over the fp32 artifact of
    the same model, target and input size: ratios from one run."""
    import statistics

    from .spec import read_sidecar

    runners = []
    for path in paths:
        info = read_sidecar(path)
        run = load_runner(path, info, threads)
        x = np.random.default_rng(0).random((1, 3, *info.input_size), dtype=np.float32)
        run(x)  # warm-up: first-call allocation and weight packing
        runners.append((Path(path), info, run, x))
    times: dict[Path, list[float]] = {path: [] for path, *_ in runners}
    for r in range(rounds):
        for path, _, run, x in runners:
            t = time.perf_counter()
            run(x)
            times[path].append((time.perf_counter() - t) * 1e3)
        if progress:
            print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
    rows = []
    for path, info, _, _ in runners:
        ts = sorted(times[path])
        rows.append({"artifact": path.name, "model": info.model, "target": info.target,
                     "precision": info.precision, "input_size": list(info.input_size),
                     "median_ms": statistics.median(ts), "p90_ms": ts[min(len(ts) - 1, int(0.9 * len(ts)))]})
    for row in rows:
        fp = next((o["median_ms"] for o in rows if (o["model"], o["target"], o["precision"], o["input_size"])
                   == (row["model"], row["target"], "fp32", row["input_size"])), None)
        row["speedup_vs_fp32"] = fp / row["median_ms"] if fp and row["precision"] != "fp32" else None
    return rows


# ------------------------------------------------------------------------------ op profiles
def executorch_op_profile(path: str | Path, x: np.ndarray, info: ArtifactInfo, runs: int = 5) -> dict[str, Any]:
    """Per-operator times from an ETDump written by the Python runtime (1.5.1 writes a non-empty one)."""
    import torch
    from executorch.runtime import Runtime

    dtype = torch.float16 if info.io_dtype == "float16" else torch.float32
    program = Runtime.get().load_program(str(path), enable_etdump=True, debug_buffer_size=0)
    method = program.load_method("forward")
    xt = torch.from_numpy(np.ascontiguousarray(x)).to(dtype)
    for _ in range(runs):
        method.execute([xt])
    with tempfile.TemporaryDirectory() as tmp:
        etdump = Path(tmp) / "run.etdump"
        program.write_etdump_result_to_file(str(etdump), str(Path(tmp) / "debug.bin"))
        return etdump_op_profile(etdump, source="ETDump (ExecuTorch Python runtime, host)")


def etdump_op_profile(etdump: str | Path, source: str = "ETDump") -> dict[str, Any]:
    """Aggregate an ETDump's events by name: calls per inference, mean ms per call, share of the total.

    ``DELEGATE_CALL`` and ``Method::execute`` are wrappers around the ops and are reported as totals.
    """
    import contextlib
    import io

    from executorch.devtools import Inspector

    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        df = Inspector(etdump_path=str(etdump)).to_dataframe()
    df = df[df["event_block_name"] == "Execute"]
    wrappers = {"DELEGATE_CALL", "Method::execute"}
    totals: dict[str, float] = {}
    rows: dict[str, list[float]] = collections.defaultdict(list)
    n_exec = 0
    for name, raw in zip(df["event_name"], df["raw"]):
        vals = [float(v) for v in raw]
        if name == "Method::execute":
            n_exec = len(vals)
        if name in wrappers:
            totals[name] = float(np.mean(vals)) if vals else 0.0
            continue
        rows[_strip_index(str(name))].extend(vals)
    return _op_table(rows, n_exec or 1, source, totals_ms=totals)


def _strip_index(name: str) -> str:
    """'Convolution (NHWC, F32) IGEMM #3' -> 'Convolution (NHWC, F32) IGEMM' (XNNPACK numbers each op)."""
    head, sep, tail = name.rpartition(" #")
    return head if sep and tail.isdigit() else name


def _op_table(rows: dict[str, list[float]], n_inferences: int, source: str,
              totals_ms: dict[str, float] | None = None) -> dict[str, Any]:
    per_inf = {k: sum(v) / n_inferences for k, v in rows.items()}
    total = sum(per_inf.values()) or 1.0
    ops = [{"op": k, "calls": round(len(rows[k]) / n_inferences, 2), "ms": round(per_inf[k], 4),
            "percent": round(100.0 * per_inf[k] / total, 2)}
           for k in sorted(per_inf, key=lambda k: -per_inf[k])]
    return {"source": source, "inferences": n_inferences, "ops_ms_total": round(sum(per_inf.values()), 4),
            "totals_ms": totals_ms or {}, "ops": ops}


def onnx_op_profile(path: str | Path, x: np.ndarray, info: ArtifactInfo, threads: int | None,
                    runs: int = 5) -> dict[str, Any]:
    """Per-node-type times from onnxruntime's built-in profiler (a Chrome trace JSON)."""
    with tempfile.TemporaryDirectory() as tmp:
        run = _onnx_runner(str(path), info, threads, profile_prefix=str(Path(tmp) / "ort"))
        run(x)  # warm-up, also profiled: dropped below by counting per inference
        for _ in range(runs):
            run(x)
        trace = Path(run.session.end_profiling())  # type: ignore[attr-defined]
        events = json.loads(trace.read_text())
    rows: dict[str, list[float]] = collections.defaultdict(list)
    for ev in events:
        if ev.get("cat") == "Node" and str(ev.get("name", "")).endswith("_kernel_time"):
            rows[ev.get("args", {}).get("op_name", "?")].append(float(ev.get("dur", 0)) / 1e3)
    return _op_table(rows, runs + 1, "onnxruntime profiler (host)")


# ---------------------------------------------------------------------------- graph summaries
def coreml_mil_summary(path: str | Path) -> dict[str, Any]:
    """Op type counts and dtypes of an .mlpackage's MIL program (read from the spec; no runtime needed)."""
    import coremltools as ct
    from coremltools.proto import MIL_pb2

    spec = ct.utils.load_spec(str(path))
    if spec.WhichOneof("Type") != "mlProgram":
        return {"kind": spec.WhichOneof("Type")}
    fn = spec.mlProgram.functions["main"]
    block = fn.block_specializations[fn.opset]
    ops: collections.Counter[str] = collections.Counter()
    dtypes: collections.Counter[str] = collections.Counter()

    def walk(blk: Any) -> None:
        for op in blk.operations:
            ops[op.type] += 1
            for o in op.outputs:
                if o.type.WhichOneof("type") == "tensorType":
                    dtypes[MIL_pb2.DataType.Name(o.type.tensorType.dataType)] += 1
            for b in op.blocks:
                walk(b)

    walk(block)
    io = {f.name: ct.proto.FeatureTypes_pb2.ArrayFeatureType.ArrayDataType.Name(f.type.multiArrayType.dataType)
          for f in list(spec.description.input) + list(spec.description.output)}
    compute = {k: v for k, v in ops.items() if k != "const"}
    return {"kind": "mlProgram", "opset": fn.opset, "spec_version": spec.specificationVersion,
            "ops": dict(ops.most_common()), "compute_ops": sum(compute.values()), "const_ops": ops.get("const", 0),
            "output_dtypes": dict(dtypes.most_common()), "io_dtypes": io}


def tflite_op_summary(path: str | Path) -> dict[str, Any]:
    """Builtin op counts of a .tflite flatbuffer (the LiteRT Python API has no per-op profiler)."""
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(path).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    codes = []
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        code = max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode())
        codes.append(names.get(code, str(code)) if code != schema.BuiltinOperator.CUSTOM
                     else (oc.CustomCode() or b"CUSTOM").decode())
    ops: collections.Counter[str] = collections.Counter()
    for s in range(model.SubgraphsLength()):
        sg = model.Subgraphs(s)
        for i in range(sg.OperatorsLength()):
            ops[codes[sg.Operators(i).OpcodeIndex()]] += 1
    return {"kind": "tflite", "ops": dict(ops.most_common()), "total_ops": sum(ops.values())}


def onnx_op_summary(path: str | Path) -> dict[str, Any]:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    ops = collections.Counter(n.op_type for n in m.graph.node)
    return {"kind": "onnx", "opset": max((o.version for o in m.opset_import if o.domain in ("", "ai.onnx")),
                                         default=None),
            "ops": dict(ops.most_common()), "total_ops": sum(ops.values())}


def graph_summary(path: str | Path, info: ArtifactInfo) -> dict[str, Any] | None:
    fn = {"coreml": coreml_mil_summary, "tflite": tflite_op_summary, "onnx": onnx_op_summary}.get(info.target)
    return fn(path) if fn else None


# -------------------------------------------------------------------------------- memory
def measure_peak_memory(path: str | Path, threads: int | None = None, timeout: float = 600) -> dict[str, Any]:
    """Peak RSS of a fresh process that loads the artifact and runs it once.

    Reported: the process high-water mark (VmHWM, includes Python and the runtime libraries) and the same
    mark minus the RSS right after the imports (the model's own share, approximately). Linux only.
    """
    code = ("import sys, json; from edgesr.export.runtimes import _memory_probe; "
            "print(json.dumps(_memory_probe(sys.argv[1], int(sys.argv[2]))))")
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run([sys.executable, "-c", code, str(path), str(threads or 0)], capture_output=True,
                          text=True, timeout=timeout, env=env)
    for line in reversed(proc.stdout.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"memory probe failed: {tail}"}


def _memory_probe(path: str, threads: int) -> dict[str, Any]:
    from .spec import read_sidecar

    info = read_sidecar(path)
    _import_runtime(info.target)
    base = _status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")
    run = load_runner(path, info, threads or None)
    run(np.random.default_rng(0).random((1, 3, *info.input_size), dtype=np.float32))
    peak = _status_kb("VmHWM")
    return {"peak_rss_mb": round(peak / 1024, 1), "baseline_rss_mb": round(base / 1024, 1),
            "delta_mb": round((peak - base) / 1024, 1),
            "what": "VmHWM of a fresh process: load artifact + 1 inference; delta = minus RSS after imports"}


def _import_runtime(target: str) -> None:
    if target == "executorch":
        import executorch.runtime  # noqa: F401
        import torch  # noqa: F401
    elif target == "tflite":
        import ai_edge_litert.interpreter  # noqa: F401
    elif target == "onnx":
        import onnxruntime  # noqa: F401


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{key} not in /proc/self/status")


__all__ = ["Runner", "CoreMLNotRunnable", "runtime_name", "load_runner", "set_executorch_threads",
           "measure_latency", "executorch_op_profile", "etdump_op_profile", "onnx_op_profile",
           "coreml_mil_summary", "tflite_op_summary", "onnx_op_summary", "graph_summary", "measure_peak_memory"]
