"""The CLI promise: --help everywhere, JSON as documented, every bad input one line + exit 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from edgesr.cli import main


def _folder(root, n=2, size=(40, 32)):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / f"im{i}.png")
    return root


def _one_error_line(capsys, code, expect, rc=2):
    assert code == rc
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and expect in err[0], err[0]


@pytest.mark.parametrize("argv", [["--help"], ["eval", "--help"], ["models", "--help"]])
def test_help(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 0
    assert "usage: edgesr" in capsys.readouterr().out


def test_eval_table_and_json(tmp_path, capsys):
    data = _folder(tmp_path / "tiny")
    out = tmp_path / "r.json"
    assert main(["eval", "--model", "scnet_t", "--scale", "2", "--data", str(data), "--json", str(out),
                 "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "tiny" in table and "PSNR-Y" in table
    result = json.loads(out.read_text())
    assert set(result) == {"tiny"}
    assert result["tiny"]["images"] == 2
    assert isinstance(result["tiny"]["psnr_y"], float) and 0 < result["tiny"]["ssim_y"] <= 1
    assert set(result["tiny"]["per_image"]) == {"im0", "im1"}


def test_eval_tiled_runs(tmp_path, capsys):
    data = _folder(tmp_path / "tiny", n=1, size=(64, 48))
    assert main(["eval", "--model", "scnet_t", "--scale", "2", "--data", str(data), "--tile", "16",
                 "--overlap", "4", "--quiet"]) == 0
    assert "tiles 16/4" in capsys.readouterr().out


def test_bad_inputs_one_line_exit_2(tmp_path, capsys):
    good = str(_folder(tmp_path / "good"))
    (tmp_path / "empty").mkdir()
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    base = ["eval", "--scale", "2", "--quiet"]
    cases = [
        (base + ["--model", "scnet_t", "--data", str(tmp_path / "missing")], "not found"),
        (base + ["--model", "scnet_t", "--data", str(tmp_path / "empty")], "no images"),
        (base + ["--model", "scnet_t", "--data", str(corrupt)], "x.png"),
        (base + ["--model", "nope", "--data", good], "unknown model 'nope'"),
        (["eval", "--model", "scnet_t", "--scale", "5", "--data", good], "invalid choice: 5"),
        (base + ["--model", "scnet_t", "--data", good, "--weights", str(tmp_path / "w.pth")], "not found"),
        (base + ["--model", "scnet_t", "--data", good, "--json", str(tmp_path / "no" / "r.json")],
         "does not exist"),
        (base + ["--model", "scnet_t", "--data", good, good], "share a name"),
        (base + ["--model", "scnet_t", "--data", good, "--modcrop", "3"], "multiple of the scale"),
        (base + ["--model", "scnet_t", "--data", good, "--tile", "0"], "positive integer"),
    ]
    for argv, expect in cases:
        _one_error_line(capsys, _call(argv), expect)


def test_wrong_scale_weights_one_line(tmp_path, capsys, eimn_weights):
    data = _folder(tmp_path / "d", n=1)
    code = _call(["eval", "--model", "eimn_a", "--scale", "4", "--weights", str(eimn_weights / "EIMN_A_x2.pth"),
                  "--data", str(data), "--quiet"])
    _one_error_line(capsys, code, "does not fit eimn_a x4")


def test_too_small_image_one_line(tmp_path, capsys):
    data = _folder(tmp_path / "d", n=1, size=(24, 24))
    code = _call(["eval", "--model", "safmn", "--scale", "4", "--data", str(data), "--quiet"])
    _one_error_line(capsys, code, "at least 8×8")


def test_real_entry_point_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgesr", "eval", "--model", "nope", "--scale", "2",
                           "--data", str(tmp_path)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "Traceback" not in proc.stderr


def _call(argv):
    try:
        return main(argv)
    except SystemExit as e:  # argparse usage errors
        return e.code
