"""One normalisation dispatch for the data sets and for inference (``mtssl.load``), so the two never drift."""

from __future__ import annotations

import numpy as np

__all__ = ["NORMALIZATIONS", "normalize_image"]

NORMALIZATIONS = ("none", "zscore", "ct", "unit")


def normalize_image(image: np.ndarray, mode: str, ct_window: tuple[float, float] = (-125.0, 275.0)) -> np.ndarray:
    """A raw ``(C, *S)`` image as the data sets prepare it, float32 (computed in the input's precision).

    ``zscore``: per channel over the spatial axes; ``ct``: clipped to ``ct_window`` and scaled to
    [0, 1]; ``unit``: an integer image divided by its dtype's maximum (a float image is taken as
    already in [0, 1]); ``none``: unchanged.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"unknown normalization {mode!r}; known: {', '.join(NORMALIZATIONS)}")
    if mode == "unit":
        top = np.iinfo(image.dtype).max if np.issubdtype(image.dtype, np.integer) else 1.0
        return image.astype(np.float32) / np.float32(top)
    if mode == "ct":
        lo, hi = ct_window
        image = (np.clip(image, lo, hi) - lo) / (hi - lo)
    elif mode == "zscore":
        axes = tuple(range(1, image.ndim))
        mean = image.mean(axis=axes, keepdims=True)
        image = (image - mean) / np.maximum(image.std(axis=axes, keepdims=True), 1e-8)
    return image.astype(np.float32, copy=False)
