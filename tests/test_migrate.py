"""Outlier migration (edgesr.quantize.migrate) on a network built to need it: a residual stream with one
channel 100x the others, read by 1x1 convs and a LayerNorm. Migration keeps the fp32 function, evens the stream,
lowers the int8 error where the outlier guard would otherwise keep the stream float, and survives a reload."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edgesr.quantize import QuantConfig, load, ptq, save_quantized
from edgesr.quantize import migrate
from edgesr.quantize.auto import int8_mac_share
from edgesr.quantize.graph import capture
from edgesr.quantize.outliers import find_outliers

STREAM = "tests/nets/stream_net.py:make_stream"


def _stream(factor: float = 100.0) -> nn.Module:
    from edgesr.models import ModelSpec, build

    return build(ModelSpec(STREAM, 2, kwargs={"factor": factor}))


def _calib(n: int = 4) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(1, 3, 24, 24, generator=g) for _ in range(n)]


def _stream_ratio(gm: torch.fx.GraphModule) -> float:
    """Largest channel-range ratio over the activations int8 would read (not the compensating multiplies)."""
    found = find_outliers(gm, _calib(), 1.01)
    return max((o.ratio for o in found if not o.node.startswith("edgesr_migrate_") and o.module != "norm"),
               default=1.0)


def test_migration_keeps_the_function_and_evens_the_stream():
    gm = capture(_stream())
    before = copy.deepcopy(gm)
    assert _stream_ratio(gm) > 50
    scales = migrate.plan(gm, _calib(), strength=1.0)
    assert len(scales) == 1 and len(next(iter(scales.values()))) == 16
    assert migrate.apply(gm, scales) >= 1  # the LayerNorm reads the original values
    x = torch.rand(2, 3, 20, 28)
    with torch.no_grad():
        assert float((gm(x) - before(x)).abs().max()) <= 1e-5
    assert _stream_ratio(gm) < 8


def test_migration_leaves_balanced_networks_alone():
    assert migrate.plan(capture(_stream(factor=1.0)), _calib()) == {}


def test_migration_lowers_int8_error_and_frees_what_the_guard_kept_float():
    m = _stream()
    x = torch.rand(1, 3, 32, 32)
    ref = m(x).clamp(0, 1)
    err, applied = {}, {}
    cfgs = {"plain": QuantConfig(), "migrate": QuantConfig(migrate=0.5),
            "guard": QuantConfig(outlier_ratio=8.0), "migrate+guard": QuantConfig(migrate=0.5, outlier_ratio=8.0)}
    for name, cfg in cfgs.items():
        q = ptq(m, "executorch", _calib(), cfg)
        err[name], applied[name] = float(((q(x) - ref) ** 2).mean()), q.config  # config: with the guard's nodes
        if cfg.migrate:
            assert q.info["migrated_groups"] == 1 and q.config["channel_scales"]
    assert err["migrate"] < err["plain"] / 4
    share = {n: int8_mac_share(m, QuantConfig(**applied[n]), target="executorch") for n in ("guard", "migrate+guard")}
    assert share["migrate+guard"] > share["guard"] + 0.25  # the stream's readers are int8 again


@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_migration_survives_a_checkpoint_round_trip(tmp_path, target):
    q = ptq(_stream(), target, _calib(), QuantConfig(migrate=0.5, outlier_ratio=8.0))
    save_quantized(q, tmp_path / "q.pt")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(load(tmp_path / "q.pt")(x), q(x))


def test_migration_strength_outside_0_1_is_a_usage_error():
    from edgesr.errors import UsageError

    with pytest.raises(UsageError, match="migrate"):
        QuantConfig(migrate=1.5).validate()


def test_quantize_cli_migrate_flag_applies_the_migration(tmp_path, capsys):
    from edgesr.cli import main

    g = torch.Generator().manual_seed(2)
    calib = tmp_path / "calib"
    calib.mkdir()
    from edgesr.data.io import save_image

    for i in range(2):
        save_image(calib / f"{i}.png", (torch.rand(48, 48, 3, generator=g) * 255).to(torch.uint8).numpy())
    base = ["quantize", "--model", STREAM, "--scale", "2", "--target", "executorch", "--data", str(calib),
            "--calib-size", "2", "--calib-patch", "24", "--quiet"]
    assert main([*base, "--out", str(tmp_path / "plain.pt")]) == 0
    assert main([*base, "--migrate", "0.5", "--out", str(tmp_path / "mig.pt")]) == 0
    plain, mig = (torch.load(tmp_path / f, weights_only=True) for f in ("plain.pt", "mig.pt"))
    assert plain["config"]["migrate"] == 0.0 and not plain["config"]["channel_scales"]
    groups = len(mig["config"]["channel_scales"])
    assert mig["config"]["migrate"] == 0.5 and "conv2d" in mig["config"]["channel_scales"]  # the head's stream
    assert f"outlier migration (strength 0.5): {groups} imbalanced activation group" in capsys.readouterr().out
    assert main([*base, "--migrate", "2", "--out", str(tmp_path / "bad.pt")]) == 2
    assert not (tmp_path / "bad.pt").exists()


@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_a_migrated_int8_model_exports_and_its_artifact_follows_it(tmp_path, target):
    """The compensating multiplies and rescaled constants lower like any other op: the artifact runs in its
    runtime and computes what the fake-quant model computes."""
    from edgesr.export import exporters
    from edgesr.export.latency import LatencyProbe

    model = _stream()
    q = ptq(model, target, _calib(), QuantConfig(migrate=0.5, outlier_ratio=8.0))
    out = tmp_path / ("a.pte" if target == "executorch" else "a.tflite")
    exporters.export(model, target, "int8", (16, 16), out, quantized=q)
    assert LatencyProbe(model, target, (16, 16), threads=1).parity(out, q)["faithful"]
