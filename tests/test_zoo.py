"""The zoo: every shipped checkpoint loads by name, has a model card, and beats bicubic on a real photo."""

from __future__ import annotations

import hashlib

import pytest
import skimage.data
import torch

from conftest import SHARED
from edgesr.data.imresize import imresize
from edgesr.data.io import load_image, to_tensor, to_uint8
from edgesr.errors import CheckpointError
from edgesr.metrics import psnr_y
from edgesr.models import create, names
from edgesr.zoo import ZOO_DIR, available

# Official weights shipped unchanged: zoo file -> (file in ../shared/weights, licence file in the zoo).
OFFICIAL = {
    "eimn_a_x2.pth": ("EIMN/EIMN_A_x2.pth", "LICENSE.EIMN"),
    "eimn_a_x3.pth": ("EIMN/EIMN_A_x3.pth", "LICENSE.EIMN"),
    "eimn_a_x4.pth": ("EIMN/EIMN_A_x4.pth", "LICENSE.EIMN"),
    "eimn_l_x2.pth": ("EIMN/EIMN_L_x2.pth", "LICENSE.EIMN"),
    "eimn_l_x3.pth": ("EIMN/EIMN_L_x3.pth", "LICENSE.EIMN"),
    "safmn_ntire_x4.pth": ("SAFMN_NTIRE/SAFMN_NTIRE_x4.pth", "LICENSE.SAFMN_NTIRE"),
}
OFFICIAL_LICENCES = {"LICENSE.EIMN": "EIMN/LICENSE", "LICENSE.SAFMN_NTIRE": "SAFMN_NTIRE/LICENSE"}
NEW_OFFICIAL = [("safmn_ntire", 4), ("eimn_a", 2), ("eimn_a", 3), ("eimn_l", 2), ("eimn_l", 3)]
WEIGHTS = SHARED / "weights"


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _file_state(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, config overrides) of a raw state_dict, BasicSR file or plain edgesr checkpoint, read with
    torch alone (not edgesr's reader)."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if obj.get("format") == "edgesr":
        assert not obj.get("recipe", {}).get("model", {}).get("expand"), "zoo checkpoints are plain networks"
        return obj["state_dict"], obj.get("config", {})
    for key in ("params_ema", "params"):
        if isinstance(obj.get(key), dict):
            return obj[key], {}
    return obj, {}


def test_zoo_ships_the_seed_students_and_eimn():
    assert {("safmn", 4), ("scnet_t", 4), ("eimn_a", 4), ("lamnet", 4)} <= set(available())
    with pytest.raises(CheckpointError, match="no weights for lamnet x2"):
        create("lamnet", 2, weights="zoo")


def test_zoo_ships_the_official_networks():
    assert set(NEW_OFFICIAL) <= set(available())
    assert {f"{n}_x{s}.pth" for n, s in available()} >= set(OFFICIAL)
    with pytest.raises(CheckpointError, match="no weights for eimn_l x4"):
        create("eimn_l", 4, weights="zoo")


def test_every_zoo_file_is_a_registered_entry():
    """No stray .pth that available() would miss or misparse, and every name is a registered model."""
    assert sorted(p.name for p in ZOO_DIR.glob("*.pth")) == sorted(f"{n}_x{s}.pth" for n, s in available())
    assert {n for n, _ in available()} <= set(names())


@pytest.mark.parametrize("name,scale", available())
def test_zoo_weights_have_a_card_and_load_strictly(name, scale):
    stem = f"{name}_x{scale}"
    card = (ZOO_DIR / f"{stem}.md").read_text()
    assert card.startswith(f"# {name} x{scale}"), card.splitlines()[0]
    assert "Set5" in card and "PSNR" in card
    if f"{stem}.pth" in OFFICIAL:  # official weights: the card names the licence that ships beside them
        licence = OFFICIAL[f"{stem}.pth"][1]
        assert (ZOO_DIR / licence).is_file() and licence in card
    state, config = _file_state(ZOO_DIR / f"{stem}.pth")
    model = create(name, scale, **config)  # the registered architecture, untrained
    result = model.load_state_dict(state, strict=True)  # torch's own strict load, not edgesr's wrapper
    assert not result.missing_keys and not result.unexpected_keys
    zoo_model = create(name, scale, weights="zoo")  # and the zoo route really loads those tensors
    zoo_state = zoo_model.state_dict()
    assert all(torch.equal(zoo_state[k], v) for k, v in state.items())


@pytest.mark.skipif(not WEIGHTS.is_dir(), reason="../shared/weights not present")
@pytest.mark.parametrize("zoo_file", sorted(OFFICIAL))
def test_official_zoo_weights_are_byte_identical_to_the_release(zoo_file):
    src = WEIGHTS / OFFICIAL[zoo_file][0]
    assert _sha256(ZOO_DIR / zoo_file) == _sha256(src)


@pytest.mark.skipif(not WEIGHTS.is_dir(), reason="../shared/weights not present")
@pytest.mark.parametrize("licence", sorted(OFFICIAL_LICENCES))
def test_official_licences_are_the_published_text(licence):
    assert (ZOO_DIR / licence).read_bytes() == (WEIGHTS / OFFICIAL_LICENCES[licence]).read_bytes()


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


@pytest.mark.parametrize("name,scale", NEW_OFFICIAL)
def test_official_zoo_model_beats_bicubic_on_set5_crop(data_dir, name, scale):
    """Trained official networks are far ahead of bicubic (7.5-8.5 dB on this crop; a bad load is not)."""
    hr = load_image(data_dir / "Set5" / "butterfly.png")[80:176, 80:176]  # 96x96: divisible by 2, 3, 4
    lr = imresize(hr, 1 / scale)  # MATLAB bicubic, edgesr's default LR convention
    bicubic = imresize(lr, scale)
    model = create(name, scale, weights="zoo")
    with torch.no_grad():
        sr = to_uint8(model(to_tensor(lr)))
    assert sr.shape == hr.shape
    assert psnr_y(sr, hr, scale) > psnr_y(bicubic, hr, scale) + 3.0
