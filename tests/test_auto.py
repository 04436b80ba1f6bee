"""int8 that meets a stated budget by itself (edgesr.quantize.auto): the split, the speed proxy, the search,
its cache, and the over-budget verdict."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from edgesr.cli import main
from edgesr.data.samples import CALIB_IMAGES, sample_paths
from edgesr.models import ModelSpec, build, create
from edgesr.quantize import QuantConfig
from edgesr.quantize.auto import auto_quantize, drop_db, int8_mac_share, mean_drop_db, recipe_yaml, split_images

PHOTOS = [str(p) for p in sample_paths(CALIB_IMAGES)]


def _tiny() -> nn.Module:
    torch.manual_seed(0)
    return create("safmn", 2, dim=8, n_blocks=1)


def test_calibration_and_validation_never_share_an_image(tmp_path):
    calib, val = split_images(PHOTOS, every=3)
    assert set(calib).isdisjoint(val) and len(calib) + len(val) == len(PHOTOS) and val


def test_the_budget_measure_holds_on_the_best_reconstructed_half_too():
    fp32, q = [40.0, 40.0, 20.0, 20.0], [39.8, 39.8, 20.0, 20.0]
    assert drop_db(fp32, q) == pytest.approx(0.2) and mean_drop_db(fp32, q) == pytest.approx(0.1)
    assert drop_db([20.0, 20.0, 40.0, 40.0], [19.8, 19.8, 40.0, 40.0]) == pytest.approx(0.1)  # the mean, larger


def test_the_drop_carries_its_standard_error_over_the_validation_images():
    from edgesr.quantize.auto import drop_se_db

    fp32, q = [30.0, 31.0, 32.0, 33.0], [29.98, 30.94, 31.99, 32.97]
    assert drop_se_db(fp32, q) == pytest.approx(np.std([0.02, 0.06, 0.01, 0.03], ddof=1) / 2)
    assert drop_se_db([30.0], [29.9]) is None and drop_se_db(fp32, fp32) == 0.0


def test_int8_mac_share_counts_the_float_convolutions():
    """A 3-conv plain network: keeping the first and last conv float leaves the middle conv's MACs."""
    model = build(ModelSpec("tests/nets/plain_net.py:make_plain_sr", 2, kwargs={"channels": 4, "depth": 2}))
    side = 16
    macs = [side * side * 4 * 3 * 9, side * side * 4 * 4 * 9, side * side * 12 * 4 * 9]  # out elems × C_in × k²
    share = int8_mac_share(model, QuantConfig(keep_float=["first", "last"]), side=side)
    assert share == pytest.approx(macs[1] / sum(macs))
    assert int8_mac_share(model, QuantConfig(), side=side) == pytest.approx(1.0)


def test_search_meets_a_loose_budget_and_resumes_from_its_cache(tmp_path):
    model = _tiny()
    kw = dict(cache_dir=tmp_path / "cache", max_trials=6, val_count=2, val_side=32)
    first = auto_quantize(model, "executorch", PHOTOS[:4], PHOTOS[4:], 0.5, **kw)
    assert first.within_budget and first.chosen.drop_db <= 0.5 and not any(t.cached for t in first.trials)
    log = [json.loads(x) for x in (tmp_path / "cache" / "trials.jsonl").read_text().splitlines()]
    assert len(log) == len(first.trials) and all(r["drop_se_db"] is not None for r in log)  # 2 validation images
    again = auto_quantize(model, "executorch", PHOTOS[:4], PHOTOS[4:], 0.5, **kw)
    assert all(t.cached for t in again.trials) and again.chosen.name == first.chosen.name
    assert "method: ptq" in recipe_yaml("executorch", again)
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(again.model(x), first.model(x))


def test_core_ml_reuses_the_executorch_trials_and_litert_does_not(tmp_path):
    """Core ML's int8 is XNNPACK's annotation of the same graph: its search is ExecuTorch's, from the cache."""
    kw = dict(cache_dir=tmp_path, max_trials=3, val_count=1, val_side=32)
    auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 0.5, **kw)
    assert all(t.cached for t in auto_quantize(_tiny(), "coreml", PHOTOS[:4], PHOTOS[4:], 0.5, **kw).trials)
    assert not any(t.cached for t in auto_quantize(_tiny(), "tflite", PHOTOS[:4], PHOTOS[4:], 0.5, **kw).trials)


