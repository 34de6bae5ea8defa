"""Old GenerativeModels checkpoints (monai-generative 0.2.3, the reference) load strictly into MONAI 1.6 nets and
give the same outputs; the include_fc / use_combined_linear choice is decided by these numbers."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

warnings.filterwarnings("ignore", category=FutureWarning)
generative_nets = pytest.importorskip("generative.networks.nets")
from monai.networks import nets  # noqa: E402

from common.weights import (  # noqa: E402
    WeightsError,
    build_legacy_net,
    legacy_net_kwargs,
    load_generative_models_checkpoint,
)

TOL = 1e-5


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny nets: one thread avoids oversubscribing the 2 shared CI cores (10x faster here); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _trained_like(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Random non-default weights (norm affines, biases, projections) so that a dropped layer shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return module.eval()


def _save_old(module: torch.nn.Module, tmp_path, name: str):
    path = tmp_path / f"{name}.pth"
    torch.save(module.state_dict(), path)
    return path


def _max_diff(a, b) -> float:
    return (a - b).abs().max().item()


AE_ARGS = dict(spatial_dims=2, in_channels=1, out_channels=1, latent_channels=3, num_res_blocks=1,
               attention_levels=(False, False, True), norm_num_groups=8, with_encoder_nonlocal_attn=True,
               with_decoder_nonlocal_attn=True)
UNET_ARGS = dict(spatial_dims=2, in_channels=3, out_channels=3, attention_levels=(False, True, True),
                 num_res_blocks=1, num_head_channels=8, with_conditioning=True, cross_attention_dim=8,
                 norm_num_groups=8)
# brain_ldm_3d's published arch, tiny channels: latent 3 + 4 covariates concatenated, cross-attention dim 4
UNET3D_ARGS = dict(spatial_dims=3, in_channels=7, out_channels=3, attention_levels=(False, True, True),
                   num_res_blocks=1, num_head_channels=(0, 8, 16), with_conditioning=True, cross_attention_dim=4,
                   norm_num_groups=8)


@pytest.fixture(scope="module")
def old_ae():
    return _trained_like(generative_nets.AutoencoderKL(num_channels=(8, 16, 16), **AE_ARGS), 0)


@pytest.fixture(scope="module")
def old_unet():
    return _trained_like(generative_nets.DiffusionModelUNet(num_channels=(8, 16, 16), **UNET_ARGS), 1)


def _ae_out(m, x):
    with torch.no_grad():
        z = m.encode(x)[0]  # posterior mean: deterministic
        return torch.cat([z.flatten(), m.decode(z).flatten()])


@pytest.mark.parametrize("combined", [False, True])
def test_autoencoderkl_matches_old_library(old_ae, tmp_path, combined):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    ref = _ae_out(old_ae, x)
    kwargs = {**legacy_net_kwargs("AutoencoderKL"), "use_combined_linear": combined}
    assert kwargs["include_fc"] is False  # the old AttentionBlock never applied proj_attn
    new = load_generative_models_checkpoint(nets.AutoencoderKL(channels=(8, 16, 16), **AE_ARGS, **kwargs).eval(),
                                            _save_old(old_ae, tmp_path, "ae"))
    assert _max_diff(_ae_out(new, x), ref) < TOL  # measured 0 (both settings)


def test_autoencoderkl_wrong_include_fc_is_refused_not_silently_wrong(old_ae, tmp_path):
    x = torch.randn(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    path = _save_old(old_ae, tmp_path, "ae")
    net = nets.AutoencoderKL(channels=(8, 16, 16), **AE_ARGS, include_fc=True)
    with pytest.raises(WeightsError, match="never applied by the old network.*include_fc=False") as info:
        load_generative_models_checkpoint(net, path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    monai_way = copy.deepcopy(net)
    monai_way.load_old_state_dict(dict(old_ae.state_dict()))  # MONAI's own loader accepts it ...
    assert _max_diff(_ae_out(monai_way.eval(), x), _ae_out(old_ae, x)) > 0.1  # ... and is off (measured 1.39)


def _unet_out(m, x, t, ctx):
    with torch.no_grad():
        return m(x, t, context=ctx)


def test_cross_attention_unet_matches_old_library(old_unet, tmp_path):
    g = torch.Generator().manual_seed(1)
    x, ctx, t = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 5, 8, generator=g), torch.tensor([10, 700])
    kwargs = legacy_net_kwargs("DiffusionModelUNet", with_conditioning=True)
    assert kwargs == {"include_fc": True, "use_combined_linear": False}
    new = build_legacy_net("DiffusionModelUNet", checkpoint=_save_old(old_unet, tmp_path, "unet"),
                           channels=(8, 16, 16), **UNET_ARGS).eval()
    assert new.down_blocks[1].attentions[0].transformer_blocks[0].attn1.include_fc is True
    assert _max_diff(_unet_out(new, x, t, ctx), _unet_out(old_unet, x, t, ctx)) < TOL  # measured 4.5e-7


def test_cross_attention_unet_without_fc_is_refused(old_unet, tmp_path):
    path = _save_old(old_unet, tmp_path, "unet")
    net = nets.DiffusionModelUNet(channels=(8, 16, 16), **UNET_ARGS, include_fc=False)
    with pytest.raises(WeightsError, match=r"to_out\.0\.weight' \(the old net applied this projection: build with "
                                           r"include_fc=True\)"):
        load_generative_models_checkpoint(net, path)


def test_brain_ldm_3d_paper_arch_unet_matches_old_library(tmp_path):
    old = _trained_like(generative_nets.DiffusionModelUNet(num_channels=(8, 16, 16), **UNET3D_ARGS), 2)
    g = torch.Generator().manual_seed(2)
    latent, covariates = torch.randn(1, 3, 8, 8, 8, generator=g), torch.rand(1, 4, generator=g)
    x = torch.cat([latent, covariates[:, :, None, None, None].expand(-1, -1, 8, 8, 8)], dim=1)  # concat
    ctx, t = covariates[:, None, :], torch.tensor([300])  # and cross-attention on the same 4 values
    new = nets.DiffusionModelUNet(channels=(8, 16, 16), **UNET3D_ARGS,
                                  **legacy_net_kwargs("DiffusionModelUNet", with_conditioning=True))
    load_generative_models_checkpoint(new.eval(), _save_old(old, tmp_path, "unet3d"))
    assert _max_diff(_unet_out(new, x, t, ctx), _unet_out(old, x, t, ctx)) < TOL  # measured 7.2e-7


def test_transformer_with_cross_attention_matches_where_monai_loader_does_not(tmp_path):
    args = dict(num_tokens=16, max_seq_len=10, attn_layers_dim=16, attn_layers_depth=2, attn_layers_heads=2,
                with_cross_attention=True)
    old = _trained_like(generative_nets.DecoderOnlyTransformer(**args), 3)
    g = torch.Generator().manual_seed(3)
    tokens, ctx = torch.randint(0, 16, (2, 10), generator=g), torch.randn(2, 3, 16, generator=g)
    with torch.no_grad():
        ref = old(tokens, context=ctx)
        new = build_legacy_net("DecoderOnlyTransformer", checkpoint=_save_old(old, tmp_path, "tr"), **args).eval()
        assert _max_diff(new(tokens, context=ctx), ref) < TOL  # measured 1.8e-7
        monai_way = nets.DecoderOnlyTransformer(**args)
        monai_way.load_old_state_dict(dict(old.state_dict()))  # leaves norm_cross_attn at its init
        assert _max_diff(monai_way.eval()(tokens, context=ctx), ref) > 0.1  # measured 0.84


def test_checkpoint_of_other_architecture_is_a_one_line_error(old_unet, tmp_path):
    path = _save_old(old_unet, tmp_path, "unet")
    net = nets.DiffusionModelUNet(channels=(8, 16, 16), **{**UNET_ARGS, "cross_attention_dim": 6}, include_fc=True)
    with pytest.raises(WeightsError, match=r"shape mismatch at '.*attn2\.to_k\.weight': file has \(16, 8\), "
                                           r"network expects \(16, 6\)") as info:
        load_generative_models_checkpoint(net, path)
    assert "\n" not in str(info.value) and str(path) in str(info.value)
    with pytest.raises(WeightsError, match="no legacy kwargs for net 'UNet'"):
        legacy_net_kwargs("UNet")


@pytest.mark.parametrize("with_conditioning", [True, False])
def test_controlnet_matches_old_library(tmp_path, with_conditioning):
    args = dict(spatial_dims=2, in_channels=3, attention_levels=(False, True, True), num_res_blocks=1,
                num_head_channels=8, norm_num_groups=8, conditioning_embedding_num_channels=(8,),
                conditioning_embedding_in_channels=1, with_conditioning=with_conditioning,
                cross_attention_dim=8 if with_conditioning else None)
    old = _trained_like(generative_nets.ControlNet(num_channels=(8, 16, 16), **args), 4)
    g = torch.Generator().manual_seed(4)
    x, cond = torch.randn(2, 3, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    ctx = torch.randn(2, 5, 8, generator=g) if with_conditioning else None
    t = torch.tensor([10, 500])

    def run(m):
        with torch.no_grad():
            down, mid = m(x, t, controlnet_cond=cond, context=ctx)
        return torch.cat([d.flatten() for d in down] + [mid.flatten()])

    new = build_legacy_net("ControlNet", checkpoint=_save_old(old, tmp_path, "cn"), channels=(8, 16, 16), **args)
    assert _max_diff(run(new.eval()), run(old)) < 1e-5  # measured 3.0e-6 (cross-attn), 2.7e-6 (self-attn)
