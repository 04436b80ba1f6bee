"""Image files in and out, and the uint8 <-> tensor conversions the evaluation depends on.

Everything is normalised to H×W×3 uint8 RGB at load time, so the rest of edgesr never sees modes,
bit depths or alpha channels. The conventions follow what SR benchmarks (BasicSR, MATLAB scripts)
do, so that PSNR numbers are comparable with the literature.
"""

from __future__ import annotations

import io
import re
import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..errors import EdgesrError, one_line
from ..io_utils import atomic_write_bytes

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
"""Lower-case suffixes that edgesr treats as images when it lists a folder."""

_SAVE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}
_RAW16 = re.compile(r"^(RGB|RGBA|RGBX|LA);16([BLN])$")




def _tile_rawmode(tile) -> str | None:
    args = tile[3]
    if isinstance(args, str):
        return args
    if isinstance(args, tuple) and args and isinstance(args[0], str):
        return args[0]
    return None


def _with_rawmode(tile, rawmode: str):
    args = tile[3]
    new_args = rawmode if isinstance(args, str) else (rawmode,) + tuple(args[1:])
    return tile._replace(args=new_args) if hasattr(tile, "_replace") else (tile[0], tile[1], tile[2], new_args)


def _decode_16bit_colour(path: Path, rawmode: str) -> np.ndarray | None:
    """Full 16-bit samples (H×W×C uint16) of a colour image that Pillow would truncate to 8 bits.

    Pillow has no 16-bit-per-channel colour mode: it keeps only the high byte (``v >> 8``), up to
    one grey level below ``round(v / 257)``. Decoding the same tiles again with the opposite byte
    order yields the low bytes; together they give the exact values. 16-bit grey+alpha has no
    swapped unpacker, so its 4-byte pixels are decoded as raw RGBA bytes instead. Returns None for
    layouts this does not cover (the caller then falls back to Pillow's 8 bits).
    """
    base, order = _RAW16.match(rawmode).groups()
    if order == "N":
        order = "L" if sys.byteorder == "little" else "B"
    if base == "LA":
        bytes_ = _decode_with(path, "RGBA")
        if bytes_ is None:
            return None
        hi, lo = (bytes_[..., 0::2], bytes_[..., 1::2]) if order == "B" else (bytes_[..., 1::2], bytes_[..., 0::2])
        return hi.astype(np.uint16) * 256 + lo
    hi = _decode_with(path, rawmode)
    lo = _decode_with(path, f"{base};16{'B' if order == 'L' else 'L'}")
    if hi is None or lo is None:
        return None
    return hi.astype(np.uint16) * 256 + lo


def _decode_with(path: Path, rawmode: str) -> np.ndarray | None:
    with Image.open(path) as im:
        try:
            im.tile = [_with_rawmode(t, rawmode) for t in im.tile]
            im.load()
        except (ValueError, KeyError):  # no such unpacker for this image mode in this Pillow
            return None
        return np.array(im, dtype=np.uint8)


