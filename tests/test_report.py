"""The run report from synthetic numbers (no model runs): rows, drops, the JSON schema, Markdown, and the HTML
rendered by a real headless browser (Debian chromium) with every image loaded."""

from __future__ import annotations

import copy
import json
import math
import re
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgesr.report import ReportError, build_report, load_schema, validate
from edgesr.report.build import add_drops, normalize_row
from edgesr.report.crops import pick_window

ROOT = Path(__file__).resolve().parents[1]


def _row(target, precision, psnr, measured_in="runtime", dataset="Set5", **kw):
    base = {"model": "safmn", "scale": 4, "target": target, "precision": precision, "dataset": dataset,
            "runtime": {"pytorch": "PyTorch eager", "executorch": "executorch-xnnpack", "tflite": "litert interpreter",
                        "coreml": "coreml"}[target],
            "images": 5, "psnr_y": psnr, "ssim_y": None if psnr is None else 0.9, "parity": None,
            "latency_ms": None if psnr is None else {"median": 10.0 + psnr % 3, "p90": 12.0 + psnr % 3, "runs": 5,
                                                     "threads": 2, "input_size": [64, 64]},
            "size_bytes": None, "delegation": None, "measured_in": measured_in,
            "command": f"edgesr check {target}_{precision}.x --runs 5", "artifact": None, "notes": []}
    base.update(kw)
    return base


