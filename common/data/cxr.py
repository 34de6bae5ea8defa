"""Chest X-ray population (version 3): one real PA radiograph deformed per case, with findings and reports.

The source is ``RG1_UNCI.dcm`` of ``pydicom-data`` with hand-marked lungs and heart (``cxr_source``). Per case: pose,
shape and a smooth elastic warp; the heart shadow magnified by a local warp until the CTR measured on the warped
masks reaches the drawn target (normal or cardiomegaly); pleural effusion (a dependent opacity with a meniscus,
left / right / bilateral, small / large); pneumothorax (the lung collapsed towards its hilum, a rim without
markings behind a pleural line); exposure, blur and noise. Sides are patient sides, radiological convention: the
patient's right is the image's left. ``analyse`` measures the findings back from any image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from common.data._image import as_xy, grey_2d

FINDINGS = ("no_finding", "effusion", "cardiomegaly", "pneumothorax")
FINDING_P = (0.3, 0.4, 0.15, 0.15)
SIDES = ("right", "left")  # right lung = image left (x < 0.5)
# effusion fluid height as a fraction of lung height
EFFUSION_FRAC = {"small": (0.19, 0.27), "large": (0.40, 0.52)}
CTR_NORMAL, CTR_LARGE = (0.38, 0.47), (0.56, 0.66)
# analyser cut-offs (see analyse()): the measured lung bottom (fraction of the image height; the source film's right
# lower lung is denser, so its dark part ends higher), the lateral band's lucent share, the measured CTR; calibrated on generated cases (ci/bench_data.py --accuracy)
BOTTOM_CUTS = {"right": (0.64, 0.55), "left": (0.71, 0.56)}  # (none above, small above)
PTX_LUCENT = 0.06
CTR_CUT = 0.515  # midway between the normal (<= 0.47) and enlarged (>= 0.56) ranges
CTR_FIT = (0.881, -0.028)  # measured = a * recorded + b
TOP_CUT = 0.13  # the film's collimated top edge is as dark as lung: the analyser ignores the top rows


@dataclass
class CxrCase:
    """One radiograph in [0, 1] as ``LoadImage`` reads its PNG, [W, H]: ``image[x, y]``, x = 0 the patient's right,
    y = 0 the top; and its ground truth."""

    image: np.ndarray
    attributes: dict


def _report(attrs: dict, rng: np.random.Generator) -> str:
    """A report sentence per finding, in the style of a radiology impression."""
    f = attrs["finding"]
    if f == "no_finding":
        return str(rng.choice([
            "No acute cardiopulmonary process.",
            "The lungs are clear. No pleural effusion or pneumothorax. Heart size is normal.",
            "Normal chest radiograph. No focal consolidation, effusion or pneumothorax.",
            "Clear lungs. Normal cardiomediastinal silhouette.",
        ]))
    if f == "effusion":
        size, side = attrs["effusion_size"], attrs["effusion_side"]
        if side == "bilateral":
            return str(rng.choice([
                f"{size.capitalize()} bilateral pleural effusions.",
                f"There are {size} bilateral pleural effusions.",
                f"{size.capitalize()} pleural effusions on both sides, with blunting of the costophrenic angles.",
            ]))
        return str(rng.choice([
            f"{size.capitalize()} {side} pleural effusion.",
            f"There is a {size} {side} pleural effusion.",
            f"{size.capitalize()} {side}-sided pleural effusion with blunting of the {side} costophrenic angle.",
        ]))
    if f == "cardiomegaly":
        return str(rng.choice([
            "Cardiomegaly. No pleural effusion.",
            "The heart is enlarged. The lungs are clear.",
            "Enlarged cardiac silhouette, consistent with cardiomegaly.",
        ]))
    side = attrs["pneumothorax_side"]
    return str(rng.choice([
        f"{side.capitalize()} pneumothorax.",
        f"There is a {side}-sided pneumothorax.",
        f"{side.capitalize()} apical pneumothorax with a visible pleural line.",
    ]))


def _sample_attributes(rng: np.random.Generator) -> dict:
    finding = str(rng.choice(FINDINGS, p=FINDING_P))
    a = {"finding": finding, "effusion_side": "none", "effusion_size": "none", "cardiomegaly": False,
         "pneumothorax_side": "none"}
    if finding == "effusion":
        a["effusion_side"] = str(rng.choice(["left", "right", "bilateral"]))
        a["effusion_size"] = str(rng.choice(["small", "large"]))
    elif finding == "cardiomegaly":
        a["cardiomegaly"] = True
    elif finding == "pneumothorax":
        a["pneumothorax_side"] = str(rng.choice(["left", "right"]))
    a["ctr"] = float(rng.uniform(*(CTR_LARGE if a["cardiomegaly"] else CTR_NORMAL)))
    return a


def _soft(d: np.ndarray, w: float) -> np.ndarray:
    """Soft inside indicator of a signed quantity d (> 0 inside) with edge width w."""
    return np.clip(0.5 + d / w, 0.0, 1.0)


# the output frame on the film: centre and half-width in film pixels (column, row); the height follows the aspect
FRAME_CENTRE, FRAME_HALF_W = (916.0, 910.0), 820.0
BASE_GAMMA = 2.0  # the normalised CR values to display densities (lungs ~0.35, heart ~0.8)


def _displacement(rng: np.random.Generator, size: tuple[int, int], sd: float, grid: int = 5) -> np.ndarray:
    """A smooth random displacement field [2, H, W] (film pixels): cubic upsampling of a ``grid``^2 normal field."""
    from scipy.ndimage import zoom

    coarse = rng.normal(0, sd, size=(2, grid, grid)).astype(np.float32)
    return np.stack([zoom(c, (size[0] / grid, size[1] / grid), order=3, mode="nearest")[: size[0], : size[1]]
                     for c in coarse])


def _heart_warp(rows: np.ndarray, cols: np.ndarray, k: float) -> tuple[np.ndarray, np.ndarray]:
    """Film coordinates after a smooth magnification of the heart shadow by ``k`` across (k ** 0.4 vertically):
    the inverse map, so a sample at the heart's edge reads from nearer its centre when k > 1."""
    from .cxr_source import HEART

    pts = np.asarray(HEART, np.float32)
    cc, cr = pts[:, 0].mean(), pts[:, 1].mean()
    rc, rr = (pts[:, 0].max() - pts[:, 0].min()) / 2, (pts[:, 1].max() - pts[:, 1].min()) / 2
    wgt = np.exp(-0.5 * (((cols - cc) / (1.1 * rc)) ** 2 + ((rows - cr) / (1.1 * rr)) ** 2))
    gx = 1 - (1 - 1 / k) * wgt
    gy = 1 - (1 - 1 / k ** 0.4) * wgt
    return cr + (rows - cr) * gy, cc + (cols - cc) * gx


