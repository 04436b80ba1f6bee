"""Training: a tiny CPU run, bit-identical resume after an interruption, 2-process DDP, recipe errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import edgesr.train.loop as loop
from edgesr.cli import main
from edgesr.config import RecipeError
from edgesr.models import create
from edgesr.train import TrainingInterrupted, load_train_recipe, lr_at, train
from edgesr.train.patches import PatchDataset, StepSampler
from edgesr.train.recipe import ScheduleSpec


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("train_images")
    rng = np.random.default_rng(0)
    for i in range(4):
        base = rng.integers(0, 256, (12, 12, 3)).astype(np.uint8)
        Image.fromarray(base).resize((48, 40), Image.BICUBIC).save(root / f"t{i}.png")
    return root


def _recipe(tmp_path, images, **extra):
    data = {
        "model": {"name": "scnet_t", "scale": 2},
        "data": {"train": [str(images)], "patch_size": 16, "batch_size": 4, "workers": 0},
        "iterations": 6,
        "optim": {"lr": 1e-3},
        "loss": {"l1": 1.0, "fft": 0.05},
        "checkpoint_every": 2,
        "log_every": 1,
        "ema": 0.9,
    }
    for k, v in extra.items():
        data[k] = v
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _states_equal(a, b):
    sa = torch.load(a, weights_only=True)["state_dict"]
    sb = torch.load(b, weights_only=True)["state_dict"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_tiny_run_writes_loadable_model_and_log(tmp_path, images):
    recipe = load_train_recipe(_recipe(tmp_path, images))
    final = train(recipe, tmp_path / "run", progress=False)
    model = create("scnet_t", 2, weights=final)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)
    ckpt = torch.load(final, weights_only=True)
    assert ckpt["model"] == "scnet_t" and ckpt["scale"] == 2 and ckpt["recipe"]["iterations"] == 6
    lines = [json.loads(x) for x in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    steps = [x["step"] for x in lines if "loss" in x]
    assert steps == [1, 2, 3, 4, 5, 6] and all(np.isfinite(x["loss"]) for x in lines if "loss" in x)
    assert {"l1", "fft", "lr", "it_s"} <= set(lines[-1])


def test_resume_after_interrupt_is_bit_identical(tmp_path, images, monkeypatch):
    recipe_path = _recipe(tmp_path, images)
    straight = train(load_train_recipe(recipe_path), tmp_path / "a", progress=False)

    real_update, calls = loop._ema_update, {"n": 0}

    def interrupt_at_step_3(*args):
        real_update(*args)
        calls["n"] += 1
        if calls["n"] == 3:
            os.kill(os.getpid(), signal.SIGINT)  # what Ctrl-C does

    monkeypatch.setattr(loop, "_ema_update", interrupt_at_step_3)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 3/6"):
        train(load_train_recipe(recipe_path), tmp_path / "b", progress=False)
    assert not (tmp_path / "b" / "model.pt").exists()
    monkeypatch.setattr(loop, "_ema_update", real_update)
    resumed = train(load_train_recipe(recipe_path), tmp_path / "b", resume=True, progress=False)
    assert _states_equal(straight, resumed)
    steps = [json.loads(x).get("step") for x in (tmp_path / "b" / "train_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_existing_run_needs_resume(tmp_path, images):
    recipe = load_train_recipe(_recipe(tmp_path, images, iterations=2))
    train(recipe, tmp_path / "run", progress=False)
    with pytest.raises(Exception, match="already holds a training run"):
        train(recipe, tmp_path / "run", progress=False)
    with pytest.raises(Exception, match="nothing to resume"):
        train(recipe, tmp_path / "fresh", resume=True, progress=False)


def test_patches_depend_only_on_index(images):
    ds = PatchDataset([images], 2, 16, seed=3, progress=False)
    a_lr, a_hr = ds[17]
    b_lr, b_hr = PatchDataset([images], 2, 16, seed=3, progress=False)[17]
    assert torch.equal(a_lr, b_lr) and a_lr.shape == (3, 8, 8) and a_hr.shape == (3, 16, 16)
    assert not torch.equal(ds[18][0], a_lr)


def test_step_sampler_ranks_partition_the_global_batch():
    single = list(StepSampler(2, 4, 8))
    ranks = [list(StepSampler(2, 4, 8, rank=r, world=2)) for r in range(2)]
    by_step = [ranks[0][i * 4:(i + 1) * 4] + ranks[1][i * 4:(i + 1) * 4] for i in range(2)]
    assert sum(by_step, []) == single == list(range(16, 32))


def test_lr_schedules():
    cos = ScheduleSpec(kind="cosine", eta_min=0.0)
    assert lr_at(0, 1.0, 100, cos) == 1.0 and abs(lr_at(50, 1.0, 100, cos) - 0.5) < 1e-12
    ms = ScheduleSpec(kind="multistep", milestones=[10, 20], gamma=0.5)
    assert [lr_at(s, 1.0, 30, ms) for s in (9, 10, 25)] == [1.0, 0.5, 0.25]
    assert lr_at(0, 1.0, 30, ScheduleSpec(kind="constant", warmup=4)) == 0.25


def test_ddp_two_processes_match_single_process_global_batch(tmp_path, images):
    recipe = _recipe(tmp_path, images, iterations=3, ema=0.0)
    single = train(load_train_recipe(recipe), tmp_path / "single", progress=False)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "edgesr", "train", str(recipe), "--out", str(tmp_path / "ddp"), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    start = json.loads((tmp_path / "ddp" / "train_log.jsonl").read_text().splitlines()[0])
    assert start["world"] == 2 and start["global_batch"] == 4 and start["per_rank_batch"] == 2
    a = torch.load(single, weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "ddp" / "model.pt", weights_only=True)["state_dict"]
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4


def test_distillation_with_feature_adapter(tmp_path, images):
    teacher = tmp_path / "teacher.pth"
    torch.save(create("scnet_t_ps", 2).state_dict(), teacher)
    recipe = load_train_recipe(_recipe(tmp_path, images, iterations=2, teacher={
        "name": "scnet_t_ps", "weights": str(teacher), "output_weight": 1.0, "feature_weight": 0.5}))
    train(recipe, tmp_path / "kd", progress=False)
    last = [json.loads(x) for x in (tmp_path / "kd" / "train_log.jsonl").read_text().splitlines()][-1]
    assert last["kd"] > 0 and last["feat"] > 0
    state = torch.load(tmp_path / "kd" / "last.ckpt", weights_only=False)
    assert state["adapter"]["weight"].shape == (64, 64, 1, 1)


@pytest.mark.parametrize("patch,message", [
    ({"iterations": "many"}, "iterations: expected an integer"),
    ({"bogus": 1}, "unknown key 'bogus'"),
    ({"data": {"train": ["x"], "patchsize": 3}}, "unknown key 'data.patchsize'"),
    ({"optim": {"lr": "fast"}}, "optim.lr: expected a number"),
    ({"schedule": {"kind": "linear"}}, "schedule.kind: 'linear' is not one of"),
    ({"teacher": {"name": "eimn_a", "weights": "zoo", "scale": 4}}, "teacher.scale 4 differs"),
    ({"data": {"train": ["x"], "patch_size": 15}}, "not a multiple of the scale"),
])
def test_recipe_validation_names_the_key(tmp_path, images, patch, message):
    with pytest.raises(RecipeError, match=message):
        load_train_recipe(_recipe(tmp_path, images, **patch))


def test_recipe_file_errors(tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("model: [unclosed\n")
    assert main(["train", str(tmp_path / "bad.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "malformed YAML (line" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "none.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "recipe not found" in capsys.readouterr().err
    (tmp_path / "m.yaml").write_text("model: {name: scnet_t}\n")
    assert main(["train", str(tmp_path / "m.yaml"), "--out", str(tmp_path / "o")]) == 2
    assert "missing required key 'data'" in capsys.readouterr().err


class _NearestTeacher(torch.nn.Module):
    """A local 'teacher' whose output on a crop equals the crop of its whole-image output."""

    def forward(self, x):
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def test_precomputed_teacher_patches_are_aligned_and_augmented_like_hr(images):
    ds = PatchDataset([images], 2, 16, seed=5, progress=False, teacher=_NearestTeacher())
    for i in range(20):  # covers flips and rotations
        lr, hr, t = ds[i]
        assert t.shape == hr.shape
        assert torch.allclose(t, _NearestTeacher()(lr[None])[0], atol=2e-3)  # float16 storage


def test_offline_distillation_run(tmp_path, images):
    teacher = tmp_path / "teacher.pth"
    torch.save(create("scnet_t_ps", 2).state_dict(), teacher)
    recipe = load_train_recipe(_recipe(tmp_path, images, iterations=2, teacher={
        "name": "scnet_t_ps", "weights": str(teacher)}))
    assert recipe.teacher.precompute is True
    train(recipe, tmp_path / "kd", progress=False)
    last = [json.loads(x) for x in (tmp_path / "kd" / "train_log.jsonl").read_text().splitlines()][-1]
    assert last["kd"] > 0
    with pytest.raises(RecipeError, match="precompute cannot be combined"):
        load_train_recipe(_recipe(tmp_path, images, teacher={
            "name": "scnet_t_ps", "weights": str(teacher), "precompute": True, "feature_weight": 0.1}))
