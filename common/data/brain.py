"""Brain population: per-subject T1 / FLAIR-like / tissue labels grounded on the MNI ICBM152 2009 template.

A subject = template tissue maps + age-driven atrophy (thinner grey matter, larger lateral ventricles,
more white-matter lesions) + a sex-driven head scale + a smooth random deformation. The covariates are
measured on the subject's own warped tissue maps, then normalised to [0, 1] with fixed ranges
(``COVARIATE_RANGES``), so a bundle can compare what it asked for with what ``analyse_volumes`` measures.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from .brain_template import FOV_MM, BrainTemplate, load_template

AGE_RANGE = (45.0, 82.0)  # years, the UK Biobank imaging range the published bundle was trained on
# raw -> [0, 1] covariate normalisation, (low, high) per covariate, set from the measured population
# (see docs/data.md); values outside are clipped.
COVARIATE_RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "3d": {"age": AGE_RANGE, "ventricular_vol_ml": (10.0, 120.0), "brain_vol_ml": (1150.0, 1950.0)},
    "2d": {"age": AGE_RANGE, "ventricular_vol_ml": (0.0, 4.0), "brain_vol_ml": (11.0, 21.0)},
}
# tissue intensities relative to white matter: CSF, GM, WM, lesion
T1_LEVELS = (0.30, 0.74, 1.0, 0.58)
FLAIR_LEVELS = (0.08, 0.78, 0.60, 1.0)
SLICE_Z_MM = (4.0, 24.0)  # MNI z range of 2D axial slices (through the lateral ventricles)
NOISE_SD = 0.012  # scanner noise inside the head, added to each image after the bias field


@dataclass
class BrainSubject:
    """One generated subject: images in [0, 1], labels, recorded covariates and the deformation used."""

    t1: np.ndarray
    flair: np.ndarray
    seg: np.ndarray
    affine: np.ndarray
    covariates: dict[str, float]
    grid: np.ndarray = field(repr=False)  # template voxel coordinates sampled at each subject voxel, [..., ndim]
    atlas_tissue: dict[str, np.ndarray] = field(repr=False, default_factory=dict)


def normalise_covariates(raw: dict[str, float], dims: int = 3) -> dict[str, float]:
    """Raw covariates (years, ml, sex 0/1) -> the [0, 1] values the brain bundles are conditioned on."""
    r = COVARIATE_RANGES[f"{dims}d"]
    out = {}
    if "gender" in raw:
        out["gender"] = float(raw["gender"])
    for key, name in (("age", "age"), ("ventricular_vol_ml", "ventricular_vol"), ("brain_vol_ml", "brain_vol")):
        raw_key = "age_years" if key == "age" and "age_years" in raw else key
        if raw_key in raw:
            lo, hi = r[key]
            out[name] = float(np.clip((raw[raw_key] - lo) / (hi - lo), 0.0, 1.0))
    return out


def denormalise_covariates(norm: dict[str, float], dims: int = 3) -> dict[str, float]:
    """Inverse of ``normalise_covariates`` (within the ranges): [0, 1] -> years / ml."""
    r = COVARIATE_RANGES[f"{dims}d"]
    out = {}
    for name, key in (("age", "age"), ("ventricular_vol", "ventricular_vol_ml"), ("brain_vol", "brain_vol_ml")):
        if name in norm:
            lo, hi = r[key]
            out["age_years" if name == "age" else key] = lo + float(norm[name]) * (hi - lo)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _atlas_tissue(t: dict[str, np.ndarray], age01: float, rng: np.random.Generator, spacing: float
                  ) -> dict[str, np.ndarray]:
    """Apply age-driven atrophy and lesions in template space; returns csf, vent, gm, wm, lesion probabilities."""
    gm, wm, csf, vent0 = t["gm"], t["wm"], t["csf"], t["vent"]
    total = gm + wm + csf + vent0
    width = 0.5 * spacing
    # ventricles: grow (or shrink) the template's by a signed distance that rises with age, kept off the cortex
    grow = -1.0 + 6.5 * age01 + rng.normal(0.0, 0.6)
    v = _sigmoid((grow - t["sd_vent"]) / width) * _sigmoid((t["depth"] - 8.0) / 2.0)
    v = np.maximum(v, (t["sd_vent"] < min(grow, 0.0)).astype(np.float32))
    # cortex: grey matter thins from its CSF side, more with age
    thin = 0.2 + 1.6 * age01 + rng.normal(0.0, 0.25)
    atr = _sigmoid((thin - t["csf_dist"]) / width)
    keep = 1.0 - v
    gm2 = gm * keep * (1.0 - atr)
    wm2 = (wm + vent0) * keep
    vent = v * total
    csf2 = np.clip(total - gm2 - wm2 - vent, 0.0, 1.0)
    les = _lesions(t, wm2, age01, rng, spacing)
    return {"csf": csf2, "vent": vent.astype(np.float32), "gm": gm2, "wm": wm2 - les, "lesion": les}


def _lesions(t: dict[str, np.ndarray], wm: np.ndarray, age01: float, rng: np.random.Generator, spacing: float
             ) -> np.ndarray:
    """Periventricular white-matter hyperintensities: soft ellipsoids, more and larger with age."""
    les = np.zeros_like(wm)
    n = int(rng.poisson(0.5 + 7.0 * age01**2))
    cand = np.argwhere((wm > 0.9) & (t["sd_vent"] > 1.0) & (t["sd_vent"] < 14.0))
    if n == 0 or len(cand) == 0:
        return les
    for c in cand[rng.integers(0, len(cand), size=n)]:
        radii = np.maximum(rng.uniform(1.5, 3.0 + 3.0 * age01) * rng.uniform(0.7, 1.4, size=wm.ndim) / spacing, 1.0)
        half = np.ceil(2 * radii).astype(int)
        lo = np.maximum(c - half, 0)
        hi = np.minimum(c + half + 1, wm.shape)
        sl = tuple(slice(a, b) for a, b in zip(lo, hi))
        coords = np.meshgrid(*[np.arange(a, b) - ci for a, b, ci in zip(lo, hi, c)], indexing="ij")
        r2 = sum((x / r) ** 2 for x, r in zip(coords, radii))
        les[sl] = np.maximum(les[sl], np.clip((1.0 - r2) * 2.0, 0.0, 1.0))
    return (les * wm).astype(np.float32)


def _interp_matrix(n_in: int, n_out: int) -> np.ndarray:
    """Linear interpolation weights [n_out, n_in] with the end points aligned (align_corners=True)."""
    pos = np.linspace(0.0, n_in - 1, n_out)
    lo = np.clip(np.floor(pos).astype(int), 0, max(n_in - 2, 0))
    frac = pos - lo
    m = np.zeros((n_out, n_in), np.float32)
    m[np.arange(n_out), lo] = 1.0 - frac
    if n_in > 1:
        m[np.arange(n_out), lo + 1] += frac
    return m


def upsample_linear(coarse: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Separable (bi/tri)linear upsampling of a small control grid to ``shape`` (numpy, deterministic)."""
    out = coarse.astype(np.float32)
    nd = len(shape)
    for axis, n in enumerate(shape[:-1]):  # the small axes first, on small arrays
        out = np.moveaxis(np.tensordot(_interp_matrix(out.shape[axis], n), np.moveaxis(out, axis, 0), axes=1), 0, axis)
    # the last axis makes the full-size array: one contiguous matmul
    return np.ascontiguousarray(out @ _interp_matrix(out.shape[nd - 1], shape[-1]).T)


