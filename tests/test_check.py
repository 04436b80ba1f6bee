"""``edgesr check``: fixed-size windows (tiling with overlap, padding), and each runtime end to end on a tiny
folder, through the CLI and the Python API."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from edgesr.cli import main
from edgesr.data.io import save_image
from edgesr.export.check import check_artifact, plan_axis, run_tiled
from test_export import artifact  # session-cached artifacts (lowering is the slow part)


@pytest.mark.parametrize("length, tile, overlap", [(64, 64, 16), (50, 64, 16), (200, 64, 16), (129, 64, 32),
                                                   (65, 64, 0)])
def test_plan_axis_covers_every_pixel_once(length, tile, overlap):
    plan = plan_axis(length, tile, overlap)
    kept = np.zeros(length, int)
    for start, a, b in plan:
        assert start <= a < b <= start + tile and start + tile <= max(length, tile)
        kept[a:b] += 1
    assert (kept == 1).all()
    if len(plan) > 1:  # interior boundaries leave about overlap/2 of context on each side
        for (s0, _, b0), (s1, a1, _) in zip(plan, plan[1:]):
            assert b0 == a1 and a1 - s1 >= overlap // 2 - 1 and s0 + tile - b0 >= overlap // 2 - 1


def test_run_tiled_is_exact_for_local_models_and_pads_small_images():
    """A pixel-local 'model' (nearest x2) must come out identical however the image is windowed."""
    up = lambda x: x.repeat(2, axis=2).repeat(2, axis=3)  # noqa: E731
    rng = np.random.default_rng(0)
    for h, w in ((40, 30), (100, 70), (64, 64)):
        lr = rng.random((1, 3, h, w), dtype=np.float32)
        sr, sr2, diff = run_tiled(up, lr, 2, (32, 48), 8, also=up)
        assert sr.shape == (1, 3, 2 * h, 2 * w) and np.array_equal(sr, up(lr)) and diff == 0.0


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory) -> Path:
    """Two small HR photos (crops of scikit-image samples): one smaller than the 64x64 window, one larger."""
    from skimage import data as skdata

    folder = tmp_path_factory.mktemp("tiny") / "tiny"
    folder.mkdir()
    save_image(folder / "a.png", skdata.astronaut()[100:196, 180:260])   # LR 24x20: padded
    save_image(folder / "b.png", skdata.chelsea()[40:352, 60:372])      # LR 78x78: 4 windows
    return folder


def test_check_cli_end_to_end_onnx(tiny_folder, tmp_path, capsys):
    path = artifact("scnet_t", "onnx")
    out = tmp_path / "report.json"
    code = main(["check", str(path), "--data", str(tiny_folder), "--json", str(out), "--threads", "1",
                 "--runs", "3", "--quiet"])
    text = capsys.readouterr().out
    assert code == 0, text
    r = json.loads(out.read_text())
    assert r["schema"] == "edgesr-check/1" and r["status"] == "ran"
    q = r["quality"]["tiny"]
    assert q["images"] == 2 and 10 < q["psnr_y"] < 60 and 0 < q["ssim_y"] <= 1
    assert abs(q["runtime_minus_torch_db"]) < 1e-3  # fp32 onnxruntime: the same pictures as PyTorch, window by window
    assert 0 <= q["runtime_minus_torch_sd_db"] < 1e-3  # and per image, not only on average
    assert r["parity"]["max_abs_diff"] <= 1e-4 and r["parity"]["windows"] == 5
    assert r["parity"]["psnr_vs_torch_db"] > 60
    f64 = r["parity"]["fp64_reference"]  # the fp32 rounding floor: both sides are near float64, neither is exact
    assert 0 < f64["torch_fp32_max_abs"] < 1e-4 and 0 < f64["runtime_max_abs"] < 1e-4, f64
    assert f64["window"] == [64, 64] and "first_window" not in r["parity"]
    # SCNet is local (receptive field < overlap/2 + edge): tiled == whole up to float rounding
    assert r["tiling"]["max_abs_diff_tiled_vs_whole"] <= 1e-5
    lat = r["latency_ms"]
    assert lat["runs"] == 3 and 0 < lat["median"] <= lat["p90"] * 1.0001 and lat["input_size"] == [64, 64]
    assert r["memory"]["peak_rss_mb"] > r["memory"]["baseline_rss_mb"] > 0
    assert r["op_profile"]["ops"][0]["op"] == "Conv"
    assert r["graph"]["ops"]["Conv"] == 39 + 18 and "Slice" not in r["graph"]["ops"]  # shifts are depthwise convs
    assert r["artifact"]["file_size_bytes"] > 100_000
    assert "PSNR-Y" in text and "parity vs PyTorch" in text and "vs float64 PyTorch" in text


def test_check_executorch_reports_etdump_op_profile(tiny_folder):
    r = check_artifact(artifact("safmn", "executorch"), [tiny_folder], threads=1, runs=2, memory=False)
    assert r["parity"]["max_abs_diff"] <= 1e-4
    prof = r["op_profile"]
    assert prof["source"].startswith("ETDump") and prof["ops"] and prof["ops_ms_total"] > 0
    assert any("Convolution" in o["op"] for o in prof["ops"])
    assert r["delegation"]["percent_delegated"] == 100.0
    # SAFMN's pooling grid moves with the window and padding changes the pooled values: not exact
    assert math.isfinite(r["tiling"]["psnr_tiled_vs_whole_db"])


def test_check_tflite_runs(tiny_folder):
    r = check_artifact(artifact("scnet_t", "tflite"), [tiny_folder], threads=1, runs=2, memory=False)
    assert r["status"] == "ran" and r["parity"]["max_abs_diff"] <= 1e-4
    assert r["graph"]["kind"] == "tflite" and r["graph"]["total_ops"] > 0
    assert any("op profiler" in n for n in r["notes"])


def test_check_coreml_on_linux_is_converted_not_run(tiny_folder):
    import sys

    r = check_artifact(artifact("scnet_t", "coreml"), [tiny_folder], runs=1, memory=False)
    if sys.platform == "darwin":  # pragma: no cover
        assert r["status"] == "ran"
        return
    assert r["status"] == "converted, not run"
    assert r["quality"] is None and r["latency_ms"] is None and r["parity"] is None
    assert r["graph"]["kind"] == "mlProgram" and r["graph"]["ops"]["conv"] == 39 + 18


def test_check_cli_bad_inputs(tmp_path, capsys):
    assert main(["check", str(tmp_path / "missing.pte")]) == 2
    assert "artifact not found" in capsys.readouterr().err
    lone = tmp_path / "lone.onnx"
    lone.write_bytes(b"x")
    assert main(["check", str(lone)]) == 2
    assert "no sidecar" in capsys.readouterr().err
    assert main(["check", str(artifact("scnet_t", "onnx")), "--data", str(tmp_path / "nope")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["check", str(artifact("scnet_t", "onnx")), "--overlap", "64"]) == 2
    assert "overlap" in capsys.readouterr().err


def test_machine_names_the_int8_dot_product_instructions():
    """int8 speed-ups depend on VNNI / Arm dot product: the host line every check report carries says which."""
    from edgesr.host import machine as _machine

    epyc = "model name\t: AMD EPYC\nflags\t\t: fpu avx2 fma avx512f avx512_vnni\n" * 2
    old = "model name\t: Intel Xeon\nflags\t\t: fpu avx2 fma\n"
    arm = "processor\t: 0\nFeatures\t: fp asimd asimddp i8mm\n"
    assert ", AMD EPYC, " in _machine(epyc) and _machine(epyc).endswith("int8 dot product: avx512_vnni")
    assert _machine(old).endswith("int8 dot product: none") and "Intel Xeon" in _machine(old)
    assert _machine(arm).endswith("int8 dot product: asimddp/i8mm")
