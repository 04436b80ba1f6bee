"""Export: rewrites equal to the eval models, every artifact kind built *and executed* at 64×64
(scnet_t x4, safmn x4, random weights), delegation report, bundled program, sidecars, CLI errors.

Artifacts are built once per session by :func:`artifact` (lowering is the slow part) and shared with
test_check.py / test_device.py.
"""

from __future__ import annotations

import atexit
import copy
import functools
import json
import math
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

import edgesr.models as M
from edgesr.cli import main
from edgesr.models import lamnet as lamnet_arch
from edgesr.models.layers import ChannelNorm, spatial_mean
from edgesr.reparam import forms as rewrites
from edgesr.export.exporters import check_input_size, example_input, export_by_name
from edgesr.export.spec import (BUILTIN_TARGETS, ExportError, parse_input_size, read_sidecar, sidecar_path,
                                target_config)

ROOT = Path(__file__).resolve().parents[1]
_TMP = Path(tempfile.mkdtemp(prefix="edgesr-export-tests-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)
SIZE = (64, 64)


@functools.lru_cache(maxsize=None)
def artifact(model: str, target: str, precision: str = "fp32", layout: str = "nchw") -> Path:
    """Export once per session (seeded random weights, saved beside the artifact)."""
    suffix = BUILTIN_TARGETS[target]["suffix"]
    out = _TMP / f"{model}_{target}_{precision}_{layout}{suffix}"
    export_by_name(model, 4, target, precision, SIZE, out, layout=layout, command="pytest")
    return out


def cli(argv: list[str]) -> int:
    """``edgesr`` as the shell sees it: argparse usage errors exit via SystemExit(2)."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    from edgesr.export.runtimes import load_runner

    return load_runner(path, read_sidecar(path), threads=1)(x)


def _reference(path: Path, x: np.ndarray) -> np.ndarray:
    from edgesr.export.check import reference_model

    with torch.no_grad():
        return reference_model(path, read_sidecar(path))(torch.from_numpy(x)).numpy()


# ----------------------------------------------------------------------------------- rewrites
def _randomised(name: str) -> torch.nn.Module:
    torch.manual_seed(1)
    model = M.create(name, 4)
    with torch.no_grad():  # non-trivial norms, so the rewrites are really exercised
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
        for n, p in model.named_parameters():
            if n.endswith(("norm.weight", "norm.alpha")) or ".norm" in n:
                p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("name, size", [("safmn", (64, 64)), ("safmn", (40, 56)), ("eimn_a", (20, 28)),
                                        ("lamnet", (20, 28)), ("scnet_t", (17, 23))])
def test_export_friendly_equals_eval_model(name, size):
    """The graph exporters see (export form, traced: delegate forms of norms, shifts, means) equals eval."""
    model = _randomised(name)
    friendly = rewrites.export_friendly(model)
    x = torch.rand(1, 3, *size)
    assert rewrites.max_abs_diff(model, friendly, x) <= 1e-5
    traced = torch.export.export(friendly, (x,)).module()
    assert rewrites.max_abs_diff(model, traced, x) <= 1e-5


@pytest.mark.parametrize("rewrite, name", [("fold_batchnorm", "eimn_a"), ("export_form:DFFM", "eimn_a"),
                                           ("export_form:LSAMixer", "lamnet")])
def test_each_rewrite_alone_is_exact(rewrite, name):
    model = _randomised(name)
    x = torch.rand(1, 3, 16, 24)
    assert rewrite in rewrites.applicable_rewrites(model)
    one = rewrites.export_friendly(model, [rewrite])
    assert rewrites.max_abs_diff(model, torch.export.export(one, (x,)).module(), x) <= 1e-5


def test_spatial_means_are_two_pass_in_float_exports_and_one_pass_for_int8():
    """XNNPACK's fp32 mean over H·W in one pass is 35x less accurate than two passes at 180×320 (EIMN-A's
    .pte parity was 1.5e-4 from it); int8 graphs keep one exact int32 pass."""
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.exir import to_edge_transform_and_lower
    from executorch.runtime import Runtime

    from edgesr.quantize.graph import export_form

    for name, overrides in {"eimn_a": dict(num_stages=1), "lamnet": dict(num_groups=1, num_blocks=1)}.items():
        model = M.create(name, 4, **overrides)
        flags = [m.two_pass_mean for m in rewrites.export_friendly(model).modules() if hasattr(m, "two_pass_mean")]
        assert flags and all(flags)
        assert not any(m.two_pass_mean for m in export_form(model, True).modules() if hasattr(m, "two_pass_mean"))

    class Mean(torch.nn.Module):
        def __init__(self, two_pass: bool) -> None:
            super().__init__()
            self.two_pass = two_pass

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return spatial_mean(x, self.two_pass)

    x = torch.randn(1, 8, 180, 320, generator=torch.Generator().manual_seed(0)) * 3 + 5
    exact = x.double().mean(dim=(2, 3), keepdim=True)
    prog = to_edge_transform_and_lower(torch.export.export(Mean(True), (x,)),
                                       partitioner=[XnnpackPartitioner()]).to_executorch()
    y = Runtime.get().load_program(prog.buffer).load_method("forward").execute([x])[0].double()
    assert float(((y - exact).abs() / exact.abs()).max()) < 1e-6  # one pass: 7e-6 (XNNPACK in ExecuTorch 1.x)


def test_eimn_and_lamnet_fp32_graphs_are_fully_delegated():
    """One block of each (the rewrites act per block), through the same lowering as `edgesr export`."""
    from edgesr.export.exporters import lower_executorch

    for name, overrides in {"eimn_a": dict(num_stages=1), "lamnet": dict(num_groups=1, num_blocks=1)}.items():
        model = M.create(name, 4, **overrides).eval()
        _, report = lower_executorch(rewrites.export_friendly(model), torch.rand(1, 3, 24, 32))
        assert report["non_delegated_ops"] == 0, (name, report["not_delegated"])


def test_rewrites_remove_undelegated_ops():
    """No channel mean, split/chunk or narrow/select (LAMNet's FSA) left in the exported graphs (one block of
    each kind is enough: the rewrites act per block)."""
    small = {"safmn": dict(n_blocks=1), "eimn_a": dict(num_stages=1), "lamnet": dict(num_groups=1, num_blocks=1),
             "scnet_t": dict(num_block=1)}
    for name, overrides in small.items():
        model = M.create(name, 4, **overrides)
        ep = torch.export.export(rewrites.export_friendly(model), (torch.rand(1, 3, 16, 16),))
        ops = [str(n.target) for n in ep.graph.nodes if n.op == "call_function"]
        forbidden = ("split", "chunk", "narrow", "select", "batch_norm") + (("slice",) if name == "scnet_t" else ())
        bad = [o for o in ops if any(k in o for k in forbidden)]
        channel_means = [n for n in ep.graph.nodes if n.op == "call_function" and "mean" in str(n.target)
                         and list(n.args[1]) in ([1], [-3])]
        assert not bad and not channel_means, (name, bad[:3], len(channel_means))


def test_fsa_as_convs_matches_official_formulation():
    from edgesr.models import lamnet

    taps = lamnet.generate_kernel_map(13, (4, 6, 7), (1, 2, 4))
    x, w = torch.randn(2, 32, 9, 30), torch.randn(2, 4 * 13, 9, 30)
    for dim in (-1, -2):
        box, gather, ones = lamnet_arch.fsa_kernels(taps, 32, 4, dim, x)
        ref = lamnet.focal_separable_attention(x, w, taps, dim, 4)
        assert (lamnet_arch.fsa_conv(x, w, box, gather, ones) - ref).abs().max() <= 1e-5


def test_fp16_safe_norms_keeps_an_outlier_channel_finite_and_fp32_unchanged():
    """EIMN-A grows a channel ~1000 away from the channel mean; d² then overflows fp16 (65504) in every
    LayerNorm it enters and the norm outputs zeros. A planted outlier in front of a norm reproduces it."""
    torch.manual_seed(0)
    c = 16
    norm = ChannelNorm(c, 1e-6)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(c))
        norm.bias.copy_(0.1 * torch.randn(c))
    model = torch.nn.Sequential(torch.nn.Conv2d(3, c, 1), norm).eval()
    with torch.no_grad():
        model[0].weight[0].mul_(2000.0)
        model[0].bias[0] = 800.0
    x = torch.rand(1, 3, 24, 24)
    with torch.no_grad():
        ref = model(x)
        plain16 = copy.deepcopy(model).half()(x.half()).float()
        scaled = rewrites.fp16_safe_norms(model, x)
        assert list(scaled) == ["1"] and 0 < scaled["1"] < 1 and math.log2(scaled["1"]).is_integer()
        assert torch.equal(model(x), ref)  # a power-of-two prescale is exact in fp32
        safe16 = model.half()(x.half()).float()
    assert (plain16 - ref).abs().max() > 1.0  # the failure is real: the norm collapses to its bias
    assert (safe16 - ref).abs().max() < 0.1  # fp16 rounding of the input only (ulp 0.06 at the mean ~100)


# --------------------------------------------------------------------------------- validation
def test_input_size_parsing_and_safmn_multiple():
    assert parse_input_size("180x320") == (180, 320)
    assert parse_input_size("64") == (64, 64)
    for bad in ("0x5", "axb", "64x", "-3x4"):
        with pytest.raises(ExportError):
            parse_input_size(bad)
    with pytest.raises(ExportError, match="multiples of 8"):
        check_input_size(M.create("safmn", 4), (180, 320), "safmn")
    check_input_size(M.create("safmn", 4), (184, 320), "safmn")
    check_input_size(M.create("scnet_t", 4), (180, 320), "scnet_t")
    with pytest.raises(ExportError, match="multiples of 16"):
        check_input_size(M.create("safmn_ntire", 4), (24, 32), "safmn_ntire")


def test_target_yamls_match_builtin_defaults():
    files = {"executorch": "executorch_xnnpack.yaml", "tflite": "litert.yaml", "coreml": "coreml.yaml",
             "onnx": "onnx.yaml"}
    for name, file in files.items():
        assert vars(target_config(ROOT / "targets" / file)) == vars(target_config(name)), file
    with pytest.raises(ExportError, match="unknown target"):
        target_config("tensorrt")


@pytest.mark.parametrize("argv, message", [
    (["--target", "tensorrt"], "unknown target"),
    (["--target", "onnx", "--input-size", "64by64"], "--input-size"),
    (["--model", "safmn", "--target", "onnx", "--input-size", "60x64"], "multiples of 8"),
    (["--target", "onnx", "--precision", "fp16"], "supports fp32"),
    (["--target", "onnx", "--precision", "int8"], "needs --quantized"),
    (["--target", "onnx", "--out", "model.tflite"], "must be named"),
    (["--target", "onnx", "--out", "/no/such/dir/m.onnx"], "does not exist"),
    (["--model", "nosuchnet", "--target", "onnx"], "unknown model"),
])
def test_export_cli_bad_input_is_one_line_exit_2(argv, message, capsys):
    args = {"--model": "scnet_t", "--scale": "4", "--target": "onnx", "--input-size": "64x64",
            "--out": str(_TMP / "bad.onnx")}
    for k, v in zip(argv[::2], argv[1::2]):
        args[k] = v
    code = cli(["export", *[t for kv in args.items() for t in kv]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err


def test_an_artifact_lowered_from_the_same_source_is_reused_not_lowered_again(tmp_path, monkeypatch):
    from edgesr.export import exporters
    from edgesr.models import ModelSpec, build

    model = build(ModelSpec("tests/nets/plain_net.py:make_plain_sr", 2, kwargs={"channels": 4, "depth": 1}))
    first = exporters.export(model, "executorch", "fp32", (16, 16), tmp_path / "a.pte")

    def no_lowering(*a, **k):
        raise AssertionError("lowered again")

    monkeypatch.setattr(exporters, "lower_executorch", no_lowering)
    again = exporters.export(model, "executorch", "fp32", (16, 16), tmp_path / "b.pte", reuse=[tmp_path / "a.pte"])
    assert (tmp_path / "b.pte").read_bytes() == (tmp_path / "a.pte").read_bytes()
    assert again.files == {"delegation": "b.pte.delegation.json", "bundled_program": "b.bpte"}
    assert all((tmp_path / f).is_file() for f in again.files.values()) and again.delegation == first.delegation
    assert read_sidecar(tmp_path / "b.pte").artifact == "b.pte"
    other = copy.deepcopy(model)
    with torch.no_grad():
        other[0].weight.mul_(2)
    with pytest.raises(Exception, match="lowered again"):  # other weights: not the same source
        exporters.export(other, "executorch", "fp32", (16, 16), tmp_path / "c.pte", reuse=[tmp_path / "a.pte"])
    with pytest.raises(Exception, match="lowered again"):  # another input size
        exporters.export(model, "executorch", "fp32", (16, 24), tmp_path / "d.pte", reuse=[tmp_path / "a.pte"])


def test_export_cli_writes_artifact_and_sidecar(tmp_path, capsys):
    weights = artifact("scnet_t", "onnx").parent / read_sidecar(artifact("scnet_t", "onnx")).weights
    out = tmp_path / "scnet.onnx"
    assert cli(["export", "--model", "scnet_t", "--scale", "4", "--weights", str(weights), "--target", "onnx",
                "--input-size", "32x48", "--out", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    info = read_sidecar(out)
    assert info.input_size == [32, 48] and info.weights == str(weights.resolve())
    assert info.command.startswith("edgesr export --model scnet_t --scale 4 --weights ")
    x = example_input((32, 48)).numpy()
    assert np.abs(_run(out, x) - _reference(out, x)).max() <= 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scnet.onnx", "scnet.onnx.json"]


# ------------------------------------------------------------------------------- ExecuTorch
def test_executorch_fp32_runs_with_parity_and_full_delegation():
    for name in ("scnet_t", "safmn"):
        path = artifact(name, "executorch")
        info = read_sidecar(path)
        assert info.model == name and info.input_size == [64, 64] and info.layout == "nchw"
        x = example_input(SIZE).numpy()
        y = _run(path, x)
        assert y.shape == (1, 3, 256, 256)
        assert np.abs(y - _reference(path, x)).max() <= 1e-4
        report = json.loads((path.parent / info.files["delegation"]).read_text())
        assert report["non_delegated_ops"] == 0 and report["percent_delegated"] == 100.0, report["not_delegated"]
        assert info.delegation["percent_delegated"] == 100.0


def test_bundled_program_verifies_in_the_runtime():
    from executorch.extension.pybindings import portable_lib

    path = artifact("scnet_t", "executorch")
    bpte = path.parent / read_sidecar(path).files["bundled_program"]
    bundle = portable_lib._load_bundled_program_from_buffer(bpte.read_bytes())
    module = portable_lib._load_for_executorch_from_bundled_program(bundle)
    assert "forward" in module.method_names()
    bundle.verify_result_with_bundled_expected_output("forward", 0, 1e-4, 1e-4)  # raises on mismatch


def test_sidecar_records_what_check_needs():
    path = artifact("safmn", "executorch")
    data = json.loads(sidecar_path(path).read_text())
    for key in ("model", "scale", "weights", "weights_sha256", "target", "precision", "input_size", "layout",
                "versions", "command", "rewrites"):
        assert data[key] is not None, key
    assert data["versions"]["edgesr"] and data["versions"]["executorch"]
    assert data["rewrites"] == [] and data["rewrite_max_abs_diff"] <= 1e-5  # SAFMN: its norms switch form under export
    assert (path.parent / data["weights"]).is_file()
    assert not list(path.parent.glob(".*tmp*")), "no temporary files left behind"


# ------------------------------------------------------------------------------ TFLite / ONNX
def test_tflite_fp32_runs_with_parity():
    path = artifact("scnet_t", "tflite")
    x = example_input(SIZE).numpy()
    assert np.abs(_run(path, x) - _reference(path, x)).max() <= 1e-4
    d = read_sidecar(path).delegation  # LiteRT's XNNPACK delegate takes the whole fp32 graph, in one subgraph
    assert d["percent_delegated"] == 100.0 and d["delegated_subgraphs"] == 1 and not d["not_delegated"]
    report = json.loads((path.parent / f"{path.name}.delegation.json").read_text())
    assert sum(v["delegated"] for v in report["by_operator"].values()) == d["delegated_ops"] > 0


def test_tflite_nhwc_io_runs_with_parity():
    from ai_edge_litert.interpreter import Interpreter

    path = artifact("scnet_t", "tflite", layout="nhwc")
    assert list(Interpreter(model_path=str(path)).get_input_details()[0]["shape"]) == [1, 64, 64, 3]
    x = example_input(SIZE).numpy()  # runners take NCHW and transpose for an NHWC artifact
    assert np.abs(_run(path, x) - _reference(path, x)).max() <= 1e-4


def test_int16x8_tflite_beats_int8_where_int8_activations_cannot_hold_the_range(tmp_path):
    """One activation channel 1000x the image channels: a per-tensor int8 scale leaves the image a few levels
    (LiteRT int8 < 20 dB vs fp32), int16 activations 256x more levels (> 35 dB), both run in LiteRT."""
    from edgesr.data.samples import CALIB_IMAGES, sample_paths
    from edgesr.export import export
    from edgesr.export.exporters import calibration_lr
    from edgesr.quantize import QuantConfig, ptq

    model = M.build(M.ModelSpec("tests/nets/plain_net.py:outlier_upsampler", 2)).eval()
    photos = [str(p) for p in sample_paths(CALIB_IMAGES)]
    size = (32, 32)
    calib = calibration_lr(model, photos, size, count=4)
    export(model, "tflite", "int16x8", size, tmp_path / "w8a16.tflite", calibration=calib)
    q = ptq(model, "tflite", calib, QuantConfig(observer="minmax"))
    export(model, "tflite", "int8", size, tmp_path / "int8.tflite", quantized=q)
    assert read_sidecar(tmp_path / "w8a16.tflite").precision == "int16x8"
    x = calib[0].numpy()
    ref = model(calib[0]).clamp(0, 1).detach().numpy()

    def psnr(path):
        y = np.clip(_run(path, x), 0, 1)
        return -10 * math.log10(float(((y - ref) ** 2).mean()) + 1e-12)

    p16, p8 = psnr(tmp_path / "w8a16.tflite"), psnr(tmp_path / "int8.tflite")
    assert p8 < 20 and p16 > 35 and p16 > p8 + 20, (p16, p8)
    with pytest.raises(ExportError, match="calibration"):
        export(model, "tflite", "int16x8", size, tmp_path / "x.tflite")


def test_export_cli_int16x8_calibrates_on_data(tmp_path, capsys):
    from edgesr.data.samples import CALIB_IMAGES, sample_paths

    photos = [str(p) for p in sample_paths(CALIB_IMAGES)][:2]
    out = tmp_path / "p.tflite"
    argv = ["export", "--model", "tests/nets/plain_net.py:make_plain_sr", "--scale", "2", "--model-kwargs",
            '{"channels": 4, "depth": 1}', "--target", "tflite", "--input-size", "16x16", "--out", str(out)]
    assert cli([*argv, "--precision", "fp32", "--data", *photos]) == 2
    assert "does not use it" in capsys.readouterr().err
    assert cli([*argv, "--precision", "int16x8", "--data", *photos]) == 0
    info = read_sidecar(out)
    assert info.precision == "int16x8" and "--data" in info.command
    from ai_edge_litert.interpreter import Interpreter

    assert Interpreter(model_path=str(out)).get_input_details()[0]["dtype"] == np.int16


def test_int16x8_calibration_that_cannot_allocate_is_one_line_and_no_file(tmp_path, capsys, monkeypatch):
    """ai-edge-quantizer's calibration keeps every intermediate tensor (LAMNet x4 at 180x320: 25 GiB, over a
    24 GiB host): its allocation failure is a one-line error with the size it needed, not a traceback."""
    from ai_edge_quantizer import quantizer

    from edgesr.data.samples import CALIB_IMAGES, sample_paths

    def cannot_allocate(self, *a, **k):
        raise RuntimeError()

    monkeypatch.setattr(quantizer.Quantizer, "calibrate", cannot_allocate)
    out = tmp_path / "p.tflite"
    assert cli(["export", "--model", "tests/nets/plain_net.py:make_plain_sr", "--scale", "2", "--model-kwargs",
                '{"channels": 4, "depth": 1}', "--target", "tflite", "--input-size", "16x16", "--out", str(out),
                "--precision", "int16x8", "--data", str(sample_paths(CALIB_IMAGES)[0])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "at 16x16" in err and "every intermediate tensor" in err and "GiB" in err
    assert not out.exists()


def test_onnx_fp32_runs_with_parity():
    path = artifact("scnet_t", "onnx")
    x = example_input(SIZE).numpy()
    assert np.abs(_run(path, x) - _reference(path, x)).max() <= 1e-4


# ----------------------------------------------------------------------------------- Core ML
def test_coreml_converts_and_summarises_mil():
    import sys

    from edgesr.export.runtimes import CoreMLNotRunnable, coreml_mil_summary, load_runner

    fp32 = artifact("scnet_t", "coreml")
    assert fp32.is_dir()
    s = coreml_mil_summary(fp32)
    assert s["kind"] == "mlProgram" and s["ops"]["conv"] == 39 + 18 and "FLOAT32" in s["output_dtypes"]
    assert s["io_dtypes"] == {"lr": "FLOAT32", "sr": "FLOAT32"}
    fp16 = artifact("safmn", "coreml", "fp16")
    s16 = coreml_mil_summary(fp16)
    assert "FLOAT16" in s16["output_dtypes"] and s16["io_dtypes"]["lr"] == "FLOAT32"
    if sys.platform != "darwin":
        with pytest.raises(CoreMLNotRunnable):
            load_runner(fp32, read_sidecar(fp32))
    else:  # pragma: no cover - macOS runs the same path for real
        x = example_input(SIZE).numpy()
        assert np.abs(load_runner(fp32, read_sidecar(fp32))(x) - _reference(fp32, x)).max() <= 1e-3


def test_a_value_read_by_int8_and_float_ops_lowers_to_executorch(tmp_path, monkeypatch):
    """With float adds, the first conv's output is read by an int8 conv and by float ops through one dequantize
    (LAMNet x4): XNNPACK's partitioner then groups the conv and the add that closes the branch with the branch
    outside, a dependency cycle. One dequantize per reader lowers, and the artifact follows its model."""
    from edgesr.errors import EdgesrError
    from edgesr.export import exporters
    from edgesr.export.latency import LatencyProbe
    from edgesr.models import ModelSpec, build
    from edgesr.quantize import QuantConfig
    from edgesr.quantize.ptq import ptq

    model = build(ModelSpec(str(ROOT / "tests" / "nets" / "plain_net.py") + ":LongSkip", 2)).eval()
    torch.manual_seed(0)
    q = ptq(model, "executorch", [torch.rand(1, 3, 16, 16) for _ in range(2)], QuantConfig(float_adds=True))
    exporters.export(model, "executorch", "int8", (16, 16), tmp_path / "a.pte", quantized=q)
    probe = LatencyProbe(model, "executorch", (16, 16), threads=1)
    assert probe.parity(tmp_path / "a.pte", q)["faithful"]
    monkeypatch.setattr(exporters, "one_dequantize_per_reader", lambda gm: 0)
    with pytest.raises(EdgesrError, match="dependency cycles"):
        exporters.export(model, "executorch", "int8", (16, 16), tmp_path / "b.pte", quantized=q)
    assert not (tmp_path / "b.pte").exists()
