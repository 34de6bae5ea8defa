"""The super-resolution condition: a noised low-resolution image whose noise level reaches the UNet's class embedding.

MONAI 1.6.1's DiffusionModelUNet ignores `class_labels` without `num_class_embeds`; the published upscaler recipe
never set it, so its noise-level conditioning did nothing. These tests show the level changing the output when the
embedding is there, and the refusal when it is not.
"""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import DiffusionModelUNet

from common.conditioning import Condition, ConditionError, NoiseLevelConditioner
from common.sampling import UNetDenoiser

torch.set_num_threads(1)


def _unet(num_class_embeds: int | None) -> DiffusionModelUNet:
    torch.manual_seed(0)
    unet = DiffusionModelUNet(spatial_dims=3, in_channels=5, out_channels=4, channels=(8, 8, 16), num_res_blocks=1,
                              attention_levels=(False, False, False), norm_num_groups=8, num_class_embeds=num_class_embeds)
    with torch.no_grad():  # MONAI zero-initialises the output convolutions (an untrained UNet returns zeros)
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def _condition(conditioner: NoiseLevelConditioner, low: torch.Tensor, level: int) -> Condition:
    # the same image noise for both levels: only the level (the mix and the label) differs
    return conditioner.from_values(1, image=low, noise_level=level, seed=3)


def test_the_noise_level_changes_the_upscaler_output():
    conditioner = NoiseLevelConditioner(max_noise_level=350)
    unet = _unet(conditioner.num_class_embeds)
    denoiser = UNetDenoiser(unet)
    low = torch.rand(1, 1, 8, 8, 8)
    x, t = torch.randn(1, 4, 8, 8, 8), torch.tensor([500])
    with torch.no_grad():
        a = denoiser(x, t, _condition(conditioner, low, 1))
        b = denoiser(x, t, _condition(conditioner, low, 300))
        # the label alone (the same noised image, another level) still changes the output: the embedding is used
        same_image = _condition(conditioner, low, 1)
        relabelled = Condition(image=same_image.image, class_labels=torch.tensor([300]))
        c = denoiser(x, t, relabelled)
    assert a.shape == (1, 4, 8, 8, 8)
    assert (a - b).abs().max() > 1e-3
    assert (a - c).abs().max() > 1e-5


def test_a_noise_level_for_a_unet_without_class_embeddings_is_refused_in_one_line():
    conditioner = NoiseLevelConditioner(max_noise_level=350)
    denoiser = UNetDenoiser(_unet(None))
    with pytest.raises(ConditionError, match="no class embedding .*set num_class_embeds") as err:
        denoiser(torch.randn(1, 4, 8, 8, 8), torch.tensor([10]), _condition(conditioner, torch.rand(1, 1, 8, 8, 8), 20))
    assert "\n" not in str(err.value)


def test_a_level_beyond_the_embedding_is_refused():
    conditioner = NoiseLevelConditioner(max_noise_level=350)
    denoiser = UNetDenoiser(_unet(100))  # too small for 350 levels
    with pytest.raises(ConditionError, match=r"noise level 300 is outside the UNet's class embedding \[0, 99\]"):
        denoiser(torch.randn(1, 4, 8, 8, 8), torch.tensor([10]), _condition(conditioner, torch.rand(1, 1, 8, 8, 8), 300))


def test_training_levels_are_drawn_in_range_and_noise_grows_with_the_level():
    torch.manual_seed(0)
    conditioner = NoiseLevelConditioner(max_noise_level=350)
    low = torch.rand(64, 1, 6, 6, 6)
    condition = conditioner.from_batch({"image_lowres": low}, train=True)
    levels = condition.class_labels
    assert levels.dtype == torch.long and levels.shape == (64,)
    assert 0 <= int(levels.min()) and int(levels.max()) < 350 and levels.unique().numel() > 30
    error = (condition.image - low).pow(2).mean(dim=(1, 2, 3, 4))
    order = levels.argsort()
    low_half, high_half = error[order[:32]].mean(), error[order[32:]].mean()
    assert high_half > 2 * low_half
    fixed = conditioner.from_batch({"image_lowres": low}, train=False)
    assert (fixed.class_labels == conditioner.noise_level).all()
    # level 1 of the schedule barely touches the image (sqrt(alpha_bar) ~ 0.998, sigma ~ 0.055)
    assert (fixed.image - low).abs().mean() < 0.06


def test_same_seed_same_condition_and_bad_values():
    conditioner = NoiseLevelConditioner(max_noise_level=350, noise_level=20)
    low = torch.rand(1, 1, 4, 4, 4)
    a = conditioner.from_values(3, image=low, seed=5)
    b = conditioner.from_values(3, image=low, seed=5)
    assert torch.equal(a.image, b.image) and a.image.shape == (3, 1, 4, 4, 4)
    assert torch.equal(a.class_labels, torch.full((3,), 20))
    with pytest.raises(ValueError, match=r"noise_level must be an integer in \[0, 349\], got 350"):
        conditioner.from_values(1, image=low, noise_level=350)
    with pytest.raises(ValueError, match="noise_level must be an integer, got 2.5"):
        conditioner.from_values(1, image=low, noise_level=2.5)
    with pytest.raises(ConditionError, match="NaN or inf"):
        conditioner.from_values(1, image=torch.full((1, 1, 4, 4, 4), float("nan")))
    with pytest.raises(ConditionError, match="cannot be guided"):
        conditioner.null(1)