def test_a_new_annotation_rule_for_a_target_measures_its_trials_again(tmp_path, monkeypatch):
    """Cached trials of an older LiteRT annotation rule would report drops the current rule does not give."""
    from edgesr.quantize import quantizers

    kw = dict(cache_dir=tmp_path, max_trials=2, val_count=1, val_side=32)
    for target in ("executorch", "tflite"):
        auto_quantize(_tiny(), target, PHOTOS[:4], PHOTOS[4:], 0.5, **kw)
    monkeypatch.setitem(quantizers.ANNOTATION_REVISIONS, "tflite", quantizers.ANNOTATION_REVISIONS["tflite"] + 1)
    assert not any(t.cached for t in auto_quantize(_tiny(), "tflite", PHOTOS[:4], PHOTOS[4:], 0.5, **kw).trials)
    assert all(t.cached for t in auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 0.5, **kw).trials)


MIGRATION_COST = 0.005


def _scripted_search(monkeypatch, guard8_cost: float | None = None):
    """The search's order and its undo step on a scripted drop table (each option buys a fixed drop, the float
    adds most, as on LAMNet), so the test reads the search's logic, not quantization noise. With
    ``guard8_cost`` the network has an outlier channel (EIMN-A): no guard costs 5 dB, guard 8 that much more
    than guard 4."""
    from edgesr.quantize import outliers
    from edgesr.quantize.auto import Trial, _Search, _overrides

    if guard8_cost is not None:
        real = outliers.find_outliers  # the most imbalanced activation counts as an outlier at any ratio
        monkeypatch.setattr(outliers, "find_outliers", lambda gm, inputs, ratio: real(gm, inputs, 1.0)[:1])

    def run(self, name, cfg, mode="ptq", make=None, last=False):
        if self.exhausted(last):
            return None
        first_last = "first" in cfg.keep_float
        drop = (0.40 - 0.25 * cfg.float_adds - 0.01 * cfg.float_muls - 0.06 * first_last
                - 0.04 * (cfg.observer == "minmax") - 0.01 * cfg.scale_search)
        if guard8_cost is not None:
            drop += {0.0: 5.0, 8.0: guard8_cost}.get(cfg.outlier_ratio, 0.0) + MIGRATION_COST * bool(cfg.migrate)
        # the MACs the guard keeps float; outlier migration evens out half of what it holds
        share_guarded = {r: v * (0.5 if cfg.migrate else 1.0) for r, v in {4.0: 0.4, 8.0: 0.1}.items()}
        floats = int(cfg.float_adds) + int(cfg.float_muls) + 2 * first_last
        t = Trial(name, _overrides(cfg), round(drop, 4), (0.95 if first_last else 0.99) - share_guarded.get(cfg.outlier_ratio, 0.0), floats)
        t.within_budget = t.drop_db <= self.budget
        self.trials.append(t)
        return t

    monkeypatch.setattr(_Search, "run", run)


def test_far_over_budget_the_float_options_come_first_and_go_again_when_unneeded(monkeypatch):
    _scripted_search(monkeypatch)
    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 0.1, max_trials=30, val_count=1,
                        val_side=32)
    names = [t.name for t in res.trials]
    assert names[:4] == ["defaults", "float residual adds", "float elementwise multiplies", "first/last conv float"]
    assert names.index("observer minmax") > 3  # the free options after, on top of the float ones
    # minmax and the scale search made the multiplies and the first/last float unnecessary: dropped again
    assert res.within_budget and res.chosen.config.get("float_adds") and not res.chosen.config.get("float_muls")
    assert not res.chosen.config.get("keep_float") and res.chosen.drop_db == pytest.approx(0.10)


