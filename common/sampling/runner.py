"""The ``run`` step of the bundles' inference.json: sample N images with a seed and write them, all or nothing."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.conditioning.base import Condition

FORMATS = {"nifti": ".nii.gz", "png": ".png"}


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of a run with ``seed`` (independent of batch size)."""
    return int(np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


def sample_filename(prefix: str, seed: int, index: int, file_format: str) -> str:
    """Deterministic name: ``{prefix}_seed{seed}_{index:04d}{ext}`` (a rerun with the same seed rewrites the same files)."""
    return f"{prefix}_seed{seed}_{index:04d}{FORMATS[file_format]}"


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or int(value) < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


def _slice_condition(cond: Condition | None, lo: int, hi: int) -> Condition | None:
    """Rows lo:hi of a per-sample condition; a shared (batch 1) condition is passed as is."""
    if cond is None:
        return None

    def part(t):
        return t if t is None or t.shape[0] == 1 else t[lo:hi]

    return Condition(part(cond.context), part(cond.concat))


def run_sampling(
    sampler,
    output_dir: str | os.PathLike,
    num_samples: int = 1,
    seed: int = 0,
    condition: Condition | None = None,
    null_condition: Condition | None = None,
    batch_size: int = 1,
    file_format: str = "nifti",
    affine=None,
    prefix: str = "sample",
    output_range: Sequence[float] | None = (0.0, 1.0),
) -> list[str]:
    """Sample ``num_samples`` images with ``sampler`` (a ``LatentDiffusionSampler``) and write them to ``output_dir``.

    Sample i starts from noise seeded by (seed, i) only, so the same seed gives the same files whatever the
    batch size. Values are clipped to ``output_range`` (NIfTI) or mapped from it to [0, 1] (PNG). Files are
    written into a temp folder inside ``output_dir`` and renamed into place only after every sample succeeded;
    on any error nothing is left behind. Returns the written paths in sample order.
    """
    num_samples = _check_int("num_samples", num_samples, 1)
    seed = _check_int("seed", seed, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FORMATS)}, got {file_format!r}")
    if not prefix or any(c in prefix for c in "/\\"):
        raise ValueError(f"prefix must be a plain file-name prefix, got {prefix!r}")
    if output_range is not None and not (len(output_range) == 2 and float(output_range[0]) < float(output_range[1])):
        raise ValueError(f"output_range must be (low, high) with low < high, got {output_range!r}")
    for name, cond in (("condition", condition), ("null_condition", null_condition)):
        if cond is not None:
            for t in (cond.context, cond.concat):
                if t is not None and t.shape[0] not in (1, num_samples):
                    raise ValueError(f"{name} has batch {t.shape[0]}; give 1 (shared) or num_samples={num_samples}")
    out_dir = Path(output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise NotADirectoryError(f"output_dir {out_dir} is a file; give a folder")
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)

    from common.io.writers import write_nifti, write_png

    tmp_dir = Path(tempfile.mkdtemp(prefix=".tmp-sampling-", dir=out_dir))
    names = [sample_filename(prefix, seed, i, file_format) for i in range(num_samples)]
    try:
        for lo in range(0, num_samples, batch_size):
            hi = min(lo + batch_size, num_samples)
            noise = torch.stack(
                [
                    torch.randn(sampler.latent_shape, generator=torch.Generator().manual_seed(sample_seed(seed, i)))
                    for i in range(lo, hi)
                ]
            )
            gen = torch.Generator().manual_seed(sample_seed(seed, lo, stream=1))
            images = sampler.sample(
                _slice_condition(condition, lo, hi),
                _slice_condition(null_condition, lo, hi),
                num_samples=hi - lo,
                generator=gen,
                noise=noise,
            )
            images = images.float().cpu()
            if output_range is not None:
                low, high = float(output_range[0]), float(output_range[1])
                images = images.clamp(low, high)
            for k in range(hi - lo):
                target = tmp_dir / names[lo + k]
                if file_format == "nifti":
                    write_nifti(images[k], target, affine)
                else:
                    img = images[k] if output_range is None else (images[k] - low) / (high - low)
                    write_png(img, target)
        paths = []
        for name in names:
            os.replace(tmp_dir / name, out_dir / name)
            paths.append(str(out_dir / name))
        return paths
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()
