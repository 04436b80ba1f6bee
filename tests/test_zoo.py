"""The zoo: every shipped checkpoint loads by name, has a model card, and beats bicubic on a real photo."""

from __future__ import annotations

import pytest
import skimage.data
import torch

from edgesr.data.imresize import imresize
from edgesr.data.io import to_tensor, to_uint8
from edgesr.errors import CheckpointError
from edgesr.metrics import psnr_y
from edgesr.models import create
from edgesr.zoo import ZOO_DIR, available


def test_zoo_ships_the_seed_students_and_eimn():
    assert {("safmn", 4), ("scnet_t", 4), ("eimn_a", 4), ("lamnet", 4)} <= set(available())
    with pytest.raises(CheckpointError, match="no weights for lamnet x2"):
        create("lamnet", 2, weights="zoo")


@pytest.mark.parametrize("name,scale", available())
def test_zoo_model_has_a_card_and_beats_bicubic(name, scale):
    card = (ZOO_DIR / f"{name}_x{scale}.md").read_text()
    assert "Set5" in card and "PSNR" in card
    hr = skimage.data.astronaut()[:96, 160:256]  # face and hair: real texture
    lr = imresize(hr, 1 / scale)
    bicubic = imresize(lr, scale)
    model = create(name, scale, weights="zoo")
    with torch.no_grad():
        sr = to_uint8(model(to_tensor(lr)))
    assert psnr_y(sr, hr, scale) > psnr_y(bicubic, hr, scale) + 0.05
