"""Pure tensor functions, 2D and 3D, on the tensor's device.

Layouts: masks and label maps are ``(B, *S)``; network outputs and multi-channel maps are
``(B, C, *S)``; S has 2 or 3 dims. No modules, no I/O, no global state.
"""

from mtssl.ops.boundary import boundary, erode, soft_boundary
from mtssl.ops.conv_distance import (
    foreground_log_probs,
    normalize_max,
    normalize_signed,
    soft_distance,
    soft_signed_distance,
)
from mtssl.ops.distance import edt, signed_distance
from mtssl.ops.losses import binary_cross_entropy, cross_entropy, dice_loss, mse_loss

__all__ = [
    "binary_cross_entropy",
    "boundary",
    "cross_entropy",
    "dice_loss",
    "edt",
    "erode",
    "foreground_log_probs",
    "mse_loss",
    "normalize_max",
    "normalize_signed",
    "signed_distance",
    "soft_boundary",
    "soft_distance",
    "soft_signed_distance",
]
