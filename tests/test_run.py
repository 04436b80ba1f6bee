"""``edgesr run``: recipes, the stage cache, the bad-input suite (one line, non-zero exit, nothing half-written),
and one real run of a tiny recipe that is killed mid-stage with real signals and resumed from the cache."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from edgesr.cli import main
from edgesr.run.cache import MARKER, clean_stale, load_finished, run_cached, run_lock, stage_dir, stage_key
from edgesr.run.recipe import load_run_recipe, quant_config

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))
RUN_RECIPES = [p for p in RECIPES if not p.name.startswith(("train_", "distill_"))]


def cli(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse usage errors
        return int(exc.code)


def one_error_line(capsys, code: int, expect: str, rc: int = 2) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert code == rc, err
    assert len(err) == 1, err
    assert "Traceback" not in err[0] and expect in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> Path:
    """Two small real photos (crops of scikit-image samples)."""
    from skimage import data as skdata

    folder = tmp_path_factory.mktemp("data") / "tiny"
    folder.mkdir()
    Image.fromarray(skdata.astronaut()[100:196, 180:276]).save(folder / "a.png")
    Image.fromarray(skdata.chelsea()[40:136, 60:180]).save(folder / "b.png")
    return folder


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


FP32_RECIPE = """
model: {name: scnet_t, scale: 2}
reparam: {}
export:
  targets: {onnx: [fp32]}
  input_size: [32, 32]
