"""Preview grids of a population (``python -m common.data figure POPULATION --out grid.png``).

Each tile is one generated case with its ground truth written under it, so a reader sees what the
attributes look like; used for the figures in docs/.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _tile(img: np.ndarray, caption: str, scale: int = 1, spatial_order: str = "xy"):
    """A case's picture ([W, H] as its PNG loads; "yx": a row-major display view) with ``caption`` under it."""
    from PIL import Image, ImageDraw

    from common.io.writers import png_image

    im = png_image(np.clip(np.asarray(img, np.float32), 0, 1), spatial_order=spatial_order)
    if scale != 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    out = Image.new("L", (im.width, im.height + 14), 0)
    out.paste(im, (0, 0))
    ImageDraw.Draw(out).text((2, im.height + 1), caption, fill=255)
    return out


def _grid(tiles, cols: int):
    from PIL import Image

    w = max(t.width for t in tiles)
    h = max(t.height for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    g = Image.new("L", (cols * (w + 4), rows * (h + 4)), 0)
    for k, t in enumerate(tiles):
        g.paste(t, ((k % cols) * (w + 4), (k // cols) * (h + 4)))
    return g


def write_grid(tiles, cols: int, out: str | Path) -> Path:
    """Lay ``tiles`` out ``cols`` per row and write the PNG to ``out`` atomically (its folder must exist)."""
    import io

    from common.io.writers import write_bytes

    buf = io.BytesIO()
    _grid(tiles, cols).save(buf, format="PNG")
    out = Path(out)
    if not out.parent.is_dir():
        raise ValueError(f"folder {out.parent} does not exist: create it or pick another --out")
    write_bytes(buf.getvalue(), out)
    return out


def _brain_view(vol: np.ndarray) -> np.ndarray:
    """Axial, coronal and sagittal mid-slices side by side, displayed radiologically upright."""
    x, y, z = (n // 2 for n in vol.shape)
    ax = np.rot90(vol[:, :, z + 4])
    cor = np.rot90(vol[:, y - 4, :])
    sag = np.rot90(vol[x + 6, :, :])
    hgt = max(ax.shape[0], cor.shape[0], sag.shape[0])
    pad = lambda a: np.pad(a, ((0, hgt - a.shape[0]), (0, 0)))  # noqa: E731
    return np.concatenate([pad(ax), pad(cor), pad(sag)], axis=1)


def figure(population: str, out: str | Path, n: int = 8, seed: int = 0, dims: int = 3) -> Path:
    """Write a PNG grid of ``n`` cases of ``population`` to ``out`` (atomically)."""
    tiles = []
    if population == "brain" and dims == 3:
        from .brain import generate_subject

        for i in range(n):
            s = generate_subject(seed, i, dims=3)
            c = s.covariates
            cap = f"{'M' if c['gender'] else 'F'} {c['age_years']:.0f}y vent {c['ventricular_vol_ml']:.0f}ml"
            tiles.append(_tile(np.concatenate([_brain_view(s.t1), _brain_view(s.flair)], axis=0), cap, spatial_order="yx"))
        cols = 4
    elif population == "brain":
        from .brain import generate_subject

        for i in range(n):
            s = generate_subject(seed, i, dims=2)
            c = s.covariates
            cap = f"{'M' if c['gender'] else 'F'} {c['age_years']:.0f}y"
            tiles.append(_tile(np.concatenate([np.rot90(s.t1), np.rot90(s.flair)], axis=1), cap, scale=2, spatial_order="yx"))
        cols = 4
    elif population == "cxr":
        from .cxr import generate

        for i in range(n):
            c = generate(seed, i)
            a = c.attributes
            cap = {"no_finding": "no finding", "cardiomegaly": f"cardiomeg {a['ctr']:.2f}",
                   "pneumothorax": f"PTX {a['pneumothorax_side']}"}.get(
                a["finding"], f"eff {a['effusion_side'][:5]} {a['effusion_size']}")
            tiles.append(_tile(c.image, cap))
        cols = 8
    elif population == "mammo":
        from .mammo import generate

        for i in range(n):
            c = generate(seed, i)
            tiles.append(_tile(c.image, f"{c.attributes['masking']} {c.attributes['density']:.2f}"))
        cols = 8
    elif population == "oct":
        from .oct import generate

        for i in range(n):
            c = generate(seed, i)
            tiles.append(_tile(c.image, c.attributes["class"]))
        cols = 4
    else:
        raise ValueError(f"unknown population {population!r}: choose one of brain, cxr, mammo, oct")
    return write_grid(tiles, cols, out)
