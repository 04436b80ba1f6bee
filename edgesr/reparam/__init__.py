"""Structural reparameterization: train rich, deploy plain, prove it exact.

Plain functions from model to model (each edits in place and returns the model):

* ``expand(model, kind)`` — multi-branch training blocks (``repvgg``, ``ecb``, ``sesr``) in place of the
  eligible convs, starting as the same function;
* ``collapse(model)`` — every block back into one ``nn.Conv2d``;
* ``fold_norms(model)`` — affine normalisations into the convs that consume them, where exact;
* ``shift_to_conv(model, mode)`` — SCNet's Shift8 as a depthwise conv or fused into the next 1×1 conv;
* ``deploy(model)`` — all of the above that applies: the graph quantization and export consume.

Checkpoints record the structure (``"reparam"`` entry, see ``transform_of``) and
``edgesr.models.create`` rebuilds it before loading.
"""

from .blocks import ECBConv, EdgeBranch, RepConv, RepVGGConv, SESRConv
from .fold import ChannelNorm, fold_affine_into_conv, fold_norms
from .shift import fuse_shift_conv, shift_as_depthwise, shift_to_conv
from .transforms import (
    DEFAULT_SHIFT,
    KINDS,
    collapse,
    deploy,
    eligible,
    expand,
    expand_targets,
    inplace_ops,
    parse_expand,
    rebuild,
    record_of,
    transform_of,
)

__all__ = ["expand", "parse_expand", "collapse", "fold_norms", "shift_to_conv", "deploy", "rebuild", "transform_of",
           "record_of", "eligible", "expand_targets", "inplace_ops", "KINDS", "DEFAULT_SHIFT", "RepConv", "RepVGGConv",
           "ECBConv", "SESRConv", "EdgeBranch", "ChannelNorm", "fold_affine_into_conv", "fuse_shift_conv",
           "shift_as_depthwise"]