@pytest.mark.parametrize("guard8_cost,migratable", [(0.02, True), (0.5, True), (0.02, False)])
def test_the_outlier_guard_is_loosened_again_where_the_other_options_made_room(monkeypatch, guard8_cost, migratable):
    from edgesr.quantize import migrate

    _scripted_search(monkeypatch, guard8_cost)
    # whether outlier migration finds a residual stream to even out (EIMN-A: 15 groups; SAFMN NTIRE: none)
    monkeypatch.setattr(migrate, "plan", lambda gm, inputs, strength: {"stream": [1.0]} if migratable else {})
    monkeypatch.setattr(migrate, "apply", lambda gm, scales: 0)  # the drops are scripted; the graph stays as is
    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 0.1, max_trials=30, val_count=1,
                        val_side=32)
    names = [t.name for t in res.trials]
    assert names[:3] == ["defaults", "outlier guard 8", "outlier guard 4"]
    loosened = [n for n in names if n.endswith(", outlier guard 8")]
    assert len(loosened) == 1 and res.within_budget
    migrated = [i for i, n in enumerate(names) if n.endswith(", outlier migration")]
    cost = MIGRATION_COST if migratable else 0.0
    if migratable:  # within the budget, migration takes over part of what the guard held, before it is loosened
        assert len(migrated) == 1 and names.index(loosened[0]) == migrated[0] + 1
        assert res.chosen.config.get("migrate") == 0.5
    else:
        assert not migrated and "migrate" not in res.chosen.config
    if guard8_cost < 0.1:  # guard 8 holds within the budget once adds, first/last, minmax, scale search are in
        assert res.chosen.config["outlier_ratio"] == 8.0 and res.chosen.drop_db == pytest.approx(0.06 + cost)
        assert any(n.endswith(", without outlier guard") for n in names)  # tried, and 5 dB over
    else:  # it does not: guard 4 stays, and no guard at all is not tried
        assert res.chosen.config["outlier_ratio"] == 4.0
        # minmax + scale search + adds + first/last float (0.04) with migration; without first/last it is over
        assert res.chosen.drop_db == pytest.approx(0.04 + cost) and "first" in res.chosen.config["keep_float"]
        assert not any("without outlier guard" in n for n in names)


def test_near_the_budget_the_free_options_come_first(monkeypatch):
    _scripted_search(monkeypatch)
    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 0.2, max_trials=30, val_count=1,
                        val_side=32)
    names = [t.name for t in res.trials]
    assert names[1].startswith("observer") and names.index("float residual adds") > names.index("bias correction")
    assert res.within_budget and res.chosen.config.get("float_adds") and res.chosen.drop_db == pytest.approx(0.10)


def test_the_fastest_finalist_within_the_budget_wins(tmp_path):
    """Finalists are timed by the caller's stopwatch; the fastest wins even where the MAC proxy ties."""
    timed = []

    def stopwatch(q):
        timed.append(q.config["observer"])
        ms = 1.0 if q.config["observer"] == "minmax" else 2.0
        return {"fp32_ms": 2.0, "int8_ms": ms, "speedup": 2.0 / ms, "input_size": [16, 16], "runtime": "fake"}

    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 50.0, max_trials=4, val_count=1,
                        val_side=32, latency=stopwatch, finalists=4, cache_dir=tmp_path)
    assert len(timed) == 4 and res.chosen.config.get("observer") == "minmax"
    assert res.chosen.latency["int8_ms"] == 1.0 and res.model.info["auto"]["latency"]["speedup"] == 2.0
    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 50.0, max_trials=4, val_count=1,
                        val_side=32, latency=stopwatch, finalists=1, cache_dir=tmp_path)
    assert len(timed) == 5  # one finalist timed

    def unfaithful_minmax(q):  # the fastest artifact computes something else than its fake-quant model
        row = stopwatch(q)
        return {**row, "faithful": row["int8_ms"] != 1.0, "artifact_psnr_db": 20.0, "fake_quant_psnr_db": 45.0}

    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 50.0, max_trials=4, val_count=1,
                        val_side=32, latency=unfaithful_minmax, finalists=4, cache_dir=tmp_path)
    assert res.chosen.config.get("observer") != "minmax" and res.chosen.latency["int8_ms"] == 2.0
    assert any("artifact is 20.0 dB from fp32" in n and "not chosen" in n for n in res.notes)