check: {runs: 2, threads: 1}
"""


# ------------------------------------------------------------------------------------ recipes
@pytest.mark.parametrize("path", RUN_RECIPES, ids=lambda p: p.name)
def test_shipped_recipes_validate_and_stay_relative(path):
    r = load_run_recipe(path)
    text = path.read_text()
    assert "../shared" not in text and "/work" not in text
    for folders in (r.data.eval, r.data.calib, r.data.train):
        assert all(not Path(f).is_absolute() for f in folders)
    if path.name == "quickstart.yaml":
        assert not r.data.eval and not r.data.calib and not r.data.train  # no data: the scikit-image photos
        assert r.model.weights == "zoo" and r.quantize and r.quantize.method == "auto" and r.check.simulated
        assert r.model.name == "safmn_ntire" and r.quantize.budget_db == 0.15
        assert r.export.targets["coreml"] == ["fp32"] and "int8" in r.export.targets["executorch"]
    else:
        assert r.quantize and r.export and r.check and r.data.eval


def test_quickstart_names_every_seed_recipe():
    assert {p.name for p in RUN_RECIPES} >= {"quickstart.yaml", "safmn_x4.yaml", "scnet_x4.yaml", "eimn_x4.yaml",
                                             "lamnet_x4.yaml"}


def test_overrides_and_data_switch(tmp_path, tiny_data):
    path = write(tmp_path / "r.yaml", FP32_RECIPE)
    r = load_run_recipe(path, ["check.runs=7", "export.input_size=[16, 24]"], [str(tiny_data)])
    assert r.check.runs == 7 and r.export.input_size == [16, 24] and r.data.eval == [tiny_data]


def test_quantize_per_target_overrides(tmp_path):
    path = write(tmp_path / "r.yaml", "model: {name: safmn}\nquantize: {targets: [executorch, tflite], "
                 "config: {calib_size: 4}, per_target: {executorch: {float_adds: true, keep_float: [first, last]}}}\n")
    r = load_run_recipe(path)
    et, tfl = quant_config(r, "executorch"), quant_config(r, "tflite")
    assert et.float_adds and et.keep_float == ["first", "last"] and et.calib_size == 4
    assert not tfl.float_adds and tfl.keep_float == [] and tfl.calib_size == 4


# --------------------------------------------------------------------------------- the cache
def test_stage_key_depends_on_config_upstream_and_files():
    k = stage_key("export onnx-fp32", {"size": [32, 32]}, {"reparam": "a"}, {"w": "1"})
    assert k == stage_key("export onnx-fp32", {"size": [32, 32]}, {"reparam": "a"}, {"w": "1"})
    assert k != stage_key("export onnx-fp32", {"size": [32, 33]}, {"reparam": "a"}, {"w": "1"})
    assert k != stage_key("export onnx-fp32", {"size": [32, 32]}, {"reparam": "b"}, {"w": "1"})
    assert k != stage_key("export onnx-fp32", {"size": [32, 32]}, {"reparam": "a"}, {"w": "2"})


def test_failed_or_interrupted_stage_leaves_nothing_that_looks_finished(tmp_path):
    calls = []

    def ok(d: Path) -> dict:
        calls.append(1)
        (d / "x.txt").write_text("x")
        return {"file": "x.txt"}

    for exc in (ValueError("boom"), KeyboardInterrupt()):
        def bad(d: Path, exc=exc) -> dict:
            (d / "half.bin").write_bytes(b"half")
            raise exc

        with pytest.raises(type(exc)):
            run_cached(tmp_path, "unit", "k" * 64, bad)
        assert load_finished(tmp_path, "unit", "k" * 64) is None
        assert list((tmp_path / "stages").iterdir()) == []
    res = run_cached(tmp_path, "unit", "k" * 64, ok)
    assert not res.cached and res.path("file").read_text() == "x"
    again = run_cached(tmp_path, "unit", "k" * 64, ok)
    assert again.cached and calls == [1] and (again.dir / MARKER).is_file()
    # a SIGKILLed stage leaves its temporary folder; the next run removes it and never trusts it
    stale = tmp_path / "stages" / ".tmp-unit-abc"
    stale.mkdir()
    (stale / MARKER).write_text("{}")
    assert clean_stale(tmp_path) == 1 and not stale.exists()
    # a final folder without a valid marker is not finished
    (stage_dir(tmp_path, "unit", "k" * 64) / MARKER).write_text("{not json")
    assert load_finished(tmp_path, "unit", "k" * 64) is None


def test_signal_swallowed_inside_a_library_callback_still_drops_the_stage(tmp_path):
    """Python ignores an exception raised in a weakref callback ('Exception ignored in ...'); a SIGTERM landing
    there (seen in an ExecuTorch export) must still stop the run before the stage is published."""
    import types
    import weakref

    from edgesr.run.console import sigterm_as_interrupt as _sigterm_as_interrupt
    from edgesr.run.pipeline import Display, RunInterrupted, Unit, _run_unit

    class Obj:
        pass

    def stage(d: Path) -> dict:
        o = Obj()
        ref = weakref.ref(o, lambda _: os.kill(os.getpid(), signal.SIGTERM))
        del o
        assert ref() is None
        (d / "out.txt").write_text("finished despite the signal")
        return {"file": "out.txt"}

    before = signal.getsignal(signal.SIGTERM)
    plan = types.SimpleNamespace(out=tmp_path)
    unit = Unit("export x", "export x", "k" * 64, stage)
    with _sigterm_as_interrupt(), pytest.raises(RunInterrupted, match="interrupted during 'export x'"):
        _run_unit(plan, unit, 1, Display(sys.stdout, 1, enabled=False), verbose=True)
    assert load_finished(tmp_path, "export x", "k" * 64) is None
    assert list((tmp_path / "stages").iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) == before  # restored on the way out


def test_one_run_per_output_folder(tmp_path, capsys):
    path = write(tmp_path / "r.yaml", FP32_RECIPE)
    out = tmp_path / "out"
    out.mkdir()
    with run_lock(out):
        code = cli(["run", str(path), "--out", str(out)])
    one_error_line(capsys, code, "another edgesr run is using")


# ----------------------------------------------------------------------------- bad inputs
BAD_RECIPES = {
    "malformed YAML": ("model: {name: scnet_t\nexport: [", "malformed YAML (line"),
    "not a mapping": ("- just\n- a list\n", "a recipe must be a mapping"),
    "unknown top-level key": ("model: {name: scnet_t}\nexprot: {}\n", "unknown key 'exprot'"),
    "unknown nested key": ("model: {name: scnet_t}\ncheck: {runz: 3}\n", "unknown key 'check.runz'"),
    "unknown train key": ("model: {name: scnet_t}\nteacher: {name: eimn_a, weights: zoo}\n"
                          "distill: {train: {iterations: 10, optimm: {}}}\ndata: {train: [x]}\n",
                          "unknown key 'distill.train.optimm'"),
    "wrong type int": ("model: {name: scnet_t}\ncheck: {runs: many}\n", "check.runs: expected an integer"),
    "wrong type list": ("model: {name: scnet_t}\nexport: {targets: {onnx: [fp32]}, input_size: 64}\n",
                        "export.input_size: expected a list"),
    "wrong type bool": ("model: {name: scnet_t}\ncheck: {memory: maybe}\n", "check.memory: expected true/false"),
    "missing required": ("check: {runs: 3}\n", "missing required key 'model'"),
    "unknown model": ("model: {name: srcnn}\n", "model.name: unknown model 'srcnn'"),
    "unknown target": ("model: {name: scnet_t}\nexport: {targets: {android: [fp32]}}\n",
                       "export.targets: unknown 'android'"),
    "bad precision": ("model: {name: scnet_t}\nexport: {targets: {onnx: [int8]}}\n",
                      "export.targets.onnx: unknown 'int8'"),
    "int8 without quantize": ("model: {name: scnet_t}\nexport: {targets: {executorch: [int8]}}\n",
                              "needs quantize.targets to include executorch"),
    "distill without teacher": ("model: {name: scnet_t}\ndistill: {train: {iterations: 1}}\n",
                                "distill needs a teacher"),
    "missing weights file": ("model: {name: scnet_t, weights: nowhere.pth}\n",
                             "model.weights: weights file not found: nowhere.pth"),
    "no zoo weights": ("model: {name: lamnet, scale: 3, weights: zoo}\n", "the edgesr zoo has no weights for lamnet x3"),
    "quant config key": ("model: {name: scnet_t}\nquantize: {targets: [executorch], config: {bits: 4}}\n",
                         "unknown key 'quantize.config.bits'"),
    "per-target target": ("model: {name: scnet_t}\nquantize: {targets: [executorch], per_target: {tflite: {}}}\n",
                          "quantize.per_target: 'tflite' is not in quantize.targets"),
    "per-target key": ("model: {name: scnet_t}\nquantize: {targets: [tflite], per_target: {tflite: {bits: 4}}}\n",
                       "unknown key 'quantize.per_target.tflite.bits'"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECIPES))
def test_bad_recipe_one_line_exit_2_nothing_written(case, tmp_path, capsys):
    text, expect = BAD_RECIPES[case]
    path = write(tmp_path / "bad.yaml", text)
    out = tmp_path / "out"
    one_error_line(capsys, cli(["run", str(path), "--out", str(out)]), expect)
    assert not out.exists()


def test_missing_recipe_and_bad_set(tmp_path, capsys):
    one_error_line(capsys, cli(["run", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "o")]), "recipe not found")
    path = write(tmp_path / "r.yaml", FP32_RECIPE)
    one_error_line(capsys, cli(["run", str(path), "--out", str(tmp_path / "o"), "--set", "check.runs"]),
                   "--set expects key=value")
    one_error_line(capsys, cli(["run", str(path), "--out", str(tmp_path / "o"), "--set", "check.runs=0"]),
                   "check: runs and threads must be positive")
    one_error_line(capsys, cli(["run", str(path)]), "the following arguments are required: --out")
    assert not (tmp_path / "o").exists()


def test_missing_and_corrupt_data(tmp_path, tiny_data, capsys):
    path = write(tmp_path / "r.yaml", FP32_RECIPE)
    out = tmp_path / "out"
    one_error_line(capsys, cli(["run", str(path), "--out", str(out), "--data", str(tmp_path / "nope")]),
                   "data.eval: data folder not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error_line(capsys, cli(["run", str(path), "--out", str(out), "--data", str(empty)]), "data.eval: no images")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ok.png").write_bytes((tiny_data / "a.png").read_bytes())
    (bad / "broken.png").write_bytes((tiny_data / "a.png").read_bytes()[:300])  # truncated PNG
    one_error_line(capsys, cli(["run", str(path), "--out", str(out), "--data", str(bad)]), "broken.png")
    (bad / "broken.png").write_bytes(b"not an image at all")
    one_error_line(capsys, cli(["run", str(path), "--out", str(out), "--data", str(bad)]), "broken.png")
    twin = tmp_path / "other" / "tiny"
    twin.mkdir(parents=True)
    (twin / "a.png").write_bytes((tiny_data / "a.png").read_bytes())
    one_error_line(capsys, cli(["run", str(path), "--out", str(out), "--data", str(tiny_data), str(twin)]),
                   "two folders share a name")
    assert not out.exists()


def test_unwritable_output_folder(tmp_path, capsys, monkeypatch):
    path = write(tmp_path / "r.yaml", FP32_RECIPE)
    afile = write(tmp_path / "file.txt", "x")
    one_error_line(capsys, cli(["run", str(path), "--out", str(afile)]), "exists and is not a folder")
    one_error_line(capsys, cli(["run", str(path), "--out", str(afile / "out")]), "cannot create output folder")
    ro = tmp_path / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if os.geteuid() == 0:  # root writes anywhere: make the permission check see what a user would see
            real = os.access
            monkeypatch.setattr(os, "access", lambda p, m, **kw: False if Path(p) == ro else real(p, m, **kw))
            target = ro
        else:
            target = ro / "out"
        code = cli(["run", str(path), "--out", str(target)])
        line = one_error_line(capsys, code, str(ro))
        assert "not writable" in line or "Permission denied" in line
    finally:
        ro.chmod(0o755)
    assert list(ro.iterdir()) == []


# --------------------------------------------------------------------- a real, interrupted run
TINY = """
model: {name: scnet_t, scale: 2}
reparam: {}
quantize:
  targets: [executorch]
  config: {calib_size: 2, calib_patch: 32}
  sensitivity: [executorch]
  sensitivity_layers: 2
