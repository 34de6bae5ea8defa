"""The MNI ICBM152 2009 template (shipped in nilearn) prepared once per resolution for the brain population.

Fields on the cropped target grid (RAS, spacing = resolution): grey / white matter / CSF probabilities, the
lateral-ventricle mask, a signed distance to the ventricles (mm) and the depth below the brain surface (mm).
Cached as .npz under the user cache dir (``$MONAI_GEN_ZOO_CACHE`` or ``~/.cache/monai_gen_zoo``) and in memory.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

CACHE_VERSION = 1
# field of view in mm (x, y, z): 80x112x80 at 2 mm, 160x224x160 at 1 mm, as the bundles expect
FOV_MM = (160, 224, 160)


@dataclass(frozen=True)
class BrainTemplate:
    """Template tissue fields on the target grid; all arrays float32 of shape ``shape``."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray  # CSF outside the lateral ventricles
    vent: np.ndarray  # lateral-ventricle CSF
    sd_vent: np.ndarray  # signed distance to the ventricle surface, mm (negative inside)
    depth: np.ndarray  # distance below the brain surface, mm
    csf_dist: np.ndarray  # distance from the nearest CSF or outside, mm (cortical thinning eats GM from there)
    affine: np.ndarray  # 4x4 voxel -> RAS mm

    @property
    def shape(self) -> tuple[int, ...]:
        return self.gm.shape

    @property
    def spacing(self) -> float:
        return float(abs(self.affine[0, 0]))


def cache_dir() -> Path:
    """User cache folder for precomputed templates."""
    return Path(os.environ.get("MONAI_GEN_ZOO_CACHE", Path.home() / ".cache" / "monai_gen_zoo"))


def _crop(a: np.ndarray, start: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Crop (zero padding where the box leaves the volume)."""
    out = np.zeros(shape, np.float32)
    src = [slice(max(s, 0), min(s + n, d)) for s, n, d in zip(start, shape, a.shape)]
    dst = [slice(sl.start - s, sl.stop - s) for sl, s in zip(src, start)]
    out[tuple(dst)] = a[tuple(src)]
    return out


def _build(resolution: int) -> dict[str, np.ndarray]:
    """Load nilearn's maps at ``resolution`` mm, crop to FOV_MM around the brain, derive ventricles and distances."""
    from nilearn import datasets
    from scipy import ndimage as ndi

    gm_img = datasets.load_mni152_gm_template(resolution=resolution)
    gm = gm_img.get_fdata().astype(np.float32)
    wm = datasets.load_mni152_wm_template(resolution=resolution).get_fdata().astype(np.float32)
    mask = datasets.load_mni152_brain_mask(resolution=resolution).get_fdata().astype(np.float32)
    aff = gm_img.affine.astype(np.float64)
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    total = np.clip(np.maximum(mask, gm + wm), 0, 1)
    csf = np.clip(total - gm - wm, 0, 1)

    shape = tuple(int(round(f / resolution)) for f in FOV_MM)
    idx = np.argwhere(mask > 0.5)
    centre = (idx.min(0) + idx.max(0)) / 2.0
    start = np.round(centre - np.array(shape) / 2.0).astype(int)
    gm, wm, csf, total = (_crop(a, start, shape) for a in (gm, wm, csf, total))
    affine = aff.copy()
    affine[:3, 3] = aff[:3, :3] @ start + aff[:3, 3]

    # lateral ventricles: deep CSF components away from the midline (the fissure and cisterns sit on it)
    depth = ndi.distance_transform_edt(total > 0.5).astype(np.float32) * resolution
    ijk = np.indices(shape).reshape(3, -1).T
    world = (ijk @ affine[:3, :3].T + affine[:3, 3]).reshape(shape + (3,))
    lab, n = ndi.label((csf > 0.5) & (depth > 10.0))
    vmask = np.zeros(shape, bool)
    for k in range(1, n + 1):
        comp = lab == k
        if comp.sum() * resolution**3 < 1000.0:  # under 1 ml
            continue
        w = world[comp]
        if np.median(np.abs(w[:, 0])) > 5.0 and np.abs(w[:, 0]).max() < 40 and -60 < w[:, 1].mean() < 30:
            vmask |= comp
    # grow back into the CSF they touch (the depth cut trimmed their rims)
    vmask = ndi.binary_dilation(vmask, iterations=max(1, 4 // resolution), mask=csf > 0.3)
    vent = csf * vmask
    csf = csf * ~vmask
    csf_dist = ndi.distance_transform_edt((gm + wm) > 0.5).astype(np.float32) * resolution
    sd = ndi.distance_transform_edt(~vmask) - ndi.distance_transform_edt(vmask)
    return {
        "gm": gm, "wm": wm, "csf": csf, "vent": vent.astype(np.float32),
        "sd_vent": (sd * resolution).astype(np.float32), "depth": depth, "csf_dist": csf_dist, "affine": affine,
    }


@lru_cache(maxsize=4)
def load_template(resolution: int = 2) -> BrainTemplate:
    """The template at 1 or 2 mm, from the disk cache when present (built once, ~10 s, otherwise)."""
    if resolution not in (1, 2):
        raise ValueError(f"brain resolution must be 1 or 2 mm, got {resolution}: use --spacing 1 or 2")
    path = cache_dir() / f"brain_template_v{CACHE_VERSION}_{resolution}mm.npz"
    fields = None
    if path.exists():
        try:
            with np.load(path) as z:
                fields = {k: z[k] for k in z.files}
        except Exception:  # a corrupt cache is rebuilt, never trusted
            fields = None
    if fields is None:
        import sys

        print(f"building the {resolution} mm brain template cache under {path.parent} (once; ~10 s at 2 mm, "
              "~1 min at 1 mm)", file=sys.stderr, flush=True)
        fields = _build(resolution)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
            with os.fdopen(fd, "wb") as fh:
                np.savez(fh, **{k: (v.astype(np.float16) if k != "affine" else v) for k, v in fields.items()})
            os.replace(tmp, path)
        except OSError:
            pass  # a read-only home still works, just without the disk cache
    # fresh or cached, the fields pass through float16 so every run sees the same numbers (same seed, same bytes)
    f = {k: (v.astype(np.float16).astype(np.float32) if k != "affine" else v.astype(np.float64))
         for k, v in fields.items()}
    return BrainTemplate(**f)
