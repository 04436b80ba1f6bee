"""Every CLI flag changes what it says it changes: eval's flags measured one by one on a tiny network, and
every flag of every verb exercised by some test."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import pytest
import torch

from edgesr.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
PLAIN = str(ROOT / "tests" / "nets" / "plain_net.py") + ":make_plain_sr"


def _eval(tmp_path: Path, *extra: str, name: str = "r") -> dict:
    out = tmp_path / f"{name}.json"
    assert main(["eval", "--model", "scnet_t", "--scale", "2", "--weights", str(_weights(tmp_path)), "--quiet",
                 "--json", str(out), *extra]) == 0
    return json.loads(out.read_text())


def _weights(tmp_path: Path) -> Path:
    from edgesr.models import create

    path = tmp_path / "w.pth"
    if not path.exists():
        torch.manual_seed(0)
        torch.save(create("scnet_t", 2, num_block=2).state_dict(), path)
    return path


@pytest.fixture()
def hr_folder(tmp_path: Path) -> Path:
    """Two HR images whose sides are not multiples of 12 (so the conventions' mod-crops differ)."""
    from edgesr.data.io import save_image
    import numpy as np

    rng = np.random.default_rng(0)
    d = tmp_path / "hr"
    for i, (h, w) in enumerate(((50, 62), (46, 58))):
        img = (rng.random((h, w, 3)) * 255).astype("uint8")
        img = np.cumsum(img.astype(np.int32), axis=1) % 256  # some structure, not only noise
        save_image(d / f"img{i}.png", img.astype("uint8"))
    return d


def test_lr_convention_changes_the_lr_and_the_number(tmp_path, hr_folder, capsys):
    kw = dict(num_block=2)
    a = _eval(tmp_path, "--data", str(hr_folder), "--model-kwargs", json.dumps(kw), name="m")
    b = _eval(tmp_path, "--data", str(hr_folder), "--model-kwargs", json.dumps(kw), "--lr-convention", "basicsr",
              name="b")
    assert a["hr"]["psnr_y"] != b["hr"]["psnr_y"]
    assert "LR: basicsr bicubic" in capsys.readouterr().out


def test_modcrop_changes_the_evaluated_pixels(tmp_path, hr_folder):
    kw = json.dumps(dict(num_block=2))
    a = _eval(tmp_path, "--data", str(hr_folder), "--model-kwargs", kw, name="a")
    b = _eval(tmp_path, "--data", str(hr_folder), "--model-kwargs", kw, "--modcrop", "8", name="b")
    assert a["hr"]["psnr_y"] != b["hr"]["psnr_y"]


def test_tile_and_overlap_change_only_what_tiling_changes(tmp_path, hr_folder):
    kw = json.dumps(dict(num_block=2))
    whole = _eval(tmp_path, "--data", str(hr_folder), "--model-kwargs", kw, name="w")
    exact = _eval(tmp_path, "--data", str(hr_folder), "--model-kwargs", kw, "--tile", "12", "--overlap", "20",
                  name="e")
    rough = _eval(tmp_path, "--data", str(hr_folder), "--model-kwargs", kw, "--tile", "12", "--overlap", "0",
                  name="x")
    assert abs(whole["hr"]["psnr_y"] - exact["hr"]["psnr_y"]) < 1e-6  # SCNet is exact with overlap >= 18
    assert rough["hr"]["psnr_y"] != whole["hr"]["psnr_y"]


def test_input_range_changes_what_the_network_sees(tmp_path):
    from edgesr.models import ModelSpec, build

    torch.manual_seed(0)
    one = build(ModelSpec(PLAIN, 2))
    wide = build(ModelSpec(PLAIN, 2, input_range=255))
    wide.net.load_state_dict(one.state_dict())
    x = torch.rand(1, 3, 8, 8)
    with torch.no_grad():
        assert torch.allclose(wide(x), one(x * 255) / 255, atol=1e-5)
        assert not torch.allclose(wide(x), one(x), atol=1e-3)


# ------------------------------------------------------------------- model flags on every verb
KW = json.dumps({"num_block": 1, "num_feat": 16})
SMALL = ["--model", "scnet_t", "--scale", "2", "--model-kwargs", KW]


@pytest.fixture(scope="module")
def two_entry_file(tmp_path_factory) -> Path:
    """A BasicSR file whose ``params`` and ``params_ema`` differ, so --param-key decides what loads."""
    from edgesr.models import create

    d = tmp_path_factory.mktemp("pk")
    torch.manual_seed(0)
    a = create("scnet_t", 2, num_block=1, num_feat=16).state_dict()
    torch.manual_seed(1)
    b = create("scnet_t", 2, num_block=1, num_feat=16).state_dict()
    path = d / "two.pth"
    torch.save({"params": a, "params_ema": b}, path)
    return path


def test_param_key_picks_the_entry_on_eval(tmp_path, two_entry_file):
    out = {}
    for key in (None, "params"):
        j = tmp_path / f"{key}.json"
        extra = ["--param-key", key] if key else []
        assert main(["eval", *SMALL, "--weights", str(two_entry_file), *extra, "--quiet", "--json", str(j)]) == 0
        out[key] = json.loads(j.read_text())["skimage-samples"]["psnr_y"]
    assert out[None] != out["params"]


def test_param_key_picks_the_entry_on_reparam_and_quantize(tmp_path, two_entry_file):
    params = torch.load(two_entry_file)["params"]
    assert main(["reparam", *SMALL, "--weights", str(two_entry_file), "--param-key", "params", "--deploy",
                 "--shift", "slice", "--out", str(tmp_path / "d.pt")]) == 0
    dep = torch.load(tmp_path / "d.pt", weights_only=True)["state_dict"]
    assert torch.equal(dep["conv_first.weight"], params["conv_first.weight"])
    assert main(["quantize", *SMALL, "--weights", str(two_entry_file), "--param-key", "params", "--target",
                 "executorch", "--calib-size", "2", "--calib-patch", "32", "--quiet", "--out", str(tmp_path / "q.pt")]) == 0
    q = torch.load(tmp_path / "q.pt", weights_only=True)
    assert torch.equal(q["fp32_state_dict"]["conv_first.weight"], params["conv_first.weight"])


def test_param_key_reaches_the_export_reference(tmp_path, two_entry_file):
    """check rebuilds the reference with the recorded --param-key: parity holds only if both used 'params'."""
    out = tmp_path / "m.onnx"
    assert main(["export", *SMALL, "--weights", str(two_entry_file), "--param-key", "params", "--target", "onnx",
                 "--precision", "fp32", "--input-size", "16x16", "--out", str(out)]) == 0
    assert json.loads(Path(str(out) + ".json").read_text())["param_key"] == "params"
    assert main(["check", str(out), "--runs", "1", "--no-memory", "--no-op-profile", "--quiet",
                 "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["parity"]["max_abs_diff"] <= 1e-4


def test_device_flag_reaches_torch(tmp_path, capsys):
    assert main(["eval", *SMALL, "--device", "cpu", "--quiet", "--json", str(tmp_path / "r.json")]) == 0
    assert main(["eval", *SMALL, "--device", "nosuchdevice", "--quiet"]) != 0
    assert "nosuchdevice" in capsys.readouterr().err


# ----------------------------------------------------------------------------- export / device
@pytest.fixture(scope="module")
def nhwc_tflite(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("nhwc") / "m.tflite"
    assert main(["export", *SMALL, "--target", "tflite", "--precision", "fp32", "--input-size", "16x16",
                 "--layout", "nhwc", "--out", str(out)]) == 0
    return out


def test_layout_nhwc_is_what_the_artifact_takes(nhwc_tflite, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    assert json.loads(Path(str(nhwc_tflite) + ".json").read_text())["layout"] == "nhwc"
    shape = list(Interpreter(model_path=str(nhwc_tflite)).get_input_details()[0]["shape"])
    assert shape == [1, 16, 16, 3]
    assert main(["check", str(nhwc_tflite), "--runs", "1", "--no-memory", "--no-op-profile", "--quiet",
                 "--json", str(tmp_path / "c.json")]) == 0
    assert json.loads((tmp_path / "c.json").read_text())["parity"]["max_abs_diff"] <= 1e-4


def test_device_out_is_the_folder_the_script_writes(nhwc_tflite, capsys):
    assert main(["device-script", str(nhwc_tflite), "--device-out", "my-results"]) == 0
    text = capsys.readouterr().out
    assert "my-results" in text and "device-out" not in text


# ------------------------------------------------------------------------------------ quantize
def _quant_nodes(path: Path) -> int:
    from edgesr.quantize import load

    q = load(path)
    return sum("quantize_per" in str(n.target) for n in q.graph.graph.nodes if n.op == "call_function")


def test_ptq_option_flags_are_applied(tmp_path):
    base = ["quantize", *SMALL, "--target", "tflite", "--calib-size", "2", "--calib-patch", "32", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "default.pt")]) == 0
    assert main([*base, "--float-adds", "--float-muls", "--keep-float", "first", "last", "--no-clamp", "--no-island-exits",
                 "--outlier-ratio", "4", "--out", str(tmp_path / "opts.pt")]) == 0
    cfg = torch.load(tmp_path / "opts.pt", weights_only=True)["config"]
    assert cfg["float_adds"] and cfg["float_muls"] and cfg["keep_float"] == ["first", "last"] and not cfg["clamp_output"]
    assert not cfg["island_exits"] and cfg["outlier_ratio"] == 4.0
    default = torch.load(tmp_path / "default.pt", weights_only=True)["config"]
    assert default["clamp_output"] and not default["float_adds"] and default["keep_float"] == []
    assert _quant_nodes(tmp_path / "opts.pt") < _quant_nodes(tmp_path / "default.pt")  # fewer ops in int8


def test_analyze_prints_and_writes_the_sensitivity_table(tmp_path, capsys):
    out = tmp_path / "sens.json"
    assert main(["quantize", *SMALL, "--target", "executorch", "--calib-size", "2", "--calib-patch", "32",
                 "--quiet", "--analyze", "--analyze-json", str(out)]) == 0
    rows = json.loads(out.read_text())
    assert rows and all("layer" in r for r in rows)
    assert "layer" in capsys.readouterr().out


def test_qat_flags_are_the_applied_schedule(tmp_path, hr_folder):
    from edgesr.models import create

    teacher = tmp_path / "teacher.pth"
    torch.manual_seed(2)
    torch.save(create("scnet_t", 2).state_dict(), teacher)
    out = tmp_path / "qat.pt"
    assert main(["quantize", *SMALL, "--target", "executorch", "--mode", "qat", "--data", str(hr_folder),
                 "--iterations", "3", "--batch-size", "2", "--patch-size", "16", "--lr", "1e-4", "--kd-weight", "0.5",
                 "--seed", "3", "--teacher", f"scnet_t:{teacher}", "--calib-size", "2", "--quiet",
                 "--out", str(out)]) == 0
    ckpt = torch.load(out, weights_only=True)
    cfg, info = ckpt["config"], ckpt["info"]
    assert (cfg["iterations"], cfg["batch_size"], cfg["patch_size"], cfg["lr"], cfg["kd_weight"], cfg["seed"]) == \
        (3, 2, 16, 1e-4, 0.5, 3)
    assert info["iterations"] == 3 and info["teacher"] == "scnet_t"


# ------------------------------------------------------------------------------------- reparam
def test_reparam_option_flags_shape_the_structure(tmp_path):
    def record(*flags: str) -> dict:
        out = tmp_path / "r.pt"
        assert main(["reparam", "--model", "safmn", "--scale", "2", "--model-kwargs",
                     json.dumps({"dim": 8, "n_blocks": 1}), *flags, "--out", str(out)]) == 0
        return torch.load(out, weights_only=True)

    small = record("--expand", "sesr", "--expansion", "16")
    big = record("--expand", "sesr")
    assert small["reparam"]["expansion"] == 16
    assert sum(v.numel() for v in small["state_dict"].values()) < sum(v.numel() for v in big["state_dict"].values())
    assert record("--expand", "ecb", "--depth-multiplier", "3")["reparam"]["depth_multiplier"] == 3
    out = tmp_path / "s.pt"
    assert main(["reparam", *SMALL, "--deploy", "--shift", "dense", "--out", str(out)]) == 0
    ck = torch.load(out, weights_only=True)
    assert ck["reparam"]["shift"] == "dense" and ck["state_dict"]["body.0.conv2.weight"].shape[-1] == 3


# ------------------------------------------------------------------------------------ train, run
def test_train_iterations_and_resume(tmp_path, hr_folder):
    import yaml

    recipe = tmp_path / "t.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"name": "scnet_t", "scale": 2, "overrides": {"num_block": 1, "num_feat": 16}},
        "data": {"train": [str(hr_folder)], "patch_size": 16, "batch_size": 2, "workers": 0},
        "iterations": 50, "optim": {"lr": 1e-3}, "checkpoint_every": 1, "log_every": 1, "ema": 0}))
    out = tmp_path / "run"
    assert main(["train", str(recipe), "--out", str(out), "--iterations", "2", "--quiet"]) == 0

    def steps() -> list[int]:
        lines = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
        return [x["step"] for x in lines if "loss" in x]

    assert steps() == [1, 2]
    assert main(["train", str(recipe), "--out", str(out), "--iterations", "4", "--quiet"]) == 2  # needs --resume
    assert main(["train", str(recipe), "--out", str(out), "--iterations", "4", "--resume", "--quiet"]) == 0
    assert steps() == [1, 2, 3, 4]