def _to_uint8_from_16(values: np.ndarray) -> np.ndarray:
    """round(v / 257): maps 0..65535 onto 0..255 evenly (no ties occur for integer v)."""
    v = np.clip(values.astype(np.int64), 0, 65535)
    return ((v + 128) // 257).astype(np.uint8)


def _rgb(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    return np.ascontiguousarray(arr[:, :, :3])


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file as H×W×3 uint8 RGB — the one layout the evaluation works on.

    * PNG, JPEG, BMP, TIFF (anything Pillow opens), decoded eagerly so that a truncated or corrupt
      file fails here, as an EdgesrError naming the file, not later inside a model.
    * Greyscale and 1-bit images are replicated to three channels (how Set14's grey image is scored).
    * Palette images are expanded to their RGB colours.
    * Alpha is dropped, not composited: the stored colour is kept, as cv2.imread/BasicSR read
      benchmark images (compositing over black would darken semi-transparent pixels).
    * 16-bit images become 8-bit by ``round(v / 257)`` (exact for 16-bit colour PNG/TIFF too,
      where Pillow alone would truncate to the high byte).
    * EXIF orientation is ignored: pixels are used as stored, like MATLAB's imread and the
      published benchmark LR/HR pairs (rotating one side would misalign HR and LR).
    * JPEG is decoded by Pillow's libjpeg; other decoders (cv2, MATLAB) can differ by a grey level.

    Corruption is detected as long as ``PIL.ImageFile.LOAD_TRUNCATED_IMAGES`` is left False.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. PIL's DecompressionBombWarning / EXIF warnings
            with Image.open(path) as im:
                rawmodes = {_tile_rawmode(t) for t in im.tile}
                raw = rawmodes.pop() if len(rawmodes) == 1 else None
                if raw and _RAW16.match(raw) and (full := _decode_16bit_colour(path, raw)) is not None:
                    return _rgb(_to_uint8_from_16(full[:, :, 0] if raw.startswith("LA") else full))
                im.load()
                mode = im.mode
                if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
                    return _rgb(_to_uint8_from_16(np.asarray(im)))
                if mode == "F":
                    raise EdgesrError(f"cannot read image {path}: 32-bit float images are not supported "
                                      "(convert to 8- or 16-bit PNG)")
                if mode == "L":
                    return _rgb(np.asarray(im, dtype=np.uint8))
                if mode in ("1", "LA", "La"):
                    return _rgb(np.asarray(im.convert("L"), dtype=np.uint8))
                if mode == "RGB":
                    return np.ascontiguousarray(np.asarray(im, dtype=np.uint8))
                # P, PA, RGBA, RGBa, RGBX, CMYK, YCbCr, LAB, HSV ...: Pillow's conversion drops alpha.
                return np.ascontiguousarray(np.asarray(im.convert("RGB"), dtype=np.uint8))
    except EdgesrError:
        raise
    except FileNotFoundError as exc:
        raise EdgesrError(f"image not found: {path}") from exc
    except IsADirectoryError as exc:
        raise EdgesrError(f"cannot read image {path}: is a directory") from exc
    except UnidentifiedImageError as exc:
        raise EdgesrError(f"cannot read image {path}: not a recognised image format") from exc
    except Exception as exc:  # OSError (truncated), SyntaxError, struct.error ...: Pillow plugins vary
        raise EdgesrError(f"cannot read image {path}: {one_line(exc)}") from exc


def save_image(path: str | Path, arr: np.ndarray) -> Path:
    """Write an H×W×3 (or H×W) uint8 image atomically: a temp file in the same folder, then rename.

    An interrupted run never leaves a half-written image that a later run would read as valid.
    The format follows the suffix; JPEG is written at quality 95 (prefer PNG for SR results, as
    any lossy format changes the pixels PSNR is computed on).
    """
    path = Path(path)
    fmt = _SAVE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EdgesrError(f"cannot save {path}: unknown image suffix (use one of {', '.join(sorted(_SAVE_FORMATS))})")
    arr = np.asarray(arr)
    if arr.dtype != np.uint8 or not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] in (1, 3))):
        raise ValueError(f"save_image expects an H×W×3 or H×W uint8 array, got {arr.dtype} {arr.shape}")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    options = {"quality": 95} if fmt == "JPEG" else {}
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(arr)).save(buf, format=fmt, **options)
    return atomic_write_bytes(path, buf.getvalue())


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """H×W×3 uint8 RGB → 1×3×H×W float32 in [0, 1] (value / 255), the input every SR model expects."""
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"to_tensor expects an H×W×3 uint8 image, got {img.dtype} {img.shape}")
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return t.to(torch.float32).div_(255.0).unsqueeze_(0)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    """1×3×H×W (or 3×H×W) float tensor in [0, 1] → H×W×3 uint8, as BasicSR's ``tensor2img``.

    Computed in float32: clamp to [0, 1], × 255, round half to even (``torch.round``, same as the
    numpy ``.round()`` BasicSR uses). Papers score this rounded image, so metrics must see it too.
    """
    if t.ndim == 4:
        if t.shape[0] != 1:
            raise ValueError(f"to_uint8 expects a single image, got a batch of shape {tuple(t.shape)}")
        t = t[0]
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"to_uint8 expects a 1×3×H×W or 3×H×W tensor, got shape {tuple(t.shape)}")
    t = t.detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    return np.ascontiguousarray((t * 255.0).round().to(torch.uint8).permute(1, 2, 0).numpy())
