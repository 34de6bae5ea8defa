"""The paper's metrics on tensors, each a thin, checked call into MONAI's metric of the same name.

Images are batch-first ``[N, C, *spatial]`` floats in ``[0, data_range]``; features are ``[N, F]`` (2D / 3D
extractors) or ``[planes, M, F]`` (2.5D); every function returns a Python float and raises a one-line
``EvaluationError`` for inputs that cannot be compared.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from common.evaluation.errors import EvaluationError

DEFAULT_MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
DEFAULT_KERNEL_SIZE = 11
DEFAULT_KERNEL_SIGMA = 1.5


def _as_images(x: Any, name: str) -> torch.Tensor:
    """Float tensor [N, C, *spatial] with 2 or 3 spatial dims, or a one-line error."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).float().contiguous()
    if t.ndim not in (4, 5):
        raise EvaluationError(
            f"{name} has shape {tuple(t.shape)}: expected [N, C, H, W] or [N, C, D, H, W]; add the batch and channel axes"
        )
    return t


def _check_same_shape(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    if a.shape != b.shape:
        raise EvaluationError(
            f"{what}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be compared; "
            "resample both sets to one size (and count) first"
        )


def _fits(spatial_shape: Sequence[int], kernel_size: int, scales: int) -> bool:
    """MONAI's own size check for MS-SSIM plus the real one (the coarsest scale must hold one kernel)."""
    monai_div = max(1, scales - 1) ** 2
    return all(s // monai_div > kernel_size - 1 and s // 2 ** (scales - 1) >= kernel_size for s in spatial_shape)


def ms_ssim_settings(
    spatial_shape: Sequence[int],
    kernel_size: int | None = None,
    scales: int | None = None,
) -> dict[str, Any]:
    """Valid MS-SSIM settings for an image size; MONAI's defaults (kernel 11, 5 scales) fail below 161 pixels.

    Keeps MONAI's defaults when they fit; otherwise the most scales with a kernel of at least 7, then with 5 or 3.
    Fewer scales use the first weights of MONAI's standard five, renormalised to sum to 1; the Gaussian sigma shrinks
    with the kernel (1.5 * k / 11). Explicit ``kernel_size`` / ``scales`` are checked and kept.
    """
    shape = [int(s) for s in spatial_shape]
    if kernel_size is not None or scales is not None:
        k = int(kernel_size or DEFAULT_KERNEL_SIZE)
        n = int(scales or len(DEFAULT_MS_SSIM_WEIGHTS))
        if not 1 <= n <= len(DEFAULT_MS_SSIM_WEIGHTS) or k < 3 or k % 2 == 0:
            raise EvaluationError(f"MS-SSIM kernel_size={k}, scales={n}: use an odd kernel >= 3 and 1..5 scales")
        if not _fits(shape, k, n):
            raise EvaluationError(
                f"MS-SSIM kernel_size={k} with {n} scales does not fit images of size {shape}; "
                "leave kernel_size and scales unset to choose valid ones automatically"
            )
        candidates = [(n, k)]
    else:
        large = [(n, k) for n in range(5, 0, -1) for k in (11, 9, 7)]
        small = [(n, k) for n in range(5, 0, -1) for k in (5, 3)]
        candidates = [c for c in large + small if _fits(shape, c[1], c[0])]
        if not candidates:
            raise EvaluationError(f"images of size {shape} are too small for MS-SSIM (need at least 3 pixels per axis)")
    n, k = candidates[0]
    w = np.asarray(DEFAULT_MS_SSIM_WEIGHTS[:n], dtype=np.float64)
    weights = list(DEFAULT_MS_SSIM_WEIGHTS) if n == len(DEFAULT_MS_SSIM_WEIGHTS) else [round(float(v), 6) for v in w / w.sum()]
    return {
        "kernel_size": k,
        "kernel_sigma": round(DEFAULT_KERNEL_SIGMA * k / DEFAULT_KERNEL_SIZE, 6),
        "scales": n,
        "weights": weights,
        "auto": kernel_size is None and scales is None,
    }


def _ms_ssim_values(
    a: torch.Tensor, b: torch.Tensor, data_range: float, settings: dict[str, Any], batch_size: int = 8
) -> torch.Tensor:
    from monai.metrics import MultiScaleSSIMMetric

    metric = MultiScaleSSIMMetric(
        spatial_dims=a.ndim - 2,
        data_range=data_range,
        kernel_size=settings["kernel_size"],
        kernel_sigma=settings["kernel_sigma"],
        weights=settings["weights"],
        reduction="none",
    )
    out = [metric(a[i : i + batch_size], b[i : i + batch_size]).reshape(-1) for i in range(0, a.shape[0], batch_size)]
    return torch.cat(out)


def ms_ssim_reconstruction(
    real: Any,
    recon: Any,
    spatial_dims: int | None = None,
    data_range: float = 1.0,
    settings: dict[str, Any] | None = None,
) -> float:
    """Mean MS-SSIM between each real image and its reconstruction (1 = identical); settings fit the size."""
    real_t, recon_t = _as_images(real, "real"), _as_images(recon, "recon")
    _check_same_shape(real_t, recon_t, "MS-SSIM reconstruction")
    if spatial_dims is not None and spatial_dims != real_t.ndim - 2:
        raise EvaluationError(f"spatial_dims={spatial_dims} but the images have {real_t.ndim - 2} spatial dims")
    settings = settings or ms_ssim_settings(real_t.shape[2:])
    return float(_ms_ssim_values(real_t, recon_t, data_range, settings).mean())


def distinct_pairs(n: int, max_pairs: int | None = None, seed: int = 0) -> list[tuple[int, int]]:
    """All pairs i < j, or a seeded random subset of ``max_pairs`` of them (reproducible)."""
    pairs = list(itertools.combinations(range(n), 2))
    if max_pairs is not None and len(pairs) > max_pairs:
        pairs = sorted(random.Random(seed).sample(pairs, max_pairs))
    return pairs


def ms_ssim_diversity(
    samples: Any,
    spatial_dims: int | None = None,
    data_range: float = 1.0,
    max_pairs: int | None = None,
    seed: int = 0,
    settings: dict[str, Any] | None = None,
) -> float:
    """Mean MS-SSIM over pairs of distinct samples: lower means more diverse samples (the paper's diversity)."""
    x = _as_images(samples, "samples")
    if x.shape[0] < 2:
        raise EvaluationError(f"MS-SSIM diversity needs at least 2 samples, got {x.shape[0]}; generate more samples")
    if spatial_dims is not None and spatial_dims != x.ndim - 2:
        raise EvaluationError(f"spatial_dims={spatial_dims} but the samples have {x.ndim - 2} spatial dims")
    settings = settings or ms_ssim_settings(x.shape[2:])
    pairs = distinct_pairs(x.shape[0], max_pairs, seed)
    i = torch.tensor([p[0] for p in pairs])
    j = torch.tensor([p[1] for p in pairs])
    values = [
        _ms_ssim_values(x[i[s : s + 8]], x[j[s : s + 8]], data_range, settings) for s in range(0, len(pairs), 8)
    ]
    return float(torch.cat(values).mean())


def _feature_values(f: Any) -> torch.Tensor:
    values = f.values if isinstance(getattr(f, "values", None), torch.Tensor) else f
    return torch.as_tensor(values).double()


def _check_features(real: Any, fake: Any) -> tuple[torch.Tensor, torch.Tensor]:
    origin_r = (getattr(real, "extractor", None), getattr(real, "method", None))
    origin_f = (getattr(fake, "extractor", None), getattr(fake, "method", None))
    if None not in origin_r + origin_f and origin_r != origin_f:
        raise EvaluationError(
            f"features come from {'/'.join(origin_r)} and {'/'.join(origin_f)}: "
            "extract both sets with the same extractor and method"
        )
    r, f = _feature_values(real), _feature_values(fake)
    if r.ndim not in (2, 3) or r.ndim != f.ndim or r.shape[-1] != f.shape[-1] or r.shape[:-2] != f.shape[:-2]:
        raise EvaluationError(
            f"feature shapes {tuple(r.shape)} and {tuple(f.shape)} cannot be compared; "
            "extract both sets with the same extractor and method"
        )
    for name, t in (("real", r), ("fake", f)):
        if t.shape[-2] < 2:
            raise EvaluationError(
                f"FID needs at least 2 {name} feature vectors to estimate a covariance, got {t.shape[-2]}; "
                "use more images"
            )
    return r, f


def frechet_distance(real: torch.Tensor, fake: torch.Tensor) -> float:
    """Exact Frechet distance of two feature sets with MONAI FIDMetric's definition (means, unbiased covariances).

    MONAI computes ``tr sqrtm(S1 S2)`` with scipy's dense 2048 x 2048 ``sqrtm`` (measured 168 s for one FID on this
    project's 2-core CPU). The same trace is the sum of singular values of ``A B^T`` (``S1 = A^T A``,
    ``S2 = B^T B``, rows of ``A``/``B`` the centred features over sqrt(n - 1)): exact, and milliseconds when the sets
    are smaller than the feature size; for larger sets it uses the eigenvalues of ``S1^1/2 S2 S1^1/2``.
    """
    mr, mf = real.mean(0), fake.mean(0)
    a = (real - mr) / (real.shape[0] - 1) ** 0.5
    b = (fake - mf) / (fake.shape[0] - 1) ** 0.5
    if min(a.shape[0], b.shape[0]) <= a.shape[1]:
        tr_covmean = torch.linalg.svdvals(a @ b.T).sum()
    else:
        s1, s2 = a.T @ a, b.T @ b
        w, v = torch.linalg.eigh(s1)
        root = (v * w.clamp_min(0).sqrt()) @ v.T
        tr_covmean = torch.linalg.eigvalsh(root @ s2 @ root).clamp_min(0).sqrt().sum()
    diff = mr - mf
    return float(diff.dot(diff) + (a * a).sum() + (b * b).sum() - 2 * tr_covmean)


def fid_per_plane(real: Any, fake: Any, backend: str = "exact") -> list[float]:
    """FID per plane of 2.5D features ``[planes, M, F]`` (one value for 2D / 3D features ``[N, F]``).

    ``backend="monai"`` calls MONAI's FIDMetric itself (same value, minutes per 2048-d FID on a CPU).
    """
    r, f = _check_features(real, fake)
    if r.ndim == 2:
        r, f = r[None], f[None]
    if backend == "monai":
        from monai.metrics import FIDMetric

        values = [float(FIDMetric()(f[p], r[p])) for p in range(r.shape[0])]
    elif backend == "exact":
        values = [frechet_distance(r[p], f[p]) for p in range(r.shape[0])]
    else:
        raise EvaluationError(f"unknown FID backend {backend!r}: use 'exact' or 'monai'")
    return [max(0.0, v) for v in values]


def fid(real: Any, fake: Any, backend: str = "exact") -> float:
    """Frechet distance between real and fake features; 2.5D: mean over the three planes.

    Values below 0 (round-off when the sets are identical) are clipped to 0.
    """
    return float(np.mean(fid_per_plane(real, fake, backend)))


def mmd(real: Any, fake: Any) -> float:
    """Unbiased linear-kernel MMD between two equally sized sets of images (MONAI MMDMetric)."""
    from monai.metrics import MMDMetric

    r, f = _as_images(real, "real"), _as_images(fake, "fake")
    _check_same_shape(r, f, "MMD")
    if r.shape[0] < 2:
        raise EvaluationError(f"MMD needs at least 2 images per set, got {r.shape[0]}; use more images")
    return float(MMDMetric()(r, f))


def psnr(real: Any, pred: Any, data_range: float = 1.0) -> float:
    """Mean per-image PSNR in dB (MONAI PSNRMetric) for translation / super-resolution / reconstruction."""
    from monai.metrics import PSNRMetric

    r, p = _as_images(real, "real"), _as_images(pred, "pred")
    _check_same_shape(r, p, "PSNR")
    return float(PSNRMetric(max_val=data_range, reduction="mean")(p, r).mean())


def mae(real: Any, pred: Any) -> float:
    """Mean absolute error over all voxels of all images (MONAI MAEMetric)."""
    from monai.metrics import MAEMetric

    r, p = _as_images(real, "real"), _as_images(pred, "pred")
    _check_same_shape(r, p, "MAE")
    return float(MAEMetric(reduction="mean")(p, r).mean())


def auc(in_scores: Any, out_scores: Any) -> float:
    """AUROC of telling out-of-distribution from in-distribution inputs by a score (higher = more anomalous).

    For likelihood-based detection pass the negative log-likelihood (or bits per dim) as the score.
    """
    from monai.metrics import compute_roc_auc

    a = torch.as_tensor(np.asarray(in_scores, dtype=np.float64)).reshape(-1)
    b = torch.as_tensor(np.asarray(out_scores, dtype=np.float64)).reshape(-1)
    if a.numel() == 0 or b.numel() == 0:
        raise EvaluationError("AUC needs at least one in-distribution and one out-of-distribution score")
    if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
        raise EvaluationError("AUC scores contain NaN or inf; fix the likelihood computation that produced them")
    y_pred = torch.cat([a, b])
    y = torch.cat([torch.zeros_like(a), torch.ones_like(b)])
    return float(compute_roc_auc(y_pred, y))
