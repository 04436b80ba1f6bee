"""Structural reparameterization: train rich, deploy plain, prove it exact.

Plain functions from model to model (each edits in place and returns the model):

* ``expand(model, kind)`` — multi-branch training blocks (``repvgg``, ``ecb``, ``sesr``) in place of the
  eligible convs, starting as the same function;
* ``collapse(model)`` — every block back into one ``nn.Conv2d``;
* ``fold_norms(model)`` — affine normalisations into the convs that consume them, where exact;
* ``shift_to_conv(model, mode)`` — SCNet's Shift8 as a depthwise conv or fused into the next 1×1 conv;
* ``deploy(model)`` — all of the above that applies: the graph quantization and export consume;
* ``export_friendly(model)`` — the export form of any architecture (see :mod:`edgesr.reparam.forms`).

Checkpoints record the structure (``"reparam"`` entry, see ``transform_of``) and ``load(spec)`` rebuilds
it before the strict load.
"""

from __future__ import annotations

from ..lazy import lazy_package

_LAZY = {
    "ECBConv": "blocks",
    "EdgeBranch": "blocks",
    "RepConv": "blocks",
    "RepVGGConv": "blocks",
    "SESRConv": "blocks",
    "fold_affine_into_conv": "fold",
    "fold_norms": "fold",
    "batchnorm_affine": "fold",
    "ChannelNorm": "fold",
    "applicable_rewrites": "forms",
    "export_friendly": "forms",
    "fp16_safe_norms": "forms",
    "fuse_shift_conv": "shift",
    "shift_as_depthwise": "shift",
    "shift_to_conv": "shift",
    "DEFAULT_SHIFT": "transforms",
    "KINDS": "transforms",
    "collapse": "transforms",
    "deploy": "transforms",
    "eligible": "transforms",
    "expand": "transforms",
    "expand_targets": "transforms",
    "inplace_ops": "transforms",
    "load": "transforms",
    "parse_expand": "transforms",
    "rebuild": "transforms",
    "record_of": "transforms",
    "transform_of": "transforms",
}

lazy_package(__name__, _LAZY)
