"""common.evaluation metrics: hand-computed values, closed forms, MONAI agreement, MS-SSIM auto settings."""

import numpy as np
import pytest
import torch

from common.evaluation import EvaluationError, auc, fid, mae, mmd, ms_ssim_diversity, ms_ssim_reconstruction, psnr
from common.evaluation.metrics import fid_per_plane, ms_ssim_settings


def _phantom(shape, seed=0):
    """Smooth structured image in [0, 1] (sum of Gaussian blobs), so that blur and noise change it measurably."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij")
    img = np.zeros(shape)
    for _ in range(6):
        c, w = rng.uniform(0.2, 0.8, len(shape)), rng.uniform(0.03, 0.12)
        img += np.exp(-sum((g - ci) ** 2 for g, ci in zip(grids, c)) / (2 * w**2))
    return torch.tensor(img / img.max(), dtype=torch.float32)


def _blur(x, sigma):
    from monai.networks.layers import GaussianFilter

    return GaussianFilter(x.ndim - 2, sigma)(x)


def test_mmd_matches_hand_computed_value():
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).reshape(2, 1, 1, 2)
    x = torch.tensor([[1.0, 1.0], [3.0, 0.0]]).reshape(2, 1, 1, 2)
    # off-diagonal y.y = 0; off-diagonal x.x = 3 (x2) / 2 = 3; cross x.y sum 5 * 2/4 = 2.5  ->  0 + 3 - 2.5
    assert mmd(y, x) == pytest.approx(0.5)
    rng = np.random.default_rng(1)
    a, b = rng.random((4, 1, 3, 3)), rng.random((4, 1, 3, 3))
    fa, fb = a.reshape(4, -1), b.reshape(4, -1)
    kaa, kbb, kab = fa @ fa.T, fb @ fb.T, fb @ fa.T
    ref = (kaa.sum() - np.trace(kaa)) / 12 + (kbb.sum() - np.trace(kbb)) / 12 - 2 * kab.mean()
    assert mmd(a, b) == pytest.approx(ref, rel=1e-5)


def test_psnr_and_mae_match_hand_computed_values():
    real = torch.zeros(2, 1, 4, 4)
    pred = torch.stack([torch.full((1, 4, 4), 0.1), torch.full((1, 4, 4), 0.01)])
    assert psnr(real, pred) == pytest.approx((20.0 + 40.0) / 2, abs=1e-4)  # 10 log10(1 / mse) per image
    assert mae(real, pred) == pytest.approx(0.055, abs=1e-7)
    with pytest.raises(EvaluationError, match="cannot be compared"):
        psnr(real, torch.zeros(2, 1, 4, 5))


def test_auc_closed_form_cases():
    assert auc([1, 2, 3], [2.5, 4]) == pytest.approx(5 / 6)  # 5 of 6 (out, in) pairs ordered
    assert auc([1, 2], [2, 3]) == pytest.approx(3.5 / 4)  # a tie counts one half
    assert auc([0, 1], [5, 6]) == pytest.approx(1.0)
    assert auc([5, 6], [0, 1]) == pytest.approx(0.0)
    with pytest.raises(EvaluationError):
        auc([], [1.0])


def test_fid_equals_monai_and_the_mean_shift_closed_form():
    from monai.metrics import FIDMetric

    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 16, generator=g) @ torch.randn(16, 16, generator=g)
    fake = torch.randn(30, 16, generator=g) * 1.5 + 0.3
    ref = float(FIDMetric()(fake.double(), real.double()))
    assert fid(real, fake) == pytest.approx(ref, rel=1e-6)
    assert fid(real, fake, backend="monai") == pytest.approx(ref, rel=1e-9)
    small_r, small_f = torch.randn(8, 32, generator=g), torch.randn(6, 32, generator=g)  # fewer vectors than dims
    assert fid(small_r, small_f) == pytest.approx(float(FIDMetric()(small_f.double(), small_r.double())), rel=1e-4)
    shift = torch.linspace(-1, 1, 16)
    assert fid(real, real + shift) == pytest.approx(float(shift.dot(shift)), rel=1e-6)  # same covariance
    assert fid(real, real) == pytest.approx(0.0, abs=1e-6)
    planes = torch.stack([real, real + 1, real])  # 2.5D: mean of the per-plane values
    assert fid_per_plane(planes, torch.stack([real, real, real])) == pytest.approx([0.0, 16.0, 0.0], abs=1e-6)


def test_fid_rejects_sets_it_cannot_use():
    with pytest.raises(EvaluationError, match="at least 2"):
        fid(torch.randn(5, 8), torch.randn(1, 8))
    with pytest.raises(EvaluationError, match="cannot be compared"):
        fid(torch.randn(5, 8), torch.randn(5, 9))


def test_ms_ssim_settings_fit_the_size():
    default = ms_ssim_settings((256, 256))
    assert (default["kernel_size"], default["kernel_sigma"], default["weights"]) == (11, 1.5, [0.0448, 0.2856, 0.3001, 0.2363, 0.1333])
    assert ms_ssim_settings((160, 224, 160))["kernel_size"] == 9  # MONAI's kernel 11 needs > 160 voxels per axis
    st = ms_ssim_settings((32, 32, 32))
    assert (st["scales"], st["kernel_size"]) == (3, 7) and st["auto"]
    assert sum(st["weights"]) == pytest.approx(1.0, abs=1e-5)
    assert st["kernel_sigma"] == pytest.approx(1.5 * 7 / 11, abs=1e-6)
    with pytest.raises(EvaluationError, match="does not fit"):
        ms_ssim_settings((32, 32, 32), kernel_size=11, scales=5)


def test_ms_ssim_is_one_for_identical_and_drops_with_blur_on_small_3d():
    from monai.metrics import MultiScaleSSIMMetric

    vol = _phantom((32, 32, 32))[None, None]
    with pytest.raises(ValueError):  # MONAI's defaults fail on this size: the reason for auto settings
        MultiScaleSSIMMetric(spatial_dims=3)(vol, vol)
    assert ms_ssim_reconstruction(vol, vol, spatial_dims=3) == pytest.approx(1.0, abs=1e-5)
    values = [ms_ssim_reconstruction(vol, _blur(vol, s)) for s in (0.5, 1.0, 2.0)]
    assert values[0] > values[1] > values[2] and values[0] < 1.0


def test_ms_ssim_diversity_of_identical_and_distinct_samples():
    imgs = torch.stack([_phantom((64, 64), seed=s)[None] for s in range(4)])
    assert ms_ssim_diversity(imgs[:1].repeat(3, 1, 1, 1)) == pytest.approx(1.0, abs=1e-5)
    distinct = ms_ssim_diversity(imgs)
    assert 0.0 <= distinct < 0.9
    assert ms_ssim_diversity(imgs, max_pairs=2, seed=0) == ms_ssim_diversity(imgs, max_pairs=2, seed=0)
    with pytest.raises(EvaluationError, match="at least 2"):
        ms_ssim_diversity(imgs[:1])
