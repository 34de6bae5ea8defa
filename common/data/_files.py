"""Atomic, deterministic file writing for the built-in populations (no partial outputs, same seed same bytes)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _atomic_bytes(data: bytes, path: Path) -> None:
    """Write bytes to a temp file in the same folder, then rename (a reader never sees half a file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; published files get the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_nifti(array: np.ndarray, path: str | Path, affine: np.ndarray) -> None:
    """Write a NIfTI (.nii or .nii.gz) with its affine as both qform and sform; gzip with mtime 0 so bytes repeat."""
    import nibabel as nib

    path = Path(path)
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    raw = img.to_bytes()
    if path.name.endswith(".gz"):
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    _atomic_bytes(raw, path)


def write_png(array: np.ndarray, path: str | Path) -> None:
    """Write a 2D uint8 (or [0,1] float, scaled) grey image as PNG, atomically."""
    import io

    from PIL import Image

    a = np.asarray(array)
    if a.dtype != np.uint8:
        a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a, mode="L").save(buf, format="PNG")
    _atomic_bytes(buf.getvalue(), Path(path))


def write_json(obj: Any, path: str | Path) -> None:
    """Write JSON atomically with stable formatting."""
    _atomic_bytes((json.dumps(obj, indent=2, sort_keys=False) + "\n").encode(), Path(path))


class StagedOutput:
    """Collect a run's files in a hidden sibling folder and move them into place only when all are written.

    A crash or bad input leaves the output folder as it was (the staging folder is removed).
    """

    def __init__(self, out: str | Path):
        self.out = Path(out).expanduser().resolve()
        parent = self.out.parent
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"output path {self.out} exists and is not a folder: pick another --out")
        if not parent.is_dir():
            raise ValueError(f"output folder's parent {parent} is not an existing folder: create it or pick another --out")
        target = self.out if self.out.exists() else parent
        if not os.access(target, os.W_OK | os.X_OK):
            raise ValueError(f"output folder {target} is not writable: pick a writable --out")
        try:
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=parent))
        except OSError as e:
            raise ValueError(f"cannot write under {parent} ({e.strerror}): pick a writable --out") from None
        os.chmod(self.stage, 0o777 & ~_umask())

    def path(self, rel: str) -> Path:
        return self.stage / rel

    def commit(self) -> None:
        """Move staged files into the output folder (rename when the folder is new)."""
        if not self.out.exists():
            os.replace(self.stage, self.out)
            return
        files = sorted(Path(r) / f for r, _d, fs in os.walk(self.stage) for f in fs)
        files.sort(key=lambda p: p.suffix == ".json")  # the datalist arrives last, after the images it names
        for src in files:
            dst = self.out / src.relative_to(self.stage)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        shutil.rmtree(self.stage, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.stage, ignore_errors=True)
