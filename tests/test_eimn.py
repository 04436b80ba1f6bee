"""EIMN: official weights reproduce the official outputs; counts, shapes and export-friendly forms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from edgesr.errors import CheckpointError
from edgesr.models import create
from edgesr.models.eimn import DFFM, ChannelsFirstLayerNorm, eimn_a, eimn_l

FACTORIES = {"A": eimn_a, "L": eimn_l}

PARAMS = {  # spec table (official class instantiated, = paper)
    ("eimn_a", 2): 860_098, ("eimn_a", 3): 868_753, ("eimn_a", 4): 880_870,
    ("eimn_l", 2): 981_724, ("eimn_l", 3): 990_379, ("eimn_l", 4): 1_002_496,
}


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize("tag", ["A_x2", "A_x3", "A_x4", "L_x2", "L_x3"])
def test_official_weights_reproduce_golden(tag, golden_dir, eimn_weights):
    variant, scale = tag.split("_x")
    golden = torch.load(golden_dir / f"EIMN_{tag}_probe.pt", weights_only=True)
    state = torch.load(eimn_weights / f"EIMN_{tag}.pth", weights_only=True)
    model = FACTORIES[variant](int(scale)).eval()
    assert list(model.state_dict()) == list(state)  # same names, same order as the official tree
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        out = model(golden["input"])
    assert out.shape == golden["output"].shape
    diff = (out - golden["output"]).abs().max().item()
    assert diff <= 1e-4, f"max abs diff {diff:.3g}"


@pytest.mark.parametrize("name,scale", sorted(PARAMS))
def test_parameter_counts(name, scale):
    assert _count(create(name, scale)) == PARAMS[(name, scale)]


@pytest.mark.parametrize("name", ["eimn_a", "eimn_l"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_odd_size_output_shape(name, scale):
    model = create(name, scale)
    assert model.scale == scale and model.min_size == 1
    with torch.no_grad():
        y = model(torch.rand(2, 3, 37, 29))
    assert y.shape == (2, 3, 37 * scale, 29 * scale)


def test_one_pixel_input_runs():
    """min_size is 1: stride-1 convs with same padding accept any size."""
    model = eimn_a(2, num_stages=1).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 1, 2)).shape == (1, 3, 2, 4)


def test_wrong_scale_weights_name_model_file_and_key(eimn_weights):
    path = eimn_weights / "EIMN_A_x2.pth"
    with pytest.raises(CheckpointError) as err:
        create("eimn_a", 4, weights=path)
    msg = str(err.value)
    assert "eimn_a x4" in msg and "EIMN_A_x2.pth" in msg and "tail.0.weight" in msg


def test_channels_first_layernorm_equals_nn_layernorm():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 5, 7)
    ours = ChannelsFirstLayerNorm(64, eps=1e-5)
    ref = torch.nn.LayerNorm(64, eps=1e-5)
    with torch.no_grad():
        for p in (ours.weight, ours.bias):
            p.normal_()
        ref.load_state_dict(ours.state_dict())
        want = ref(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        assert (ours(x) - want).abs().max().item() < 1e-5


def test_dffm_broadcast_sum_equals_concat_form():
    """The shape-free spatial gate equals the official conv1x1(concat[local, global.expand(H, W)])."""
    torch.manual_seed(0)
    m = DFFM(64).eval()
    z = torch.randn(2, 64, 6, 5)
    with torch.no_grad():
        n = m.norm(z)
        g = F.gelu(m.global_reduce(F.adaptive_avg_pool2d(n, 1)))
        loc = F.gelu(m.local_reduce(n))
        s = torch.sigmoid(m.spatial_expand(torch.cat([loc, g.expand(-1, -1, 6, 5)], dim=1)))
        want = z * torch.sigmoid(m.channel_expand(g)) * s
        assert (m(z) - want).abs().max().item() < 1e-6


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name + ("." + func._overloadname if func._overloadname else ""))
        return func(*args, **(kwargs or {}))


def test_forward_has_no_inplace_or_layout_ops():
    model = eimn_a(2, num_stages=1).eval()
    with torch.no_grad(), _OpRecorder() as rec:
        model(torch.rand(1, 3, 9, 7))
    inplace = {op for op in rec.ops if op.split("::")[-1].split(".")[0].endswith("_")}
    assert not inplace, inplace
    assert not {op for op in rec.ops if "permute" in op or "expand" in op}, rec.ops
