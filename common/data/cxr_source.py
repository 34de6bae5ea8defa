"""The real chest radiograph behind the chest X-ray population: ``RG1_UNCI.dcm`` of the ``pydicom-data`` package.

``pydicom-data`` (PyPI, 1.0.0, MIT) ships a real PA chest computed radiograph (1841 x 1955 pixels, 15 bit,
MONOCHROME1, uncompressed). Nothing is downloaded: the file comes from the installed package and pydicom reads it.
The film is inverted to MONOCHROME2 (bone bright), block-averaged by ``factor`` and normalised (the field's 0.5th
percentile 0, its 99.5th percentile 1). The two lungs and the heart shadow are polygons marked by hand on the
full-resolution film (``RIGHT_LUNG``, ``LEFT_LUNG``, ``HEART``, film pixels (column, row)); ``source(factor)``
rasterises them on the reduced grid. The film is decoded once per process and its reductions kept in memory
(about 0.9 MB at factor 4).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FILE = "RG1_UNCI.dcm"
SHAPE = (1955, 1841)  # rows, columns of the full film
# Hand-marked outlines on the full film (column, row), patient's right lung on the image's left (PA display).
# Checked by overlay on the film (docs/data.md). The heart outline includes the spine behind it, as its shadow does.
RIGHT_LUNG = ((600, 180), (740, 220), (768, 400), (780, 640), (768, 880), (760, 1120), (744, 1320), (700, 1380),
              (600, 1400), (480, 1408), (380, 1432), (280, 1472), (168, 1520), (152, 1360), (160, 1120),
              (192, 880), (240, 640), (320, 400), (440, 240))
LEFT_LUNG = ((1200, 180), (1360, 240), (1460, 360), (1540, 560), (1600, 800), (1632, 1040), (1648, 1280),
             (1672, 1520), (1680, 1620), (1580, 1580), (1480, 1500), (1420, 1440), (1320, 1320), (1220, 1160),
             (1140, 1000), (1060, 840), (1032, 680), (1020, 480), (1048, 280), (1120, 200))
HEART = ((840, 800), (980, 800), (1072, 860), (1140, 1000), (1220, 1140), (1320, 1280), (1420, 1420),
         (1448, 1472), (1200, 1500), (920, 1488), (760, 1440), (740, 1320), (744, 1040), (760, 860))
INSTALL_HINT = ("the chest X-ray population is made from the real radiograph RG1_UNCI.dcm of the `pydicom-data` "
                "package: install it with `pip install pydicom-data==1.0.0 'pydicom>=3,<4'` "
                "(nothing is downloaded at run time)")


@dataclass(frozen=True)
class Radiograph:
    """The source film at ``factor``, row-major [H, W]: image in [0, 1] (bone bright) and its hand-marked masks."""

    image: np.ndarray  # float32
    right_lung: np.ndarray  # bool, the patient's right lung (image left)
    left_lung: np.ndarray  # bool
    heart: np.ndarray  # bool, the heart shadow
    factor: int

    @property
    def masks_float(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Right lung, left lung, heart as float32 (what interpolation reads); made once per film."""
        return _float_masks(self.factor)