def _pullback_grid(shape: tuple[int, ...], spacing: float, scale: float, angles: np.ndarray,
                   rng: np.random.Generator, disp_mm: float = 2.5, control_mm: float = 32.0) -> np.ndarray:
    """Template voxel coordinates for every subject voxel: scale + rotation about the centre + smooth warp."""
    nd = len(shape)
    centre = (np.array(shape, np.float64) - 1) / 2.0
    rot = np.eye(nd)
    if nd == 3:
        for axis, ang in enumerate(angles):
            c, s = math.cos(ang), math.sin(ang)
            i, j = [a for a in range(3) if a != axis]
            r = np.eye(3)
            r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
            rot = r @ rot
    else:
        c, s = math.cos(angles[0]), math.sin(angles[0])
        rot = np.array([[c, -s], [s, c]])
    ctrl = tuple(int(math.ceil(n * spacing / control_mm)) + 1 for n in shape)
    coarse = rng.normal(0.0, disp_mm / spacing, size=(nd,) + ctrl).astype(np.float32)
    disp = np.stack([upsample_linear(c, shape) for c in coarse])
    # back = rot^T (idx - centre) / scale + centre, built from per-axis outer sums (no full index arrays)
    a = (rot.T / scale).astype(np.float32)
    b = (centre - a @ centre).astype(np.float32)
    grid = disp.astype(np.float32, copy=True)
    for ax in range(nd):
        view = [1] * nd
        view[ax] = shape[ax]
        coord = np.arange(shape[ax], dtype=np.float32).reshape(view)
        for out_ax in range(nd):
            grid[out_ax] += a[out_ax, ax] * coord
    for out_ax in range(nd):
        grid[out_ax] += b[out_ax]
    return np.ascontiguousarray(np.moveaxis(grid, 0, -1))