def _sample(a: np.ndarray, rows: np.ndarray, cols: np.ndarray, factor: int, order: int = 1) -> np.ndarray:
    """``a`` (a film reduction by ``factor``) read at full-film coordinates (mirrored beyond the edges)."""
    from scipy.ndimage import map_coordinates

    coords = np.stack([(rows + 0.5) / factor - 0.5, (cols + 0.5) / factor - 0.5])
    return map_coordinates(np.asarray(a, np.float32), coords, order=order, mode="mirror").astype(np.float32)


def measure_ctr(heart: np.ndarray, right: np.ndarray, left: np.ndarray) -> float:
    """Cardiothoracic ratio of masks ([H, W], > 0.5 inside): the heart's widest extent over the widest span
    between the lungs' lateral edges."""
    hc = np.nonzero((heart > 0.5).any(0))[0]
    rc, lc = np.nonzero((right > 0.5).any(0))[0], np.nonzero((left > 0.5).any(0))[0]
    if not (hc.size and rc.size and lc.size):
        return 0.0
    return float((hc.max() - hc.min() + 1) / (lc.max() - rc.min() + 1))


def render(attrs: dict, size: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Draw the radiograph for ``attrs`` at ``size`` (H, W) by deforming the real film; returns the float32 picture
    in [0, 1] and the cardiothoracic ratio measured on the warped heart and lung masks."""
    from scipy.ndimage import binary_dilation, gaussian_filter

    from .cxr_source import factor_for, source

    h, w = size
    film = source(factor_for(size))
    f = film.factor
    # global pose and shape: rotation, independent width and height scale, shift; then a smooth elastic field
    theta = np.deg2rad(rng.normal(0, 2.0))
    sx, sy = rng.uniform(0.95, 1.05), rng.uniform(0.95, 1.05)
    half = np.array([FRAME_HALF_W * h / w, FRAME_HALF_W]) * rng.uniform(0.98, 1.04)
    centre = np.array([FRAME_CENTRE[1], FRAME_CENTRE[0]]) + rng.normal(0, 8, size=2)
    v, u = np.meshgrid((np.arange(h) + 0.5) / h * 2 - 1, (np.arange(w) + 0.5) / w * 2 - 1, indexing="ij")
    dy, dx = v * half[0] / sy, u * half[1] / sx
    rows = centre[0] + np.cos(theta) * dy + np.sin(theta) * dx
    cols = centre[1] - np.sin(theta) * dy + np.cos(theta) * dx
    disp = _displacement(rng, (h, w), sd=22.0)
    rows, cols = rows + disp[0], cols + disp[1]

    def masks(k: float):
        r, c = _heart_warp(rows, cols, k)
        return r, c, [_sample(m, r, c, f) for m in film.masks_float]

    # heart magnification: secant steps on k until the CTR measured on the warped masks reaches the target
    target = attrs["ctr"]
    k0, k1 = 1.0, 1.0 + 2.0 * (target - 0.46)
    right, left, heart = masks(k0)[2]
    c0 = measure_ctr(heart, right, left)
    r_, c_, ms = masks(k1)
    c1 = measure_ctr(ms[2], ms[0], ms[1])
    for _ in range(4):
        if abs(c1 - target) < 0.004 or c1 == c0:
            break
        k0, k1, c0 = k1, float(np.clip(k1 + (target - c1) * (k1 - k0) / (c1 - c0), 0.6, 2.2)), c1
        r_, c_, ms = masks(k1)
        c1 = measure_ctr(ms[2], ms[0], ms[1])
    right, left, heart = ms
    img = _sample(film.image, r_, c_, f) ** BASE_GAMMA
    px = max(h, w) / 128.0  # output pixels per pixel at the default size
    yy = np.arange(h, dtype=np.float32)[:, None] * np.ones((1, w), np.float32)
    xx = np.ones((h, 1), np.float32) * np.arange(w, dtype=np.float32)[None, :]
    soft_tissue = float(np.percentile(img[heart > 0.5], 60)) if (heart > 0.5).any() else 0.8

    for side, lung in (("right", right), ("left", left)):
        lung = np.clip(lung - heart, 0, 1)
        inside = lung > 0.5
        if not inside.any():
            continue
        rws, cls = np.nonzero(inside)
        top, bottom = np.percentile(rws, 0.5), np.percentile(rws, 99.5)
        lat_edge = cls.min() if side == "right" else cls.max()
        med_edge = cls.max() if side == "right" else cls.min()
        dome = float(np.nonzero(inside[:, int(round((lat_edge + med_edge) / 2))])[0].max(initial=bottom))
        lat01 = np.clip((xx - med_edge) / (lat_edge - med_edge + 1e-6), 0, 1)
        if attrs["effusion_side"] in (side, "bilateral"):
            lo, hi = EFFUSION_FRAC[attrs["effusion_size"]]
            frac = rng.uniform(lo, hi)
            # the fluid's top: frac of the lung height above the diaphragm's dome, climbing the lateral wall (meniscus)
            level = dome - frac * (dome - top) - 0.06 * h * lat01
            region = binary_dilation(inside, iterations=max(1, int(round(3 * px)))).astype(np.float32)
            fluid = _soft(yy - level, 2.5 * px) * gaussian_filter(region, px)
            depth = np.clip((yy - level) / (0.25 * h), 0, 1)
            alpha = fluid * (0.78 + 0.17 * depth)
            img = img * (1 - alpha) + alpha * soft_tissue
        if attrs["pneumothorax_side"] == side:
            gap = rng.uniform(0.05, 0.08) * w
            # the collapsed lung: the lung shrunk towards its hilum (medial edge, 85 % down), so a rim opens along
            # the lateral wall and the apex; no lung markings in the rim, a thin visceral pleural line at its edge
            ar, ac = top + 0.85 * (bottom - top), float(med_edge)
            shrink = 1 - gap / abs(lat_edge - med_edge)
            inner = _sample(lung, ar + (yy - ar) / shrink, ac + (xx - ac) / shrink, 1)
            rim = np.clip(lung - inner, 0, 1)
            # hyperlucent: the lung's dark level, keeping the ribs' broad shadows at half contrast
            dark = float(np.percentile(img[inside], 15))
            ribs = gaussian_filter(img, 1.5 * px) - gaussian_filter(img, 5 * px)
            img = img * (1 - rim) + rim * (dark - 0.03 + 0.5 * ribs)
            img = img + 0.03 * inner
            edge = np.clip(inner - gaussian_filter(inner, 0.7 * px), 0, None)
            img = img + 0.5 * edge * (inner > 0.3)
    gain, gamma = rng.uniform(0.92, 1.05), rng.uniform(0.85, 1.15)
    img = np.clip(img * gain, 0, 1) ** gamma
    img = gaussian_filter(img, rng.uniform(0.3, 0.7) * px)
    img = img + rng.normal(0, 0.012, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32), c1  # c1: the CTR of these warped masks


def generate(seed: int, index: int = 0, size: tuple[int, int] = (128, 128)) -> CxrCase:
    """Case ``index`` of the population with ``seed``: its image ([W, H]; ``size`` is (H, W)) and ground truth
    (incl. the report)."""
    rng = np.random.default_rng([int(seed), int(index), 2207])
    attrs = _sample_attributes(rng)
    image, attrs["ctr"] = render(attrs, size, rng)
    attrs["report"] = _report(attrs, rng)
    return CxrCase(as_xy(image), attrs)


def write_case(seed: int, index: int, path, size: tuple[int, int] = (128, 128)) -> dict:
    """Write case ``index`` as an 8-bit PNG; return its datalist entry."""
    from common.io.writers import write_png

    from ._files import round_floats

    c = generate(seed, index, size)
    name = f"cxr-{index:05d}.png"
    write_png(c.image, path(name))
    a = c.attributes
    return {"image": name, "report": a["report"], "finding": a["finding"], "effusion_side": a["effusion_side"],
            "effusion_size": a["effusion_size"], "cardiomegaly": a["cardiomegaly"],
            "pneumothorax_side": a["pneumothorax_side"], **round_floats({"ctr": a["ctr"]}), "case": f"cxr-{index:05d}"}


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    return float(centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)])


def _lung_masks(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """Right and left lung masks (image left / right) of a smoothed picture, and the lung-vs-tissue threshold:
    the dark side of a two-class (Otsu) split of the central field, away from the film's top and side edges
    (the collimation), opened so that ribs do not cut a lung in pieces; the largest component on each side."""
    from scipy import ndimage as ndi

    h, w = s.shape
    thr = _otsu(s[int(0.08 * h): int(0.92 * h), int(0.05 * w): int(0.95 * w)])
    m = s < thr
    m[: int(TOP_CUT * h)] = False
    m[:, : int(0.03 * w)] = False
    m[:, w - int(0.03 * w):] = False
    m = ndi.binary_fill_holes(ndi.binary_opening(m, iterations=max(1, round(2 * min(h, w) / 128))))
    lab, n = ndi.label(m)
    masks = []
    for on_side in (lambda c: c < w / 2, lambda c: c >= w / 2):
        best, best_n = np.zeros_like(m), 0
        for k in range(1, n + 1):
            comp = lab == k
            cnt = int(comp.sum())
            if cnt > best_n and on_side(np.nonzero(comp)[1].mean()):
                best, best_n = comp, cnt
        masks.append(best)
    return masks[0], masks[1], thr


def measure(image: np.ndarray) -> dict:
    """Raw cues measured from a radiograph: per-side lung bottom (fraction of the image height), the lucent share
    of the lung's lateral band (a pneumothorax rim has no lung in it), and the CTR."""
    from scipy import ndimage as ndi

    a = grey_2d(image, "cxr")
    h, w = a.shape
    px = min(h, w) / 128
    s = ndi.gaussian_filter(a, 2.0 * px)
    right, left, thr = _lung_masks(s)
    lungs = right | left
    dark = float(np.percentile(s[lungs], 15)) if lungs.any() else 0.0
    out: dict = {}
    for name, m in (("right", right), ("left", left)):
        if m.sum() < 10:
            out[f"{name}_lung_bottom"], out[f"{name}_lucent"] = 0.0, 0.0
            continue
        rows, cols = np.nonzero(m)
        out[f"{name}_lung_bottom"] = float(np.percentile(rows, 99.5) / h)
        # the lateral band (outer 20 % of the lung's columns, upper 70 % of its rows): share of pixels darker than
        # the lungs' 15th percentile (a pneumothorax rim is lung-free, hence the darkest part of the chest)
        lo, hi = cols.min(), cols.max()
        band = (cols <= lo + 0.2 * (hi - lo)) if name == "right" else (cols >= hi - 0.2 * (hi - lo))
        band &= rows < np.percentile(rows, 70)
        out[f"{name}_lucent"] = float(np.mean(s[rows[band], cols[band]] < dark)) if band.any() else 0.0
    # CTR: the heart's widest reach from the midline on each side (the lungs' medial edges over the lower chest),
    # over the widest span between the lungs' lateral edges
    cols_any = np.nonzero(lungs.any(0))[0]
    mid = 0.5 * (cols_any.min() + cols_any.max()) if cols_any.size else w / 2
    # rows: from 45 % of the image height down to the top of the right hemidiaphragm's dome (below it the right
    # lung ends in its costophrenic tip)
    dome_top = h
    rc_cols = np.nonzero(right.any(0))[0]
    if rc_cols.size:
        lo_c, hi_c = rc_cols.min(), rc_cols.max()
        centre_cols = rc_cols[(rc_cols > lo_c + 0.33 * (hi_c - lo_c)) & (rc_cols < hi_c - 0.33 * (hi_c - lo_c))]
        if centre_cols.size:
            dome_top = int(np.percentile([np.nonzero(right[:, c])[0].max() for c in centre_cols], 25))
    reach = {}
    for name, m in (("right", right), ("left", left)):
        best = 0.0
        for r in range(int(0.45 * h), min(dome_top, h)):
            c = np.nonzero(m[r])[0]
            if c.size:
                best = max(best, float(mid - c.max()) if name == "right" else float(c.min() - mid))
        reach[name] = best
    lc_cols = np.nonzero(left.any(0))[0]
    thorax_w = float(lc_cols.max() - rc_cols.min() + 1) if rc_cols.size and lc_cols.size else 0.0
    raw = (reach["right"] + reach["left"]) / thorax_w if thorax_w > 0 else 0.0
    out["ctr_raw"] = raw
    # the lungs' medial edges sit a little inside the heart shadow's outline: a linear map fitted on generated cases
    # (ci/bench_data.py --accuracy) puts the measure on the scale of the recorded CTR
    out["ctr"] = (raw - CTR_FIT[1]) / CTR_FIT[0] if raw > 0 else 0.0
    return out


def analyse(image: np.ndarray) -> dict:
    """Findings measured back from a radiograph (a file's array or a model sample, any intensity scale).

    Returns ``effusion_side`` (none|left|right|bilateral), ``effusion_size`` (none|small|large),
    ``ctr`` (heart-to-thorax ratio), ``pneumothorax_side`` (none|left|right), ``cardiomegaly`` (ctr > CTR_CUT),
    plus the raw cues. ``image`` is [W, H] as ``LoadImage`` reads the PNG (x = 0 the patient's right, y = 0 the top).
    """
    m = measure(image)
    sizes = {}
    for side in ("right", "left"):
        b, (none_cut, small_cut) = m[f"{side}_lung_bottom"], BOTTOM_CUTS[side]
        sizes[side] = "none" if b >= none_cut else ("small" if b >= small_cut else "large")
    eff = [s for s in ("right", "left") if sizes[s] != "none"]
    side = "none" if not eff else ("bilateral" if len(eff) == 2 else eff[0])
    size = "none" if not eff else ("large" if "large" in (sizes[s] for s in eff) else "small")
    lucent = {s: m[f"{s}_lucent"] for s in ("right", "left")}
    best = max(lucent, key=lucent.get)
    ptx = best if lucent[best] > PTX_LUCENT and lucent[best] > 2 * lucent["left" if best == "right" else "right"] else "none"
    return {"effusion_side": side, "effusion_size": size, "ctr": m["ctr"], "cardiomegaly": m["ctr"] > CTR_CUT,
            "pneumothorax_side": ptx, **m}
