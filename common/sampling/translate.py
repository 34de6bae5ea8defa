"""Image-to-image translation with a ControlNet over a 2D latent diffusion model, for 2D images and 3D volumes.

A 3D volume is translated slice by slice along its third (axial, for RAS) axis in batches, every slice starting
from the SAME latent noise (seeded by the run's seed and the input's index), so neighbouring slices, which have
nearly the same conditioning image, come out nearly the same and the volume is consistent along the slice axis.

Grid: the input is read with MONAI (``LoadImaged``), put on the model's grid (``Orientationd`` to RAS,
``Spacingd`` to the model's spacing, bilinear; ``ResizeWithPadOrCropd`` to the model's in-plane size, the slice
count kept), intensity-scaled as in training, translated, and mapped back to the input's own grid with the same
transforms' inverse (MONAI's ``Compose.inverse``), so the output has the input's shape and affine and is written
under the input's file name.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from common.conditioning.control import ControlConditioner
from common.io.inputs import NIFTI_SUFFIXES, list_inputs, read_nifti, write_per_input
from common.sampling.settings import GenerationSettings, RunSettings

# a slice whose scaled input never exceeds this is background (see ControlNetTranslator.translate)
SIGNAL_FLOOR = 0.05


class ControlNetTranslator:
    """Translate images on the model's grid: ``translate(image [1, H, W] or [1, H, W, D]) -> same shape``.

    Args:
        sampler: a ``LatentDiffusionSampler`` whose denoiser is ``UNetDenoiser(base, controlnet, scale)``.
        conditioner: the ``ControlConditioner`` the ControlNet was trained with (its null is guidance's).
        batch_size: slices per denoising batch (memory against speed; the output does not depend on it).
    """

    def __init__(self, sampler: Any, conditioner: ControlConditioner, batch_size: int = 16) -> None:
        from common.sampling.settings import check_int

        self.sampler = sampler
        self.conditioner = conditioner
        self.batch_size = check_int("batch_size", batch_size, 1)

    def translate(self, image: torch.Tensor, seed: int, settings: GenerationSettings) -> torch.Tensor:
        """The translated image (same shape); every slice starts from the noise of ``seed``.

        A slice without signal (no value above ``SIGNAL_FLOOR`` of the scaled [0, 1] input: outside the head, or
        padding to the model's grid) is background in the output, not sampled: a zero conditioning image is the
        null control the ControlNet learned for guidance, so sampling a (nearly) empty slice draws an
        unconditioned brain where there is none (measured: 13 of 88 near-empty held-out slices with max < 0.05).
        """
        image = torch.as_tensor(image).float()
        volume = image.ndim == 4
        slices = image.permute(3, 0, 1, 2) if volume else image.unsqueeze(0)  # [N, C, H, W]
        result = torch.zeros_like(slices)
        signal = torch.nonzero(slices.flatten(1).abs().amax(dim=1) > SIGNAL_FLOOR).flatten()
        noise = self.sampler.noise(1, torch.Generator().manual_seed(int(seed)))
        for lo in range(0, signal.numel(), self.batch_size):
            index = signal[lo: lo + self.batch_size]
            batch = slices[index]
            n = batch.shape[0]
            condition = self.conditioner.from_values(n, control=batch)
            null = self.conditioner.null(n) if settings.guided else None
            latents = self.sampler.sample_latents(condition, null, num_samples=n, noise=noise.expand(n, *noise.shape[1:]),
                                                  generator=torch.Generator().manual_seed(int(seed)), settings=settings)
            result[index] = self.sampler.decode(latents).float().cpu()
        return result.permute(1, 2, 3, 0) if volume else result[0]


def model_grid(key: str, spatial_dims: int, pixdim: Sequence[float], plane_size: Sequence[int]) -> Any:
    """The invertible MONAI transforms that put a loaded image on the model's grid (see the module docstring)."""
    from monai.transforms import Compose, Orientationd, ResizeWithPadOrCropd, Spacingd

    if len(pixdim) != 3 or len(plane_size) != 2:
        raise ValueError(f"pixdim must give 3 spacings and plane_size 2 sizes, got {list(pixdim)}, {list(plane_size)}")
    axcodes = "RAS"[:spatial_dims]
    size = [int(s) for s in plane_size] + ([-1] if spatial_dims == 3 else [])
    return Compose([
        Orientationd(keys=key, axcodes=axcodes, labels=(("L", "R"), ("P", "A"), ("I", "S"))),
        Spacingd(keys=key, pixdim=[float(p) for p in pixdim[:spatial_dims]], mode="bilinear", padding_mode="zeros"),
        ResizeWithPadOrCropd(keys=key, spatial_size=size),
    ])


def run_translation(
    translator: ControlNetTranslator,
    output_dir: str | os.PathLike,
    input_image: str | None = None,
    input_dir: str | None = None,
    pixdim: Sequence[float] = (2.0, 2.0, 2.0),
    plane_size: Sequence[int] = (80, 112),
    intensity: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    key: str = "image",
    seed: int = 0,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    progress: bool = True,
    output_range: Sequence[float] = (0.0, 1.0),
) -> list[str]:
    """Translate every input NIfTI and write each under its own name in ``output_dir``, all or nothing.

    ``intensity``: the training-time intensity scaling of the conditioning image (a MONAI dict transform on
    ``key``). Input i's noise is seeded by (seed, i). Prints and returns the written paths.
    """
    from monai.data import MetaTensor

    from common.sampling.runner import sample_seed

    run = RunSettings(seed=seed)
    settings = GenerationSettings(num_inference_steps, guidance_scale, progress)
    paths = list_inputs(input_image, input_dir, suffixes=NIFTI_SUFFIXES, kind="2D or 3D NIfTI images (.nii, .nii.gz)")
    import nibabel as nib

    low, high = float(output_range[0]), float(output_range[1])

    def convert(path: Path, index: int) -> tuple[Any, Any]:
        data = read_nifti(path, key)
        grid = model_grid(key, data[key].ndim - 1, pixdim, plane_size)
        on_grid = grid(data)
        scaled = intensity(dict(on_grid)) if intensity is not None else on_grid
        translated = translator.translate(torch.as_tensor(scaled[key]).float(), sample_seed(run.seed, index), settings)
        moved = MetaTensor(translated.clamp(low, high), meta=on_grid[key].meta)
        moved.applied_operations = list(on_grid[key].applied_operations)
        back = grid.inverse({key: moved})[key]
        if tuple(back.shape) != tuple(data[key].shape):
            raise RuntimeError(f"{path}: the output came back as {tuple(back.shape)}, not the input's "
                               f"{tuple(data[key].shape)}")
        return back, nib.load(str(path)).affine

    return write_per_input(paths, output_dir, convert, verb="translated")
