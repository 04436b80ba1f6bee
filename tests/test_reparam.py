"""Reparameterization: every block kind and every family collapses / deploys exactly (≤ 1e-5 on [0, 1]
inputs with all weights, norm affines and BN statistics randomised), EIMN's official weights keep their
Set5 PSNR, checkpoints rebuild their structure, training records the expansion, the CLI works."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from edgesr.models import ModelSpec
from edgesr.reparam import load as reparam_load
import yaml
from PIL import Image
from torch import nn

from edgesr.cli import main
from edgesr.data.folders import open_benchmark
from edgesr.errors import UsageError
from edgesr.evaluate import evaluate
from edgesr.models import create, load_weights, save_checkpoint
from edgesr.models import eimn, lamnet, safmn
from edgesr.models.scnet import Shift8
from edgesr.reparam import (ChannelNorm, ECBConv, RepConv, RepVGGConv, SESRConv, collapse, deploy, expand, expand_targets,
                            fold_norms, fuse_shift_conv, inplace_ops, parse_expand, record_of, shift_as_depthwise,
                            shift_to_conv)
from edgesr.train import load_train_recipe, train

TOL = 1e-5
FAMILIES = ("safmn", "scnet_t", "eimn_a", "lamnet")
KINDS = ("repvgg", "ecb", "sesr")
NORMS = (safmn.ChannelsFirstLayerNorm, eimn.ChannelsFirstLayerNorm)


@torch.no_grad()
def randomize(model: nn.Module, seed: int = 0, sigma: float = 0.01) -> nn.Module:
    """Perturb every trainable parameter (zero-initialised branches included), give every norm a
    non-trivial affine and every BatchNorm non-trivial running statistics, so folding is exercised."""
    g = torch.Generator().manual_seed(seed)

    def rn(t: torch.Tensor) -> torch.Tensor:
        return torch.randn(t.shape, generator=g, dtype=t.dtype)

    for p in model.parameters():
        if p.requires_grad:
            p.add_(rn(p) * sigma)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(rn(m.running_mean) * 0.1)
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
        if isinstance(m, lamnet.LayerNormUnchanged):  # a ChannelNorm with (1, C, 1, 1) alpha/beta
            m.alpha.copy_(1 + 0.2 * rn(m.alpha))
            m.beta.copy_(0.1 * rn(m.beta))
        elif isinstance(m, (nn.BatchNorm2d, *NORMS)) and m.weight is not None:
            m.weight.copy_(1 + 0.2 * rn(m.weight))
            m.bias.copy_(0.1 * rn(m.bias))
    return model


def image(h: int = 16, w: int = 24, seed: int = 1) -> torch.Tensor:
    return torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(seed))


def max_diff(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    with torch.no_grad():
        return float((a.eval()(x) - b.eval()(x)).abs().max())


@pytest.fixture(scope="module")
def models() -> dict[str, nn.Module]:
    torch.manual_seed(0)
    return {name: create(name, 4) for name in FAMILIES}


# ----------------------------------------------------------------------------------------- blocks
def _conv(cin: int, cout: int, k: int, bias: bool = True, seed: int = 0) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, k, padding=k // 2, bias=bias)


@pytest.mark.parametrize("block,k", [(RepVGGConv, 3), (RepVGGConv, 1), (ECBConv, 3), (SESRConv, 3), (SESRConv, 1)])
@pytest.mark.parametrize("cin,cout,bias", [(8, 8, True), (3, 12, True), (8, 8, False)])
def test_block_starts_as_the_conv_and_collapses_exactly(block, k, cin, cout, bias):
    conv = _conv(cin, cout, k, bias)
    rep = block(conv, **({"expansion": 16} if block is SESRConv else {}))
    x = torch.rand(2, cin, 9, 7)
    assert rep.identity == (cin == cout)
    assert max_diff(rep, conv, x) <= 1e-6                      # function-preserving expansion
    randomize(rep, sigma=0.1)
    fused = rep.to_conv()
    assert type(fused) is nn.Conv2d and fused.kernel_size == (k, k) and (fused.bias is not None) == bias
    assert max_diff(rep, fused, x) <= TOL                      # borders included (9×7 input)


def test_sesr_needs_enough_hidden_channels():
    with pytest.raises(ValueError, match="expansion 4"):
        SESRConv(_conv(8, 8, 3), expansion=4)


def test_ecb_edge_branches_are_sobel_and_laplacian():
    rep = ECBConv(_conv(1, 2, 3))
    assert set(rep.edges) == {"sobel_x", "sobel_y", "laplacian"}
    assert rep.edges["laplacian"].mask[0, 0].tolist() == [[0, 1, 0], [1, -4, 1], [0, 1, 0]]


# ---------------------------------------------------------------------------------------- families
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("name", FAMILIES)
def test_expand_collapse_deploy_exact(models, name, kind):
    plain = copy.deepcopy(models[name])
    x = image()
    if name == "scnet_t" and kind == "ecb":
        with pytest.raises(UsageError, match="needs 3×3 convs"):
            expand(plain, kind)
        return
    expanded = expand(copy.deepcopy(plain), kind)
    assert record_of(expanded) == parse_expand(kind)
    assert max_diff(expanded, plain, x) <= 1e-6                 # expanding a model changes nothing
    randomize(expanded)
    collapsed = collapse(copy.deepcopy(expanded))
    deployed = deploy(copy.deepcopy(expanded))
    assert not any(isinstance(m, RepConv) for m in collapsed.modules())
    assert collapsed.state_dict().keys() == plain.state_dict().keys()
    with torch.no_grad():
        ref = expanded.eval()(x)
        assert float((collapsed(x) - ref).abs().max()) <= TOL
        assert float((deployed(x) - ref).abs().max()) <= TOL


def test_expand_targets_per_family(models):
    assert expand_targets(models["safmn"], "repvgg") == (
        ["to_feat"] + [f"feats.{i}.ccm.ccm.0" for i in range(8)] + ["to_img.0"])
    assert expand_targets(models["eimn_a"], "ecb") == ["head.0", "tail.0"]
    assert expand_targets(models["lamnet"], "sesr") == [
        "shallow_feature_extraction", "deep_feature_extraction.4", "upsample.0"]
    scnet = expand_targets(models["scnet_t"], "sesr")
    assert "conv_first" in scnet and "body.15.conv2" in scnet and "upconv2.up_layer.4" in scnet


def test_expand_is_idempotent_and_refuses_mixing(models):
    m = expand(copy.deepcopy(models["safmn"]), "repvgg")
    assert expand(m, "repvgg") is m
    with pytest.raises(UsageError, match="already expanded"):
        expand(m, "ecb")
    s = expand(copy.deepcopy(models["safmn"]), "sesr:expansion=80")
    assert record_of(s) == {"expand": "sesr", "expansion": 80} and s.to_feat.expand.out_channels == 80
    assert expand(s, "sesr", expansion=80) is s
    with pytest.raises(UsageError, match="already expanded"):
        expand(s, "sesr")                                       # default expansion 256 is another structure
    with pytest.raises(UsageError, match="no option 'width'"):
        parse_expand("sesr:width=3")
    with pytest.raises(UsageError, match="unknown expand kind"):
        expand(copy.deepcopy(models["safmn"]), "acb")
    with pytest.raises(UsageError, match="deployed"):
        expand(deploy(copy.deepcopy(models["safmn"])), "repvgg")


@pytest.mark.parametrize("name", FAMILIES)
def test_fold_norms_exact_and_removes_what_it_folds(models, name):
    model = randomize(copy.deepcopy(models[name]), seed=3)
    folded = fold_norms(copy.deepcopy(model))
    assert max_diff(folded, model, image()) <= TOL
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    if name == "lamnet":  # every pre-norm feeds a 1×1 conv: no affine left anywhere
        assert not any(isinstance(m, lamnet.LayerNormUnchanged) for m in folded.modules())
    if name == "safmn":   # norm2 keeps t/s in front of the zero-padded 3×3; norm1 (SAFM gate input) stays
        blk = folded.feats[0]
        assert blk.norm2.weight is None and blk.norm2.bias is not None
        assert isinstance(blk.norm1, safmn.ChannelsFirstLayerNorm)


def test_safmn_norm2_scale_fold_survives_tiny_and_zero_scales(models):
    model = randomize(copy.deepcopy(models["safmn"]), seed=4)
    with torch.no_grad():
        model.feats[0].norm2.weight[:3] = torch.tensor([1e-4, -1e-7, 0.0])
    assert max_diff(fold_norms(copy.deepcopy(model)), model, image()) <= TOL


def test_eimn_bn_folds_into_both_consumers(models):
    model = randomize(copy.deepcopy(models["eimn_a"]), seed=5)
    blk = model.block1[0]
    before = blk.attn.proj_query[0].weight.clone()
    fold_norms(model)
    assert isinstance(blk.norm1, nn.Identity) and isinstance(blk.norm2, nn.Identity)
    assert not torch.equal(blk.attn.proj_query[0].weight, before)


# ------------------------------------------------------------------------------------------ shifts
def test_shift_as_convs_equals_shift():
    shift = Shift8(2)
    z = torch.randn(2, 16, 5, 6)
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 7, 1)
    dw = shift_as_depthwise(shift)
    with torch.no_grad():
        assert torch.equal(dw(z), shift(z))                    # eager: slices
        assert torch.equal(nn.Conv2d.forward(dw, z), shift(z))  # the one-hot conv the exporters see
        assert float((fuse_shift_conv(shift, conv)(z) - conv(shift(z))).abs().max()) <= 1e-6


def _graph_ops(module: nn.Module, x: torch.Tensor) -> set[str]:
    gm = torch.export.export(module, (x,)).graph_module
    return {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}


def test_deploy_forms_export_as_delegate_friendly_ops():
    """Eager deploy modules take the fast PyTorch path; under torch.export they are the ops XNNPACK runs."""
    dw = shift_as_depthwise(Shift8(2))
    ops = _graph_ops(dw, torch.randn(1, 16, 5, 6))
    assert "aten.conv2d.default" in ops and "aten.cat.default" not in ops
    norm = ChannelNorm(16, 1e-6, bias=True)
    x = torch.randn(1, 16, 5, 6) * 3 + 1
    ops = _graph_ops(norm, x)
    assert "aten.conv2d.default" in ops and not any("mean" in o for o in ops)
    with torch.no_grad():
        eager = norm(x)
        norm.conv_mean = True
        assert float((norm(x) - eager).abs().max()) <= 1e-6


@pytest.mark.parametrize("mode", ["depthwise", "dense"])
@pytest.mark.parametrize("name", ["scnet_t", "scnet_t_ps"])
def test_scnet_shift_modes_exact(name, mode):
    torch.manual_seed(0)
    model = randomize(create(name, 4), sigma=0.02)
    rewritten = shift_to_conv(copy.deepcopy(model), mode)
    assert not any(isinstance(m, Shift8) for m in rewritten.modules())
    assert max_diff(rewritten, model, image()) <= TOL
    if mode == "dense":
        assert rewritten.body[0].conv2.kernel_size == (3, 3)


@pytest.mark.parametrize("name", FAMILIES)
def test_deployed_models_run_no_inplace_ops(models, name):
    deployed = deploy(copy.deepcopy(models[name]))
    assert inplace_ops(deployed, image(8, 8)) == []


# -------------------------------------------------------------------------------- official weights
def test_eimn_official_weights_psnr_unchanged_by_deploy(eimn_weights, data_dir):
    model = create("eimn_a", 4, weights=eimn_weights / "EIMN_A_x4.pth")
    bench = open_benchmark(data_dir / "Set5", 4)
    before = evaluate(model, bench, 4, progress=False)
    deployed = deploy(copy.deepcopy(model))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in deployed.modules())
    after = evaluate(deployed, bench, 4, progress=False)
    assert abs(after.psnr_y - before.psnr_y) < 1e-3, (before.psnr_y, after.psnr_y)
    assert before.psnr_y > 32.0


# ------------------------------------------------------------------------------------- checkpoints
def test_expanded_checkpoint_roundtrip(tmp_path, models):
    expanded = randomize(expand(copy.deepcopy(models["safmn"]), "sesr", expansion=96))
    path = save_checkpoint(tmp_path / "e.pt", expanded, model_name="safmn", scale=4,
                           extra={"reparam": record_of(expanded)})
    loaded = reparam_load(ModelSpec("safmn", 4, weights=str(path)))
    assert record_of(loaded) == {"expand": "sesr", "expansion": 96}
    x = image()
    assert max_diff(loaded, expanded, x) == 0.0
    collapsed = collapse(loaded)
    assert max_diff(collapsed, expanded, x) <= TOL
    plain = load_weights(create("safmn", 4), save_checkpoint(tmp_path / "c.pt", collapsed, model_name="safmn",
                                                             scale=4))  # collapsed = registry keys
    assert max_diff(plain, collapsed, x) == 0.0


@pytest.mark.parametrize("name", ["eimn_a", "scnet_t"])
def test_deployed_checkpoint_reloads(tmp_path, models, name):
    deployed = deploy(randomize(copy.deepcopy(models[name])))
    path = save_checkpoint(tmp_path / "d.pt", deployed, model_name=name, scale=4,
                           extra={"reparam": record_of(deployed)})
    loaded = reparam_load(ModelSpec(name, 4, weights=str(path)))
    assert record_of(loaded)["deploy"] is True
    assert max_diff(loaded, deployed, image()) == 0.0


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("reparam_images")
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)).resize((40, 32)).save(root / f"t{i}.png")
    return root


def test_training_with_expand_records_it(tmp_path, images):
    recipe = {"model": {"name": "scnet_t", "scale": 2, "expand": "sesr:expansion=80"},
              "data": {"train": [str(images)], "patch_size": 16, "batch_size": 2, "workers": 0},
              "iterations": 2, "ema": 0.9, "log_every": 1}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    final = train(load_train_recipe(tmp_path / "r.yaml"), tmp_path / "run", progress=False)
    model = reparam_load(ModelSpec("scnet_t", 2, weights=str(final)))               # rebuilt from the recipe in the checkpoint
    assert record_of(model) == {"expand": "sesr", "expansion": 80}
    assert model.body[0].conv1.expand.out_channels == 80
    assert max_diff(collapse(copy.deepcopy(model)), model, image(8, 8)) <= TOL


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["reparam", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--expand" in out and "--collapse" in out and "--deploy" in out and "Sobel" in out


def test_cli_expand_then_deploy(tmp_path, capsys):
    exp, dep = tmp_path / "exp.pt", tmp_path / "dep.pt"
    assert main(["reparam", "--model", "eimn_a", "--scale", "2", "--expand", "ecb", "--out", str(exp)]) == 0
    assert main(["reparam", "--model", "eimn_a", "--scale", "2", "--weights", str(exp), "--out", str(dep)]) == 0
    out = capsys.readouterr().out
    assert "expanded (ecb)" in out and "deployed" in out
    expanded, deployed = reparam_load(ModelSpec("eimn_a", 2, weights=str(exp))), reparam_load(ModelSpec("eimn_a", 2, weights=str(dep)))
    assert isinstance(expanded.head[0], ECBConv) and record_of(deployed)["deploy"] is True
    assert max_diff(deployed, expanded, image(8, 8)) <= TOL


def test_cli_bad_input_is_one_line(tmp_path, capsys):
    code = main(["reparam", "--model", "safmn", "--scale", "4", "--collapse", "--out", str(tmp_path / "x.pt")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not expanded" in err[0]
