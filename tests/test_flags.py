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


# Flags whose effect is tested through the Python API (QuantConfig, train recipes, reparam options) but which
# no test passes on the command line yet. The list may only shrink: a new flag without a test fails below.
NOT_YET_PASSED_BY_A_TEST = {
    ("device-script", "--device-out"),
    ("eval", "--device"),
    ("eval", "--param-key"),
    ("export", "--layout"),
    ("export", "--param-key"),
    ("quantize", "--analyze"),
    ("quantize", "--analyze-json"),
    ("quantize", "--batch-size"),
    ("quantize", "--float-adds"),
    ("quantize", "--iterations"),
    ("quantize", "--kd-weight"),
    ("quantize", "--keep-float"),
    ("quantize", "--lr"),
    ("quantize", "--no-clamp"),
    ("quantize", "--no-island-exits"),
    ("quantize", "--outlier-ratio"),
    ("quantize", "--param-key"),
    ("quantize", "--patch-size"),
    ("quantize", "--seed"),
    ("quantize", "--teacher"),
    ("reparam", "--depth-multiplier"),
    ("reparam", "--expansion"),
    ("reparam", "--param-key"),
    ("reparam", "--shift"),
    ("run", "--verbose"),
    ("train", "--iterations"),
    ("train", "--resume"),
}


@pytest.mark.parametrize("verb, flag", _flags())
def test_every_flag_is_exercised_by_a_test(verb, flag):
    """A flag no test passes could be parsed and ignored (as --lr-convention was): every new flag needs one."""
    if (verb, flag) in NOT_YET_PASSED_BY_A_TEST:
        pytest.skip("listed in NOT_YET_PASSED_BY_A_TEST")
    texts = [p.read_text() for p in (ROOT / "tests").glob("test_*.py")]
    pattern = re.compile(rf"['\"]{re.escape(flag)}['\"=\s]")
    assert any(pattern.search(t) for t in texts), f"edgesr {verb} {flag}: no test passes it"
