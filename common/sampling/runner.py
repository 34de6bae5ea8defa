"""The ``run`` step of the bundles' inference.json: sample N images with a seed and write them, all or nothing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from common.conditioning.base import Condition
from common.sampling.settings import GenerationSettings, RunSettings

FORMATS = {"nifti": ".nii.gz", "png": ".png"}


def sample_seed(seed: int, index: int, stream: int = 0) -> int:
    """A well-mixed 63-bit seed for sample ``index`` of a run with ``seed`` (independent of batch size)."""
    return int(np.random.SeedSequence([int(seed), int(index), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


def sample_filename(prefix: str, seed: int, index: int, file_format: str) -> str:
    """Deterministic name: ``{prefix}_seed{seed}_{index:04d}{ext}`` (a rerun with the same seed rewrites the same files)."""
    return f"{prefix}_seed{seed}_{index:04d}{FORMATS[file_format]}"


def _tags(sample_tags: Sequence[str] | str | None, num_samples: int) -> list[str]:
    """One file-name tag per sample (the condition: a class, a prompt hash), from one shared tag or one each."""
    if sample_tags is None:
        return [""] * num_samples
    tags = [sample_tags] if isinstance(sample_tags, str) else [str(t) for t in sample_tags]
    if len(tags) not in (1, num_samples):
        raise ValueError(f"{len(tags)} sample tags for num_samples={num_samples}: give one or one per sample")
    for tag in tags:
        if any(c in tag for c in "/\\") or tag.startswith("."):
            raise ValueError(f"sample tag {tag!r} is not a plain file-name part")
    return tags * num_samples if len(tags) == 1 else tags


def run_sampling(
    sampler,
    output_dir: str | os.PathLike,
    condition: Condition | None = None,
    null_condition: Condition | None = None,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 1,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    progress: bool = True,
    file_format: str = "nifti",
    affine=None,
    prefix: str = "sample",
    sample_tags: Sequence[str] | str | None = None,
    output_range: Sequence[float] | None = (0.0, 1.0),
    release_denoiser: bool = False,
    skip_existing: bool = False,
) -> list[str]:
    """Sample ``num_samples`` images with ``sampler`` (a ``LatentDiffusionSampler``) and write them to ``output_dir``.

    Sample i starts from noise seeded by (seed, i) only. Every latent is drawn first; then, with
    ``release_denoiser``, the denoiser's weights are freed (the decoder gets the memory: 3D bundles); then the
    latents are decoded and written. Values are clipped to ``output_range`` (NIfTI) or mapped from it to [0, 1]
    (PNG). File names carry ``prefix``, the sample's tag (its condition), the seed and the index. Files are
    written into a temp folder inside ``output_dir`` and renamed into place only after every sample succeeded;
    on any error nothing is left behind. Prints the written paths; returns the paths of this process's samples.

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each rank samples its own contiguous block of sample indices, so N
    processes write exactly the files one process would (each sample depends on (seed, index) only; with the
    stochastic ``ddpm`` scheduler the per-step noise also depends on the batch). ``skip_existing`` keeps samples
    whose file is already there (a rerun after a crash redoes only the missing ones).
    """
    run = RunSettings(num_samples=num_samples, seed=seed, batch_size=batch_size)
    gen_settings = GenerationSettings(num_inference_steps, guidance_scale, progress)
    if file_format not in FORMATS:
        raise ValueError(f"file_format must be one of {', '.join(FORMATS)}, got {file_format!r}")
    if not prefix or any(c in prefix for c in "/\\"):
        raise ValueError(f"prefix must be a plain file-name prefix, got {prefix!r}")
    if output_range is not None and not (len(output_range) == 2 and float(output_range[0]) < float(output_range[1])):
        raise ValueError(f"output_range must be (low, high) with low < high, got {output_range!r}")
    n = run.num_samples
    for name, cond in (("condition", condition), ("null_condition", null_condition)):
        if cond is not None and cond.batch_size not in (None, 1, n):
            raise ValueError(f"{name} has batch {cond.batch_size}; give 1 (shared) or num_samples={n}")
    tags = _tags(sample_tags, n)
    names = [sample_filename(f"{prefix}_{tag}" if tag else prefix, run.seed, i, file_format) for i, tag in enumerate(tags)]
    from common.io.writers import staged_folder, write_nifti, write_png
    from common.sampling.settings import check_bool

    shard = shard_indices(n)
    skip = check_bool("skip_existing", skip_existing)
    existing = {i for i in shard if skip and (Path(output_dir) / names[i]).is_file()}
    batches = contiguous_batches([i for i in shard if i not in existing], run.batch_size)
    if existing:
        print(f"{len(existing)} finished sample(s) kept in {output_dir} (skip_existing)", flush=True)
    with staged_folder(output_dir, ".tmp-sampling-") as (out_dir, tmp_dir):
        latents = []
        for lo, hi in batches:
            noise = torch.stack(
                [sampler.noise(1, torch.Generator().manual_seed(sample_seed(run.seed, i)))[0] for i in range(lo, hi)]
            )
            gen = torch.Generator().manual_seed(sample_seed(run.seed, lo, stream=1))
            latents.append(sampler.sample_latents(
                None if condition is None else condition[lo:hi],
                None if null_condition is None else null_condition[lo:hi],
                num_samples=hi - lo, generator=gen, noise=noise, settings=gen_settings,
            ).cpu())
        if release_denoiser:
            sampler.release_denoiser()
        for (lo, hi), batch_latents in zip(batches, latents):
            images = sampler.decode(batch_latents.to(sampler.device)).float().cpu()
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
        written = [names[i] for lo, hi in batches for i in range(lo, hi)]
        for name in written:
            os.replace(tmp_dir / name, out_dir / name)
    for name in written:
        print(out_dir / name)
    return [str(out_dir / names[i]) for i in shard]


def shard_indices(num_samples: int) -> list[int]:
    """This process's contiguous block of sample indices (all of them outside ``torchrun``)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} / WORLD_SIZE={world} are not a valid torchrun rank")
    return list(range(num_samples * rank // world, num_samples * (rank + 1) // world))


def contiguous_batches(indices: Sequence[int], batch_size: int) -> list[tuple[int, int]]:
    """(lo, hi) batches of at most batch_size over runs of consecutive indices (conditions slice as [lo:hi])."""
    batches: list[tuple[int, int]] = []
    for i in indices:
        if batches and batches[-1][1] == i and i - batches[-1][0] < batch_size:
            batches[-1] = (batches[-1][0], i + 1)
        else:
            batches.append((i, i + 1))
    return batches