def test_a_finalist_its_converter_cannot_lower_is_passed_over_with_a_note(tmp_path, monkeypatch):
    """The stopwatch itself: an export that raises (XNNPACK's partitioner finds a dependency cycle in LAMNet x4
    with float adds alone) is a result, not a crash; the search times the next finalist."""
    from edgesr.export import exporters
    from edgesr.export.latency import LatencyProbe

    real = exporters.export

    def export(model, target, precision, size, out, **kw):
        if precision == "int8" and kw["quantized"].config.get("observer") == "minmax":
            raise AssertionError("Invalid partition, found dependency cycles\nmore")
        return real(model, target, precision, size, out, **kw)

    monkeypatch.setattr(exporters, "export", export)
    model = _tiny()
    res = auto_quantize(model, "executorch", PHOTOS[:4], PHOTOS[4:], 50.0, max_trials=4, val_count=1,
                        val_side=32, latency=LatencyProbe(model, "executorch", (16, 16), threads=1, rounds=1),
                        finalists=4, cache_dir=tmp_path)
    failed = [t for t in res.trials if t.latency and t.latency.get("export_error")]
    assert [t.config.get("observer") for t in failed] == ["minmax"]
    assert failed[0].latency["export_error"] == "AssertionError: Invalid partition, found dependency cycles"
    assert res.within_budget and res.chosen.config.get("observer") != "minmax" and res.chosen.latency["int8_ms"] > 0
    assert any("export failed (AssertionError" in n and "not chosen" in n for n in res.notes)


def test_an_artifact_a_little_off_its_model_is_kept_when_its_extra_error_fits_the_budget(tmp_path):
    """1.6 dB further from fp32 than the fake-quant model (EIMN-A's LiteRT case) is 1.45x its int8 error: kept
    where 1.45x the measured drop fits the budget, over budget where it does not."""
    from edgesr.quantize.auto import artifact_drop_db

    assert artifact_drop_db(0.019, 52.7, 54.3) == pytest.approx(0.019 * 10 ** 0.16)
    assert artifact_drop_db(0.019, 56.0, 54.3) == 0.019  # closer to fp32 than the model: the measured drop

    def a_little_off(q):
        return {"fp32_ms": 2.0, "int8_ms": 1.0, "faithful": False, "artifact_psnr_db": 52.7,
                "fake_quant_psnr_db": 54.3}

    kw = dict(max_trials=2, val_count=1, val_side=32, latency=a_little_off, finalists=1, cache_dir=tmp_path)
    d = min(t.drop_db for t in auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 50.0, **kw).trials)
    assert d > 0
    kept = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], d * 1.5, **kw)
    assert kept.within_budget and any("with the artifact's own error" in n for n in kept.notes)
    tight = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], d * 1.2, **kw)
    assert not tight.within_budget and any("follows its fake-quant model" in n for n in tight.notes)


def test_an_impossible_budget_is_reported_over_budget(tmp_path):
    def unfaithful(q):
        return {"fp32_ms": 2.0, "int8_ms": 1.0, "faithful": False, "artifact_psnr_db": 30.0, "fake_quant_psnr_db": 40.0}

    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], -10.0, max_trials=3, val_count=1,
                        val_side=32, latency=unfaithful)
    assert not res.within_budget and any(n.startswith("over budget") for n in res.notes)
    assert any("runtime drop is larger than the search measured" in n for n in res.notes)  # said, not hidden
    assert res.chosen.drop_db == min(t.drop_db for t in res.trials) and len(res.trials) <= 3
    assert res.model.info["auto"]["within_budget"] is False


def test_over_budget_the_most_accurate_artifact_that_follows_its_model_is_chosen(tmp_path):
    calls = []

    def first_unfaithful(q):
        calls.append(q)
        return {"fp32_ms": 2.0, "int8_ms": 1.0, "faithful": len(calls) > 1, "artifact_psnr_db": 30.0,
                "fake_quant_psnr_db": 40.0}

    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], -10.0, max_trials=3, val_count=1,
                        val_side=32, latency=first_unfaithful, finalists=2)
    by_drop = sorted({t.drop_db for t in res.trials})
    assert len(calls) == 2 and res.chosen.drop_db == by_drop[1] and res.chosen.latency["faithful"]
    assert any("not chosen" in n for n in res.notes) and not res.within_budget
    assert any("the most accurate one whose artifact follows it" in n for n in res.notes)


