"""Atomic sample writers: NIfTI with its affine, PNG. A failed write leaves no partial file.

Imports are lazy so that ``import common.io`` stays light (no torch / nibabel / PIL until a writer runs).
"""

from __future__ import annotations

__all__ = ["write_nifti", "write_png", "atomic_path"]


def __getattr__(name: str):
    if name in __all__:
        from common.io import writers

        return getattr(writers, name)
    raise AttributeError(f"module 'common.io' has no attribute {name!r}")
