"""Phone tooling: device-script generation and device-report parsing of realistic tool outputs.

The sample outputs follow the real tools' formats: TFLite/LiteRT ``benchmark_model`` (INFO lines, the
``count= first= curr= min= max= avg= std=`` blocks, ``Inference timings in us``, memory footprint and the
tab-separated op-profiling tables) and ExecuTorch's ``examples/portable/executor_runner`` log (ET_LOG lines
``I 00:00:00.123 executorch:executor_runner.cpp:NNN] ...`` with per-iteration times and the BundleIO
verification). The ETDump is a real one written by the ExecuTorch Python runtime.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from edgesr.cli import main
from edgesr.export.device import device_report, device_script, parse_benchmark_model, parse_executor_runner
from edgesr.export.spec import AndroidProfile, load_profile
from test_export import ROOT, artifact

BENCHMARK_MODEL_LOG = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [4]
INFO: Min num runs: [50]
INFO: Graph: [/data/local/tmp/edgesr/scnet_t_tflite_fp32_nchw.tflite]
INFO: Enable op profiling: [1]
INFO: #threads used for CPU inference: [4]
INFO: Use xnnpack: [1]
INFO: Report the peak memory footprint: [1]
INFO: Loaded model /data/local/tmp/edgesr/scnet_t_tflite_fp32_nchw.tflite
INFO: Initialized TensorFlow Lite runtime.
INFO: Created TensorFlow Lite XNNPACK delegate for CPU.
INFO: XNNPACK delegate created.
INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate.
INFO: The input model file size (MB): 0.64218
INFO: Initialized session in 41.233ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=21 first=31514 curr=23412 min=22876 max=31514 avg=24012.3 std=1822

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=23601 curr=23377 min=22790 max=25998 avg=23544.2 std=611

INFO: Inference timings in us: Init: 41233, First inference: 31514, Warmup (avg): 24012.3, Inference (avg): 23544.2
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=9.86328 overall=41.2031
INFO: Overall peak memory footprint (MB) via periodic monitoring: 47.5781
INFO: Profiling Info for Benchmark Initialization:
============================== Run Order ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t ModifyGraphWithDelegate\t   29.871\t   29.871\t 92.905%\t 92.905%\t  1876.000\t        1\tModifyGraphWithDelegate/0
\t         AllocateTensors\t    4.562\t    2.281\t  7.095%\t100.000%\t     0.000\t        2\tAllocateTensors/0

============================== Top by Computation Time ==============================
\t             [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t ModifyGraphWithDelegate\t   29.871\t   29.871\t 92.905%\t 92.905%\t  1876.000\t        1\tModifyGraphWithDelegate/0
\t         AllocateTensors\t    4.562\t    2.281\t  7.095%\t100.000%\t     0.000\t        2\tAllocateTensors/0

Number of nodes executed: 2
============================== Summary by node type ==============================
\t             [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t ModifyGraphWithDelegate\t        1\t    29.871\t    92.905%\t    92.905%\t  1876.000\t        1
\t         AllocateTensors\t        1\t     4.562\t     7.095%\t   100.000%\t     0.000\t        2

Timings (microseconds): count=1 curr=34433
Memory (bytes): count=0
2 nodes observed



INFO: Operator-wise Profiling Info for Regular Benchmark Runs:
============================== Run Order ==============================
\t                     [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t           Transpose (ND, X32)\t    0.412\t    0.398\t  1.694%\t  1.694%\t     0.000\t        1\tDelegate/Transpose (ND, X32):0
\t   Convolution (NHWC, F32) GEMM\t    0.611\t    0.590\t  2.511%\t  4.205%\t     0.000\t        1\tDelegate/Convolution (NHWC, F32) GEMM:1
\t              Constant Pad (ND, X32)\t    0.101\t    0.096\t  6.537%\t 10.742%\t     0.000\t       16\tDelegate/Constant Pad (ND, X32):2
\t                  Slice (ND, X32)\t    0.015\t    0.014\t 19.065%\t 29.807%\t     0.000\t      320\tDelegate/Slice (ND, X32):3
\t   Convolution (NHWC, F32) GEMM\t    0.580\t    0.571\t 38.877%\t 68.684%\t     0.000\t       16\tDelegate/Convolution (NHWC, F32) GEMM:4
\t         Resize Bilinear (NHWC, F32)\t    2.911\t    2.874\t 12.234%\t 80.918%\t     0.000\t        1\tDelegate/Resize Bilinear (NHWC, F32):5
\t   Convolution (NHWC, F32) GEMM\t    4.601\t    4.483\t 19.082%\t100.000%\t     0.000\t        1\tDelegate/Convolution (NHWC, F32) GEMM:6

============================== Top by Computation Time ==============================
\t                     [node type]\t  [first]\t [avg ms]\t     [%]\t  [cdf%]\t  [mem KB]\t[times called]\t[Name]
\t   Convolution (NHWC, F32) GEMM\t    4.601\t    4.483\t 19.082%\t 19.082%\t     0.000\t        1\tDelegate/Convolution (NHWC, F32) GEMM:6

Number of nodes executed: 7
============================== Summary by node type ==============================
\t                     [Node type]\t  [count]\t  [avg ms]\t    [avg %]\t    [cdf %]\t  [mem KB]\t[times called]
\t   Convolution (NHWC, F32) GEMM\t        3\t    14.208\t    60.470%\t    60.470%\t     0.000\t       18
\t                  Slice (ND, X32)\t        1\t     4.480\t    19.067%\t    79.537%\t     0.000\t      320
\t         Resize Bilinear (NHWC, F32)\t        1\t     2.874\t    12.232%\t    91.769%\t     0.000\t        1
\t              Constant Pad (ND, X32)\t        1\t     1.536\t     6.537%\t    98.306%\t     0.000\t       16
\t           Transpose (ND, X32)\t        1\t     0.398\t     1.694%\t   100.000%\t     0.000\t        1

Timings (microseconds): count=50 first=23612 curr=23370 min=22781 max=25990 avg=23496.1 std=608
Memory (bytes): count=0
7 nodes observed
"""

