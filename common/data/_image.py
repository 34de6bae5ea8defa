"""Input checks shared by the 2D populations' analysers (they also run on model samples)."""

from __future__ import annotations

import numpy as np


def grey_2d(image: np.ndarray, population: str) -> np.ndarray:
    """The image as a float32 [H, W] array; a [1, H, W] array loses its channel axis, any other shape is an error."""
    a = np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{population} analysis needs a 2D image, got shape {a.shape}: pass one grey channel")
    return a
