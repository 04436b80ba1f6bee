"""edgesr: lightweight single-image super-resolution, from research code to phones.

The package follows the pipeline a user walks: models -> data/metrics -> evaluate -> (train, reparam,
quantize, export, check, report).
"""

__version__ = "0.1.0"
