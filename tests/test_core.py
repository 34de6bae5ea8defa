"""The shared core: the Condition record, the conditioners' one interface, the denoiser seam (concat, image,
class labels, ControlNet residuals), guidance as a wrapper, and generation settings validated in one place."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import ControlNet, DiffusionModelUNet

from common.conditioning import ClassConditioner, Condition, ConditionError, CovariateConditioner
from common.sampling import GenerationSettings, GuidedDenoiser, SettingsError, UNetDenoiser

torch.set_num_threads(1)


def _perturbed(net: torch.nn.Module) -> torch.nn.Module:
    """MONAI zero-initialises output and attention projections: perturb every weight so outputs depend on inputs."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return net.eval()


def _unet(in_channels: int = 3, num_class_embeds: int | None = None, cross: int | None = None) -> DiffusionModelUNet:
    torch.manual_seed(2)
    return _perturbed(DiffusionModelUNet(
        spatial_dims=2, in_channels=in_channels, out_channels=3, channels=(8, 8), attention_levels=(False, True),
        num_res_blocks=1, num_head_channels=8, norm_num_groups=4, num_class_embeds=num_class_embeds,
        with_conditioning=cross is not None, cross_attention_dim=cross,
    ))


# ------------------------------------------------------------------------------------------- Condition
def test_condition_record_operations_loop_over_every_field():
    c = Condition(context=torch.ones(1, 2, 4), vector=torch.arange(6.0).view(3, 2),
                  image=torch.zeros(3, 1, 4, 4), class_labels=torch.tensor([0, 1, 2]), control=torch.ones(3, 1, 8, 8))
    assert set(c.items()) == {"context", "vector", "image", "class_labels", "control"}
    rows = c[1:3]
    assert rows.context.shape == (1, 2, 4) and torch.equal(rows.class_labels, torch.tensor([1, 2]))
    assert rows.vector.shape == (2, 2) and rows.control.shape == (2, 1, 8, 8)
    full = c.expand(3)
    assert full.batch_size == 3 and full.context.shape == (3, 2, 4)
    both = full.cat(full)
    assert both.batch_size == 6 and both.class_labels.dtype == torch.long
    moved = c.to("cpu", torch.float64)
    assert moved.vector.dtype == torch.float64 and moved.class_labels.dtype == torch.long
    with pytest.raises(ConditionError, match="same fields"):
        Condition(vector=torch.zeros(1, 2)).cat(Condition(context=torch.zeros(1, 1, 2)))
    with pytest.raises(ConditionError, match="batch 2; give 1"):
        Condition(vector=torch.zeros(2, 2)).expand(3)


# ------------------------------------------------------------------------------------------- conditioners
def test_class_conditioner_names_labels_null_and_dropout():
    cond = ClassConditioner(["CNV", "DME", "DRUSEN", "NORMAL"], key="label", label_dropout=0.5)
    assert cond.num_class_embeds == 5 and cond.null_label == 4
    assert torch.equal(cond.from_values(1, classes="dme").class_labels, torch.tensor([1]))
    assert torch.equal(cond.from_values(2, classes=["Normal", "cnv"]).class_labels, torch.tensor([3, 0]))
    assert torch.equal(cond.null(3).class_labels, torch.tensor([4, 4, 4]))
    with pytest.raises(ConditionError, match=r"unknown class 'amd': use --class with one of cnv\|dme\|drusen\|normal") as err:
        cond.from_values(1, classes="amd")
    assert "\n" not in str(err.value)
    with pytest.raises(ConditionError, match="3 classes for num_samples=2"):
        cond.from_values(2, classes=["cnv", "dme", "normal"])
    torch.manual_seed(0)
    batch = {"label": torch.tensor([0, 1, 2, 3] * 50)}
    labels = cond.from_batch(batch, train=True).class_labels
    assert 0.35 < float((labels == 4).float().mean()) < 0.65  # about half dropped to the null class
    assert torch.equal(cond.from_batch(batch, train=False).class_labels, batch["label"])
    assert torch.equal(cond.from_batch({"label": ["DME", "normal"]}, train=False).class_labels, torch.tensor([1, 3]))


def test_every_conditioner_has_the_one_interface():
    from common.conditioning import Conditioner

    assert isinstance(CovariateConditioner(), Conditioner) and isinstance(ClassConditioner(["a", "b"]), Conditioner)
    from common.conditioning.text_conditioner import TextConditioner

    assert all(hasattr(TextConditioner, m) for m in ("from_batch", "from_values", "null"))


# ------------------------------------------------------------------------------------------- denoiser seam
def test_class_labels_change_the_output_and_a_unet_without_embeddings_is_refused():
    unet = _unet(num_class_embeds=5)
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([500])
    den = UNetDenoiser(unet)
    with torch.no_grad():
        a = den(x, t, Condition(class_labels=torch.tensor([1])))
        b = den(x, t, Condition(class_labels=torch.tensor([3])))
    assert (a - b).abs().max() > 1e-3  # same noise, two labels, different outputs
    plain = UNetDenoiser(_unet())
    with pytest.raises(ConditionError, match="no class embedding \\(num_class_embeds is None\\)") as err:
        plain(x, t, Condition(class_labels=torch.tensor([1])))
    assert "\n" not in str(err.value)
    # MONAI itself ignores the labels on such a UNet: the fault the refusal guards against
    with torch.no_grad():
        u = _unet()
        assert torch.equal(u(x, t, class_labels=torch.tensor([1])), u(x, t, class_labels=torch.tensor([300])))


