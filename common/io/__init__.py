"""Atomic file writers: NIfTI with its affine, PNG in MONAI's [W, H] layout, JSON. A failed write leaves no
partial file.

Imports are lazy so that ``import common.io`` stays light (no torch / nibabel / PIL until a writer runs).
"""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {name: "writers" for name in
            ("write_nifti", "write_png", "write_json", "write_bytes", "png_image", "atomic_path", "current_umask")}
__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports("common.io", _EXPORTS)