export:
  targets: {executorch: [fp32, int8], coreml: [fp32]}
  input_size: [32, 32]
check: {runs: 2, threads: 1, crops: 1}
report: {title: tiny run}
"""


def _start(recipe: Path, out: Path, data: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    env.pop("EDGESR_DEBUG", None)
    return subprocess.Popen([sys.executable, "-m", "edgesr", "run", str(recipe), "--out", str(out), "--data",
                             str(data), *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            cwd=ROOT)


def _until(proc: subprocess.Popen, needle: str, timeout: float = 240) -> list[str]:
    """Read progress lines until one starts the stage ``needle`` (its '... ' start line)."""
    lines, start = [], time.time()
    while time.time() - start < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if needle in line and line.rstrip().endswith("..."):
            return lines
    proc.kill()
    raise AssertionError(f"stage {needle!r} never started; output: {lines}; stderr: {proc.stderr.read()[-2000:]}")


def _finished(out: Path) -> set[str]:
    return {p.name.rsplit("-", 1)[0] for p in (out / "stages").iterdir()
            if not p.name.startswith(".") and (p / MARKER).is_file()}


def test_run_killed_mid_stage_resumes_from_cache(tmp_path, tiny_data):
    recipe = write(tmp_path / "tiny.yaml", TINY)
    out = tmp_path / "run"

    # 1. SIGKILL in the middle of the first export: earlier stages stay finished, the export does not exist
    proc = _start(recipe, out, tiny_data)
    _until(proc, "export executorch fp32")
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL
    assert _finished(out) == {"init", "reparam", "quantize-executorch"}
    assert any(p.name.startswith(".tmp-export-executorch-fp32") for p in (out / "stages").iterdir())
    assert not (out / "report").exists()

    # 2. resume; SIGTERM during the int8 export: one clear line, exit 130, no traceback, nothing half-written
    proc = _start(recipe, out, tiny_data)
    lines = _until(proc, "export executorch int8")
    assert [ln for ln in lines if ln.endswith(": cached")] == [
        "[1/12] model scnet_t x2: random init (seed 0): cached",
        "[2/12] reparameterize scnet_t x2 (deploy graph): cached",
        "[3/12] quantize scnet_t x2 for executorch: PTQ int8 + per-layer sensitivity: cached"]
    assert "done in" in lines[-2]  # the fp32 export, redone from scratch
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    err_lines = err.strip().splitlines()
    assert len(err_lines) == 1 and "Traceback" not in err, err
    assert err_lines[0].startswith("edgesr: interrupted during 'export executorch int8") and "resume" in err_lines[0]
    assert _finished(out) == {"init", "reparam", "quantize-executorch", "export-executorch-fp32"}
    assert not [p for p in (out / "stages").iterdir() if p.name.startswith(".tmp-")]  # cleaned on the way out

    # 3. resume to the end
    proc = _start(recipe, out, tiny_data)
    stdout, err = proc.communicate(timeout=400)
    assert proc.returncode == 0, err[-3000:]
    assert stdout.count(": cached") == 4 and "report:" in stdout
    rep = json.loads((out / "report" / "report.json").read_text())
    from edgesr.report import validate

    assert validate(rep) == []
    rows = {(r["target"], r["precision"], r["measured_in"]): r for r in rep["rows"]}
    assert set(rows) == {("pytorch", "fp32", "runtime"), ("executorch", "int8", "pytorch-simulated"),
                         ("executorch", "fp32", "runtime"), ("executorch", "int8", "runtime"),
                         ("coreml", "fp32", "converted, not run")}
    et32, et8 = rows[("executorch", "fp32", "runtime")], rows[("executorch", "int8", "runtime")]
    assert et32["parity"]["max_abs"] < 1e-4 and et32["delegation"]["percent"] > 50
    assert et8["drop_vs"] == "executorch fp32" and abs(et8["drop_db"]) < 3
    for r in (et8, rows[("executorch", "int8", "pytorch-simulated")]):  # per image: the drop's standard error
        assert set(r["per_image_psnr_y"]) == set(et32["per_image_psnr_y"]) and len(r["per_image_psnr_y"]) == r["images"]
        assert (r["drop_se_db"] is not None) == (r["images"] >= 2)
    assert rows[("coreml", "fp32", "converted, not run")]["psnr_y"] is None
    assert rows[("executorch", "int8", "pytorch-simulated")]["command"].startswith("edgesr eval --model scnet_t")
    assert et8["command"].startswith("edgesr check ") and "--data" in et8["command"]
    assert {p["kind"] for p in rep["plots"]} == {"accuracy_latency", "precision_bars", "sensitivity"}
    assert {c["runtime"] for c in rep["crops"]} == {"PyTorch (int8 simulating executorch)", "executorch"}
    assert all((out / "report" / c["path"]).is_file() for c in rep["crops"])

    # 4. an edit (more latency runs) redoes only the checks and the report
    proc = _start(recipe, out, tiny_data, "--set", "check.runs=3")
    stdout, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    cached = [ln for ln in stdout.splitlines() if ln.endswith(": cached")]
    assert len(cached) == 6 and all("check" not in ln for ln in cached)


DISTILL = """
model: {name: scnet_t, scale: 2}
data: {train: [TRAIN]}
teacher:
  name: scnet_t
  train: {iterations: 2, data: {patch_size: 32, batch_size: 2, workers: 0}, checkpoint_every: 1, log_every: 1}