def test_vector_and_image_are_concatenated_in_order():
    unet = _unet(in_channels=3 + 2 + 1)
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([10, 10])
    vec, img = torch.tensor([[0.1, 0.9], [0.5, 0.2]]), torch.rand(2, 1, 8, 8)
    with torch.no_grad():
        out = UNetDenoiser(unet)(x, torch.tensor([10]), Condition(vector=vec, image=img))
        ref = unet(torch.cat([x, vec[:, :, None, None].expand(-1, -1, 8, 8), img], 1), timesteps=t)
    assert torch.equal(out, ref)
    with pytest.raises(ConditionError, match="resample it to the latent grid"):
        UNetDenoiser(unet)(x, t, Condition(vector=vec, image=torch.rand(2, 1, 4, 4)))


def test_controlnet_residuals_with_conditioning_scale():
    unet = _unet()
    torch.manual_seed(4)
    control = _perturbed(ControlNet(
        spatial_dims=2, in_channels=3, channels=(8, 8), attention_levels=(False, True), num_res_blocks=1,
        num_head_channels=8, norm_num_groups=4, conditioning_embedding_in_channels=1,
        conditioning_embedding_num_channels=(8, 8),
    ))
    x, t = torch.randn(1, 3, 8, 8), torch.tensor([300])
    cond = Condition(control=torch.rand(1, 1, 16, 16))
    with torch.no_grad():
        base = unet(x, timesteps=t)
        zero = UNetDenoiser(unet, control, conditioning_scale=0.0)(x, t, cond)
        one = UNetDenoiser(unet, control, conditioning_scale=1.0)(x, t, cond)
        down, mid = control(x=x, timesteps=t, controlnet_cond=cond.control, conditioning_scale=1.0)
        ref = unet(x, timesteps=t, down_block_additional_residuals=down, mid_block_additional_residual=mid)
    assert torch.allclose(zero, base, atol=1e-6) and torch.equal(one, ref) and (one - base).abs().max() > 1e-3
    with pytest.raises(ConditionError, match="conditioning image"):
        UNetDenoiser(unet, control)(x, t, Condition())


def test_guidance_wrapper_is_one_batched_call_with_the_closed_form():
    calls = []

    def denoiser(x, t, condition):
        calls.append(x.shape[0])
        return x * 0 + condition.vector[:, :1, None, None]

    guided = GuidedDenoiser(denoiser, 4.0, Condition(vector=torch.zeros(1, 1)))
    cond = Condition(vector=torch.ones(2, 1))
    out = guided(torch.zeros(2, 3, 4, 4), torch.tensor([5]), cond)
    assert calls == [4] and torch.allclose(out, torch.full_like(out, 4.0))  # 0 + 4 * (1 - 0)
    assert GuidedDenoiser(denoiser, 1.0, None)(torch.zeros(2, 3, 4, 4), torch.tensor([5]), cond).mean() == 1.0
    with pytest.raises(ConditionError, match="needs the null condition"):
        GuidedDenoiser(denoiser, 3.0, None)


# ------------------------------------------------------------------------------------------- settings
@pytest.mark.parametrize("values, message", [
    ({"num_inference_steps": 2.5}, "num_inference_steps must be an integer, got 2.5"),
    ({"num_inference_steps": 0}, "num_inference_steps must be an integer in [1, 1000], got 0"),
    ({"num_inference_steps": True}, "must be an integer"),
    ({"guidance_scale": 1e12}, "guidance_scale must be a finite number in [0, 50]"),
    ({"guidance_scale": -1}, "guidance_scale must be a finite number in [0, 50]"),
    ({"guidance_scale": "big"}, "guidance_scale must be a number, got 'big'"),
    ({"guidance_scale": float("nan")}, "finite number"),
    ({"progress": "maybe"}, "progress must be true or false"),
])
def test_generation_settings_one_rule_each(values, message):
    with pytest.raises(SettingsError) as err:
        GenerationSettings(**values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_generation_settings_parse_booleans():
    assert GenerationSettings(progress="false").progress is False and GenerationSettings(progress="True").progress
    assert GenerationSettings(guidance_scale=0).guided and not GenerationSettings(guidance_scale=1).guided


# ------------------------------------------------------------------------------------------- one-line errors
def test_bundle_run_errors_are_one_line_and_nonzero(tmp_path):
    """The CLI prints the innermost cause as its last line (no MONAI traceback) and exits non-zero."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    bundle = repo / "bundles" / "cxr_text_ldm"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(bundle / "configs" / "inference.json"),
           "--bundle_root", str(bundle), "--output_dir", str(tmp_path / "out"), "--num_inference_steps", "2.5"]
    env = {k: v for k, v in os.environ.items() if k != "ZOO_DEBUG"}
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=repo)
    assert res.returncode == 1
    lines = res.stderr.strip().splitlines()
    assert lines[-1].startswith("error: num_inference_steps must be an integer, got 2.5")
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
    debug = subprocess.run(cmd, capture_output=True, text=True, env={**env, "ZOO_DEBUG": "1"}, timeout=300, cwd=repo)
    assert debug.returncode == 1 and "Traceback" in debug.stderr


def test_root_cause_walks_the_chain():
    from common.cli import one_line

    try:
        try:
            raise ConditionError("unknown class 'amd': use --class with one of cnv|dme")
        except ConditionError as inner:
            raise RuntimeError("Failed to evaluate ConfigExpression:\n'$@condition'") from inner
    except RuntimeError as outer:
        assert one_line(outer) == "unknown class 'amd': use --class with one of cnv|dme"
    assert one_line(KeyError("model_dir")) == "KeyError: model_dir"
