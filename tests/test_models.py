"""The registry contract: names, scales, eval mode, every accepted weights format, clear errors."""

from __future__ import annotations

import pytest
import torch

from edgesr.errors import CheckpointError, UsageError
from edgesr.models import create, names, num_params, save_checkpoint

REQUIRED = ["safmn", "safmn_l", "scnet_t", "scnet_t_ps", "eimn_a", "eimn_l", "lamnet", "lamnet_large"]


def test_required_names_registered():
    assert set(REQUIRED) <= set(names())


@pytest.mark.parametrize("name", REQUIRED)
def test_create_returns_eval_mode_with_scale(name):
    """Forward passes on odd sizes live in the per-family tests (test_<family>.py)."""
    for scale in (2, 3, 4):
        model = create(name, scale)
        assert not model.training and model.scale == scale
        assert isinstance(model.min_size, int) and model.min_size >= 1


@pytest.mark.parametrize("name", REQUIRED)
def test_too_small_input_names_the_minimum(name):
    model = create(name, 2)
    if model.min_size <= 1:
        with pytest.raises(ValueError, match="N×3×H×W"):
            model(torch.rand(1, 4, 8, 8))
        return
    with pytest.raises(ValueError, match=f"at least {model.min_size}×{model.min_size}"):
        model(torch.rand(1, 3, model.min_size - 1, model.min_size + 3))


def test_unknown_name_and_scale_are_usage_errors():
    with pytest.raises(UsageError, match="unknown model 'nope'"):
        create("nope", 4)
    with pytest.raises(UsageError, match="supports scales 2, 3, 4"):
        create("scnet_t", 5)


def _perturbed(model):
    return {k: v + 0.5 if v.is_floating_point() else v for k, v in model.state_dict().items()}


def _same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_raw_basicsr_and_edgesr_formats_load(tmp_path):
    ref = create("scnet_t", 2)
    state = _perturbed(ref)
    ref.load_state_dict(state)
    torch.save(state, tmp_path / "raw.pth")
    torch.save({"params": state}, tmp_path / "basicsr.pth")
    save_checkpoint(tmp_path / "ours.pt", ref, model_name="scnet_t", scale=2, recipe={"stage": "test"})
    for f in ("raw.pth", "basicsr.pth", "ours.pt"):
        assert _same(create("scnet_t", 2, weights=tmp_path / f), ref), f


def test_basicsr_prefers_params_ema_unless_overridden(tmp_path):
    model = create("scnet_t", 2)
    ema = _perturbed(model)
    torch.save({"params": model.state_dict(), "params_ema": ema}, tmp_path / "both.pth")
    loaded = create("scnet_t", 2, weights=tmp_path / "both.pth")
    assert torch.equal(loaded.conv_first.weight, ema["conv_first.weight"])
    loaded = create("scnet_t", 2, weights=tmp_path / "both.pth", param_key="params")
    assert torch.equal(loaded.conv_first.weight, model.conv_first.weight)
    with pytest.raises(CheckpointError, match="no 'nope' entry"):
        create("scnet_t", 2, weights=tmp_path / "both.pth", param_key="nope")


def test_edgesr_checkpoint_remembers_model_and_scale(tmp_path):
    save_checkpoint(tmp_path / "c.pt", create("scnet_t", 2), model_name="scnet_t", scale=2)
    with pytest.raises(CheckpointError, match="for x2, not x4"):
        create("scnet_t", 4, weights=tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="of 'scnet_t', not 'safmn'"):
        create("safmn", 2, weights=tmp_path / "c.pt")


def test_mismatched_file_names_model_file_and_keys(tmp_path):
    torch.save(create("scnet_t_ps", 3).state_dict(), tmp_path / "ps_x3.pth")
    with pytest.raises(CheckpointError) as err:
        create("scnet_t_ps", 4, weights=tmp_path / "ps_x3.pth")
    msg = str(err.value)
    assert "scnet_t_ps x4" in msg and "ps_x3.pth" in msg and "upconv1.up_layer.3.weight" in msg
    assert "[576, 64, 1, 1]" in msg and "missing key" in msg  # x4 also has a second stage
    torch.save(create("scnet_t", 2).state_dict(), tmp_path / "mlp.pth")
    with pytest.raises(CheckpointError, match="missing key.*unexpected key"):
        create("scnet_t_ps", 2, weights=tmp_path / "mlp.pth")


def test_unreadable_weights_are_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        create("scnet_t", 2, weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read weights file"):
        create("scnet_t", 2, weights=tmp_path / "junk.pth")
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(CheckpointError, match="not a state_dict"):
        create("scnet_t", 2, weights=tmp_path / "list.pth")


def test_zoo_weights_by_name():
    model = create("eimn_a", 4, weights="zoo")
    assert num_params(model) == 880_870
    with pytest.raises(CheckpointError, match="zoo has no weights for lamnet x2"):
        create("lamnet", 2, weights="zoo")


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    """A failure mid-save leaves neither a partial file nor a temp file, and keeps the old checkpoint."""
    model = create("scnet_t", 2)
    target = save_checkpoint(tmp_path / "c.pt", model, model_name="scnet_t", scale=2)
    before = target.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    import edgesr.io_utils

    monkeypatch.setattr(edgesr.io_utils.os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(target, model, model_name="scnet_t", scale=2)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]
