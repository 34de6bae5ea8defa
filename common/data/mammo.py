"""Mammography population: craniocaudal-like views with a breast outline, a subcutaneous fat rim and
fibroglandular tissue whose area fraction (density) sets the masking level low / medium / high.

Orientation: chest wall at the image's left edge (x = 0 of the [W, H] array), nipple towards the right edge. The analyser needs only the breast to
be brighter than the background and its subcutaneous fat rim to be darker than the glands.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data._image import as_xy, grey_2d

MASKING = ("low", "medium", "high")
# fibroglandular area fraction of the breast per masking level; the gaps keep the levels measurable
DENSITY_RANGES = {"low": (0.05, 0.20), "medium": (0.30, 0.45), "high": (0.56, 0.78)}
# analyser cut-offs on the measured density (midway between the ranges)
DENSITY_CUTS = (0.25, 0.505)
FAT, GLAND, BACKGROUND = 0.30, 0.78, 0.02


@dataclass
class MammoCase:
    """One mammogram in [0, 1], [W, H] as ``LoadImage`` reads its PNG, and its ground truth."""

    image: np.ndarray
    attributes: dict


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return (n - n.mean()) / (n.std() + 1e-6)


def render(density: float, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Draw a breast with fibroglandular fraction ``density``; returns the image and the achieved fraction."""
    from scipy import ndimage as ndi

    h, w = size
    y, x = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    cy = 0.5 + rng.normal(0, 0.02)
    ry = rng.uniform(0.36, 0.44)  # half height at the chest wall
    depth = rng.uniform(0.70, 0.88)  # nipple distance from the chest wall (fraction of width)
    # breast outline: a superellipse from the chest wall, slightly asymmetric
    u = (y - cy) / ry
    u = np.where(u > 0, u * rng.uniform(0.95, 1.05), u)
    reach = depth * np.clip(1.0 - np.abs(u) ** rng.uniform(2.0, 2.6), 0, None) ** 0.5
    inside = reach - x  # > 0 inside the breast (fraction of width)
    breast = inside > 0
    # distance to the skin in pixels; glands stay a fat rim away from it
    dist = ndi.distance_transform_edt(breast).astype(np.float32)
    rim = 0.06 * min(h, w)
    prior = np.clip((dist - rim) / (0.10 * min(h, w)), 0, 1) * (1.0 - 0.35 * x / depth)
    s = min(h, w)
    # strands run towards the nipple: smoother along x than along y
    tex = (_smooth(rng, size, 0.035 * s) + 0.6 * _smooth(rng, size, (0.006 * s, 0.03 * s))
           + 0.3 * _smooth(rng, size, 0.01 * s))
    score = np.where(prior > 0, tex + 2.5 * prior, -np.inf)
    n_breast = int(breast.sum())
    k = int(round(density * n_breast))
    gland = np.zeros(size, np.float32)
    if k > 0:
        thr = np.partition(score[breast], n_breast - k)[n_breast - k]
        gland = ((score >= thr) & breast).astype(np.float32)
    achieved = float(gland[breast].mean()) if n_breast else 0.0
    gland_soft = ndi.gaussian_filter(gland, 0.008 * s + 0.5)
    gland_level = GLAND * (1.0 + 0.07 * _smooth(rng, size, 0.01 * s))
    # thickness falls off near the skin line, so the periphery is darker (compression)
    thick = np.clip(dist / (0.08 * min(h, w)), 0, 1) ** 0.5
    img = BACKGROUND + breast * thick * (FAT + (gland_level - FAT) * gland_soft)
    # Cooper's ligaments / trabecular texture and a skin line
    img += breast * 0.03 * _smooth(rng, size, 0.006 * s) * (1 - gland_soft)
    skin = breast & (dist < 1.5)
    img = np.where(skin, np.maximum(img, 0.45), img)
    img = np.clip(img * rng.uniform(0.93, 1.05), 0, 1)
    img += rng.normal(0, 0.01, size=size).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), achieved


def generate(seed: int, index: int = 0, size: tuple[int, int] = (160, 128)) -> MammoCase:
    """Case ``index`` of the population with ``seed`` (image [W, H]; ``size`` is (H, W))."""
    rng = np.random.default_rng([int(seed), int(index), 4409])
    label = int(rng.integers(0, 3))
    masking = MASKING[label]
    image, density = render(float(rng.uniform(*DENSITY_RANGES[masking])), size, rng)
    return MammoCase(as_xy(image), {"masking": masking, "label": label, "density": density})


def analyse(image: np.ndarray) -> dict:
    """Density (fibroglandular fraction) and masking level measured from an image ([W, H]) at any intensity scale."""
    from scipy import ndimage as ndi

    a = grey_2d(image, "mammo")
    lo, hi = np.percentile(a, 1), np.percentile(a, 99.5)
    breast = ndi.binary_fill_holes(ndi.binary_opening(a > lo + 0.15 * (hi - lo), iterations=1))
    if breast.sum() < 50:
        return {"density": 0.0, "masking": "low", "label": 0, "breast_fraction": 0.0}
    dist = ndi.distance_transform_edt(breast)
    s = min(a.shape)
    rim = breast & (dist > 0.025 * s) & (dist < 0.05 * s)  # subcutaneous fat, thick enough to be flat
    fat = float(np.median(a[rim])) if rim.any() else lo
    gland = float(np.percentile(a[breast], 99))
    dense = breast & (ndi.gaussian_filter(a, 0.6) > fat + 0.5 * (gland - fat))
    density = float(dense.sum() / breast.sum())
    label = int(np.searchsorted(DENSITY_CUTS, density))
    return {"density": density, "masking": MASKING[label], "label": label,
            "breast_fraction": float(breast.mean())}


def write_case(seed: int, index: int, path, size: tuple[int, int] = (160, 128)) -> dict:
    """Write case ``index`` as an 8-bit PNG; return its datalist entry."""
    from common.io.writers import write_png

    from ._files import round_floats

    c = generate(seed, index, size)
    name = f"mammo-{index:05d}.png"
    write_png(c.image, path(name))
    a = c.attributes
    return {"image": name, "masking": a["masking"], "label": a["label"], **round_floats({"density": a["density"]}),
            "case": f"mammo-{index:05d}"}
