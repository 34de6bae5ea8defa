"""Memory-bounded decoding equals the one-pass decode: exact slab streaming (AutoencoderKL, 2D and 3D, any slab
size) and tiled decoding of a norm-free decoder (VQVAE) once the tile overlap covers its receptive field."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import VQVAE, AutoencoderKL

from common.sampling.decode import decode_latents, slab_decode, supports_slab, tiled_decode

torch.set_num_threads(1)


def _aekl(dims: int, attn: bool = False) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        spatial_dims=dims, in_channels=1, out_channels=1, channels=(8, 16, 16), latent_channels=3,
        num_res_blocks=(1, 2, 1), norm_num_groups=4, attention_levels=(False, False, attn),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=attn,
    ).eval()


@pytest.mark.parametrize("dims,shape", [(3, (1, 3, 7, 6, 5)), (2, (2, 3, 11, 9))])
@pytest.mark.parametrize("slab_mb", [0.002, 64.0])
def test_slab_decode_equals_one_pass(dims, shape, slab_mb):
    ae = _aekl(dims)
    z = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        full = ae.decode_stage_2_outputs(z)
        slab = decode_latents(ae, z, "slab", slab_mb=slab_mb)
    assert slab.shape == full.shape == (shape[0], 1, *[4 * s for s in shape[2:]])
    assert full.abs().max() > 0.1  # a non-trivial output
    assert (slab - full).abs().max().item() < 1e-4


def test_slab_decode_with_attention_blocks_gathers_and_stays_exact():
    ae = _aekl(3, attn=True)
    z = torch.randn((1, 3, 6, 5, 4), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        full = ae.decode_stage_2_outputs(z)
        slab = slab_decode(ae.decoder, ae.post_quant_conv(z), slab_mb=0.002)
    assert (slab - full).abs().max().item() < 1e-4


def test_auto_mode_and_bad_modes():
    ae = _aekl(3)
    assert supports_slab(ae)
    vq = _vqvae()
    assert not supports_slab(vq)
    with pytest.raises(ValueError, match="unknown decode mode"):
        decode_latents(ae, torch.zeros(1, 3, 4, 4, 4), "fast")
    with pytest.raises(ValueError, match="slab"):
        decode_latents(vq, torch.zeros(1, 4, 4, 4, 4), "slab")
    with pytest.raises(ValueError, match="tile"):
        tiled_decode(vq.decode_stage_2_outputs, torch.zeros(1, 4, 12, 12, 12), tile=6, overlap=6)


def _vqvae(dims: int = 3) -> VQVAE:
    torch.manual_seed(3)
    return VQVAE(
        spatial_dims=dims, in_channels=1, out_channels=1, channels=(8, 8), num_res_channels=8, num_res_layers=1,
        downsample_parameters=((2, 4, 1, 1), (2, 4, 1, 1)), upsample_parameters=((2, 4, 1, 1, 0), (2, 4, 1, 1, 0)),
        num_embeddings=16, embedding_dim=4,
    ).eval()


def test_tiled_decode_exact_for_local_decoder_once_overlap_covers_receptive_field():
    vq = _vqvae(2)
    z = torch.randn((1, 4, 30, 27), generator=torch.Generator().manual_seed(4))
    with torch.inference_mode():
        full = vq.decode_stage_2_outputs(z)
        errs = {ov: (decode_latents(vq, z, "tiled", tile=11, overlap=ov) - full).abs().max().item() for ov in (4, 10)}
        ramped = decode_latents(vq, z, "tiled", tile=12, overlap=10, ramp=0)
    assert errs[4] > 1e-3  # too small a margin shows seams: the check below is not vacuous
    assert errs[10] < 1e-5
    assert (ramped - full).abs().max().item() < 1e-5


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("slab_mb", [1e-6, 64.0])
def test_folded_nearest2_upsample_equals_upsample_then_conv(dims, slab_mb):
    """The slab decoder's x2 upsampling (phase kernels, no upsampled input built) is the same sum as MONAI's
    nearest interpolation + 3-tap conv, for one-row slabs too (halo rows and volume edges)."""
    import torch.nn.functional as F

    from common.sampling.decode import _Act, _run_upsample, nearest2_conv_phases

    g = torch.Generator().manual_seed(2)
    conv = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)[dims - 1](4, 6, 3, padding=1).double()
    x = torch.randn((1, 4, *[5, 4, 3][:dims]), generator=g, dtype=torch.float64)
    want = conv(F.interpolate(x, scale_factor=2, mode="nearest"))
    budget = max(1, int(slab_mb * 2**20 / 8))
    got = _run_upsample(_Act([x.clone()]), 2, conv, budget)
    assert len(got.chunks) == (5 if slab_mb < 1 else 1)
    got = got.window(0, got.rows, 0)
    assert got.shape == want.shape == (1, 6, *[10, 8, 6][:dims])
    assert (got - want).abs().max().item() < 1e-12
    assert nearest2_conv_phases(conv.weight).shape == (6 * 2**dims, 4, *[2] * dims)
    with pytest.raises(ValueError, match="3, ..."):
        nearest2_conv_phases(torch.zeros(6, 4, 5, 5))
