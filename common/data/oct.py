"""Retinal OCT population: B-scans with the retinal layers (NFL to RPE, choroid) and a foveal pit, speckle,
and four classes as in OCT2017: NORMAL, DRUSEN (small RPE elevations), DME (intraretinal fluid cysts and
thickening), CNV (a large RPE dome over fibrovascular material, with subretinal fluid).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data._image import as_xy, grey_2d

CLASSES = ("CNV", "DME", "DRUSEN", "NORMAL")  # label = index, as in the contract
# layers from the inner limiting membrane down: (name, share of the retina's thickness, reflectivity)
INNER = (("NFL", 0.14, 0.72), ("GCL", 0.14, 0.42), ("IPL", 0.12, 0.55), ("INL", 0.12, 0.28), ("OPL", 0.09, 0.55))
OUTER = (("ONL", 0.22, 0.18), ("ELM", 0.03, 0.45), ("EZ", 0.05, 0.82), ("IZ", 0.04, 0.35))
RPE_REFLECT, VITREOUS, CHOROID, FLUID = 0.95, 0.04, 0.50, 0.04
# analyser cut-offs (fractions of image height / width), calibrated on the population (docs/data.md)
CNV_ELEVATION, CNV_WIDTH, DME_FLUID, DME_THICKNESS = 0.045, 0.08, 0.01, 0.255


@dataclass
class OctCase:
    """One B-scan in [0, 1], [W, H] as ``LoadImage`` reads its PNG, and its ground truth."""

    image: np.ndarray
    attributes: dict


def _bumps(x: np.ndarray, centres, heights, widths) -> np.ndarray:
    out = np.zeros_like(x)
    for c, hgt, wid in zip(centres, heights, widths):
        out = np.maximum(out, hgt * np.exp(-0.5 * ((x - c) / wid) ** 2))
    return out


def render(cls: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draw one B-scan of class ``cls`` at ``size`` (H, W); float32 in [0, 1]."""
    from scipy import ndimage as ndi

    h, w = size
    xs = (np.arange(w) + 0.5) / w
    y = ((np.arange(h) + 0.5) / h)[:, None]
    xf = 0.5 + rng.normal(0, 0.04)  # fovea
    bruch = 0.66 + rng.uniform(-0.03, 0.03) + rng.uniform(-0.06, 0.06) * (xs - 0.5) + rng.uniform(0.0, 0.12) * (xs - 0.5) ** 2
    thick = rng.uniform(0.23, 0.27) * np.ones_like(xs)
    pit = np.exp(-0.5 * ((xs - xf) / rng.uniform(0.06, 0.09)) ** 2)
    inner_scale = 1.0 - 0.75 * pit
    elev = np.zeros_like(xs)  # RPE lifted above Bruch's membrane
    material = 0.45
    sub_fluid = np.zeros_like(xs)
    if cls == "DRUSEN":
        n = int(rng.integers(2, 6))
        elev = _bumps(xs, rng.uniform(0.2, 0.8, n), rng.uniform(0.02, 0.04, n), rng.uniform(0.018, 0.035, n))
    elif cls == "CNV":
        c = xf + rng.normal(0, 0.06)
        elev = _bumps(xs, [c], [rng.uniform(0.06, 0.09)], [rng.uniform(0.05, 0.08)])
        material = 0.62
        sub_fluid = _bumps(xs, [c + rng.normal(0, 0.03)], [rng.uniform(0.025, 0.04)], [rng.uniform(0.06, 0.09)])
    elif cls == "DME":
        thick = thick * (1.0 + rng.uniform(0.3, 0.6) * np.exp(-0.5 * ((xs - xf) / 0.18) ** 2))
        inner_scale = 1.0 - 0.3 * pit  # the pit fills in
    rpe_top = bruch - elev - 0.022
    outer_t = thick * sum(f for _, f, _ in OUTER)
    inner_t = thick * sum(f for _, f, _ in INNER) * inner_scale
    ilm = rpe_top - sub_fluid - outer_t - inner_t

    img = np.full((h, w), VITREOUS, np.float32)
    top = ilm.copy()
    for _, frac, refl in INNER:
        bottom = top + thick * frac * inner_scale
        img = np.where((y >= top) & (y < bottom), refl, img)
        top = bottom
    for _, frac, refl in OUTER:
        bottom = top + thick * frac
        img = np.where((y >= top) & (y < bottom), refl, img)
        top = bottom
    img = np.where((y >= top) & (y < rpe_top), FLUID, img)  # subretinal fluid (CNV)
    img = np.where((y >= rpe_top) & (y < rpe_top + 0.022), RPE_REFLECT, img)
    img = np.where((y >= rpe_top + 0.022) & (y < bruch), material, img)  # drusen / fibrovascular material
    depth = np.clip((y - bruch) / 0.25, 0, None)
    chor = ndi.gaussian_filter(rng.normal(size=(h, w)).astype(np.float32), (0.01 * h, 0.03 * w))
    chor = chor / (chor.std() + 1e-6)
    img = np.where(y >= bruch, (CHOROID + 0.12 * chor) * np.exp(-2.0 * depth), img)
    if cls == "DME":
        n = int(rng.integers(3, 8))
        mid_top, mid_bot = ilm + 0.45 * thick, rpe_top - 0.35 * outer_t
        for _ in range(n):
            cx = float(np.clip(xf + rng.normal(0, 0.09), 0.1, 0.9))
            j = int(cx * w)
            cy = rng.uniform(mid_top[j], mid_bot[j])
            rx, ry = rng.uniform(0.02, 0.05), rng.uniform(0.015, 0.035)
            cyst = ((xs[None, :] - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0
            img = np.where(cyst & (y > ilm + 0.01) & (y < rpe_top), FLUID, img)
    img = ndi.gaussian_filter(img, 0.5 * h / 128)
    speckle = rng.gamma(4.0, 0.25, size=(h, w)).astype(np.float32)
    img = img * (0.65 + 0.35 * speckle) * rng.uniform(0.92, 1.05)
    img += np.abs(rng.normal(0, 0.02, size=(h, w))).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def generate(seed: int, index: int = 0, size: tuple[int, int] = (128, 128)) -> OctCase:
    """Case ``index`` of the population with ``seed`` (image [W, H]; ``size`` is (H, W))."""
    rng = np.random.default_rng([int(seed), int(index), 6151])
    label = int(rng.integers(0, 4))
    return OctCase(as_xy(render(CLASSES[label], size, rng)), {"class": CLASSES[label], "label": label})


def measure(image: np.ndarray) -> dict:
    """OCT class cues from a B-scan ([W, H]) at any intensity scale: RPE elevation (largest, widest, number of bumps),
    intraretinal dark-fluid fraction, subretinal fluid, and central retinal thickness (fractions of height)."""
    from scipy import ndimage as ndi

    a = grey_2d(image, "oct")
    h, w = a.shape
    s = ndi.gaussian_filter(a, (1.2 * h / 128, 2.0 * w / 128))
    lo, hi = np.percentile(s, 5), np.percentile(s, 99.7)
    s = (s - lo) / max(hi - lo, 1e-6)
    rows = np.arange(h)[:, None]
    bright = s > 0.35
    ilm = np.where(bright.any(0), bright.argmax(0), h - 1)
    # RPE: the brightest row per column, searched below the inner retina
    below = np.where(rows > ilm[None, :] + 0.06 * h, s, -1.0)
    rpe = below.argmax(0).astype(np.float64)
    cols = np.arange(w)
    keep = np.ones(w, bool)
    for _ in range(3):  # robust smooth fit of the baseline (Bruch's membrane); elevations are outliers above it
        coef = np.polyfit(cols[keep], rpe[keep], 2)
        base = np.polyval(coef, cols)
        resid = base - rpe  # > 0: RPE above the fitted baseline
        keep = resid < max(2.0, 0.012 * h)
    elev = ndi.median_filter(resid, size=max(3, w // 64) | 1) / h
    raised = elev > 0.012
    lab, n = ndi.label(raised)
    widths = ndi.sum(raised, lab, range(1, n + 1)) / w if n else np.zeros(0)
    peaks = ndi.maximum(elev, lab, range(1, n + 1)) if n else np.zeros(0)
    big = int(np.argmax(peaks)) if n else -1
    # dark pixels inside the retina (between ILM and RPE, away from both): fluid
    inside = (rows > ilm[None, :] + 0.02 * h) & (rows < rpe[None, :] - 0.03 * h)
    dark = inside & (s < 0.12)
    mid = (rows > ilm[None, :] + 0.02 * h) & (rows < rpe[None, :] - 0.10 * h)
    thickness = (rpe - ilm) / h
    return {
        "max_elevation": float(peaks.max()) if n else 0.0,
        "max_elevation_width": float(widths[big]) if n else 0.0,
        "n_elevations": int((widths > 0.01).sum()) if n else 0,
        "fluid_fraction": float(dark.sum() / max(inside.sum(), 1)),
        "intraretinal_fluid_fraction": float((dark & mid).sum() / max(mid.sum(), 1)),
        "central_thickness": float(np.median(thickness[w // 3: 2 * w // 3])),
    }


def analyse(image: np.ndarray) -> dict:
    """Class cues and the class they point to (``class``, ``label``), for images ([W, H]) or model samples."""
    m = measure(image)
    if m["max_elevation"] > CNV_ELEVATION and m["max_elevation_width"] > CNV_WIDTH:
        cls = "CNV"
    elif m["intraretinal_fluid_fraction"] > DME_FLUID or m["central_thickness"] > DME_THICKNESS:
        cls = "DME"
    elif m["n_elevations"] >= 1:
        cls = "DRUSEN"
    else:
        cls = "NORMAL"
    return {"class": cls, "label": CLASSES.index(cls), **m}


def write_case(seed: int, index: int, path, size: tuple[int, int] = (128, 128)) -> dict:
    """Write case ``index`` as an 8-bit PNG; return its datalist entry."""
    from common.io.writers import write_png

    c = generate(seed, index, size)
    name = f"oct-{index:05d}.png"
    write_png(c.image, path(name))
    return {"image": name, "class": c.attributes["class"], "label": c.attributes["label"], "case": f"oct-{index:05d}"}
