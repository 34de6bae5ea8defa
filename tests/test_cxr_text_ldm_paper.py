"""cxr_text_ldm configs/paper.json: the published architecture, and GenerativeModels checkpoints loading strictly.

The reference is the old library itself (monai-generative 0.2.3): its nets with the published settings, random
weights saved as the old-format ``.pth``; the paper overlay must load them strictly and give the same outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

BUNDLE = Path(__file__).resolve().parents[1] / "bundles" / "cxr_text_ldm"


def _paper_parser(bundle_root: Path, **overrides) -> ConfigParser:
    p = ConfigParser()
    p.read_config([str(BUNDLE / "configs" / "inference.json"), str(BUNDLE / "configs" / "paper.json")])
    p["bundle_root"] = str(bundle_root)
    for k, v in overrides.items():
        p[k] = v
    return p


# The published widths; tests that run the nets use a narrow copy of the same structure (same key names).
PUBLISHED = {"ae": (64, 128, 128, 128), "unet": (256, 512, 768), "heads": (0, 512, 768), "xattn": 1024}
NARROW = {"ae": (32, 64, 64, 64), "unet": (32, 64, 96), "heads": (0, 64, 96), "xattn": 64}


def _old_ae(w=NARROW):
    gen = pytest.importorskip("generative.networks.nets")
    torch.manual_seed(0)
    return gen.AutoencoderKL(
        spatial_dims=2, in_channels=1, out_channels=1, num_channels=w["ae"], latent_channels=3,
        num_res_blocks=2, norm_num_groups=32, norm_eps=1e-6, attention_levels=(False, False, False, False),
        with_encoder_nonlocal_attn=False, with_decoder_nonlocal_attn=False,
    ).eval()


def _old_unet(w=NARROW):
    gen = pytest.importorskip("generative.networks.nets")
    torch.manual_seed(1)
    return gen.DiffusionModelUNet(
        spatial_dims=2, in_channels=3, out_channels=3, num_channels=w["unet"], num_res_blocks=2,
        attention_levels=(False, True, True), norm_num_groups=32, norm_eps=1e-6, resblock_updown=False,
        num_head_channels=w["heads"], with_conditioning=True, transformer_num_layers=1, cross_attention_dim=w["xattn"],
    ).eval()


def _narrow(p: ConfigParser) -> ConfigParser:
    p["autoencoder_def"]["channels"] = list(NARROW["ae"])
    p["diffusion_def"]["channels"] = list(NARROW["unet"])
    p["diffusion_def"]["num_head_channels"] = list(NARROW["heads"])
    p["cross_attention_dim"] = NARROW["xattn"]
    return p


def test_paper_settings_are_the_published_ones(tmp_path):
    p = _paper_parser(tmp_path)
    assert p.get_parsed_content("latent_shape") == [3, 64, 64]
    assert p["image_size"] == [512, 512] and p.get_parsed_content("scale_factor") == 0.3
    assert p["autoencoder_def"]["channels"] == [64, 128, 128, 128] and p["autoencoder_def"]["latent_channels"] == "@latent_channels"
    unet = p["diffusion_def"]
    assert unet["channels"] == [256, 512, 768] and unet["attention_levels"] == [False, True, True]
    assert unet["num_head_channels"] == [0, 512, 768] and p["cross_attention_dim"] == 1024
    sched = p.get_parsed_content("noise_scheduler")
    assert sched.prediction_type == "v_prediction" and type(sched).__name__ == "DDIMScheduler"
    assert p["num_inference_steps"] == 50 and p["beta_start"] == 0.0015 and p["beta_end"] == 0.0205
    assert p["beta_schedule"] == "scaled_linear_beta"
    # the text encoder is SD-2.1 CLIP from a local folder: missing -> how to get it, no hub access
    cond = p.get_parsed_content("conditioner")
    with pytest.raises(FileNotFoundError, match="huggingface-cli download stabilityai/stable-diffusion-2-1-base"):
        cond.from_values(1, prompt="Big right-sided pleural effusion")


def test_published_size_keys_and_shapes_map_strictly(tmp_path):
    """Full-size published nets on the meta device (no memory): every old key maps onto paper.json's nets."""
    from common.weights import convert_generative_models_state_dict

    p = _paper_parser(tmp_path)
    with torch.device("meta"):
        new_ae, new_unet = p.get_parsed_content("autoencoder_def"), p.get_parsed_content("diffusion_def")
        old_ae, old_unet = _old_ae(PUBLISHED), _old_unet(PUBLISHED)
    for new, old in ((new_ae, old_ae), (new_unet, old_unet)):
        mapped = convert_generative_models_state_dict(new, old.state_dict())
        own = new.state_dict()
        assert mapped.keys() == own.keys()
        assert all(mapped[k].shape == own[k].shape for k in own)
    assert sum(v.numel() for v in new_unet.state_dict().values()) > 2.5e8  # the published ~264M-parameter UNet


def test_generative_models_checkpoints_load_strictly_and_match(tmp_path):
    old_ae, old_unet = _old_ae(), _old_unet()
    paper = tmp_path / "models" / "paper"
    paper.mkdir(parents=True)
    torch.save(old_ae.state_dict(), paper / "autoencoder.pth")
    torch.save(old_unet.state_dict(), paper / "diffusion_model.pth")

    p = _narrow(_paper_parser(tmp_path))
    ae = p.get_parsed_content("load_autoencoder").eval()
    unet = p.get_parsed_content("load_diffusion").eval()

    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, 1, 64, 64, generator=g)
    z = torch.randn(1, 3, 16, 16, generator=g)
    ctx = torch.randn(1, 77, NARROW["xattn"], generator=g)
    t = torch.tensor([500])
    with torch.inference_mode():
        assert torch.allclose(ae.decode_stage_2_outputs(z), old_ae.decode_stage_2_outputs(z), atol=1e-5)
        assert torch.allclose(ae.encode(x)[0], old_ae.encode(x)[0], atol=1e-5)
        new_out = unet(z, timesteps=t, context=ctx)
        old_out = old_unet(z, timesteps=t, context=ctx)
    assert new_out.shape == (1, 3, 16, 16)
    assert (new_out - old_out).abs().max() < 1e-5


def test_a_renamed_key_is_a_one_line_error(tmp_path):
    sd = _old_ae().state_dict()
    key = next(k for k in sd if k.endswith("conv.weight"))
    sd[key.replace("conv.weight", "conv_renamed.weight")] = sd.pop(key)
    paper = tmp_path / "models" / "paper"
    paper.mkdir(parents=True)
    torch.save(sd, paper / "autoencoder.pth")
    p = _narrow(_paper_parser(tmp_path))
    with pytest.raises(Exception) as err:
        p.get_parsed_content("load_autoencoder")
    messages = []
    e: BaseException | None = err.value
    while e is not None:
        messages.append(str(e))
        e = e.__cause__
    assert any("autoencoder.pth" in m and "\n" not in m.strip() for m in messages)
