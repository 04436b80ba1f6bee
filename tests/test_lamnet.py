"""LAMNet: pure-PyTorch FSA matches the CUDA kernel's transcription; the whole net matches the official code."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from edgesr.errors import CheckpointError
from edgesr.models import create
from edgesr.models.lamnet import focal_separable_attention, generate_kernel_map, lamnet

PARAMS = {  # spec table (official class instantiated, = paper Table 3)
    ("lamnet", 2): 828_364, ("lamnet", 3): 837_019, ("lamnet", 4): 849_136,
    ("lamnet_large", 2): 1_024_028, ("lamnet_large", 3): 1_032_683, ("lamnet_large", 4): 1_044_800,
}

# (start, length) per tap for K=13, loc [4,6,7], stride [1,2,4] (spec §2.6)
SPEC_TABLE = [(-8, 4), (-6, 2), (-4, 2), (-3, 1), (-2, 1), (-1, 1), (0, 1),
              (1, 1), (2, 1), (3, 1), (4, 2), (6, 2), (8, 4)]


def _count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@pytest.fixture(scope="module")
def fsa_probe(golden_dir):
    return torch.load(golden_dir / "LAMNet_fsa_probe.pt", weights_only=True)


def test_kernel_map_generation_rule(fsa_probe):
    table = generate_kernel_map(13, [4, 6, 7], [1, 2, 4])
    assert table == SPEC_TABLE
    assert torch.equal(torch.tensor(table, dtype=torch.int32), fsa_probe["kernel_map"])
    covered = sorted(s + i * (1 if s >= 0 else -1) for s, n in table for i in range(n))
    assert covered == list(range(-11, 12))  # the segments tile the 23-wide window once
    with pytest.raises(ValueError, match="kernel_loc"):
        generate_kernel_map(11, [3, 4, 5], [1, 2, 4])  # the official constructor defaults


@pytest.mark.parametrize("direction,dim", [("horizontal", -1), ("vertical", -2)])
def test_fsa_matches_cuda_transcription(fsa_probe, direction, dim):
    kernels = fsa_probe[f"kernel_{direction[0]}"]
    want = fsa_probe[f"out_{direction}"]
    for table in (SPEC_TABLE, fsa_probe["kernel_map"]):  # Python taps or the int32 buffer
        out = focal_separable_attention(fsa_probe["input"], kernels, table, dim, fsa_probe["groups"])
        diff = (out - want).abs().max().item()
        assert diff <= 2e-6, f"max abs diff {diff:.3g}"


def test_randweights_golden(golden_dir):
    probe = torch.load(golden_dir / "LAMNet_x4_randweights_probe.pt", weights_only=True)
    cfg = probe["config"]
    assert (cfg["num_groups"], cfg["num_blocks"], cfg["kernel_size"], cfg["upscale"]) == (4, 6, 13, 4)
    model = lamnet(4).eval()
    assert list(model.state_dict()) == list(probe["state_dict"])
    model.load_state_dict(probe["state_dict"], strict=True)
    for tag in ("48x40", "37x29"):
        case = probe["cases"][tag]
        with torch.no_grad():
            out = model(case["input"])
        assert out.shape == case["output"].shape
        diff = (out - case["output"]).abs().max().item()
        assert diff <= 1e-4, f"{tag}: max abs diff {diff:.3g}"


@pytest.mark.parametrize("name,scale", sorted(PARAMS))
def test_parameter_counts(name, scale):
    assert _count(create(name, scale)) == PARAMS[(name, scale)]


@pytest.mark.parametrize("name", ["lamnet", "lamnet_large"])
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_odd_size_output_shape(name, scale):
    model = create(name, scale)
    assert model.scale == scale and model.min_size == 1
    with torch.no_grad():
        y = model(torch.rand(2, 3, 37, 29))
    assert y.shape == (2, 3, 37 * scale, 29 * scale)


def test_one_pixel_input_runs():
    """min_size is 1: FSA zero-pads and every conv is stride 1 with same padding."""
    model = lamnet(2, num_groups=1, num_blocks=1).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 1, 2)).shape == (1, 3, 2, 4)


def test_buffers_kernel_map_persistent_mean_not():
    model = lamnet(2)
    state = model.state_dict()
    maps = [k for k in state if k.endswith("kernel_map")]
    assert len(maps) == 24
    assert all(state[k].dtype == torch.int32 and state[k].tolist() == [list(t) for t in SPEC_TABLE]
               for k in maps)
    assert "mean" not in state and len(state) == 707


def test_foreign_kernel_map_is_refused():
    model = lamnet(2, num_groups=1, num_blocks=1)
    state = model.state_dict()
    state["deep_feature_extraction.0.mixers.0.fn.kernel_map"] = state[
        "deep_feature_extraction.0.mixers.0.fn.kernel_map"].flip(0)
    with pytest.raises(CheckpointError, match="kernel_map"):
        model.load_state_dict(state)


def test_official_training_init():
    torch.manual_seed(0)
    model = lamnet(4)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert all(torch.count_nonzero(m.bias) == 0 for m in convs)
    assert abs(weights.std().item() - 0.02) < 1e-3 and weights.abs().max().item() <= 2.0


class _OpRecorder(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: set[str] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.add(func._schema.name + ("." + func._overloadname if func._overloadname else ""))
        return func(*args, **(kwargs or {}))


def test_forward_has_no_inplace_or_bmm_ops():
    model = lamnet(2, num_groups=1, num_blocks=1).eval()
    with torch.no_grad(), _OpRecorder() as rec:
        model(torch.rand(1, 3, 9, 7))
    inplace = {op for op in rec.ops if op.split("::")[-1].split(".")[0].endswith("_")}
    assert not inplace, inplace
    assert not {op for op in rec.ops if "bmm" in op or "matmul" in op}, rec.ops
