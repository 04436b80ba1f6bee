"""Evaluation path: tiling arithmetic, tiled vs whole runs, and the published EIMN numbers end to end."""

from __future__ import annotations

import pytest
import torch

from edgesr.data.folders import open_benchmark
from edgesr.evaluate import evaluate, super_resolve, tile_starts
from edgesr.models import create


@pytest.mark.parametrize("length,tile,overlap", [(100, 32, 8), (33, 32, 8), (32, 32, 0), (10, 32, 4), (97, 40, 20)])
def test_tile_starts_cover_with_overlap(length, tile, overlap):
    starts = tile_starts(length, tile, overlap)
    t = min(tile, length)
    assert starts[0] == 0 and starts[-1] + t == length
    assert all(b - a <= t - overlap for a, b in zip(starts, starts[1:]))


def test_overlap_must_be_below_tile():
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(100, 16, 16)


def test_tiling_is_exact_for_a_local_model_and_not_for_a_global_one():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 70, 53)
    scnet = create("scnet_t", 2)
    with torch.no_grad():  # training init scales residual branches by 0.1; make every pixel matter
        for p in scnet.parameters():
            p.normal_(0, 0.15)
    whole = super_resolve(scnet, x, 2)
    tiled = super_resolve(scnet, x, 2, tile=24, overlap=20)
    assert (whole - tiled).abs().max() < 1e-5
    assert (whole - super_resolve(scnet, x, 2, tile=24, overlap=4)).abs().max() > 1e-3  # context too small
    eimn = create("eimn_a", 4, weights="zoo")  # trained weights: the global branch matters
    x = x[..., :40, :36]
    whole = super_resolve(eimn, x, 4)
    tiled = super_resolve(eimn, x, 4, tile=24, overlap=12)
    assert (whole - tiled).abs().max() > 1e-3  # DFFM's global mean sees only the tile


def test_eimn_a_x4_set5_reproduces_authors_record(data_dir, eimn_weights):
    """Authors' record.txt: Set5 x4 32.52410 dB / 0.89928, measured on BasicSR's benchmark pack.

    Our LR is made from the HR folder with the same convention (GTmod12, double-precision resize).
    The SelfExSR-style LR (mod-crop 4, uint8 resize) gives the spec's 32.549 dB instead.
    """
    model = create("eimn_a", 4, weights=eimn_weights / "EIMN_A_x4.pth")
    res = evaluate(model, open_benchmark(data_dir / "Set5", 4, convention="basicsr"), 4, progress=False)
    assert res.images == 5
    assert abs(res.psnr_y - 32.52410035252859) <= 0.01
    assert abs(res.ssim_y - 0.8992825002770413) <= 0.0002
    res = evaluate(model, open_benchmark(data_dir / "Set5", 4), 4, progress=False)
    assert abs(res.psnr_y - 32.549) <= 0.001
