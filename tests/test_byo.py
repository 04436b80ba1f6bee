"""Networks edgesr's registry does not know, through every verb and a recipe: an RFDN/IMDN-style network
(in-place LeakyReLU, ESA with max_pool2d(7, stride 3) + bilinear back to the input size, pixel shuffle,
0-255 input, BasicSR ``params`` checkpoint) and a plain conv network from a factory with kwargs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgesr.cli import main
from edgesr.models import ModelSpec, build

ROOT = Path(__file__).resolve().parents[1]
RFDN = str(ROOT / "tests" / "nets" / "rfdn_like.py") + ":RFDNLike"
PLAIN = str(ROOT / "tests" / "nets" / "plain_net.py") + ":make_plain_sr"
ITEM = str(ROOT / "tests" / "nets" / "plain_net.py") + ":ItemNet"


@pytest.fixture(scope="module")
def rfdn(tmp_path_factory):
    """The RFDN-style network with seeded weights saved as a BasicSR file (``{'params': state_dict}``)."""
    d = tmp_path_factory.mktemp("rfdn")
    torch.manual_seed(0)
    net = build(ModelSpec(RFDN, 4, input_range=255))
    path = d / "rfdn_x4.pth"
    torch.save({"params": net.net.state_dict()}, path)
    return d, path


@pytest.fixture(scope="module")
def one_photo(tmp_path_factory) -> Path:
    """One small HR photo for `check` (the default data is four whole photos: hundreds of 32x32 windows)."""
    from skimage import data as skdata

    from edgesr.data.io import save_image

    folder = tmp_path_factory.mktemp("photo") / "photo"
    folder.mkdir()
    save_image(folder / "a.png", skdata.astronaut()[96:288, 160:352])  # LR 48x48 at x4: four 32x32 windows
    return folder


def _code(argv: list[str]) -> int:
    """The CLI's exit code, argparse's own usage errors included."""
    try:
        return main(argv)
    except SystemExit as exc:
        return int(exc.code)


def _flags(path: Path) -> list[str]:
    return ["--model", RFDN, "--scale", "4", "--weights", str(path), "--input-range", "255"]


def test_user_network_builds_with_its_weights_range_and_scale(rfdn):
    _, path = rfdn
    model = build(ModelSpec(RFDN, 4, weights=str(path), input_range=255))
    raw = torch.load(path)["params"]
    assert all(torch.equal(model.net.state_dict()[k], v) for k, v in raw.items())
    x = torch.rand(1, 3, 20, 20)
    with torch.no_grad():  # [0, 1] in and out, the network itself sees 0-255
        assert torch.allclose(model(x), model.net(x * 255) / 255, atol=1e-6)
    assert model.edgesr_spec.source_sha256 and model.min_size >= 1 and model.size_multiple == 1


def test_scale_is_checked_by_a_probe_forward(capsys):
    code = main(["eval", "--model", PLAIN, "--scale", "3", "--model-kwargs", '{"scale": 2}', "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "upscales x2, not x3" in err and "Traceback" not in err


def test_bad_specs_are_one_line_errors(capsys, tmp_path):
    for argv, words in [
        (["eval", "--model", "tests/nets/nope.py:Net", "--scale", "2"], "file not found"),
        (["eval", "--model", str(ROOT / "tests/nets/plain_net.py") + ":Nope", "--scale", "2"], "defines no class"),
        (["eval", "--model", PLAIN, "--model-kwargs", "{bad", "--scale", "2"], "not valid JSON"),
        (["eval", "--model", PLAIN, "--model-kwargs", '{"wrong": 1}', "--scale", "2"], "unexpected keyword"),
    ]:
        assert _code(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1, err


def test_kwargs_reach_the_factory(tmp_path):
    m = build(ModelSpec(PLAIN, 2, kwargs={"channels": 5, "depth": 2}))
    assert m[0].out_channels == 5 and len([c for c in m if isinstance(c, torch.nn.Conv2d)]) == 3


def test_export_hazard_names_module_line_and_fix(tmp_path):
    from edgesr.errors import EdgesrError
    from edgesr.export import export

    model = build(ModelSpec(ITEM, 2))
    with pytest.raises(EdgesrError) as info:
        export(model, "onnx", "fp32", (16, 16), tmp_path / "item.onnx")
    text = str(info.value)
    assert "plain_net.py" in text and ".item()" in text and "keep it a tensor op" in text
    assert not (tmp_path / "item.onnx").exists()


def test_every_verb_takes_the_user_network(rfdn, one_photo, capsys):
    d, path = rfdn
    flags = _flags(path)
    # eval: the model and its weights, 0-255 handled, sample photos
    assert main(["eval", *flags, "--quiet", "--json", str(d / "eval.json")]) == 0
    res = json.loads((d / "eval.json").read_text())
    assert np.isfinite(res["skimage-samples"]["psnr_y"])
    # reparam: deploy form saved with the spec; reloads through eval
    assert main(["reparam", *flags, "--out", str(d / "deployed.pt")]) == 0
    assert main(["eval", "--model", RFDN, "--scale", "4", "--weights", str(d / "deployed.pt"),
                 "--input-range", "255", "--quiet", "--json", str(d / "eval_dep.json")]) == 0
    dep = json.loads((d / "eval_dep.json").read_text())["skimage-samples"]["psnr_y"]
    assert abs(dep - res["skimage-samples"]["psnr_y"]) < 1e-3
    # fp32 export: the artifact keeps the network's 0-255 convention; check rebuilds the model from the sidecar
    assert main(["export", *flags, "--target", "onnx", "--precision", "fp32", "--input-size", "40x40",
                 "--out", str(d / "rfdn.onnx")]) == 0
    side = json.loads((d / "rfdn.onnx.json").read_text())
    assert side["input_range"] == 255 and side["spec"]["model"] == RFDN and side["model"] == "RFDNLike"
    assert main(["check", str(d / "rfdn.onnx"), "--data", str(one_photo), "--runs", "2", "--no-memory",
                 "--no-op-profile", "--quiet", "--json", str(d / "check.json")]) == 0
    rep = json.loads((d / "check.json").read_text())
    assert rep["parity"]["max_abs_diff"] <= 1e-4
    capsys.readouterr()


@pytest.mark.parametrize("target, suffix", [("executorch", "pte"), ("tflite", "tflite")])
def test_user_network_int8_runs_in_its_runtime(rfdn, one_photo, target, suffix, capsys):
    d, path = rfdn
    flags = _flags(path)
    q = d / f"rfdn_{target}.pt"
    assert main(["quantize", *flags, "--target", target, "--calib-size", "2", "--calib-patch", "32",
                 "--quiet", "--out", str(q)]) == 0
    out = d / f"rfdn_int8.{suffix}"
    assert main(["export", *flags, "--quantized", str(q), "--target", target, "--precision", "int8",
                 "--input-size", "32x32", "--out", str(out)]) == 0
    assert main(["check", str(out), "--data", str(one_photo), "--runs", "2", "--no-memory", "--no-op-profile",
                 "--quiet", "--json", str(d / f"check_{target}.json")]) == 0
    rep = json.loads((d / f"check_{target}.json").read_text())
    assert rep["status"] == "ran" and rep["parity"]["psnr_vs_torch_db"] > 35  # runtime vs its fake-quant model
    capsys.readouterr()


def test_weights_alone_find_the_registry_architecture(tmp_path, one_photo, capsys):
    from edgesr.models import create

    torch.manual_seed(0)
    path = tmp_path / "net.pth"
    torch.save(create("scnet_t", 3).state_dict(), path)
    assert main(["eval", "--weights", str(path), "--quiet"]) == 2  # x2 and x3 have the same tensors
    assert "scnet_t x2, scnet_t x3" in capsys.readouterr().err
    assert main(["eval", "--weights", str(path), "--scale", "3", "--data", str(one_photo), "--quiet"]) == 0
    assert "scnet_t x3" in capsys.readouterr().out


def test_run_recipe_with_a_user_network(tmp_path, one_photo):
    """`edgesr run`: the factory network with kwargs, PTQ for ExecuTorch, fp32 + int8 artifacts, report."""
    from edgesr.run import load_run_recipe, run

    recipe = tmp_path / "byo.yaml"
    recipe.write_text(f"""