EXECUTOR_RUNNER_LOG = """\
I 00:00:00.000694 executorch:cpuinfo_utils.cpp:71] Reading file /sys/devices/soc0/image_version
I 00:00:00.001301 executorch:executor_runner.cpp:260] Resetting threadpool with num threads = 4
I 00:00:00.006150 executorch:executor_runner.cpp:398] Model file safmn_executorch_fp32_nchw.bpte is loaded.
I 00:00:00.006171 executorch:executor_runner.cpp:408] Using method forward
I 00:00:00.006182 executorch:executor_runner.cpp:459] Setting up CPU planned buffer 0, size 9437248.
I 00:00:00.052911 executorch:executor_runner.cpp:540] Model loaded in 46.733000 ms.
I 00:00:00.081223 executorch:executor_runner.cpp:676] Iteration 1 of 6: 27.870000 ms
I 00:00:00.100113 executorch:executor_runner.cpp:676] Iteration 2 of 6: 18.751000 ms
I 00:00:00.118981 executorch:executor_runner.cpp:676] Iteration 3 of 6: 18.702000 ms
I 00:00:00.138122 executorch:executor_runner.cpp:676] Iteration 4 of 6: 19.012000 ms
I 00:00:00.156911 executorch:executor_runner.cpp:676] Iteration 5 of 6: 18.655000 ms
I 00:00:00.176313 executorch:executor_runner.cpp:676] Iteration 6 of 6: 19.288000 ms
I 00:00:00.176330 executorch:executor_runner.cpp:688] Model executed successfully 6 time(s) in 122.278000 ms.
I 00:00:00.176335 executorch:executor_runner.cpp:691] 1 outputs:
I 00:00:00.181002 executorch:executor_runner.cpp:777] ETDump written to file '/data/local/tmp/edgesr/edgesr.etdump'.
I 00:00:00.190118 executorch:executor_runner.cpp:792] === Error stats for testset 0 ===
I 00:00:00.190121 executorch:executor_runner.cpp:793]  mean_absolute_error: 0.000000
I 00:00:00.190123 executorch:executor_runner.cpp:794]  max_absolute_error:  0.000004
I 00:00:00.190125 executorch:executor_runner.cpp:795]  mean_relative_error: 0.000001
I 00:00:00.190127 executorch:executor_runner.cpp:796]  max_relative_error:  0.000211
I 00:00:00.190301 executorch:executor_runner.cpp:812] Model output match expected BundleIO bpte ref data.
I 00:00:00.190305 executorch:executor_runner.cpp:813] TEST: BundleIO index[0] Test_result: PASS
"""


def test_parse_benchmark_model():
    p = parse_benchmark_model(BENCHMARK_MODEL_LOG)
    assert p["threads"] == 4
    lat = p["latency_ms"]
    assert lat["runs"] == 50 and lat["mean"] == pytest.approx(23.5442) and lat["min"] == pytest.approx(22.79)
    assert lat["median"] is None and lat["p90"] is None
    assert p["timings_us"]["Init"] == 41233 and p["timings_us"]["Inference (avg)"] == pytest.approx(23544.2)
    assert p["memory"] == {"init_delta_mb": 9.86328, "overall_delta_mb": 41.2031, "peak_mb": 47.5781}
    by_type = {r["Node type"]: r for r in p["ops_by_type"]}
    assert set(by_type) == {"Convolution (NHWC, F32) GEMM", "Slice (ND, X32)", "Resize Bilinear (NHWC, F32)",
                            "Constant Pad (ND, X32)", "Transpose (ND, X32)"}
    assert by_type["Slice (ND, X32)"]["times called"] == "320"
    assert len(p["ops_run_order"]) == 7 and p["ops_run_order"][3]["Name"] == "Delegate/Slice (ND, X32):3"


