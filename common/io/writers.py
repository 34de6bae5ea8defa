"""The one place that writes files atomically: NIfTI, PNG, JSON (and raw bytes) through a temp file in the target
folder and a rename, so a reader never sees half a file.

Conventions (docs/CONTRACTS.md, "Files"): a PNG's array is ``[W, H]`` (first axis = image width), the layout MONAI's
``LoadImage`` reads and ``SaveImage`` writes, so an array written here loads back equal; NIfTI keeps its affine
(qform and sform) and is gzipped with mtime 0, so the same array gives the same bytes; files are created with mode
``0o666 & ~umask`` like ``open()`` makes them (not ``mkstemp``'s 0600). Only the standard library is imported at
module level (numpy, nibabel, PIL inside the writers that need them).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_NIFTI_EXT = (".nii", ".nii.gz")


def current_umask() -> int:
    """The process umask (read by setting and restoring it: Python has no getter)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _to_numpy(array):
    """numpy view of a numpy array or (CPU / device) torch tensor, without importing torch."""
    import numpy as np

    if hasattr(array, "detach"):
        array = array.detach().cpu().numpy()
    return np.asarray(array)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path`` (same extension); rename it onto ``path`` only if the block succeeds.

    The file gets mode ``0o666 & ~umask``. The folder must exist (a one-line error says so).
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path} is a directory; give a file path")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {path.parent} does not exist; create it first")
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600; published files get the usual mode
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def missing_folders(*paths: str | os.PathLike) -> list[Path]:
    """The folders among ``paths`` and their parents that do not exist yet, deepest first: what a run is about to
    create, to remove again (``remove_empty_folders``) if it fails."""
    missing = {p for path in paths for p in (Path(path), *Path(path).parents) if not p.exists()}
    return sorted(missing, key=lambda p: len(p.parts), reverse=True)


def remove_empty_folders(folders: list[Path]) -> None:
    """Remove each folder that is still empty (deepest first, as ``missing_folders`` lists them)."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            pass


@contextlib.contextmanager
def staged_folder(output_dir: str | os.PathLike, prefix: str = ".tmp-") -> Iterator[tuple[Path, Path]]:
    """(output folder, hidden temp folder inside it) for a run that writes several files all or nothing.

    The caller writes into the temp folder and ``os.replace``s each file into the output folder once all are
    written; the temp folder is always removed, and an output folder this call created is removed again if the
    run left it empty (an error, nothing written).
    """
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output_dir {out_dir} is a file; give a folder")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir))
    try:
        yield out_dir, tmp_dir
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()


def write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to ``path`` atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def write_json(obj: Any, path: str | os.PathLike, indent: int = 2, sort_keys: bool = False) -> Path:
    """Write ``obj`` as JSON (``indent``, final newline) atomically."""
    return write_bytes((json.dumps(obj, indent=indent, sort_keys=sort_keys) + "\n").encode(), path)


def write_nifti(array, path: str | os.PathLike, affine=None, dtype="float32") -> Path:
    """Write a 2D/3D image as NIfTI with ``affine`` (4x4, mm; identity if None) as qform and sform, atomically.

    array: [*spatial], or [C, *spatial] with the channel first (MONAI layout); C == 1 is dropped, C > 1 is stored
    as the last NIfTI axis. Values are written as they are, as ``dtype`` (None: the array's own dtype, e.g. uint8
    labels). ``.nii.gz`` is gzipped at level 1 with mtime 0: the same array gives the same bytes.
    """
    import nibabel as nib
    import numpy as np

    path = Path(path)
    if not path.name.endswith(_NIFTI_EXT):
        raise ValueError(f"NIfTI path must end with .nii or .nii.gz, got {path.name}")
    arr = _to_numpy(array)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if arr.ndim in (3, 4) and arr.shape[0] == 1:
        arr = arr[0]  # [1, *spatial] -> [*spatial]
    elif arr.ndim == 4:
        arr = np.moveaxis(arr, 0, -1)  # [C, X, Y, Z] -> [X, Y, Z, C]
    if arr.ndim not in (2, 3, 4) or arr.size == 0:
        raise ValueError(f"write_nifti expects [*spatial] or [C, *spatial] with 2 or 3 spatial dims, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"write_nifti: array for {path.name} has NaN or inf values; check the model output")
    aff = np.eye(4) if affine is None else _to_numpy(affine).astype(np.float64)
    if aff.shape != (4, 4) or not np.isfinite(aff).all() or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
        raise ValueError(f"affine must be a finite, invertible 4x4 matrix, got shape {aff.shape}")
    img = nib.Nifti1Image(arr, aff)
    img.set_qform(aff, code=1)
    img.set_sform(aff, code=1)
    img.header.set_xyzt_units("mm", "sec")
    raw = img.to_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    return write_bytes(raw, path)


def png_image(array, bits: int = 8, spatial_order: str = "xy", name: str = "array"):
    """The PIL image ``write_png`` would write for ``array`` (e.g. to paste into a figure); arguments as there."""
    import numpy as np
    from PIL import Image

    if bits not in (8, 16):
        raise ValueError(f"bits must be 8 or 16, got {bits}")
    if spatial_order not in ("xy", "yx"):
        raise ValueError(f"spatial_order must be 'xy' (MONAI layout) or 'yx' (rows first), got {spatial_order!r}")
    arr = _to_numpy(array)
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] != 3):
        raise ValueError(f"write_png expects [W, H] or [C, W, H] with C 1 or 3, got shape {_to_numpy(array).shape}")
    if spatial_order == "xy":
        arr = np.swapaxes(arr, 0, 1)
    top = 255 if bits == 8 else 65535
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise ValueError(f"write_png: {name} has NaN or inf values; check the model output")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -1e-6 or hi > 1 + 1e-6:
            raise ValueError(f"write_png: float values must be in [0, 1], got [{lo:.4g}, {hi:.4g}]; clip or rescale first")
        arr = np.rint(np.clip(arr, 0.0, 1.0) * top)
    elif arr.size and (arr.min() < 0 or arr.max() > top):
        raise ValueError(f"write_png: integer values must be in [0, {top}] for {bits}-bit, got [{arr.min()}, {arr.max()}]")
    arr = np.ascontiguousarray(arr.astype(np.uint8 if bits == 8 else np.uint16))
    if bits == 16 and arr.ndim == 3:
        raise ValueError("write_png: 16-bit PNG is grey only; give one channel or bits=8")
    return Image.fromarray(arr)


def write_png(array, path: str | os.PathLike, bits: int = 8, spatial_order: str = "xy") -> Path:
    """Write a 2D image as 8- or 16-bit PNG (grey, or RGB for 3 channels), atomically.

    array: [W, H] or [C, W, H] (C in 1, 3), floats in [0, 1] (scaled to the full integer range, rounded) or
    integers already in range. spatial_order "xy" (default) is MONAI's layout (first axis = image width, as
    ``LoadImage`` reads PNGs and ``SaveImage`` writes them, so files round-trip); "yx" is row-major (rows first),
    for pictures composed for display.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"PNG path must end with .png, got {path.name}")
    buf = io.BytesIO()
    png_image(array, bits, spatial_order, name=f"array for {path.name}").save(buf, format="PNG")
    return write_bytes(buf.getvalue(), path)