def test_within_budget_but_no_artifact_follows_its_model_is_not_within_budget(tmp_path):
    def unfaithful(q):
        return {"fp32_ms": 2.0, "int8_ms": 1.0, "faithful": False, "artifact_psnr_db": 30.0, "fake_quant_psnr_db": 40.0}

    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], 50.0, max_trials=3, val_count=1,
                        val_side=32, latency=unfaithful, finalists=1)
    assert not res.within_budget and res.model.info["auto"]["within_budget"] is False
    assert any("has a executorch artifact that follows" in n for n in res.notes)
    assert any(n.startswith("over budget: the most accurate") for n in res.notes)


def test_qat_is_the_last_step_and_keeps_its_trial_when_ptq_cannot_reach_the_budget():
    cfg = QuantConfig(iterations=2, batch_size=1, patch_size=32)
    res = auto_quantize(_tiny(), "executorch", PHOTOS[:4], PHOTOS[4:], -10.0, config=cfg, max_trials=3,
                        val_count=1, val_side=32, qat_images=PHOTOS[:4])
    assert len(res.trials) == 3 and [t.mode for t in res.trials] == ["ptq", "ptq", "qat"]
    assert res.trials[-1].name.startswith("QAT") and not res.within_budget


def _nearest_upsampler_with_an_outlier_channel() -> nn.Module:
    return build(ModelSpec("tests/nets/plain_net.py:outlier_upsampler", 2))


def test_a_network_int8_breaks_is_repaired_within_the_budget(tmp_path):
    model = _nearest_upsampler_with_an_outlier_channel()
    res = auto_quantize(model, "executorch", PHOTOS[:4], PHOTOS[4:], 1.0, max_trials=12, val_count=2,
                        val_side=32)
    defaults = res.trials[0]
    assert defaults.name == "defaults" and defaults.drop_db > 10.0, defaults  # int8 as it comes: broken
    assert res.within_budget and res.chosen.drop_db <= 1.0 and res.chosen.int8_mac_share > 0.3


def test_the_per_layer_fallback_skips_layers_already_float():
    """Layers the outlier guard or keep_float already hold float are not fallback candidates (each would cost a
    bisection step that changes nothing)."""
    from edgesr.quantize.auto import _float_layers
    from edgesr.quantize.ptq import calibration_inputs

    model = _nearest_upsampler_with_an_outlier_channel()
    calib = calibration_inputs(PHOTOS[:2], 2, QuantConfig(calib_size=2, calib_patch=32))
    assert _float_layers(model, "executorch", QuantConfig(), calib) == set()
    assert _float_layers(model, "executorch", QuantConfig(keep_float=["last"]), calib) == {"4"}
    assert "0" in _float_layers(model, "executorch", QuantConfig(outlier_ratio=8.0), calib)  # the guard's conv


def test_quantize_auto_cli(tmp_path, capsys):
    out = tmp_path / "q.pt"
    kw = json.dumps({"dim": 8, "n_blocks": 1})
    argv = ["quantize", "--model", "safmn", "--scale", "2", "--model-kwargs", kw, "--target", "tflite", "--auto",
            "--budget-db", "0.5", "--data", *PHOTOS[:4], "--val", *PHOTOS[4:], "--max-trials", "2",
            "--time-limit", "600", "--trials-dir", str(tmp_path / "trials"), "--quiet", "--out", str(out),
            "--finalists", "1", "--latency-size", "24x32", "--val-count", "1"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "chosen:" in text and "within the 0.5 dB budget" in text and "quantize:" in text
    assert "budget, 1 held-out images)" in text  # --val-count 1 of the 2 --val photos
    assert "x fp32 in tflite at 24x32" in text  # the finalist was exported and timed in LiteRT at that size
    timed = [json.loads(x) for x in (tmp_path / "trials" / "trials.jsonl").read_text().splitlines()]
    assert sum(t["latency"] is not None for t in timed) == 1
    probe = next(t["latency"] for t in timed if t["latency"])  # the .tflite ran beside its fake-quant model
    assert probe["faithful"] is True and probe["artifact_psnr_db"] >= probe["fake_quant_psnr_db"] - 1.0
    assert (tmp_path / "trials" / "trials.jsonl").is_file() and out.is_file()
    assert torch.load(out, weights_only=True)["info"]["auto"]["budget_db"] == 0.5
