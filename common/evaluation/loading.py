"""Reading the two image sets an evaluation compares: a folder of samples and the real images of a datalist.

Every image becomes a float32 array ``[C, *spatial]`` in ``[0, 1]``: PNG by its bit depth (8 or 16 bit) as
``[C, W, H]``, the layout MONAI's ``LoadImage`` reads and ``common.io.write_png`` writes (so the arrays are those the
models were trained on and sampled), NIfTI reoriented to RAS (so samples and reals share axes) and min-max scaled per image. Any problem is a one-line
``EvaluationError`` naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from common.data.make import check_population_version
from common.evaluation.errors import EvaluationError

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".png")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in IMAGE_SUFFIXES if name.endswith(s)), "")


def _read_png(path: Path) -> np.ndarray:
    """[C, W, H] (PIL gives rows first: [H, W] or [H, W, C])."""
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = (np.asarray(im, dtype=np.float64) / 65535.0).astype(np.float32)
        else:
            if im.mode in ("RGBA", "P", "LA", "CMYK", "YCbCr"):
                im = im.convert("RGB" if im.mode not in ("LA",) else "L")
            arr = np.asarray(im, dtype=np.float32) / 255.0
    arr = np.swapaxes(arr, 0, 1)  # [W, H, (C)]
    return np.ascontiguousarray(arr[None] if arr.ndim == 2 else np.moveaxis(arr, -1, 0))


def _read_nifti(path: Path) -> np.ndarray:
    import nibabel as nib

    img = nib.as_closest_canonical(nib.load(str(path)))
    arr = np.asarray(img.get_fdata(dtype=np.float32))
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3):
        raise EvaluationError(f"{path} has shape {arr.shape}: expected a 2D or 3D single-channel image")
    lo, hi = float(arr.min()), float(arr.max())
    arr = (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)
    return arr[None].astype(np.float32)


def load_image(path: str | Path) -> np.ndarray:
    """One image as ``[C, *spatial]`` float32 in ``[0, 1]``; unreadable or unsupported files are an error."""
    path = Path(path)
    suffix = _suffix(path)
    if not suffix:
        raise EvaluationError(f"{path}: unsupported file type; use {', '.join(IMAGE_SUFFIXES)}")
    if not path.is_file():
        raise EvaluationError(f"{path} does not exist: fix the path or the datalist entry")
    try:
        arr = _read_png(path) if suffix == ".png" else _read_nifti(path)
    except EvaluationError:
        raise
    except Exception as exc:
        raise EvaluationError(f"cannot read {path} ({type(exc).__name__}): remove or regenerate the file") from None
    if not np.isfinite(arr).all():
        raise EvaluationError(f"{path} contains NaN or inf values: regenerate the file")
    return arr


def _stack(paths: list[Path], what: str) -> np.ndarray:
    arrays = [load_image(p) for p in paths]
    shapes = sorted({a.shape for a in arrays})
    if len(shapes) > 1:
        raise EvaluationError(
            f"{what} have different shapes {shapes[:3]}: resample them to one size (or set spatial_size)"
        )
    return np.stack(arrays)


def load_samples(samples_dir: str | Path) -> tuple[np.ndarray, list[Path]]:
    """All samples in a folder (not recursive, sorted by name) as ``[N, C, *spatial]``."""
    folder = Path(samples_dir)
    if not folder.is_dir():
        raise EvaluationError(f"samples folder {folder} does not exist: run the bundle's inference first")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and _suffix(p))
    if not paths:
        raise EvaluationError(f"samples folder {folder} holds no {'/'.join(IMAGE_SUFFIXES)} files: run the bundle's inference first")
    return _stack(paths, f"samples in {folder}"), paths


def load_reals(datalist: str | Path, split: str = "test", key: str = "image") -> tuple[np.ndarray, list[Path], str]:
    """Real images ``datalist[split][*][key]`` (paths relative to the datalist's folder); falls back from an
    absent or empty ``test`` split to ``validation``. Returns the images, their paths and the split used."""
    path = Path(datalist)
    if not path.is_file():
        raise EvaluationError(f"datalist {path} does not exist: make one with `python -m common.data make ...` or fix the path")
    try:
        data: Any = json.loads(path.read_text())
    except Exception as exc:
        raise EvaluationError(f"datalist {path} is not valid JSON ({type(exc).__name__}): fix or regenerate it") from None
    if not isinstance(data, dict):
        raise EvaluationError(f"datalist {path} is not a Decathlon-style object with a {split!r} list")
    try:
        check_population_version(data, path)  # the same refusal as training's load_datalist
    except ValueError as exc:
        raise EvaluationError(str(exc)) from None
    used = split
    if not data.get(split) and split == "test" and data.get("validation"):
        used = "validation"
    entries = data.get(used)
    if not isinstance(entries, list) or not entries:
        raise EvaluationError(f"datalist {path} has no entries under {split!r}: choose another split")
    try:
        paths = [(path.parent / e[key]).resolve() if not Path(e[key]).is_absolute() else Path(e[key]) for e in entries]
    except (KeyError, TypeError):
        raise EvaluationError(f"datalist {path}: entries of {used!r} lack the key {key!r}; set image_key") from None
    return _stack(paths, f"real images of {path.name}:{used}"), paths, used