def _path() -> str:
    try:
        import data_store  # the pydicom-data package
    except ImportError as err:
        raise FileNotFoundError(INSTALL_HINT) from err
    path = os.path.join(os.path.dirname(data_store.__file__), "data", FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing: {INSTALL_HINT}")
    return path


@lru_cache(maxsize=1)
def _film() -> np.ndarray:
    """The full film as float32 MONOCHROME2 (larger = denser); decoded once per process."""
    try:
        import pydicom
    except ImportError as err:
        raise FileNotFoundError(INSTALL_HINT) from err
    path = _path()
    try:
        ds = pydicom.dcmread(path)
        a = ds.pixel_array.astype(np.float32)
    except (OSError, ValueError, RuntimeError) as err:
        raise OSError(f"source radiograph {path} could not be read ({err}): {INSTALL_HINT}") from err
    if a.shape != SHAPE:
        raise OSError(f"source radiograph {path} has shape {a.shape}, expected {SHAPE}: {INSTALL_HINT}")
    if ds.PhotometricInterpretation == "MONOCHROME1":
        a = a.max() - a
    return a


def _polygon_mask(points, factor: int, shape: tuple[int, int]) -> np.ndarray:
    from PIL import Image, ImageDraw

    im = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(im).polygon([((c + 0.5) / factor - 0.5, (r + 0.5) / factor - 0.5) for c, r in points], fill=1)
    return np.asarray(im, bool)


@lru_cache(maxsize=4)
def source(factor: int = 4) -> Radiograph:
    """The film block-averaged by ``factor`` (1, 2, 4 or 8) with its masks; cached per factor."""
    if factor not in (1, 2, 4, 8):
        raise ValueError(f"factor must be 1, 2, 4 or 8, got {factor}")
    a = _film()
    h, w = a.shape[0] // factor, a.shape[1] // factor
    a = a[: h * factor, : w * factor].reshape(h, factor, w, factor).mean((1, 3))
    lo, hi = np.percentile(a, [0.5, 99.5])
    a = np.clip((a - lo) / (hi - lo), 0, 1).astype(np.float32)
    a.setflags(write=False)
    masks = [_polygon_mask(p, factor, (h, w)) for p in (RIGHT_LUNG, LEFT_LUNG, HEART)]
    for m in masks:
        m.setflags(write=False)
    return Radiograph(a, masks[0], masks[1], masks[2], factor)


@lru_cache(maxsize=4)
def _float_masks(factor: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    film = source(factor)
    return tuple(m.astype(np.float32) for m in (film.right_lung, film.left_lung, film.heart))


def factor_for(size: tuple[int, int]) -> int:
    """The coarsest reduction that still has at least 2 film pixels per output pixel (anti-aliased sampling)."""
    for f in (8, 4, 2):
        if SHAPE[0] / f >= 2 * size[0] and SHAPE[1] / f >= 2 * size[1]:
            return f
    return 1


def film_picture(size: tuple[int, int] = (128, 128), outlines: bool = False) -> np.ndarray:
    """The film as the population frames it, undeformed ([H, W], display densities), optionally with the
    hand-marked lungs and heart outlined in white: the real image each case starts from."""
    from scipy import ndimage as ndi

    from .cxr import BASE_GAMMA, FRAME_CENTRE, FRAME_HALF_W, _sample

    h, w = size
    film = source(factor_for(size))
    rows = FRAME_CENTRE[1] + ((np.arange(h) + 0.5) / h * 2 - 1) * FRAME_HALF_W * h / w
    cols = FRAME_CENTRE[0] + ((np.arange(w) + 0.5) / w * 2 - 1) * FRAME_HALF_W
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    pic = _sample(film.image, rr, cc, film.factor) ** BASE_GAMMA
    if outlines:
        for m in film.masks_float:
            inside = _sample(m, rr, cc, film.factor) > 0.5
            pic[inside & ~ndi.binary_erosion(inside)] = 1.0
    return pic.astype(np.float32)


def preview(out, n: int = 14, seed: int = 0):
    """The documentation figure: the real film (plain, then with its hand-marked outlines) and ``n`` population
    cases, drawn with ``common.data.figure``'s tiles and grid (docs/figures/populations_cxr.png: ``preview(PATH)``)."""
    from .cxr import generate
    from .figure import _tile, write_grid

    tiles = [_tile(film_picture(), "real RG1_UNCI", spatial_order="yx"),
             _tile(film_picture(outlines=True), "real + outlines", spatial_order="yx")]
    short = {"no_finding": "normal", "effusion": "eff.", "cardiomegaly": "cardiomeg.", "pneumothorax": "PTX"}
    for i in range(n):
        c = generate(seed, i)
        a = c.attributes
        side = a["effusion_side"] if a["finding"] == "effusion" else a["pneumothorax_side"]
        detail = {"effusion": f" {side[0].upper()}{a['effusion_size'][0]}", "pneumothorax": f" {side[0].upper()}"}
        tiles.append(_tile(c.image, f"{short[a['finding']]}{detail.get(a['finding'], '')} {a['ctr']:.2f}"))
    return write_grid(tiles, 8, out)
