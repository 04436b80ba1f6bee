"""SAFMN family: goldens from the official code, counts, shapes, size limits and the export-friendly pooling."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import GOLDEN, need_shared
from edgesr.errors import UsageError
from edgesr.models import create, safmn as safmn_module
from edgesr.models.safmn import GRN, ChannelsFirstLayerNorm, pool_modulate_up, safmn, safmn_l, safmn_ntire

PARAMS = {  # spec table (official classes instantiated)
    ("safmn", 2): 227_820, ("safmn", 3): 232_695, ("safmn", 4): 239_520,
    ("safmn_l", 2): 5_559_308, ("safmn_l", 3): 5_576_603, ("safmn_l", 4): 5_600_816,
    ("safmn_ntire", 4): 237_000,
}
FACTORIES = {"safmn": safmn, "safmn_l": safmn_l, "safmn_ntire": safmn_ntire}


@lru_cache(maxsize=None)
def _golden(scale: int) -> dict:
    return torch.load(need_shared(GOLDEN / f"SAFMN_x{scale}_randweights_probe.pt"), weights_only=True)


def _golden_model(scale: int) -> torch.nn.Module:
    g = _golden(scale)
    cfg = g["config"]
    model = safmn(cfg["upscaling_factor"], dim=cfg["dim"], n_blocks=cfg["n_blocks"], ffn_scale=cfg["ffn_scale"])
    assert list(model.state_dict()) == list(g["state_dict"])  # official names, official order, no extra buffers
    model.load_state_dict(g["state_dict"], strict=True)
    return model.eval()


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("case", ["48x40", "37x29"])  # 48x40: max_pool2d fast path; 37x29: adaptive fallback
@pytest.mark.parametrize("scale", [2, 4])
def test_golden_randweights(scale, case):
    model = _golden_model(scale)
    data = _golden(scale)["cases"][case]
    with torch.no_grad(), _OpRecorder() as rec:
        out = model(data["input"])
    assert out.shape == data["output"].shape
    diff = (out - data["output"]).abs().max().item()
    assert diff <= 1e-4, f"max abs diff {diff:.3g}"
    if case == "48x40":
        assert any(op.startswith("max_pool2d") for op in rec.ops)  # CPU dispatches max_pool2d_with_indices
        assert not {"adaptive_max_pool2d", "upsample_nearest2d"} & rec.ops
    else:
        assert {"adaptive_max_pool2d", "upsample_nearest2d"} <= rec.ops


@pytest.mark.parametrize("factor", [2, 4, 8, 16])
def test_fast_pool_path_is_bit_exact(factor):
    """max_pool2d + ones conv_transpose2d == the official adaptive_max_pool2d + nearest interpolate."""
    torch.manual_seed(factor)
    x = torch.randn(2, 9, 48, 32)
    conv = torch.nn.Conv2d(9, 9, 3, padding=1, groups=9)
    with torch.no_grad():
        fast = pool_modulate_up(x, conv, factor, torch.ones(9, 1, factor, factor))
        official = F.interpolate(conv(F.adaptive_max_pool2d(x, (48 // factor, 32 // factor))),
                                 size=(48, 32), mode="nearest")
    assert torch.equal(fast, official)


def test_partly_aligned_size_equals_official_ops(monkeypatch):
    """44 = 4·11: levels 1-2 take the fast path, level 3 falls back; the result equals the all-official path."""
    model = _golden_model(4)
    x = torch.rand(1, 3, 24, 44)
    with torch.no_grad():
        mixed = model(x)
        monkeypatch.setattr(safmn_module, "_aligned", lambda h, w, f: False)
        official = model(x)
    assert torch.equal(mixed, official)


@pytest.mark.parametrize("name,scale", sorted(PARAMS))
def test_parameter_counts(name, scale):
    with torch.device("meta"):  # no init work: counts only
        model = FACTORIES[name](scale)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == PARAMS[(name, scale)]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ["safmn", "safmn_l"])
def test_odd_size_output_shape(name, scale):
    model = create(name, scale)
    assert model.scale == scale and model.min_size == 8
    h, w = (37, 29) if name == "safmn" else (13, 11)  # SAFMN-L is 23× the compute: keep it small
    with torch.no_grad():
        y = model(torch.rand(2, 3, h, w))
    assert y.shape == (2, 3, h * scale, w * scale)


@pytest.mark.parametrize("name,minimum", [("safmn", 8), ("safmn_ntire", 16)])
def test_too_small_input_names_the_minimum(name, minimum):
    model = create(name, 4)
    assert model.min_size == minimum
    with pytest.raises(ValueError, match=f"at least {minimum}×{minimum}"):
        model(torch.rand(1, 3, 7, 9) if minimum == 8 else torch.rand(1, 3, 15, 20))
    with torch.no_grad():  # the minimum itself works
        assert model(torch.rand(1, 3, minimum, minimum + 1)).shape == (1, 3, 4 * minimum, 4 * minimum + 4)


def test_ntire_is_x4_only():
    assert safmn_ntire.scales == (4,)
    with pytest.raises(UsageError, match="supports scales 4"):
        create("safmn_ntire", 2)


def test_ntire_probe_shape_and_official_key_names(golden_dir):
    """The NTIRE probe holds no weights (only input/output), so only names, sizes and shapes are checked."""
    probe = torch.load(golden_dir / "SAFMN_NTIRE_x4_probe.pt", weights_only=True)
    assert "state_dict" not in probe  # if weights are ever added, replace this test by a golden comparison
    model = create("safmn_ntire", 4)
    keys = list(model.state_dict())
    assert len(keys) == 62 and keys[:4] == ["to_feat.weight", "to_feat.bias", "norm.gamma", "norm.beta"]
    assert "feats.7.safm.mfr.3.weight" in keys and "feats.0.safm.aggr.bias" not in keys
    assert keys[-2:] == ["to_img.0.weight", "to_img.0.bias"]
    with torch.no_grad():
        assert model(probe["input"]).shape == probe["output"].shape


def test_ntire_fast_path_equals_official_ops(monkeypatch):
    model = create("safmn_ntire", 4)
    with torch.no_grad():
        for p in model.norm.parameters():  # make the GRN non-trivial
            p.normal_()
        x = torch.rand(1, 3, 32, 48)
        fast = model(x)
        monkeypatch.setattr(safmn_module, "_aligned", lambda h, w, f: False)
        official = model(x)
    assert torch.equal(fast, official)


def test_grn_matches_its_definition():
    torch.manual_seed(0)
    x = torch.randn(2, 36, 9, 7)
    grn = GRN(36)
    with torch.no_grad():
        assert torch.equal(grn(x), x)  # gamma = beta = 0 at init: identity
        grn.gamma.normal_()
        grn.beta.normal_()
        g = torch.norm(x, p=2, dim=(2, 3), keepdim=True)
        want = grn.gamma * (x * (g / (g.mean(dim=1, keepdim=True) + 1e-6))) + grn.beta + x
        assert (grn(x) - want).abs().max().item() < 1e-5


def test_channels_first_layernorm_equals_nn_layernorm():
    torch.manual_seed(0)
    x = torch.randn(2, 36, 5, 7)
    ours = ChannelsFirstLayerNorm(36)
    ref = torch.nn.LayerNorm(36, eps=1e-6)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
        want = ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert (ours(x) - want).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", ["safmn", "safmn_ntire"])
def test_forward_has_no_inplace_ops(name):
    model = FACTORIES[name](4, n_blocks=1).eval()
    with torch.no_grad(), _OpRecorder() as rec:
        model(torch.rand(1, 3, 16, 24))
    assert not {op for op in rec.ops if op.split(".")[0].endswith("_")}, rec.ops


def test_torch_export_uses_delegatable_ops():
    """At a multiple-of-8 size the exported graph has no adaptive pool and no nearest upsample."""
    model = safmn(2, n_blocks=1).eval()
    x = torch.rand(1, 3, 16, 24)
    ep = torch.export.export(model, (x,))
    ops = {str(n.target) for n in ep.graph.nodes if n.op == "call_function"}
    assert not [op for op in ops if "adaptive" in op or "upsample" in op or "interpolate" in op], ops
    with torch.no_grad():  # exported, LayerNorms take their delegate form (1x1-conv means): equal up to rounding
        assert torch.allclose(ep.module()(x), model(x), atol=1e-5)


def test_litert_form_of_the_safm_upsample_is_exact_and_dense():
    """LiteRT takes SAFM's nearest upsample as a dense transposed conv (its grouped one has no fast int8 kernel):
    the same values as the depthwise form ExecuTorch takes, and no grouped transposed conv left in the graph."""
    import copy

    import torch

    from edgesr.models import create as build_model
    from edgesr.quantize.graph import capture
    from edgesr.reparam.forms import export_friendly, for_target

    net = build_model("safmn", 4, dim=8, n_blocks=1).eval()
    base = export_friendly(net)
    lite = copy.deepcopy(base)
    assert for_target(lite, "tflite") and not for_target(copy.deepcopy(base), "executorch")
    x = torch.rand(1, 3, 32, 48)
    with torch.no_grad():
        assert torch.equal(lite(x), base(x))

    def grouped_transposed(gm):
        return [n for n in gm.graph.nodes if "conv_transpose" in str(n.target)
                and len(n.args) > 6 and isinstance(n.args[6], int) and n.args[6] > 1]

    assert grouped_transposed(capture(net, target="executorch"))
    assert not grouped_transposed(capture(net, target="tflite"))