def warp(channels: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Sample ``channels`` [C, *shape_in] (linear, zero outside) at voxel coordinates ``grid`` [*shape_out, nd]."""
    import torch
    import torch.nn.functional as F

    size = np.array(channels.shape[1:], np.float32)
    norm = 2.0 * grid / (size - 1) - 1.0
    norm = norm[..., ::-1].copy()  # grid_sample wants the last array axis first
    out = F.grid_sample(torch.from_numpy(np.ascontiguousarray(channels, np.float32))[None],
                        torch.from_numpy(norm)[None], mode="bilinear", padding_mode="zeros", align_corners=True)
    return out[0].numpy()


def invert_grid(grid: np.ndarray, iterations: int = 20) -> np.ndarray:
    """Inverse of a pull-back grid by fixed-point iteration: subject voxel coordinates for each template voxel."""
    shape = grid.shape[:-1]
    ident = np.moveaxis(np.indices(shape, dtype=np.float32), 0, -1)
    disp = np.moveaxis(grid - ident, -1, 0)  # [nd, *shape] (template coord minus subject coord)
    x = ident.copy()
    for _ in range(iterations):
        d = np.moveaxis(warp(disp, x), 0, -1)
        x = ident - d
    return x


def synthesise(tissue: dict[str, np.ndarray], levels: tuple[float, float, float, float]) -> np.ndarray:
    """Noise-free contrast from tissue probabilities (CSF = sulcal + ventricular)."""
    c, g, w, lz = levels
    return c * (tissue["csf"] + tissue["vent"]) + g * tissue["gm"] + w * tissue["wm"] + lz * tissue["lesion"]


def _bias(shape: tuple[int, ...], rng: np.random.Generator, amp: float = 0.05) -> np.ndarray:
    """A smooth multiplicative bias field (scanner inhomogeneity): a product of per-axis quadratic profiles."""
    field = np.ones(shape, np.float32)
    for ax, n in enumerate(shape):
        t = np.linspace(-1.0, 1.0, n, dtype=np.float32)
        c1, c2 = rng.normal(0.0, amp, size=2)
        view = [1] * len(shape)
        view[ax] = n
        field = field * np.exp(c1 * t + c2 * (t**2 - 1 / 3)).astype(np.float32).reshape(view)
    return field


_FIELDS = ("gm", "wm", "csf", "vent", "sd_vent", "depth", "csf_dist")


@lru_cache(maxsize=2)
def _axial_slab(spacing: int) -> tuple[dict[str, np.ndarray], int]:
    """The template's axial slices in SLICE_Z_MM, slice-major and contiguous (fast per-subject picks)."""
    t: BrainTemplate = load_template(spacing)
    k0, k1 = (int(round((z - t.affine[2, 3]) / t.affine[2, 2])) for z in SLICE_Z_MM)
    return {n: np.ascontiguousarray(np.moveaxis(getattr(t, n)[:, :, k0:k1 + 1], 2, 0)) for n in _FIELDS}, k0


def _template_fields(dims: int, spacing: int, rng: np.random.Generator) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Template arrays for this subject (3D volume or one axial slice) and the matching affine."""
    t: BrainTemplate = load_template(spacing)
    if dims == 3:
        return {k: getattr(t, k) for k in _FIELDS}, t.affine
    slab, k0 = _axial_slab(spacing)
    k = int(rng.integers(0, len(slab["gm"])))
    aff = t.affine.copy()
    aff[:3, 3] = t.affine[:3, :3] @ np.array([0, 0, k0 + k]) + t.affine[:3, 3]
    return {n: slab[n][k] for n in _FIELDS}, aff


def generate_subject(seed: int, index: int = 0, dims: int = 3, spacing: int = 2,
                     keep_atlas: bool = False, noise: bool = True) -> BrainSubject:
    """Subject ``index`` of the population with ``seed`` (independent of how many are made).

    ``noise=False``: the same subject without its scanner noise (the draws still happen, so everything else is
    identical): the noise-free truth a super-resolution headroom is measured against.
    """
    rng = np.random.default_rng([int(seed), int(index), 7301])
    sex = int(rng.integers(0, 2))
    age = float(rng.uniform(*AGE_RANGE))
    age01 = (age - AGE_RANGE[0]) / (AGE_RANGE[1] - AGE_RANGE[0])
    t, affine = _template_fields(dims, spacing, rng)
    atlas = _atlas_tissue(t, age01, rng, float(spacing))

    scale = (1.035 if sex else 0.965) * math.exp(rng.normal(0.0, 0.015))
    angles = np.deg2rad(rng.normal(0.0, 2.0, size=3 if dims == 3 else 1))
    shape = t["gm"].shape
    grid = _pullback_grid(shape, float(spacing), scale, angles, rng)
    keys = ("csf", "vent", "gm", "wm", "lesion")
    warped = warp(np.stack([atlas[k] for k in keys]), grid)
    tissue = dict(zip(keys, np.clip(warped, 0.0, 1.0)))

    vox_ml = float(spacing) ** dims / 1000.0  # 2D: a slab one voxel thick
    raw = {
        "gender": float(sex), "age_years": age,
        "ventricular_vol_ml": float(tissue["vent"].sum() * vox_ml),
        "brain_vol_ml": float((tissue["gm"] + tissue["wm"] + tissue["lesion"]).sum() * vox_ml),
    }
    cov = {**normalise_covariates(raw, dims), **raw}

    fg = sum(tissue.values())
    # labels: the most probable class (0 background, 1 CSF, 2 GM, 3 WM, 4 lesion), first one wins ties
    best = 1.0 - fg
    seg = np.zeros(shape, np.uint8)
    for k, p in enumerate((tissue["csf"] + tissue["vent"], tissue["gm"], tissue["wm"], tissue["lesion"]), start=1):
        win = p > best
        seg[win] = k
        best = np.where(win, p, best)
    bias = _bias(shape, rng)
    inside = fg > 0.05
    imgs = []
    for levels, gain in ((T1_LEVELS, 0.85), (FLAIR_LEVELS, 0.9)):
        jitter = np.array(levels) * rng.uniform(0.96, 1.04, size=4)
        img = synthesise(tissue, tuple(jitter)) * bias * gain
        img = img + inside * ((NOISE_SD if noise else 0.0) * rng.standard_normal(size=shape, dtype=np.float32))
        imgs.append(np.clip(img, 0.0, 1.0).astype(np.float32))
    return BrainSubject(imgs[0], imgs[1], seg, affine, cov, grid, atlas if keep_atlas else {})


def downsample2(image: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Half resolution by 2x block averaging; the affine moves to the block centres."""
    nd = image.ndim
    s = tuple(n // 2 * 2 for n in image.shape)
    a = image[tuple(slice(0, n) for n in s)]
    a = a.reshape(sum(((n // 2, 2) for n in s), ())).mean(axis=tuple(range(1, 2 * nd, 2)))
    aff = affine.copy()
    aff[:3, :nd] = affine[:3, :nd] * 2.0
    aff[:3, 3] = affine[:3, 3] + affine[:3, :nd] @ np.full(nd, 0.5)
    return a.astype(np.float32), aff


# measured = slope * recorded + intercept, fitted by ``calibrate()`` (python ci/bench_data.py --calibrate);
# analyse_volumes inverts it so that its volumes are on the scale of the recorded covariates.
# Keys: "<dims>d_<spacing>mm"; fits over generated subjects of seed 100 (n: 60 for 3d_2mm, 20 for 3d_1mm,
# 200 for 2d_2mm, 100 for 2d_1mm).
CALIBRATION: dict[str, dict[str, tuple[float, float]]] = {
    "3d_2mm": {"ventricular_vol_ml": (0.7624, 4.8397), "brain_vol_ml": (1.009, 5.6081)},
    "3d_1mm": {"ventricular_vol_ml": (0.8701, 5.2481), "brain_vol_ml": (1.0235, -27.9526)},
    "2d_2mm": {"ventricular_vol_ml": (0.8092, 0.2518), "brain_vol_ml": (0.9732, 0.7432)},
    "2d_1mm": {"ventricular_vol_ml": (0.8742, 0.2656), "brain_vol_ml": (0.987, 0.3992)},
}
VENTRICLE_SEARCH_MM = 8.0  # the prior region: within this distance of the template's lateral ventricles


def _ventricle_region(shape: tuple[int, ...], spacing: np.ndarray) -> tuple[np.ndarray | None, str]:
    """Where lateral ventricles can be on the population's grid (template prior) and the grid's calibration key;
    (None, "") for another grid."""
    for res in (2, 1):
        if not np.allclose(spacing, res, atol=0.05):
            continue
        fov = tuple(int(round(f / res)) for f in FOV_MM)
        if len(shape) == 3 and tuple(shape) == fov:
            t = load_template(res)
            return (t.sd_vent < VENTRICLE_SEARCH_MM) & (t.depth > 4.0), f"3d_{res}mm"
        if len(shape) == 2 and tuple(shape) == fov[:2]:
            slab, _ = _axial_slab(res)  # the slice level is unknown: any level of the slab
            return ((slab["sd_vent"] < VENTRICLE_SEARCH_MM) & (slab["depth"] > 4.0)).any(0), f"2d_{res}mm"
    return None, ""


def _ventricles_by_components(dark: np.ndarray, head: np.ndarray, sp: np.ndarray, vox_ml: float) -> np.ndarray:
    """Grid-free fallback: the largest deep dark component either side of the midline."""
    from scipy import ndimage as ndi

    nd = dark.ndim
    depth = ndi.distance_transform_edt(head, sampling=sp)
    xs = np.nonzero(head.any(axis=tuple(range(1, nd))))[0]
    mid = 0.5 * (xs.min() + xs.max()) if xs.size else (dark.shape[0] - 1) / 2.0
    x_idx = np.arange(dark.shape[0]).reshape((-1,) + (1,) * (nd - 1))
    deep = dark & (depth > 8.0) & (np.abs(x_idx - mid) * sp[0] > 3.0)  # the fissure and cisterns sit on the midline
    lab, n = ndi.label(deep)
    vent = np.zeros_like(deep)
    if n:
        idx = range(1, n + 1)
        sizes = np.asarray(ndi.sum(deep, lab, idx))
        centre_x = np.asarray(ndi.mean(np.broadcast_to(x_idx, dark.shape), lab, idx))
        min_vox = max(4, int(0.5 / vox_ml)) if nd == 3 else 3
        for side in (centre_x < mid, centre_x >= mid):
            cand = np.nonzero(side & (sizes >= min_vox))[0]
            if cand.size:
                vent |= lab == cand[np.argmax(sizes[cand])] + 1
        vent = ndi.binary_dilation(vent, iterations=1, mask=dark)
    return vent


def analyse_volumes(t1: np.ndarray, spacing=(2.0, 2.0, 2.0), calibrated: bool = True) -> dict[str, float]:
    """Measure lateral-ventricular and brain volume (ml) from a T1 by intensity alone.

    Robust to intensity scaling (thresholds relative to the white-matter peak); works on the written files
    and on model samples in [0, 1]. On the population's grids (80x112x80 at 2 mm, 160x224x160 at 1 mm, and
    their 2D axial slices) the ventricles are searched near the template's, and the volumes are calibrated
    to the recorded covariates' scale (``CALIBRATION``); on other grids a grid-free component search is used
    (``method``: ``template`` or ``components``). For 2D slices the volumes are of a slab one pixel thick.
    Returns ``ventricular_vol_ml``, ``brain_vol_ml``, ``csf_vol_ml``, the uncalibrated ``*_raw`` and ``method``.
    """
    from scipy import ndimage as ndi

    a = np.asarray(t1, np.float32)
    if a.ndim not in (2, 3):
        raise ValueError(f"analyse_volumes needs a 2D or 3D T1 array, got shape {a.shape}: squeeze channel dims")
    sp = np.broadcast_to(np.asarray(spacing, np.float64)[: a.ndim], (a.ndim,))
    vox_ml = float(np.prod(sp)) / 1000.0
    pos = a[a > 0.05 * max(float(a.max()), 1e-6)]
    if pos.size < 100:
        return {"ventricular_vol_ml": 0.0, "brain_vol_ml": 0.0, "csf_vol_ml": 0.0, "ventricular_vol_ml_raw": 0.0,
                "brain_vol_ml_raw": 0.0, "method": "empty"}
    wm_peak = float(np.percentile(pos, 95))  # white matter is the brightest tissue on T1
    csf_lvl, gm_lvl = T1_LEVELS[0] / T1_LEVELS[2] * wm_peak, T1_LEVELS[1] / T1_LEVELS[2] * wm_peak
    head = ndi.binary_fill_holes(ndi.binary_closing(a > 0.5 * csf_lvl, iterations=2))
    tissue_frac = np.clip((a - csf_lvl) / (gm_lvl - csf_lvl), 0.0, 1.0) * head
    csf_frac = (1.0 - tissue_frac) * head
    region, grid_key = _ventricle_region(a.shape, sp)
    if region is not None:
        vent, method = region & head, "template"
    else:
        vent, method = _ventricles_by_components(head & (a < 0.5 * (csf_lvl + gm_lvl)), head, sp, vox_ml), "components"
    raw = {"ventricular_vol_ml": float((csf_frac * vent).sum()) * vox_ml, "brain_vol_ml": float(tissue_frac.sum()) * vox_ml}
    out = dict(raw)
    if calibrated and method == "template":
        for k, (slope, icpt) in CALIBRATION[grid_key].items():
            out[k] = max(0.0, (raw[k] - icpt) / slope)
    return {**out, "csf_vol_ml": float(csf_frac.sum()) * vox_ml, "ventricular_vol_ml_raw": raw["ventricular_vol_ml"],
            "brain_vol_ml_raw": raw["brain_vol_ml"], "method": method}


def analyse_covariates(t1: np.ndarray, spacing=(2.0, 2.0, 2.0)) -> dict[str, float]:
    """Normalised ``ventricular_vol`` and ``brain_vol`` measured from a T1, comparable with the conditioning."""
    a = np.asarray(t1)
    m = analyse_volumes(a, spacing)
    return normalise_covariates(m, dims=a.ndim)


def calibrate(n: int = 60, seed: int = 100, dims: int = 3, spacing: int = 2) -> dict[str, tuple[float, float, float]]:
    """Fit measured = slope * recorded + intercept over ``n`` generated subjects; returns (slope, intercept, r)."""
    rec, meas = [], []
    sp = (float(spacing),) * dims
    for i in range(n):
        s = generate_subject(seed, i, dims=dims, spacing=spacing)
        m = analyse_volumes(s.t1, sp, calibrated=False)
        rec.append([s.covariates["ventricular_vol_ml"], s.covariates["brain_vol_ml"]])
        meas.append([m["ventricular_vol_ml"], m["brain_vol_ml"]])
    rec_a, meas_a = np.array(rec), np.array(meas)
    out = {}
    for j, k in enumerate(("ventricular_vol_ml", "brain_vol_ml")):
        slope, icpt = np.polyfit(rec_a[:, j], meas_a[:, j], 1)
        out[k] = (float(slope), float(icpt), float(np.corrcoef(rec_a[:, j], meas_a[:, j])[0, 1]))
    return out


def write_case(seed: int, index: int, path, dims: int = 3, spacing: int = 2) -> dict:
    """Write subject ``index`` (T1, FLAIR, labels, and for 3D the half-resolution T1); return its datalist entry."""
    from common.io.writers import write_nifti

    from ._files import round_floats

    s = generate_subject(seed, index, dims=dims, spacing=spacing)
    sub = f"sub-{index:05d}"
    entry = {"image": f"{sub}_t1.nii.gz", "flair": f"{sub}_flair.nii.gz"}
    write_nifti(s.t1, path(entry["image"]), s.affine, dtype=None)
    write_nifti(s.flair, path(entry["flair"]), s.affine, dtype=None)
    if dims == 3:
        low, low_aff = downsample2(s.t1, s.affine)
        entry["image_lowres"] = f"{sub}_t1_lowres.nii.gz"
        write_nifti(low, path(entry["image_lowres"]), low_aff, dtype=None)
    entry["seg"] = f"{sub}_seg.nii.gz"
    write_nifti(s.seg, path(entry["seg"]), s.affine, dtype=None)
    c = s.covariates
    entry.update(round_floats({
        "gender": c["gender"], "age": c["age"], "ventricular_vol": c["ventricular_vol"], "brain_vol": c["brain_vol"],
        "age_years": c["age_years"], "ventricular_vol_ml": c["ventricular_vol_ml"], "brain_vol_ml": c["brain_vol_ml"],
    }))
    entry["subject"] = sub
    return entry
