"""Staged output and stable datalist numbers for the built-in populations (no partial outputs, same seed same
bytes). Files themselves are written by ``common.io`` (atomic, umask-honouring, deterministic)."""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from common.io.writers import current_umask, missing_folders, remove_empty_folders


def round_floats(d: dict[str, Any], ndigits: int = 6) -> dict[str, Any]:
    """Stable JSON numbers (same seed, same bytes)."""
    return {k: (round(v, ndigits) if isinstance(v, float) and math.isfinite(v) else v) for k, v in d.items()}


class StagedOutput:
    """Collect a run's files in a hidden sibling folder and move them into place only when all are written.

    A crash or bad input leaves the output folder as it was (the staging folder is removed).
    """

    def __init__(self, out: str | Path):
        self.out = Path(out).expanduser().resolve()
        parent = self.out.parent
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"output path {self.out} exists and is not a folder: pick another --out")
        if any(p.exists() and not p.is_dir() for p in (parent, *parent.parents)):
            raise ValueError(f"output folder's parent {parent} is not an existing folder (a file is in the way): pick another --out")
        self.created = missing_folders(parent)  # removed again on abort
        try:
            parent.mkdir(parents=True, exist_ok=True)  # a fresh clone has no data/ yet
        except OSError as e:
            raise ValueError(f"cannot create {parent} ({e.strerror}): pick a writable --out") from None
        target = self.out if self.out.exists() else parent
        if not os.access(target, os.W_OK | os.X_OK):
            raise ValueError(f"output folder {target} is not writable: pick a writable --out")
        try:
            self.stage = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.staging-", dir=parent))
        except OSError as e:
            raise ValueError(f"cannot write under {parent} ({e.strerror}): pick a writable --out") from None
        os.chmod(self.stage, 0o777 & ~current_umask())

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
        remove_empty_folders(self.created)  # the parents this run created, if still empty
