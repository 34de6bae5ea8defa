"""LatentDiffusionSampler: equals MONAI's LatentDiffusionInferer on tiny nets, closed-form guidance, one UNet call
per step, and run_sampling writes deterministic, complete outputs (or nothing)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.inferers import LatentDiffusionInferer
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler
from torch import nn

from common.conditioning.base import Condition
from common.sampling import LatentDiffusionSampler, run_sampling

torch.set_num_threads(1)
LAT = (3, 8, 8)


def _ae() -> AutoencoderKL:
    torch.manual_seed(1)
    return AutoencoderKL(
        spatial_dims=2, in_channels=1, out_channels=1, channels=(4, 4), latent_channels=3, num_res_blocks=(1, 1),
        norm_num_groups=2, attention_levels=(False, False), with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    ).eval()


def _unet(in_ch: int = 3, cross_dim: int | None = None) -> DiffusionModelUNet:
    """A tiny UNet; MONAI zero-initialises its output and attention projections, so perturb every weight to make
    the output depend on the input, the timestep and the conditioning."""
    torch.manual_seed(2)
    net = DiffusionModelUNet(
        spatial_dims=2, in_channels=in_ch, out_channels=3, channels=(8, 8), attention_levels=(False, True),
        num_res_blocks=1, num_head_channels=8, norm_num_groups=4, with_conditioning=cross_dim is not None,
        cross_attention_dim=cross_dim,
    ).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net


def _ddim(pred: str = "epsilon") -> DDIMScheduler:
    return DDIMScheduler(num_train_timesteps=1000, schedule="scaled_linear_beta", beta_start=0.0015,
                         beta_end=0.0205, prediction_type=pred, clip_sample=False)


@pytest.mark.parametrize("guidance", [1.0, 3.0])
def test_crossattn_matches_monai_inferer(guidance):
    ae, unet = _ae(), _unet(cross_dim=4)
    noise = torch.randn((2, *LAT), generator=torch.Generator().manual_seed(0))
    ctx = torch.rand(2, 1, 4, generator=torch.Generator().manual_seed(1))
    ref_sched = _ddim()
    ref_sched.set_timesteps(10)
    inferer = LatentDiffusionInferer(ref_sched, scale_factor=0.7)
    with torch.no_grad():
        ref = inferer.sample(noise, ae, unet, conditioning=ctx, mode="crossattn", verbose=False,
                             cfg=guidance if guidance != 1.0 else None, cfg_fill_value=-1.0)
    sampler = LatentDiffusionSampler(ae, unet, _ddim(), 0.7, LAT, decode="full")
    ours = sampler.sample(Condition(context=ctx), Condition(context=torch.full_like(ctx, -1.0)), 2, noise=noise,
                          num_inference_steps=10, guidance_scale=guidance, progress=False)
    assert ours.shape == ref.shape == (2, 1, 16, 16)
    assert (ours - ref).abs().max().item() < 1e-5
    if guidance != 1.0:  # guidance must change the result, else the comparison above proves nothing about it
        plain = sampler.sample(Condition(context=ctx), None, 2, noise=noise, num_inference_steps=10, progress=False)
        assert (plain - ours).abs().max().item() > 1e-3


def test_concat_matches_monai_inferer_and_slab_decode():
    ae, unet = _ae(), _unet(in_ch=5)
    noise = torch.randn((1, *LAT), generator=torch.Generator().manual_seed(3))
    cov = torch.tensor([[0.2, 0.9]])
    ref_sched = _ddim("v_prediction")
    ref_sched.set_timesteps(8)
    with torch.no_grad():
        ref = LatentDiffusionInferer(ref_sched, scale_factor=1.3).sample(
            noise, ae, unet, conditioning=cov[:, :, None, None].expand(-1, -1, 8, 8), mode="concat", verbose=False)
    for mode in ("full", "slab"):
        sampler = LatentDiffusionSampler(ae, unet, _ddim("v_prediction"), 1.3, LAT, decode=mode)
        ours, lat = sampler.sample(Condition(vector=cov), None, 1, noise=noise, return_latents=True,
                                   num_inference_steps=8, progress=False)
        assert lat.shape == (1, *LAT)
        assert (ours - ref).abs().max().item() < 1e-5, mode


class PointMassDenoiser(nn.Module):
    """Exact model output for data that is a point mass at ``context`` (one value per latent channel).

    For x_t = sqrt(a) x0 + sqrt(1-a) eps with x0 fixed, eps = (x_t - sqrt(a) x0) / sqrt(1-a) and
    v = sqrt(a) eps - sqrt(1-a) x0; DDIM with this model lands exactly on x0 in any number of steps, and
    guidance mixes two point masses into x0_u + g (x0_c - x0_u).
    """

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str) -> None:
        super().__init__()
        self.register_buffer("ac", alphas_cumprod.float())
        self.prediction_type = prediction_type
        self.calls: list[int] = []

    def forward(self, x, timesteps, context=None, class_labels=None):
        self.calls.append(x.shape[0])
        a = self.ac[timesteps.long()].view(-1, 1, 1, 1)
        x0 = context[:, 0, :, None, None]
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        return eps if self.prediction_type == "epsilon" else a.sqrt() * eps - (1 - a).sqrt() * x0


class IdentityDecoder(nn.Module):
    def decode_stage_2_outputs(self, z):
        return z


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
@pytest.mark.parametrize("solver", ["monai_ddim", "dpmpp2m"])
def test_closed_form_guidance_one_call_per_step(pred, solver):
    if solver == "monai_ddim":
        sched = _ddim(pred)
    else:
        from common.schedulers import build_scheduler

        sched = build_scheduler(solver, prediction_type=pred)
    model = PointMassDenoiser(sched.alphas_cumprod, pred)
    g, steps = 2.5, 7
    x0_c, x0_u = torch.tensor([[[0.5, -1.0, 2.0]]]), torch.tensor([[[0.1, 0.3, -0.2]]])
    sampler = LatentDiffusionSampler(IdentityDecoder(), model, sched, 0.5, LAT, decode="full")
    out = sampler.sample(Condition(context=x0_c), Condition(context=x0_u), 3, torch.Generator().manual_seed(0),
                         num_inference_steps=steps, guidance_scale=g, progress=False)
    expected = (x0_u + g * (x0_c - x0_u))[0, 0] / 0.5  # decode divides by the scale factor
    assert out.shape == (3, *LAT)
    assert torch.allclose(out, expected.view(1, 3, 1, 1).expand_as(out), atol=2e-4)
    assert model.calls == [6] * steps  # one batched call per step: 3 conditional + 3 unconditional


def test_guidance_needs_null_condition_and_checks_batch():
    sampler = LatentDiffusionSampler(_ae(), _unet(cross_dim=4), _ddim(), 1.0, LAT)
    settings = {"num_inference_steps": 2, "guidance_scale": 2.0, "progress": False}
    with pytest.raises(ValueError, match="null_condition"):
        sampler.sample(Condition(context=torch.zeros(1, 1, 4)), None, 1, **settings)
    with pytest.raises(ValueError, match="batch 2"):
        sampler.sample(Condition(context=torch.zeros(2, 1, 4)), Condition(context=torch.zeros(1, 1, 4)), 3, **settings)
    with pytest.raises(ValueError, match="guidance_scale must be a finite number in \\[0, 50\\]"):
        sampler.sample(Condition(context=torch.zeros(1, 1, 4)), None, 1, guidance_scale=-0.5)


def test_release_denoiser_frees_the_weights_and_refuses_to_sample_again(tmp_path):
    ae, unet = _ae(), _unet(in_ch=5)
    sampler = LatentDiffusionSampler(ae, unet, _ddim(), 1.0, LAT, decode="full")
    cond = Condition(vector=torch.tensor([[0.5, 0.1]]))
    kept = run_sampling(sampler, tmp_path / "kept", cond, num_samples=2, seed=4, num_inference_steps=3, progress=False)
    released = run_sampling(sampler, tmp_path / "released", cond, num_samples=2, seed=4, num_inference_steps=3,
                            progress=False, release_denoiser=True)
    for a, b in zip(kept, released):  # every latent is drawn before the release: the same files
        assert np.array_equal(nib.load(a).get_fdata(), nib.load(b).get_fdata())
    assert all(p.is_meta for p in unet.parameters())
    with pytest.raises(RuntimeError, match="denoiser was released"):
        sampler.sample(cond, None, 1, num_inference_steps=2)


def test_run_sampling_deterministic_nifti_png_and_nothing_partial(tmp_path):
    ae, unet = _ae(), _unet(in_ch=5)
    sampler = LatentDiffusionSampler(ae, unet, _ddim(), 1.0, LAT, decode="full")
    cond = Condition(vector=torch.tensor([[0.5, 0.1]]))
    affine = np.diag([1.5, 1.5, 1.0, 1.0])
    kw = {"num_inference_steps": 3, "progress": False}
    a = run_sampling(sampler, tmp_path / "a", cond, num_samples=3, seed=7, batch_size=2, affine=affine, **kw)
    b = run_sampling(sampler, tmp_path / "b", cond, num_samples=3, seed=7, batch_size=1, affine=affine, **kw)
    assert [p.split("/")[-1] for p in a] == [f"sample_seed7_{i:04d}.nii.gz" for i in range(3)]
    imgs_a = [nib.load(p) for p in a]
    for ia, pb in zip(imgs_a, b):
        assert ia.shape == (16, 16)
        np.testing.assert_allclose(ia.affine, affine)
        np.testing.assert_allclose(ia.get_fdata(), nib.load(pb).get_fdata(), atol=1e-5)  # batch size irrelevant
        assert 0.0 <= ia.get_fdata().min() and ia.get_fdata().max() <= 1.0
    assert np.abs(imgs_a[0].get_fdata() - imgs_a[1].get_fdata()).max() > 1e-4  # samples differ
    # a stochastic scheduler: same seed and batch size, same files; another seed, other files
    ddpm = LatentDiffusionSampler(ae, unet, DDPMScheduler(num_train_timesteps=1000), 1.0, LAT)
    d1, d2, d3 = (run_sampling(ddpm, tmp_path / f"d{k}", cond, seed=s, **kw) for k, s in enumerate((3, 3, 4)))
    v1, v2, v3 = (nib.load(p[0]).get_fdata() for p in (d1, d2, d3))
    assert np.array_equal(v1, v2) and np.abs(v1 - v3).max() > 1e-4
    png = run_sampling(sampler, tmp_path / "p", cond, seed=7, file_format="png", sample_tags="dme", **kw)
    assert png[0].endswith("sample_dme_seed7_0000.png")
    from PIL import Image

    arr = np.asarray(Image.open(png[0]))
    assert arr.dtype == np.uint8 and arr.shape == (16, 16)
    np.testing.assert_allclose(arr.T / 255.0, imgs_a[0].get_fdata(), atol=0.5 / 255 + 1e-5)
    # a bad condition fails before any file is written, and the folder it would have created is gone
    with pytest.raises(ValueError, match="batch 2"):
        run_sampling(sampler, tmp_path / "bad", Condition(vector=torch.zeros(2, 2)), num_samples=3, **kw)
    assert not (tmp_path / "bad").exists()
    # a failure in the middle (second batch) leaves no file and no temp folder
    wrong = Condition(vector=torch.zeros(2, 3))
    with pytest.raises(RuntimeError):
        run_sampling(sampler, tmp_path / "a", wrong, num_samples=2, seed=99, **kw)
    assert sorted(x.name for x in (tmp_path / "a").iterdir()) == sorted(p.split("/")[-1] for p in a)