def test_run_verbose_sends_library_output_to_the_console(tmp_path):
    import yaml

    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"model": {"name": "scnet_t", "scale": 2,
                                                "kwargs": {"num_block": 1, "num_feat": 16}},
                                      "check": {"runs": 1, "threads": 1, "crops": 0}}))
    assert main(["run", str(recipe), "--out", str(tmp_path / "quiet"), "--quiet"]) == 0
    assert main(["run", str(recipe), "--out", str(tmp_path / "loud"), "--quiet", "--verbose"]) == 0
    assert list((tmp_path / "quiet" / "logs").glob("*.log"))
    assert not list((tmp_path / "loud" / "logs").glob("*.log"))


def _flags() -> list[tuple[str, str]]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = []
    for verb, p in sub.choices.items():
        for action in p._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    out.append((verb, opt))
    return out


@pytest.mark.parametrize("verb, flag", _flags())
def test_every_flag_is_exercised_by_a_test(verb, flag):
    """A flag no test passes could be parsed and ignored (as --lr-convention was): every new flag needs one."""
    texts = [p.read_text() for p in (ROOT / "tests").glob("test_*.py")]
    pattern = re.compile(rf"['\"]{re.escape(flag)}['\"=\s]")
    assert any(pattern.search(t) for t in texts), f"edgesr {verb} {flag}: no test passes it"
