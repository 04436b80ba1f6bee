"""The post-training weight algorithms (edgesr.quantize.weights), each on a case built to need it: equalization
keeps the float function and evens the channel ranges, the scale search lowers the layer's output MSE below
round-to-nearest, bias correction removes the int8 weights' per-channel output mean shift — and the int8 weights
they assume are the ones the targets' quantizers produce."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgesr.quantize import QuantConfig, ptq
from edgesr.quantize import weights as W
from edgesr.quantize.graph import capture


class TwoConv(nn.Module):
    """conv → activation → conv → pixel shuffle: the smallest SR net with an equalizable pair."""

    def __init__(self, act: nn.Module, channels: int = 16, scale: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.a = nn.Conv2d(3, channels, 3, padding=1)
        self.act = act
        self.b = nn.Conv2d(channels, 3 * scale * scale, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(self.b(self.act(self.a(x))), self.scale)


def _imbalanced(act: nn.Module) -> TwoConv:
    """Channel i of the hidden activation scaled by 10^(-2 ... 1), compensated in the next conv: the same
    function, but a per-tensor activation scale leaves the small channels a few int8 levels."""
    torch.manual_seed(0)
    m = TwoConv(act).eval()
    with torch.no_grad():
        s = torch.logspace(-2, 1, m.a.out_channels)
        m.a.weight.mul_(s.view(-1, 1, 1, 1))
        m.a.bias.mul_(s)
        m.b.weight.div_(s.view(1, -1, 1, 1))
    return m


def _ranges(w: torch.Tensor) -> torch.Tensor:
    return w.abs().flatten(1).amax(1)


@pytest.mark.parametrize("act", [nn.ReLU(), nn.LeakyReLU(0.1), nn.PReLU(16, 0.2)], ids=["relu", "leaky", "prelu"])
def test_equalization_keeps_the_function_and_evens_channel_ranges(act):
    m = _imbalanced(act)
    gm = capture(m)
    x = torch.rand(2, 3, 20, 20)
    before = gm(x)
    spread = _ranges(gm.model.a.weight)
    assert float(spread.max() / spread.min()) > 100
    assert W.equalize(gm) == 1
    after = _ranges(gm.model.a.weight)
    assert float(after.max() / after.min()) < 2.0
    assert float((gm(x) - before).abs().max()) <= 1e-5


def test_equalization_skips_activations_that_are_not_positively_homogeneous():
    gm = capture(_imbalanced(nn.GELU()).eval())
    assert W.equalization_pairs(gm) == [] and W.equalize(gm) == 0


def test_equalization_rescues_int8_of_an_imbalanced_relu_net():
    m = _imbalanced(nn.ReLU())
    calib = [torch.rand(1, 3, 32, 32) for _ in range(4)]
    x = torch.rand(1, 3, 32, 32)
    ref = m(x).clamp(0, 1)
    plain = ptq(m, "executorch", calib, QuantConfig())
    eq = ptq(m, "executorch", calib, QuantConfig(equalize=True))
    err_plain, err_eq = float(((plain(x) - ref) ** 2).mean()), float(((eq(x) - ref) ** 2).mean())
    assert eq.info["equalized_pairs"] == 1
    assert err_eq < err_plain / 10


def _heavy_tailed_conv() -> tuple[W.ConvRef, dict, list[torch.Tensor]]:
    torch.manual_seed(1)
    m = TwoConv(nn.ReLU()).eval()
    with torch.no_grad():  # large weights on a nearly silent input channel set a coarse grid for the others:
        m.a.weight.copy_(torch.distributions.Laplace(0.0, 0.05).sample(m.a.weight.shape))
        m.a.weight[:, 0] = 1.0     # clipping them costs little, a finer grid gains on every other weight
    gm = capture(m)
    refs = W.conv_refs(gm)[:1]
    inputs = [torch.rand(1, 3, 24, 24) * torch.tensor([0.01, 1.0, 1.0]).view(1, 3, 1, 1) for _ in range(4)]
    return refs[0], W.conv_stats(gm, refs, inputs), inputs


def _layer_mse(ref: W.ConvRef, weight: torch.Tensor, inputs: list[torch.Tensor]) -> float:
    out = [F.conv2d(x, weight, ref.bias, ref.stride, ref.padding, ref.dilation, ref.groups) for x in inputs]
    fp = [F.conv2d(x, ref.weight, ref.bias, ref.stride, ref.padding, ref.dilation, ref.groups) for x in inputs]
    return float(torch.stack([((a - b) ** 2).mean() for a, b in zip(out, fp)]).mean())


def test_scale_search_lowers_the_layer_output_mse_below_round_to_nearest():
    ref, stats, inputs = _heavy_tailed_conv()
    original = ref.weight.clone()
    nearest = _layer_mse(ref, W.quantize_weight(original), inputs)
    gains = W.search_scales([ref], stats)
    searched = W.quantize_weight(ref.weight)  # clipped weights: the observer's max lands on the searched scale
    ref_fp = W.ConvRef(ref.node, original, ref.bias, ref.stride, ref.padding, ref.dilation, ref.groups)
    mse = _layer_mse(ref_fp, searched, inputs)
    assert gains[ref.node.name] > 1.0
    assert mse < 0.8 * nearest


def test_bias_correction_removes_the_per_channel_output_mean_shift():
    torch.manual_seed(2)
    gm = capture(TwoConv(nn.ReLU()).eval())
    ref = W.conv_refs(gm)[0]
    with torch.no_grad():
        ref.weight.copy_(torch.randn_like(ref.weight) * 0.1)
    inputs = [0.8 + 0.2 * torch.rand(1, 3, 24, 24) for _ in range(4)]  # large positive mean
    stats = W.conv_stats(gm, [ref], inputs)
    fp_w, q_w = ref.weight.clone(), W.quantize_weight(ref.weight)

    def shift(bias: torch.Tensor) -> torch.Tensor:
        fp = torch.cat([F.conv2d(x, fp_w, b0, padding=1) for x in inputs])
        q = torch.cat([F.conv2d(x, q_w, bias, padding=1) for x in inputs])
        return (q - fp).mean((0, 2, 3)).abs()

    b0 = ref.bias.detach().clone()
    before = shift(b0)
    W.correct_bias([ref], stats)
    after = shift(ref.bias.detach().clone())
    assert float(before.max()) > 1e-4
    assert float(after.max()) < 0.05 * float(before.max())


@pytest.mark.parametrize("target", ["executorch", "tflite"])
def test_the_modelled_int8_weights_are_the_targets(target):
    """quantize_weight is what the target's quantizer stores: the algorithms optimise the real weights."""
    torch.manual_seed(3)
    m = TwoConv(nn.ReLU()).eval()
    q = ptq(m, target, [torch.rand(1, 3, 16, 16) for _ in range(2)], QuantConfig())

    def value(node):
        if not isinstance(node, torch.fx.Node):
            return node
        if node.op == "get_attr":
            obj = q.graph
            for part in str(node.target).split("."):
                obj = getattr(obj, part)
            return obj
        return node.target(*[value(a) for a in node.args], **{k: value(v) for k, v in node.kwargs.items()})

    convs = [n for n in q.graph.graph.nodes if n.op == "call_function" and n.target == torch.ops.aten.conv2d.default]
    assert len(convs) == 2
    for conv, fp in zip(convs, (m.a.weight, m.b.weight)):
        assert torch.allclose(value(conv.args[1]), W.quantize_weight(fp.detach()), atol=1e-7)