def _crop(seed, shape=(64, 64, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def synthetic_results() -> dict:
    hr = _crop(0)
    rows = [
        _row("pytorch", "fp32", 32.00),
        _row("executorch", "int8", 31.85, "pytorch-simulated", runtime="PyTorch fake-quant"),
        _row("executorch", "fp32", 31.98, size_bytes=1_000_000, per_image_psnr_y={"baby": 33.0, "bird": 30.96},
             parity={"max_abs": 2e-6, "psnr": math.inf}, delegation={"percent": 100.0, "backend": "XnnpackBackend",
                                                                   "not_delegated": {}}),
        _row("executorch", "int8", 31.70, size_bytes=300_000, parity={"max_abs": 0.004, "psnr": 52.1},
             per_image_psnr_y={"baby": 32.80, "bird": 30.60},
             delegation={"percent": 97.5, "not_delegated": {"aten.clamp.default": 1}}),
        _row("tflite", "fp32", 31.99, size_bytes=1_100_000, parity={"max_abs": 1e-6, "psnr": 90.0}),
        _row("tflite", "int8", 31.60, size_bytes=320_000, parity={"max_abs": 0.01, "psnr": 48.0}),
        _row("coreml", "fp32", None, "converted, not run", size_bytes=900_000),
        _row("pytorch", "fp32", 28.5, dataset="Set14"),
        _row("tflite", "int8", 28.1, dataset="Set14"),
    ]
    return {
        "title": "synthetic <report> & co",
        "command": "edgesr run recipes/quickstart.yaml --out runs/quickstart",
        "recipe": {"model": {"name": "safmn", "scale": 4}},
        "environment": {"machine": "test machine", "versions": {"torch": "x"}},
        "datasets": [{"name": "Set5", "images": 5, "source": "data/Set5"}, {"name": "Set14", "images": 14}],
        "rows": rows,
        "sensitivity": {"executorch": [{"layer": f"body.{i}.conv", "drop_db": 0.5 / (i + 1)} for i in range(20)]},
        "crops": [
            {"dataset": "Set5", "image": "baby", "box": [0, 0, 64, 64], "runtime": "executorch", "hr": hr,
             "bicubic": _crop(1), "fp32": {"label": "executorch fp32", "image": _crop(2)},
             "int8": {"label": "executorch int8", "image": _crop(3)}},
            {"dataset": "Set5", "image": "baby", "box": [0, 0, 64, 64], "runtime": "tflite", "hr": hr,
             "bicubic": _crop(1), "fp32": {"label": "tflite fp32", "image": _crop(4)}, "int8": None},
        ],
        "notes": ["coreml: converted, not run on this machine"],
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rep") / "report"
    html = build_report(synthetic_results(), out)
    assert html == out / "report.html"
    return out


# ------------------------------------------------------------------------------------ rows
def test_simulated_int8_drop_is_against_fp32_on_the_same_padded_input():
    """A simulated int8 row that carries ``reference_psnr_y`` (fp32 on the images edge-padded as the int8 graph
    pads them) measures its drop against it, not against fp32 on whole images; the report says which."""
    rows = [normalize_row(_row("pytorch", "fp32", 32.17)),
            normalize_row(_row("executorch", "int8", 32.10, "pytorch-simulated", reference_psnr_y=32.12)),
            normalize_row(_row("tflite", "int8", 32.07, "pytorch-simulated"))]
    add_drops(rows)
    assert rows[1]["drop_db"] == pytest.approx(0.02) and rows[1]["drop_vs"] == "pytorch fp32 (same padded input)"
    assert rows[1]["reference_psnr_y"] == pytest.approx(32.12)
    assert rows[2]["drop_db"] == pytest.approx(0.10) and rows[2]["drop_vs"] == "pytorch fp32"
    assert "reference_psnr_y" not in rows[2]


def test_drops_compare_int8_with_the_same_runtime_and_simulated_with_pytorch():
    rows = [normalize_row(r) for r in synthetic_results()["rows"]]
    add_drops(rows)
    by = {(r["target"], r["precision"], r["measured_in"], r["dataset"]): r for r in rows}
    assert by[("pytorch", "fp32", "runtime", "Set5")]["drop_db"] is None
    sim = by[("executorch", "int8", "pytorch-simulated", "Set5")]
    assert sim["drop_db"] == pytest.approx(0.15) and sim["drop_vs"] == "pytorch fp32"
    et8 = by[("executorch", "int8", "runtime", "Set5")]
    assert et8["drop_db"] == pytest.approx(0.28) and et8["drop_vs"] == "executorch fp32"
    assert by[("executorch", "fp32", "runtime", "Set5")]["drop_db"] == pytest.approx(0.02)
    # no tflite fp32 on Set14: falls back to PyTorch fp32 of the same dataset
    assert by[("tflite", "int8", "runtime", "Set14")]["drop_db"] == pytest.approx(0.4)
    assert by[("tflite", "int8", "runtime", "Set14")]["drop_vs"] == "pytorch fp32"
    core = by[("coreml", "fp32", "converted, not run", "Set5")]
    assert core["psnr_y"] is None and core["latency_ms"] is None and core["drop_db"] is None


def test_drop_carries_its_standard_error_over_the_images_both_rows_measured():
    """Per-image PSNRs give the drop's standard error (paired over the images both rows have); it reaches the
    table and the verdict, and a row with one image, or none listed, has none."""
    fp = {"a": 32.0, "b": 30.0, "c": 34.0, "d": 31.0}
    i8 = {"a": 31.98, "b": 29.94, "c": 33.99, "d": 30.97, "extra": 20.0}
    rows = [normalize_row(_row("executorch", "fp32", 31.75, per_image_psnr_y=fp)),
            normalize_row(_row("executorch", "int8", 31.72, per_image_psnr_y=i8)),
            normalize_row(_row("tflite", "fp32", 31.75, per_image_psnr_y={"a": 32.0})),
            normalize_row(_row("tflite", "int8", 31.7, per_image_psnr_y={"a": 31.9})),
            normalize_row(_row("pytorch", "fp32", 31.75, per_image_psnr_y=fp)),
            normalize_row(_row("coreml", "int8", 31.72, "pytorch-simulated", reference_psnr_y=31.75,
                               reference_per_image_psnr_y=fp, per_image_psnr_y=i8))]
    add_drops(rows)
    d = np.array([0.02, 0.06, 0.01, 0.03])
    assert rows[1]["drop_se_db"] == pytest.approx(d.std(ddof=1) / 2)
    assert rows[5]["drop_se_db"] == pytest.approx(d.std(ddof=1) / 2)  # simulated: against the padded fp32
    assert rows[3]["drop_se_db"] is None and rows[4]["drop_se_db"] is None  # one image; no drop
    from edgesr.report.build import cells, verdicts
    assert cells(rows[1])["drop"] == f"+0.030 ± {d.std(ddof=1) / 2:.3f} vs executorch fp32"
    assert cells(rows[3])["drop"] == "+0.050 vs tflite fp32"
    text = next(v["text"] for v in verdicts(rows, {}) if v["target"] == "executorch")
    assert f"Set5 +0.030 ± {d.std(ddof=1) / 2:.3f} dB" in text


@pytest.mark.parametrize("int8_ms, advice", [(8.0, "ship int8"), (9.8, "keep fp32: int8 is not faster here"),
                                             (12.0, "keep fp32: int8 is not faster here")])
def test_the_verdict_ships_int8_only_where_it_is_measurably_faster(int8_ms, advice):
    """Within the budget, int8 at 1.25x ships; at 1.02x (inside the timing's spread) or slower, fp32 stays."""
    from edgesr.report.build import verdicts

    def timed(precision, ms):
        return normalize_row(_row("tflite", precision, 30.0 if precision == "fp32" else 29.99,
                                  latency_ms={"median": ms, "p90": ms, "runs": 5, "threads": 2, "input_size": [64, 64]}))

    rows = [timed("fp32", 10.0), timed("int8", int8_ms)]
    add_drops(rows)
    v = verdicts(rows, {"tflite": {"budget_db": 0.03, "within_budget": True, "chosen": {"config": {}}}})[0]
    assert v["within_budget"] and v["text"].endswith(advice if advice == "ship int8" else advice + " (under 1.05x)")
    assert v["speedup"] == pytest.approx(10.0 / int8_ms, abs=1e-3)


def test_identical_parity_is_null_with_a_flag_and_not_run_rows_never_carry_numbers():
    r = normalize_row(_row("executorch", "fp32", 30.0, parity={"max_abs": 0.0, "psnr": math.inf}))
    assert r["parity"] == {"max_abs": 0.0, "psnr": None, "identical": True}
    r = normalize_row(_row("coreml", "fp32", 30.0, "converted, not run"))  # numbers given anyway: dropped
    assert r["psnr_y"] is None and r["ssim_y"] is None and r["latency_ms"] is None
    with pytest.raises(ReportError, match="measured_in"):
        normalize_row(_row("tflite", "fp32", 30.0, "emulated"))


# ---------------------------------------------------------------------------------- schema
def test_report_json_validates_against_the_shipped_schema(built):
    rep = json.loads((built / "report.json").read_text())
    assert validate(rep) == []
    assert rep["schema"] == "edgesr-report/1"
    assert load_schema()["$defs"]["row"]["properties"]["measured_in"]["enum"] == \
        ["runtime", "pytorch-simulated", "converted, not run"]
    required = {"model", "scale", "target", "precision", "dataset", "psnr_y", "ssim_y", "drop_db", "parity",
                "latency_ms", "size_bytes", "delegation", "measured_in", "command"}
    for row in rep["rows"]:
        assert required <= set(row)
    assert {p["kind"] for p in rep["plots"]} == {"accuracy_latency", "precision_bars", "sensitivity"}
    for rel in [p["path"] for p in rep["plots"]] + [c["path"] for c in rep["crops"]]:
        with Image.open(built / rel) as im:
            assert im.format == "PNG" and im.size[0] > 200 and im.size[1] > 100
    # strict JSON: no NaN/Infinity tokens that browsers and other languages reject
    assert not re.search(r"\b(NaN|Infinity)\b", (built / "report.json").read_text())


def test_validator_rejects_what_the_schema_forbids(built):
    rep = json.loads((built / "report.json").read_text())

    def broken(edit):
        bad = copy.deepcopy(rep)
        edit(bad)
        return validate(bad)

    assert any("measured_in" in e for e in broken(lambda b: b["rows"][0].update(measured_in="emulator")))
    assert any("missing required key 'psnr_y'" in e for e in broken(lambda b: b["rows"][0].pop("psnr_y")))
    assert any("unexpected key" in e for e in broken(lambda b: b["rows"][0].update(extra=1)))
    assert any("expected number or null" in e for e in broken(lambda b: b["rows"][0].update(psnr_y="32")))
    notrun = next(i for i, r in enumerate(rep["rows"]) if r["measured_in"] == "converted, not run")
    assert any("expected null" in e for e in broken(lambda b: b["rows"][notrun].update(psnr_y=30.0)))
    assert any("maximum" in e for e in broken(lambda b: b["rows"][0].update(ssim_y=1.5)))
    assert any("does not match" in e for e in broken(lambda b: b["plots"][0].update(path="/abs/x.png")))


def test_docs_name_every_row_field():
    doc = (ROOT / "docs" / "report.md").read_text()
    for field in load_schema()["$defs"]["row"]["properties"]:
        assert f"`{field}`" in doc, field


# --------------------------------------------------------------------------- markdown / html
def test_markdown_table_has_one_line_per_row_and_escapes_pipes(built):
    md = (built / "report.md").read_text()
    table = [ln for ln in md.splitlines() if ln.startswith("| safmn")]
    assert len(table) == 9
    header = next(ln for ln in md.splitlines() if ln.startswith("| model"))
    assert header.count(" | ") == table[0].count(" | ")  # no stray column from 'max|Δ|'
    assert "converted, not run" in md and "pytorch-simulated" in md and "`edgesr check" in md
    assert "![Accuracy vs latency per runtime](img/accuracy_latency.png)" in md


def test_html_is_self_contained_and_escaped(built):
    text = (built / "report.html").read_text()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert "synthetic &lt;report&gt; &amp; co" in text
    srcs = re.findall(r'<img src="([^"]+)"', text)
    assert len(srcs) == 5 and all((built / s).is_file() for s in srcs)


def test_rebuild_replaces_the_report_atomically(tmp_path):
    out = tmp_path / "report"
    build_report(synthetic_results(), out)
    (out / "stale.txt").write_text("old")
    res = synthetic_results()
    res["rows"] = res["rows"][:1]
    res["crops"], res["sensitivity"] = [], {}
    build_report(res, out)
    assert not (out / "stale.txt").exists() and len(json.loads((out / "report.json").read_text())["rows"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]  # no temporary folders left


def test_pick_window_finds_the_detailed_region():
    img = np.full((100, 120, 3), 128, np.uint8)
    img[60:90, 70:110] = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    y, x, h, w = pick_window(img, (32, 32))
    assert (h, w) == (32, 32) and 40 <= y <= 68 and 56 <= x <= 88
    assert pick_window(img[:20, :10], (32, 32)) == (0, 0, 20, 10)


# --------------------------------------------------------------------------- real browser
def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and os.environ.get("CI"):  # .ci/run installs it: missing there is a failure
        pytest.fail("chromium is not installed; .ci/run should have installed it")
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install -y --no-install-recommends chromium)")
    return exe


def _browser(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = _chromium()
    return subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--no-first-run", "--allow-file-access-from-files", "--virtual-time-budget=5000",
                           *args], cwd=cwd, capture_output=True, text=True, timeout=120)


PROBE = """<script>
window.addEventListener('load', () => {
  const imgs = [...document.images];
  const rows = document.querySelectorAll('#results tbody tr').length;
  const out = document.createElement('pre');
  out.id = 'probe';
  out.textContent = 'PROBE ' + JSON.stringify({rows, widths: imgs.map(i => i.naturalWidth),
                                               complete: imgs.every(i => i.complete)});
  document.body.appendChild(out);
});
</script>"""


def test_html_renders_table_and_every_image_in_headless_chromium(built, tmp_path):
    """A copy of report.html with a probe script, beside the real one (same relative images): after load,
    the DOM says how many table rows exist and each image's naturalWidth (0 = broken image)."""
    probe = built / "probe.html"
    probe.write_text((built / "report.html").read_text().replace("</body>", PROBE + "</body>"))
    try:
        res = _browser(["--dump-dom", probe.as_uri()], built)
    finally:
        probe.unlink()
    m = re.search(r"PROBE (\{.*?\})", res.stdout)
    assert m, f"no probe in the dumped DOM (rc {res.returncode}): {res.stderr[-500:]}"
    info = json.loads(m.group(1))
    assert info["rows"] == 9
    assert len(info["widths"]) == 5 and all(w > 0 for w in info["widths"]) and info["complete"], info


def test_html_screenshot_shows_the_report(built, tmp_path):
    """The rendered page is not blank: the table's header band and the plots put real pixels on screen."""
    shot = tmp_path / "shot.png"
    res = _browser([f"--screenshot={shot}", "--window-size=1400,2400", (built / "report.html").as_uri()], built)
    assert shot.is_file(), res.stderr[-500:]
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[:2] == (2400, 1400)
    assert img.std() > 20                                    # not a blank page
    header = (np.abs(img - [240, 240, 245]).sum(axis=2) <= 3)  # th background #f0f0f5
    assert header.sum() > 2000
    plot_rows = (img.std(axis=2) > 30).any(axis=1).sum()      # coloured pixels (plots, heat-maps) on many lines
    assert plot_rows > 300
