"""Benchmark folder layouts and their errors."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from edgesr.data.folders import open_benchmark
from edgesr.errors import EdgesrError


def _img(path, w, h, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_hr_folder_is_modcropped_and_downscaled(tmp_path):
    _img(tmp_path / "set" / "a.png", 50, 37)
    _img(tmp_path / "set" / "b.bmp", 32, 32)
    (tmp_path / "set" / "notes.txt").write_text("ignored")
    bench = open_benchmark(tmp_path / "set", 4)
    assert bench.name == "set" and [p.name for p in bench.pairs] == ["a", "b"]
    hr, lr = bench.pairs[0].load_hr(), bench.pairs[0].load_lr()
    assert hr.shape == (36, 48, 3) and lr.shape == (9, 12, 3) and lr.dtype == np.uint8


@pytest.mark.parametrize("lr_dir,suffix", [("LR_bicubic/X2", "x2"), ("LR/X2", ""), ("LRbicx2", "_x2"), ("LR", "")])
def test_paired_layouts(tmp_path, lr_dir, suffix):
    root = tmp_path / "paired"
    _img(root / "HR" / "baby.png", 20, 16)
    _img(root / lr_dir / f"baby{suffix}.png", 10, 8, seed=1)
    bench = open_benchmark(root, 2)
    assert bench.lr_source.endswith(lr_dir)
    pair = bench.pairs[0]
    assert pair.name == "baby" and pair.load_hr().shape == (16, 20, 3) and pair.load_lr().shape == (8, 10, 3)


def test_unpaired_names_are_reported(tmp_path):
    root = tmp_path / "paired"
    _img(root / "HR" / "baby.png", 20, 16)
    _img(root / "HR" / "bird.png", 20, 16)
    _img(root / "LR" / "X2" / "babyx2.png", 10, 8)
    _img(root / "LR" / "X2" / "zebrax2.png", 10, 8)
    with pytest.raises(EdgesrError, match="1 HR image.*'bird.png'.*1 LR image.*'zebrax2.png'"):
        open_benchmark(root, 2)


def test_hr_smaller_than_lr_times_scale(tmp_path):
    root = tmp_path / "paired"
    _img(root / "HR" / "a.png", 10, 8)
    _img(root / "LR" / "a.png", 10, 8)
    with pytest.raises(EdgesrError, match="smaller than 2× its LR"):
        open_benchmark(root, 2).pairs[0].load_hr()


def test_missing_empty_and_file_paths(tmp_path):
    with pytest.raises(EdgesrError, match="not found"):
        open_benchmark(tmp_path / "nope", 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(EdgesrError, match="no images"):
        open_benchmark(tmp_path / "empty", 2)
    (tmp_path / "f.png").write_bytes(b"x")
    with pytest.raises(EdgesrError, match="not a folder"):
        open_benchmark(tmp_path / "f.png", 2)
