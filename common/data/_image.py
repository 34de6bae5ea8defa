"""The 2D populations' image layout and the input checks their analysers share (they also run on model samples).

Renderers and analysers work on row-major pictures ([H, W], row 0 = top); what the populations hand out and take
in is the [W, H] array MONAI's ``LoadImage`` reads from the written PNG (docs/CONTRACTS.md, "Files").
"""

from __future__ import annotations

import numpy as np


def as_xy(picture: np.ndarray) -> np.ndarray:
    """A row-major [H, W] picture as the [W, H] array ``LoadImage`` reads from its PNG (contiguous)."""
    return np.ascontiguousarray(np.asarray(picture).T)


def grey_2d(image: np.ndarray, population: str) -> np.ndarray:
    """A [W, H] (or [1, W, H]) image as the float32 row-major [H, W] picture the analysers measure; any other shape
    is an error."""
    a = np.asarray(image, np.float32)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{population} analysis needs a 2D image, got shape {a.shape}: pass one grey channel")
    return np.ascontiguousarray(a.T)
