"""Image data: MATLAB-compatible resizing, image files, and uint8 <-> tensor conversions."""

from __future__ import annotations

from .imresize import imresize, modcrop
from .io import IMAGE_EXTENSIONS, load_image, save_image, to_tensor, to_uint8

__all__ = ["IMAGE_EXTENSIONS", "imresize", "load_image", "modcrop", "save_image", "to_tensor", "to_uint8"]