def test_weight_algorithms_survive_a_checkpoint_round_trip(tmp_path):
    from edgesr.models import ModelSpec, build
    from edgesr.quantize import load, save_quantized

    torch.manual_seed(4)
    # no biases: bias correction adds them, and the reload must find them
    m = build(ModelSpec("tests/nets/plain_net.py:make_plain_sr", 2, kwargs={"channels": 6, "depth": 2, "bias": False}))
    cfg = QuantConfig(equalize=True, scale_search=True, bias_correction=True)
    q = ptq(m, "executorch", [torch.rand(1, 3, 16, 16) for _ in range(2)], cfg)
    assert q.info["equalized_pairs"] == 2 and q.info["bias_corrected_layers"] == 3
    save_quantized(q, tmp_path / "q.pt")
    x = torch.rand(1, 3, 16, 16)
    assert torch.equal(load(tmp_path / "q.pt")(x), q(x))


def test_quantize_cli_flags_apply_the_weight_algorithms(tmp_path):
    from edgesr.cli import main
    from edgesr.data.samples import CALIB_IMAGES, sample_paths

    photos = [str(p) for p in sample_paths(CALIB_IMAGES)][:2]
    base = ["quantize", "--model", "tests/nets/plain_net.py:make_plain_sr", "--scale", "2", "--model-kwargs",
            '{"channels": 6, "depth": 2}', "--target", "executorch", "--data", *photos, "--calib-size", "2",
            "--calib-patch", "32", "--quiet"]
    infos = {}
    for flag in ("", "--equalize", "--scale-search", "--bias-correction"):
        out = tmp_path / f"q{flag}.pt"
        assert main([*base, *([flag] if flag else []), "--out", str(out)]) == 0
        ckpt = torch.load(out, weights_only=True)
        infos[flag] = (ckpt["info"], ckpt["config"])
    assert not {"equalized_pairs", "scale_search_layers", "bias_corrected_layers"} & set(infos[""][0])
    assert infos["--equalize"][0]["equalized_pairs"] == 2 and infos["--equalize"][1]["equalize"]
    assert "scale_search_layers" in infos["--scale-search"][0] and infos["--scale-search"][1]["scale_search"]
    assert infos["--bias-correction"][0]["bias_corrected_layers"] == 3 and infos["--bias-correction"][1]["bias_correction"]