distill:
  train: {iterations: 2, data: {patch_size: 32, batch_size: 2, workers: 0}, checkpoint_every: 1, log_every: 1}
check: {runs: 1, threads: 1, crops: 0}
report: null
"""


def test_teacher_training_and_distillation_stages(tmp_path, tiny_data, capsys):
    """The training stages end to end (2 steps each): teacher trained, student distilled from it, checked."""
    recipe = write(tmp_path / "kd.yaml", DISTILL.replace("TRAIN", str(tiny_data)))
    out = tmp_path / "kd"
    assert cli(["run", str(recipe), "--out", str(out), "--data", str(tiny_data)]) == 0
    text = capsys.readouterr().out
    assert "teacher scnet_t x2: train 2 iterations" in text and "distill scnet_t x2 from scnet_t" in text
    assert _finished(out) == {"teacher", "distill", "check-pytorch-fp32"} and not (out / "report").exists()
    distill = next(p for p in (out / "stages").iterdir() if p.name.startswith("distill-"))
    ckpt = __import__("torch").load(distill / "model.pt", weights_only=False)
    assert ckpt["recipe"]["teacher"]["weights"].startswith(str(out / "stages" / "teacher-"))
    assert "pytorch fp32" in text and "tiny" in text
    # the teacher is an input of the student: a different teacher schedule redoes both
    assert cli(["run", str(recipe), "--out", str(out), "--data", str(tiny_data),
                "--set", "teacher.train.iterations=3"]) == 0
    text = capsys.readouterr().out
    assert ": cached" not in text
