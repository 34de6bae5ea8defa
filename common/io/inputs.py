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


NIFTI_SUFFIXES = (".nii.gz", ".nii")


def read_nifti(path: Path, key: str = "image", spatial_dims: Sequence[int] = (2, 3)) -> dict:
    """``{key: MetaTensor [1, *spatial]}`` of a single-channel NIfTI with ``spatial_dims`` dimensions, or a one-line
    error naming the file (unreadable, several channels, NaN / inf)."""
    import torch
    from monai.transforms import LoadImaged

    try:
        data = LoadImaged(keys=key, ensure_channel_first=True, image_only=True)({key: str(path)})
    except Exception as exc:
        from common.cli import one_line

        raise InputError(f"{path}: not a readable NIfTI image ({one_line(exc)[:120]}); give a .nii or .nii.gz file") from None
    image = data[key]
    if image.ndim - 1 not in tuple(spatial_dims) or image.shape[0] != 1:
        wanted = " or ".join(f"{d}D" for d in spatial_dims)
        raise InputError(f"{path}: image of shape {tuple(image.shape[1:])} with {image.shape[0]} channel(s); this model "
                         f"takes single-channel {wanted} images")
    if not torch.isfinite(image).all():
        raise InputError(f"{path}: the image has NaN or inf values; fix or mask them first")
    return data


def write_per_input(paths: Sequence[Path], output_dir: str | Path, convert, verb: str = "converted") -> list[str]:
    """Write ``convert(path, index) -> (array, affine)`` of every input as NIfTI under the input's own file name in
    ``output_dir``, all or nothing (a temp folder renamed into place once every input succeeded).

    Refuses an ``output_dir`` that holds an input (the outputs take the inputs' names) and two inputs of one name.
    Prints one progress line per input, then the written paths; returns them.
    """
    import os

    from common.io.writers import staged_folder, write_nifti

    out_dir = Path(output_dir)
    if any(p.resolve().parent == out_dir.resolve() for p in paths):
        raise InputError(f"output_dir {out_dir} holds the inputs and outputs take their names: give another --output_dir")
    names = [p.name for p in paths]
    if len(set(names)) != len(names):
        raise InputError("two inputs share a file name: run them in separate runs")
    with staged_folder(out_dir, ".tmp-convert-") as (final_dir, tmp_dir):
        for index, path in enumerate(paths):
            array, affine = convert(path, index)
            write_nifti(array, tmp_dir / path.name, affine=affine)
            print(f"{verb} {path} ({index + 1}/{len(paths)})", flush=True)
        for name in names:
            os.replace(tmp_dir / name, final_dir / name)
    written = [str(final_dir / n) for n in names]
    for w in written:
        print(w)
    return written
