"""Chest X-ray population: frontal radiographs drawn from anatomical parameters, with findings and reports.

Anatomy (body, lungs with apices and costophrenic angles, diaphragm domes, heart, mediastinum, spine, ribs,
clavicles, vessel markings) is drawn in image-normalised coordinates; findings change the drawing: pleural
effusion (fluid with a meniscus, left / right / bilateral, small / large), cardiomegaly (heart-to-thorax
ratio > 0.5), pneumothorax (lucent rim without markings behind a pleural line). Sides are patient sides,
radiological convention: the patient's right is the image's left.
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
# analyser cut-offs on the measured lateral lung height (fraction of image height), see analyse()
LUNG_H_SMALL, LUNG_H_LARGE = 0.552, 0.44
PTX_LUCENT = 0.31


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


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    n = gaussian_filter(rng.normal(size=shape).astype(np.float32), sigma)
    return n / (n.std() + 1e-6)


def _soft(d: np.ndarray, w: float) -> np.ndarray:
    """Soft inside indicator of a signed quantity d (> 0 inside) with edge width w."""
    return np.clip(0.5 + d / w, 0.0, 1.0)


def render(attrs: dict, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Draw the radiograph for ``attrs`` at ``size`` (H, W); returns float32 in [0, 1]."""
    from scipy.ndimage import gaussian_filter

    h, w = size
    y, x = np.meshgrid((np.arange(h) + 0.5) / h, (np.arange(w) + 0.5) / w, indexing="ij")
    px = 1.5 / min(h, w)  # edge softness, about a pixel and a half
    cx = 0.5 + rng.normal(0, 0.008)
    tw = rng.uniform(0.34, 0.37)  # half inner thoracic width (lateral lung edges)
    y_apex = rng.uniform(0.12, 0.145)
    y_cp = rng.uniform(0.775, 0.795)  # costophrenic angles
    dome = rng.uniform(0.05, 0.07)
    body_hw = tw + rng.uniform(0.07, 0.09)

    img = np.full((h, w), 0.04, np.float32)
    # body: soft tissue with shoulders, brighter towards the abdomen
    shoulder = _soft(y - (0.06 + 0.5 * np.maximum(np.abs(x - cx) - 0.18, 0) ** 1.2), px)
    body = _soft(body_hw - np.abs(x - cx), px * 2) * shoulder
    img += body * (0.50 + 0.08 * y)

    lung_total = np.zeros_like(img)
    fluid_total = np.zeros_like(img)
    ptx_total = np.zeros_like(img)
    ctr = attrs["ctr"]
    wh = ctr * 2 * tw  # heart width
    heart_l, heart_r = cx - 0.36 * wh, cx + 0.64 * wh  # image left / right borders
    hy, hry = y_cp - 0.09, rng.uniform(0.14, 0.16)  # the lower half hides behind the diaphragm
    heart = _soft(1.0 - (((x - (heart_l + heart_r) / 2) / ((heart_r - heart_l) / 2)) ** 2
                         + ((y - hy) / hry) ** 2), 0.08)
    for sgn, side in ((-1, "right"), (1, "left")):
        d = sgn * (x - cx)  # distance from the midline towards this lung's lateral wall
        prog = np.clip((y - y_apex) / 0.28, 0, 1)
        lateral = tw * (0.35 + 0.65 * prog**0.5) + rng.normal(0, 0.004)
        medial = 0.05 + 0.012 * (1 - prog)
        if side == "left":  # the aortic knob bulges into the left upper lung
            medial = medial + 0.035 * np.exp(-0.5 * ((y - y_apex - 0.17) / 0.035) ** 2)
        hemi_c = (lateral + medial) / 2
        hemi_w = (lateral - medial) / 2
        base = y_cp - dome * np.clip(1 - ((d - hemi_c) / hemi_w) ** 2, 0, 1) - (0.015 if side == "right" else 0)
        # apex: rounded, the lung narrows towards its top
        lung = _soft(lateral - d, px) * _soft(d - medial, px) * _soft(base - y, px) * _soft(y - y_apex, px)
        lung *= np.clip(1.0 - heart, 0, 1)
        if attrs["effusion_side"] in (side, "bilateral"):
            lo, hi = EFFUSION_FRAC[attrs["effusion_size"]]
            frac = rng.uniform(lo, hi)
            lat01 = np.clip((d - medial) / (lateral - medial), 0, 1)
            level = y_cp - frac * (y_cp - y_apex) + 0.05 - 0.07 * lat01  # meniscus climbs the lateral wall
            fluid = _soft(y - level, 0.02) * lung
            fluid_total += fluid
            lung = lung * (1 - _soft(y - level, 0.02))
        if attrs["pneumothorax_side"] == side:
            gap = rng.uniform(0.05, 0.08)
            inner = (_soft(lateral - gap - d, px) * _soft(y - (y_apex + gap * 0.8), px)
                     * _soft(base - gap * 0.5 - y, px))
            rim = lung * (1 - inner)
            ptx_total += rim
            # the collapsed lung's edge: a thin bright visceral pleural line
            line = np.abs(lateral - gap - d) < px * 0.9
            line &= (y > y_apex + gap * 0.8) & (y < base - 0.15)
            img += 0.12 * line * (lung > 0.5)
        lung_total += lung
    markings = np.clip(_smooth_noise(rng, (h, w), sigma=min(h, w) / 80), -2, 2)
    hilum = np.exp(-((np.abs(x - cx) - 0.12) ** 2 / 0.02 + (y - 0.45) ** 2 / 0.03))
    lung_only = np.clip(lung_total - ptx_total, 0, 1)
    img -= 0.30 * lung_total
    img += lung_only * (0.025 * markings + 0.06 * hilum)
    img -= 0.06 * ptx_total  # no lung tissue in the pleural space: more lucent
    img += 0.10 * fluid_total

    # bones: spine behind the mediastinum, posterior ribs over the lungs, clavicles
    spine = _soft(0.035 - np.abs(x - cx), px) * _soft(y - 0.05, px)
    img += 0.10 * spine
    chest = _soft(tw + 0.02 - np.abs(x - cx), px) * _soft(y_cp + 0.02 - y, px)
    # posterior ribs: arcs that fall away laterally
    rib_phase = (y - 0.10 - 0.55 * (np.abs(x - cx) - 0.04).clip(0) ** 1.5) / rng.uniform(0.062, 0.07)
    ribs = np.clip(np.cos(2 * np.pi * rib_phase) - 0.55, 0, None) / 0.45
    img += 0.07 * ribs * chest * (np.abs(x - cx) > 0.04)
    clav_y = 0.10 + 0.12 * (np.abs(x - cx) - 0.05).clip(0) - 0.3 * (np.abs(x - cx) - 0.05).clip(0) ** 2
    clav = _soft(0.012 - np.abs(y - clav_y), px) * _soft(0.28 - np.abs(x - cx), px) * (np.abs(x - cx) > 0.04)
    img += 0.12 * clav
    img = gaussian_filter(img, 0.6 * min(h, w) / 128)
    gain, gamma = rng.uniform(0.92, 1.05), rng.uniform(0.9, 1.1)
    img = np.clip(img * gain, 0, 1) ** gamma
    img += rng.normal(0, 0.012, size=img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def generate(seed: int, index: int = 0, size: tuple[int, int] = (128, 128)) -> CxrCase:
    """Case ``index`` of the population with ``seed``: its image ([W, H]; ``size`` is (H, W)) and ground truth
    (incl. the report)."""
    rng = np.random.default_rng([int(seed), int(index), 2207])
    attrs = _sample_attributes(rng)
    image = render(attrs, size, rng)
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


def _lung_masks(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Right and left lung masks (image left / right), the soft-tissue minus lung contrast, and the lung level."""
    from scipy import ndimage as ndi

    bg, soft = np.percentile(a, 2), np.percentile(a, 80)
    body = ndi.binary_fill_holes(a > bg + 0.55 * (soft - bg))
    inside = a[body]
    # two-class (Otsu) split of the body into lung and denser tissue
    hist, edges = np.histogram(inside, bins=64)
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres) / np.maximum(w0, 1)
    m1 = ((hist * centres).sum() - np.cumsum(hist * centres)) / np.maximum(w1, 1)
    thr = centres[np.argmax(w0 * w1 * (m0 - m1) ** 2)]
    lung = ndi.binary_opening(body & (a < thr), iterations=1)
    lab, n = ndi.label(lung)
    cols = np.nonzero(body.any(0))[0]
    mid = 0.5 * (cols.min() + cols.max()) if cols.size else a.shape[1] / 2
    masks = []
    for sel in (lambda c: c < mid, lambda c: c >= mid):
        best, best_n = np.zeros_like(lung), 0
        for k in range(1, n + 1):
            comp = lab == k
            cnt = int(comp.sum())
            if cnt > best_n and sel(np.nonzero(comp)[1].mean()):
                best, best_n = comp, cnt
        masks.append(best)
    lung_level = float(np.median(a[masks[0] | masks[1]])) if (masks[0] | masks[1]).any() else float(thr)
    return masks[0], masks[1], float(soft - lung_level), lung_level


def measure(image: np.ndarray) -> dict:
    """Raw cues measured from a radiograph: per-side lung height, lucent-rim fraction, and the CTR."""
    from scipy import ndimage as ndi

    a = grey_2d(image, "cxr")
    h, w = a.shape
    a = ndi.gaussian_filter(a, 0.8 * min(h, w) / 128)
    right, left, contrast, lung_level = _lung_masks(a)
    out: dict = {}
    for name, m in (("right", right), ("left", left)):
        if m.sum() < 10:
            out[f"{name}_lung_h"], out[f"{name}_lucent"] = 0.0, 0.0
            continue
        rows, cols = np.nonzero(m)
        top, bottom = np.percentile(rows, 1), np.percentile(rows, 99.5)
        out[f"{name}_lung_h"] = float((bottom - top) / h)
        # lateral band of the lung: the outer 35 % of its columns
        lo, hi = cols.min(), cols.max()
        band = (cols <= lo + 0.35 * (hi - lo)) if name == "right" else (cols >= hi - 0.35 * (hi - lo))
        vals = a[rows[band], cols[band]]
        out[f"{name}_lucent"] = float(np.mean(vals < lung_level - 0.15 * contrast))
    # CTR: the heart's widest reach from the midline on each side, over rows between mid-chest and the top
    # of the right hemidiaphragm's dome (below it the lungs end in costophrenic tips), divided by the widest
    # span between the lungs' lateral edges
    cols_any = np.nonzero((right | left).any(0))[0]
    mid = 0.5 * (cols_any.min() + cols_any.max()) if cols_any.size else w / 2
    dome_top = h
    rc_cols = np.nonzero(right.any(0))[0]
    if rc_cols.size:
        lo_c, hi_c = rc_cols.min(), rc_cols.max()
        centre_cols = rc_cols[(rc_cols > lo_c + 0.33 * (hi_c - lo_c)) & (rc_cols < hi_c - 0.33 * (hi_c - lo_c))]
        if centre_cols.size:
            bottoms = [np.nonzero(right[:, c])[0].max() for c in centre_cols]
            dome_top = int(min(bottoms))
    reach = {}
    for name, m in (("right", right), ("left", left)):
        best = 0.0
        for r in range(int(0.45 * h), min(dome_top, h)):
            c = np.nonzero(m[r])[0]
            if c.size:
                best = max(best, float(mid - c.max()) if name == "right" else float(c.min() - mid))
        reach[name] = best
    thorax_w = 0.0
    for r in range(h):
        rc, lc = np.nonzero(right[r])[0], np.nonzero(left[r])[0]
        if rc.size and lc.size:
            thorax_w = max(thorax_w, float(lc.max() - rc.min() + 1))
    heart_w = reach["right"] + reach["left"]
    out["ctr"] = heart_w / thorax_w if thorax_w > 0 else 0.0
    return out


def analyse(image: np.ndarray) -> dict:
    """Findings measured back from a radiograph (a file's array or a model sample, any intensity scale).

    Returns ``effusion_side`` (none|left|right|bilateral), ``effusion_size`` (none|small|large),
    ``ctr`` (heart-to-thorax ratio), ``pneumothorax_side`` (none|left|right), ``cardiomegaly`` (ctr > 0.5),
    plus the raw cues. ``image`` is [W, H] as ``LoadImage`` reads the PNG (x = 0 the patient's right, y = 0 the top).
    """
    m = measure(image)
    sizes = {}
    for side in ("right", "left"):
        hgt = m[f"{side}_lung_h"]
        sizes[side] = "none" if hgt >= LUNG_H_SMALL else ("small" if hgt >= LUNG_H_LARGE else "large")
    eff = [s for s in ("right", "left") if sizes[s] != "none"]
    side = "none" if not eff else ("bilateral" if len(eff) == 2 else eff[0])
    size = "none" if not eff else ("large" if "large" in (sizes[s] for s in eff) else "small")
    lucent = {s: m[f"{s}_lucent"] for s in ("right", "left")}
    best = max(lucent, key=lucent.get)
    ptx = best if lucent[best] > PTX_LUCENT and lucent[best] > 2 * lucent["left" if best == "right" else "right"] else "none"
    return {"effusion_side": side, "effusion_size": size, "ctr": m["ctr"], "cardiomegaly": m["ctr"] > 0.5,
            "pneumothorax_side": ptx, **m}