model: {{name: "{PLAIN}", kwargs: {{channels: 8, depth: 2}}, scale: 2}}
data: {{eval: ["{one_photo}"]}}
quantize: {{targets: [executorch], method: auto, budget_db: 0.5, max_trials: 2, finalists: 1, val_count: 1, config: {{calib_size: 2, calib_patch: 32}}}}
export: {{targets: {{executorch: [fp32, int8], tflite: [int16x8]}}, input_size: [32, 32]}}
check: {{runs: 2, threads: 1, compare_images: 1, crops: 1}}
""")
    html = run(load_run_recipe(recipe), tmp_path / "out", progress=False)
    data = json.loads((Path(html).parent / "report.json").read_text())
    rows = [r for r in data["rows"] if r.get("runtime") == "executorch" or r.get("target") == "executorch"]
    assert rows and all(r.get("model") == "make_plain_sr" for r in data["rows"])
    # method auto: the search's trials, the verdict per runtime, and its plot
    assert data["search"]["executorch"]["trials"] and data["search"]["executorch"]["budget_db"] == 0.5
    assert data["search"]["executorch"]["validation_images"] == 1  # quantize.val_count
    timed = data["search"]["executorch"]["chosen"]["latency"]  # the finalist ran in ExecuTorch at 32x32
    assert timed["runtime"] == "executorch" and timed["input_size"] == [32, 32] and timed["int8_ms"] > 0
    w16 = [r for r in data["rows"] if r["precision"] == "int16x8"]
    assert w16 and all(r["target"] == "tflite" and r["measured_in"] == "runtime" and r["psnr_y"] is not None
                       for r in w16)  # calibrated on data.calib by the export stage, run in LiteRT
    (v,) = data["verdict"]
    assert v["target"] == "executorch" and v["speedup"] is not None and "budget" in v["text"]
    assert "search" in {p["kind"] for p in data["plots"]}
    assert "## Verdict" in (Path(html).parent / "report.md").read_text()