def test_parse_executor_runner():
    p = parse_executor_runner(EXECUTOR_RUNNER_LOG)
    assert p["threads"] == 4 and p["load_ms"] == pytest.approx(46.733) and p["executed"]
    lat = p["latency_ms"]
    assert lat["runs"] == 5 and lat["first_ms"] == pytest.approx(27.87)  # first iteration left out
    assert lat["median"] == pytest.approx(18.751) and lat["min"] == pytest.approx(18.655)
    assert lat["median"] <= lat["p90"] <= 19.288
    v = p["bundled_verification"]
    assert v["result"] == "PASS" and v["max_absolute_error"] == pytest.approx(4e-6)


def test_profile_yamls_validate():
    for f in sorted((ROOT / "targets").glob("android_*.yaml")):
        prof = load_profile(f)
        assert prof.threads > 0 and prof.device_dir.startswith("/")
    from edgesr.export.spec import ExportError

    bad = ROOT / "targets" / "android_pixel8.yaml"
    with pytest.raises(ExportError):
        AndroidProfile(name="x", device_dir="relative/dir").validate()
    assert load_profile(bad).name == "pixel8"


@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_device_script_is_valid_bash(target, tmp_path):
    path = artifact("scnet_t", target)
    text = device_script(path, load_profile(ROOT / "targets" / "android_pixel8.yaml"))
    script = tmp_path / "run.sh"
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    assert "taskset f0" in text and "/data/local/tmp/edgesr" in text
    if target == "executorch":
        assert ".bpte" in text and "--num_executions 50" in text and "--cpu_threads 4" in text
        assert "--etdump_path" in text
    else:
        assert "--enable_op_profiling=true" in text and "--num_threads=4" in text and "benchmark_model" in text
    assert "edgesr device-report" in text


def test_device_script_cli(tmp_path, capsys):
    out = tmp_path / "bench.sh"
    assert main(["device-script", str(artifact("scnet_t", "tflite")), "--out", str(out),
                 "--profile", str(ROOT / "targets" / "android_generic.yaml")]) == 0
    assert out.read_text().startswith("#!/usr/bin/env bash") and out.stat().st_mode & 0o111
    assert main(["device-script", str(artifact("scnet_t", "onnx"))]) == 2
    assert "device-script supports" in capsys.readouterr().err


def test_device_report_benchmark_model(tmp_path):
    log = tmp_path / "benchmark_model.log"
    log.write_text(BENCHMARK_MODEL_LOG)
    (tmp_path / "device.txt").write_text("Pixel 8\n")
    r = device_report([log], artifact("scnet_t", "tflite"))
    assert r["schema"] == "edgesr-check/1" and r["runtime"]["where"] == "device"
    assert r["runtime"]["machine"] == "Pixel 8" and r["latency_ms"]["mean"] == pytest.approx(23.5442)
    assert r["memory"]["peak_mb"] == pytest.approx(47.5781)
    assert r["op_profile"]["ops"][0]["op"] == "Convolution (NHWC, F32) GEMM"
    assert r["op_profile"]["ops"][0]["ms"] == pytest.approx(14.208) and r["quality"] is None


def test_device_report_executor_runner_with_real_etdump(tmp_path, capsys):
    """executor_runner log + an ETDump written by the ExecuTorch runtime for the same artifact."""
    import torch
    from executorch.runtime import Runtime

    from edgesr.export.exporters import example_input

    path = artifact("scnet_t", "executorch")
    program = Runtime.get().load_program(str(path), enable_etdump=True, debug_buffer_size=0)
    method = program.load_method("forward")
    for _ in range(2):
        method.execute([example_input((64, 64))])
    etdump = tmp_path / "edgesr.etdump"
    program.write_etdump_result_to_file(str(etdump), str(tmp_path / "debug.bin"))
    assert etdump.stat().st_size > 0  # 1.5.1's Python runtime writes a real ETDump
    log = tmp_path / "executor_runner.log"
    log.write_text(EXECUTOR_RUNNER_LOG)
    out = tmp_path / "report.json"
    assert main(["device-report", str(log), str(etdump), "--artifact", str(path), "--json", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["latency_ms"]["median"] == pytest.approx(18.751) and r["latency_ms"]["p90"] is not None
    assert r["parity"]["verification"] == "PASS" and r["parity"]["max_abs_diff"] == pytest.approx(4e-6)
    assert r["op_profile"]["source"].startswith("ETDump") and r["op_profile"]["inferences"] == 2
    assert any("GEMM" in o["op"] for o in r["op_profile"]["ops"])  # XNNPACK runs SCNet's 1x1 convs as GEMMs
    assert torch.isfinite(torch.tensor(r["op_profile"]["ops_ms_total"]))
    assert "parity vs PyTorch" in capsys.readouterr().out


def test_device_report_bad_inputs(tmp_path, capsys):
    junk = tmp_path / "junk.txt"
    junk.write_text("hello\n")
    assert main(["device-report", str(junk), "--artifact", str(artifact("scnet_t", "tflite"))]) == 2
    assert "not a benchmark_model log" in capsys.readouterr().err
    assert main(["device-report", str(tmp_path / "none.log"), "--artifact", str(artifact("scnet_t", "tflite"))]) == 2
    assert "not found" in capsys.readouterr().err
