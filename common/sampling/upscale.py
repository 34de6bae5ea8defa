"""Super-resolution with a latent diffusion upscaler: a 2 mm volume in, the 1 mm volume out.

The upscaler's autoencoder downsamples once by 2, so the latent of a 1 mm volume lies on the 2 mm grid and the
low-resolution volume is concatenated to it voxel for voxel (``NoiseLevelConditioner``: noised to a chosen level,
the level given as the UNet's class label). The UNet is fully convolutional: any 2 mm volume whose sides are a
multiple of its downsampling factor is upscaled whole (others are padded at the far end and cropped back), so a
160x224x160 output needs one UNet pass per step over the 80x112x80 latent and a slab decode.

Consistency (``consistency=True``, after iterative back-projection, Irani & Peleg 1991): the 2 mm volume is the 2x2x2
block mean of the 1 mm one, so the output is projected onto the volumes whose block means ARE the input,
``x + up(lowres - down(x))`` (``down`` the block mean, ``up`` its nearest-neighbour copy). That is the orthogonal
projection onto a set that contains the truth, so it can only bring the output closer to it; the model supplies the
detail within each block, the input fixes each block's mean.

Residual (``base="cubic"``, residual learning as in VDSR, Kim et al. 2016): the autoencoder and UNet model
``residual_scale * (x - base(lowres))``, the detail that B-spline interpolation of the input misses, and the output is
``base(lowres) + decoded / residual_scale``. Interpolation already recovers most of a smooth 1 mm volume (cubic
B-spline: 38.8 dB on the held-out population), so the latent model spends its capacity on the part it cannot; a
latent of zeros gives the interpolation itself. ``base=None`` is the published (non-residual) upscaler.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from common.conditioning.noise_level import NoiseLevelConditioner
from common.io.inputs import NIFTI_SUFFIXES, InputError, list_inputs, read_nifti, write_per_input
from common.sampling.settings import GenerationSettings, RunSettings, check_bool, check_float

FACTOR = 2
BASES = {"trilinear": 1, "cubic": 3}  # interpolation a residual upscaler adds its detail to -> B-spline order


def half_spacing_affine(affine: Any) -> np.ndarray:
    """The affine of the 2x finer grid whose 2x2x2 blocks are the voxels of ``affine``'s grid.

    Fine voxel j lies at coarse index (j - 0.5) / 2 (a coarse voxel's centre is the mean of its two fine centres), so
    the fine affine has half the step and its origin a quarter coarse voxel back.
    """
    a = np.asarray(affine, dtype=np.float64)
    fine = a.copy()
    fine[:3, :3] = a[:3, :3] / FACTOR
    fine[:3, 3] = a[:3, 3] - a[:3, :3] @ np.full(3, 0.5 / FACTOR)
    return fine


def check_base(base: str | None) -> str | None:
    """``base`` as given, or one line naming the choices."""
    if base is not None and base not in BASES:
        raise ValueError(f"residual base {base!r} is not one of {sorted(BASES)}; pass one of them, or null for an "
                         "upscaler that models the whole volume")
    return base


def interpolate_up(lowres: torch.Tensor, base: str) -> torch.Tensor:
    """[..., D, H, W] -> [..., 2D, 2H, 2W]: B-spline interpolation of order ``BASES[base]`` (scipy.ndimage.zoom,
    grid_mode: the fine voxel centres where the 2x2x2 block means put them), clipped to [0, 1]."""
    from scipy.ndimage import zoom

    order = BASES[check_base(base)]
    low = torch.as_tensor(lowres).detach().float().cpu().numpy()
    flat = low.reshape(-1, *low.shape[-3:])
    up = np.stack([zoom(v, FACTOR, order=order, grid_mode=True, mode="nearest") for v in flat])
    up = np.clip(up, 0.0, 1.0).astype(np.float32).reshape(*low.shape[:-3], *up.shape[-3:])
    return torch.from_numpy(up)


def interpolation_residual(image: torch.Tensor, lowres: torch.Tensor, base: str, scale: float) -> torch.Tensor:
    """What a residual upscaler models: ``scale * (image - interpolate_up(lowres, base))`` (module docstring)."""
    return (torch.as_tensor(image).float() - interpolate_up(lowres, base)) * float(scale)


def block_mean(image: torch.Tensor) -> torch.Tensor:
    """[B, C, 2D, 2H, 2W] -> [B, C, D, H, W]: the 2x2x2 block means (how the 2 mm population is made from 1 mm)."""
    return F.avg_pool3d(image, FACTOR)


def project_consistent(image: torch.Tensor, lowres: torch.Tensor) -> torch.Tensor:
    """The nearest volume to ``image`` whose block means equal ``lowres`` (see the module docstring)."""
    return image + F.interpolate(lowres - block_mean(image), scale_factor=FACTOR, mode="nearest")


class Upscaler:
    """``upscale(lowres [1, D, H, W] in [0, 1], seed, settings) -> [1, 2D, 2H, 2W]`` with a latent diffusion upscaler.

    Args:
        sampler: a ``LatentDiffusionSampler`` over the upscaler's UNet (input channels: latent + 1) and autoencoder.
        conditioner: the ``NoiseLevelConditioner`` the UNet was trained with.
        consistency: project the output onto the volumes whose block means are the input (module docstring).
        base: the interpolation a residual upscaler adds its detail to ("cubic", "trilinear"), or None (the model
            decodes the whole volume).
        residual_scale: the factor the residual was multiplied by in training.
    """

    def __init__(self, sampler: Any, conditioner: NoiseLevelConditioner, consistency: bool = True,
                 base: str | None = None, residual_scale: float = 1.0) -> None:
        self.sampler = sampler
        self.conditioner = conditioner
        self.consistency = check_bool("consistency", consistency)
        self.base = check_base(base)
        self.residual_scale = check_float("residual_scale", residual_scale, 1e-6, 1e6, "10.0")
        channels = getattr(sampler.denoiser.unet, "block_out_channels", (0,))
        self.multiple = 2 ** (len(channels) - 1)  # the UNet halves the latent once per level below the top

    def upscale(self, lowres: torch.Tensor, seed: int, settings: GenerationSettings,
                noise_level: int | None = None) -> torch.Tensor:
        """The 1 mm volume of ``lowres``: latent noise of ``seed``, the condition's noise of a second stream of it."""
        from common.sampling.runner import sample_seed

        lowres = torch.as_tensor(lowres).float()
        if lowres.ndim != 4 or lowres.shape[0] != 1:
            raise InputError(f"the upscaler takes one single-channel 3D volume [1, D, H, W], got {tuple(lowres.shape)}")
        size = lowres.shape[1:]
        pad = [(-n) % self.multiple for n in size]
        padded = F.pad(lowres, [p for n in reversed(pad) for p in (0, n)])[None]  # zeros (background) at the far end
        condition = self.conditioner.from_values(1, image=padded, noise_level=noise_level,
                                                 seed=sample_seed(seed, 0, stream=2))
        channels = self.sampler.latent_shape[0]
        noise = torch.randn((1, channels, *padded.shape[2:]), generator=torch.Generator().manual_seed(int(seed)))
        latents = self.sampler.sample_latents(condition, None, num_samples=1, noise=noise, settings=settings,
                                              generator=torch.Generator().manual_seed(sample_seed(seed, 0, stream=1)))
        image = self.sampler.decode(latents).float().cpu()
        image = image[(..., *(slice(0, FACTOR * n) for n in size))]
        if self.base is not None:
            image = interpolate_up(lowres[None], self.base) + image / self.residual_scale
        if self.consistency:
            image = project_consistent(image, lowres[None])
        return image[0].clamp(0.0, 1.0)


def run_upscaling(
    upscaler: Upscaler,
    output_dir: str | os.PathLike,
    input_image: str | None = None,
    input_dir: str | None = None,
    pixdim: Sequence[float] = (2.0, 2.0, 2.0),
    intensity_max: float = 1.0,
    seed: int = 0,
    num_inference_steps: int = 5,
    guidance_scale: float = 1.0,
    noise_level: int | None = None,
    progress: bool = True,
) -> list[str]:
    """Upscale every input 3D NIfTI to half its spacing; write each under its own name in ``output_dir``.

    An input is put in RAS at ``pixdim`` first (MONAI ``Orientation`` / ``Spacing``, bilinear, only moved when it
    differs), scaled by ``intensity_max`` to [0, 1] as in training, upscaled, and written with the affine of the 2x
    finer grid in the input's own orientation. Input i's noise is seeded by (seed, i). All or nothing.
    """
    import nibabel as nib
    from monai.data import MetaTensor
    from monai.transforms import Orientation, Orientationd, Spacingd

    from common.sampling.runner import sample_seed

    run = RunSettings(seed=seed)
    settings = GenerationSettings(num_inference_steps, guidance_scale, progress)
    if settings.guided:
        upscaler.conditioner.null(1)  # the upscaler has no null input: one line naming --guidance_scale 1
    top = check_float("intensity_max", intensity_max, 1e-6, 1e9, "1.0")
    level = None if noise_level is None else upscaler.conditioner.check_level(noise_level)
    paths = list_inputs(input_image, input_dir, suffixes=NIFTI_SUFFIXES, kind="3D NIfTI volumes (.nii, .nii.gz)")
    key = "image"
    to_grid = [Orientationd(keys=key, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
               Spacingd(keys=key, pixdim=[float(p) for p in pixdim], mode="bilinear", padding_mode="zeros")]

    def convert(path: Path, index: int) -> tuple[Any, Any]:
        data = read_nifti(path, key, spatial_dims=(3,))
        peak = float(data[key].max())
        if peak > 1.5 * top:
            raise InputError(f"{path}: intensities up to {peak:g}, but this model reads [0, {top:g}] (brain_ldm_3d's "
                             "output range): rescale the volume or pass --intensity_max")
        codes = "".join(nib.aff2axcodes(data[key].affine.numpy()))  # the input's orientation, to write it back in
        for transform in to_grid:
            data = transform(data)
        scaled = (data[key].as_tensor().float() / top).clamp(0.0, 1.0)  # a plain tensor: the grid is re-made below
        high = upscaler.upscale(scaled, sample_seed(run.seed, index), settings, noise_level=level) * top
        fine = MetaTensor(high, affine=torch.as_tensor(half_spacing_affine(data[key].affine)))
        back = Orientation(axcodes=codes, labels=(("L", "R"), ("P", "A"), ("I", "S")))(fine)
        return back, back.affine.numpy()

    return write_per_input(paths, output_dir, convert, verb="upscaled")
