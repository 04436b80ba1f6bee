"""SCNet family: goldens from the official code, counts, shapes, Shift8 directions and the official init."""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from conftest import GOLDEN, need_shared
from edgesr.models import create
from edgesr.models.scnet import SHIFT8_OFFSETS, SCNet, Shift8, scnet_t, scnet_t_ps

PARAMS = {  # spec table (official class instantiated)
    ("scnet_t", 2): 146_051, ("scnet_t", 3): 146_051, ("scnet_t", 4): 154_371,
    ("scnet_t_ps", 2): 158_531, ("scnet_t_ps", 3): 179_331, ("scnet_t_ps", 4): 179_331,
}
FACTORIES = {"scnet_t": scnet_t, "scnet_t_ps": scnet_t_ps}


@lru_cache(maxsize=None)
def _golden(scale: int) -> dict:
    return torch.load(need_shared(GOLDEN / f"SCNet-T_x{scale}_randweights_probe.pt"), weights_only=True)


@pytest.mark.parametrize("case", ["48x40", "37x29"])
@pytest.mark.parametrize("scale", [3, 4])
def test_golden_randweights(scale, case):
    g = _golden(scale)
    cfg = g["config"]
    model = SCNet(cfg["upscale"], num_feat=cfg["num_feat"], num_block=cfg["num_block"],
                  use_pixelshuffle=cfg["use_pixelshuffle"])
    assert list(model.state_dict()) == list(g["state_dict"])  # official names and order
    model.load_state_dict(g["state_dict"], strict=True)
    data = g["cases"][case]
    with torch.no_grad():
        out = model.eval()(data["input"])
    assert out.shape == data["output"].shape
    diff = (out - data["output"]).abs().max().item()
    assert diff <= 1e-5, f"max abs diff {diff:.3g}"


@pytest.mark.parametrize("name,scale", sorted(PARAMS))
def test_parameter_counts(name, scale):
    with torch.device("meta"):
        model = FACTORIES[name](scale)
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == PARAMS[(name, scale)]


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("name", ["scnet_t", "scnet_t_ps"])
def test_odd_size_output_shape(name, scale):
    model = create(name, scale)
    assert model.scale == scale and model.min_size == 1
    with torch.no_grad():
        y = model(torch.rand(2, 3, 37, 29))
    assert y.shape == (2, 3, 37 * scale, 29 * scale)


def test_one_pixel_input_runs():
    with torch.no_grad():
        assert create("scnet_t", 2)(torch.rand(1, 3, 1, 1)).shape == (1, 3, 2, 2)


def test_pixelshuffle_variant_key_names():
    sd = scnet_t_ps(4).state_dict()
    assert sd["upconv1.up_layer.0.weight"].shape == (64, 64, 1, 1)
    assert sd["upconv1.up_layer.3.weight"].shape == (256, 64, 1, 1)
    assert sd["upconv2.up_layer.3.bias"].shape == (256,)
    assert len(sd) == 78 and len(scnet_t_ps(3).state_dict()) == 74
    assert sd["conv_last.weight"].shape == (3, 64, 1, 1)


def _shift8_official(x: torch.Tensor, g: int) -> torch.Tensor:
    """The official form: zeros + eight slice assignments from the zero-padded input."""
    h, w = x.shape[-2:]
    p = torch.nn.functional.pad(x, (1, 1, 1, 1))
    out = torch.zeros_like(x)
    for j, (dy, dx) in enumerate(SHIFT8_OFFSETS):
        out[:, j * g:(j + 1) * g] = p[:, j * g:(j + 1) * g, 1 + dy:1 + dy + h, 1 + dx:1 + dx + w]
    return out


def test_shift8_directions_on_a_ramp():
    """Spec §2.1 table: group 0 moves content down, 1 up, 2 right, 3 left, 4-7 the diagonals."""
    h, w = 5, 6
    ramp = torch.arange(1.0, h * w + 1).reshape(1, 1, h, w).repeat(1, 8, 1, 1)
    out = Shift8(1)(ramp)
    x = ramp[0, 0]
    want = {0: (-1, 0), 1: (1, 0), 2: (0, -1), 3: (0, 1), 4: (1, 1), 5: (1, -1), 6: (-1, 1), 7: (-1, -1)}
    for j, (dy, dx) in want.items():
        for r in range(h):
            for c in range(w):
                src = x[r + dy, c + dx] if 0 <= r + dy < h and 0 <= c + dx < w else 0.0
                assert out[0, j, r, c] == src, (j, r, c)


def test_shift8_concat_form_equals_official_assignment_form():
    torch.manual_seed(0)
    x = torch.randn(2, 64, 7, 9)
    assert torch.equal(Shift8(8)(x), _shift8_official(x, 8))
    with pytest.raises(ValueError, match="needs 64 channels"):
        Shift8(8)(torch.randn(1, 32, 4, 4))


def test_unsupported_scale_is_rejected():
    with pytest.raises(ValueError, match="scales 2, 3 and 4"):
        SCNet(5)


def test_official_init_kaiming_times_point_one():
    torch.manual_seed(0)
    model = scnet_t(4)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs)
    std = model.body[0].conv1.weight.std().item()  # kaiming normal: sqrt(2 / fan_in) = 0.177, × 0.1
    assert 0.014 < std < 0.021


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name.split("::")[-1])
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("name", ["scnet_t", "scnet_t_ps"])
def test_forward_has_no_inplace_or_scatter_ops(name):
    model = FACTORIES[name](4, num_block=2).eval()
    with torch.no_grad(), _OpRecorder() as rec:
        model(torch.rand(1, 3, 6, 5))
    assert not {op for op in rec.ops if op.split(".")[0].endswith("_")}, rec.ops
    assert not {op for op in rec.ops if "scatter" in op or "index_put" in op or op == "copy"}, rec.ops
