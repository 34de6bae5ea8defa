"""The input files of a run that reads images (``--input_image`` / ``--input_dir`` / ``--input_files``), one way
for every entry point (likelihood scoring, translation, upscaling), with one-line errors."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class InputError(ValueError):
    """An input image the run cannot use (missing, unreadable, of the wrong kind or shape)."""


def has_suffix(path: Path, suffixes: Sequence[str]) -> bool:
    """Whether the file name ends with one of ``suffixes`` (case-insensitive; ``.nii.gz`` counts as a whole)."""
    name = path.name.lower()
    return any(name.endswith(s.lower()) for s in suffixes)


def list_inputs(input_image: str | None = None, input_dir: str | None = None,
                input_files: Sequence[str] | None = None, suffixes: Sequence[str] = (".png",),
                kind: str = "8- or 16-bit grey PNGs") -> list[Path]:
    """The files to read: one file, every file with one of ``suffixes`` in a folder (sorted, not recursive), or a
    list of files. ``kind`` names what the folder should hold in the error."""
    if sum(bool(x) for x in (input_image, input_dir, input_files)) != 1:
        example = suffixes[0]
        raise InputError(f"give exactly one of --input_image FILE{example}, --input_dir FOLDER or --input_files [...]")
    if input_files:
        paths = [Path(f) for f in input_files]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise InputError(f"input image {missing[0]} does not exist: fix the list")
        return paths
    if input_image:
        path = Path(input_image)
        if not path.is_file():
            raise InputError(f"input image {path} does not exist: fix the path")
        return [path]
    folder = Path(input_dir)  # type: ignore[arg-type]
    if not folder.is_dir():
        raise InputError(f"input folder {folder} does not exist: fix the path")
    paths = sorted(p for p in folder.iterdir() if p.is_file() and has_suffix(p, suffixes))
    if not paths:
        raise InputError(f"input folder {folder} holds no {' or '.join(suffixes)} files: give {kind}")
    return paths
