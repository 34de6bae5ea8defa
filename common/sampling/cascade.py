"""A cascade: another bundle samples at low resolution, an upscaler brings each sample to full resolution.

The first stage is a whole bundle (brain_ldm_3d), read from its own folder with its own inference.json, weights
(sha256-checked as in its own runs) and overrides: ``BundleSampler``. Sample i of a cascade with seed s starts from
exactly the noise that sample i of that bundle's own run with seed s starts from, so the cascade's 2 mm stage IS
that bundle's sample (tested), and the upscaler's noise comes from the same (seed, i).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from common.sampling.settings import GenerationSettings, RunSettings, check_bool
from common.sampling.upscale import Upscaler, half_spacing_affine


class BundleSampler:
    """The sampler, condition and output grid of another bundle's ``configs/inference.json``, parsed in-process.

    Args:
        bundle_root: the bundle's folder (a missing one is a one-line error naming the download command).
        overrides: its config overrides (covariates, scheduler, num_inference_steps, ...).
    """

    def __init__(self, bundle_root: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> None:
        from monai.bundle import ConfigParser

        root = Path(bundle_root)
        meta = root / "configs" / "metadata.json"
        if not meta.is_file():
            raise FileNotFoundError(
                f"the low-resolution bundle is not at {root}: fetch it with `python -m common.zoo download "
                f"{root.name or 'brain_ldm_3d'}` or point --lowres_bundle at its folder")
        self.parser = ConfigParser()
        self.parser.read_config(str(root / "configs" / "inference.json"))
        self.parser.read_meta(str(meta))
        self.parser.update({"bundle_root": str(root), **dict(overrides or {})})
        self._sampler: Any = None

    def item(self, name: str) -> Any:
        """A parsed item of the bundle's config (e.g. ``affine``, ``run#prefix``)."""
        return self.parser.get_parsed_content(name)

    @property
    def sampler(self) -> Any:
        if self._sampler is None:
            self._sampler = self.item("sampler")  # loads and checks the bundle's weights
        return self._sampler

    @property
    def settings(self) -> GenerationSettings:
        return GenerationSettings(self.item("num_inference_steps"), self.item("guidance_scale"), False)

    def sample(self, lo: int, hi: int, seed: int) -> torch.Tensor:
        """Samples ``lo..hi-1`` of a run with ``seed``, decoded and clipped to [0, 1]: [hi - lo, C, *spatial]; the
        same noise and per-batch generator as the bundle's own ``run_sampling`` with the batch (lo, hi)."""
        from common.sampling.runner import sample_seed

        sampler = self.sampler
        settings = self.settings
        noise = torch.cat([sampler.noise(1, torch.Generator().manual_seed(sample_seed(seed, i))) for i in range(lo, hi)])
        condition, null = self.item("condition"), self.item("null_condition") if settings.guided else None
        latents = sampler.sample_latents(
            condition[lo:hi], None if null is None else null[lo:hi], num_samples=hi - lo, noise=noise,
            generator=torch.Generator().manual_seed(sample_seed(seed, lo, stream=1)), settings=settings)
        return sampler.decode(latents).float().cpu().clamp(0.0, 1.0)


def run_cascade(
    lowres: BundleSampler,
    upscaler: Upscaler,
    output_dir: str | os.PathLike,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 1,
    num_inference_steps: int = 5,
    guidance_scale: float = 1.0,
    noise_level: int | None = None,
    progress: bool = True,
    save_lowres: bool = False,
) -> list[str]:
    """Sample ``num_samples`` low-resolution volumes with ``lowres`` (``batch_size`` at a time) and upscale each (one
    at a time); write them, all or nothing. The upscaler is not guided: ``guidance_scale`` other than 1 is refused.

    Names are the first stage's (``<prefix>_seed<seed>_<index>.nii.gz``) with the 2x finer affine; with
    ``save_lowres`` the first stage's volumes are also written under ``output_dir/lowres/`` (same names).
    """
    from tqdm.auto import tqdm

    from common.io.writers import staged_folder, write_nifti
    from common.sampling.runner import contiguous_batches, sample_filename, sample_seed

    run = RunSettings(num_samples=num_samples, seed=seed, batch_size=batch_size)
    settings = GenerationSettings(num_inference_steps, guidance_scale, False)
    if settings.guided:
        upscaler.conditioner.null(1)  # the upscaler has no null input: one line naming --guidance_scale 1
    keep_lowres = check_bool("save_lowres", save_lowres)
    level = None if noise_level is None else upscaler.conditioner.check_level(noise_level)
    affine = torch.as_tensor(lowres.item("affine"), dtype=torch.float64).numpy()
    fine_affine = half_spacing_affine(affine)
    prefix = str(lowres.item("run#prefix"))
    names = [sample_filename(prefix, run.seed, i, "nifti") for i in range(run.num_samples)]
    with staged_folder(output_dir, ".tmp-cascade-") as (out_dir, tmp_dir):
        if keep_lowres:
            (tmp_dir / "lowres").mkdir()
        bar = tqdm(total=run.num_samples, disable=not progress, desc="cascade", unit="sample")
        for lo, hi in contiguous_batches(range(run.num_samples), run.batch_size):
            for i, low in zip(range(lo, hi), lowres.sample(lo, hi, run.seed)):
                high = upscaler.upscale(low, sample_seed(run.seed, i, stream=3), settings, noise_level=level)
                write_nifti(high, tmp_dir / names[i], fine_affine)
                if keep_lowres:
                    write_nifti(low, tmp_dir / "lowres" / names[i], affine)
                bar.update(1)
        bar.close()
        for name in names:
            os.replace(tmp_dir / name, out_dir / name)
        if keep_lowres:
            (out_dir / "lowres").mkdir(exist_ok=True)
            for name in names:
                os.replace(tmp_dir / "lowres" / name, out_dir / "lowres" / name)
    written = [str(out_dir / n) for n in names]
    for path in written:
        print(path)
    return written
