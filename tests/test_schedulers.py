"""common.schedulers: the MONAI 1.6.1 faults (each test here fails on plain MONAI), DPM-Solver++ 2M accuracy
against closed forms, and argument validation."""

from __future__ import annotations

import math

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler as MonaiDDIM
from monai.networks.schedulers import DDPMScheduler as MonaiDDPM
from monai.networks.schedulers import PNDMScheduler as MonaiPNDM

from common.schedulers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    build_scheduler,
)

PAPER = dict(schedule="scaled_linear_beta", beta_start=0.0015, beta_end=0.0205)


def _gaussian_denoiser(mu: float, s: float):
    """Exact eps / x0 for data N(mu, s^2): E[x0 | x_t] is linear in x_t."""

    def predict(x: torch.Tensor, abar: torch.Tensor, prediction_type: str) -> torch.Tensor:
        abar = abar.double()
        x0 = mu + abar.sqrt() * s**2 / (abar * s**2 + 1 - abar) * (x - abar.sqrt() * mu)
        eps = (x - abar.sqrt() * x0) / (1 - abar).sqrt()
        return eps if prediction_type == "epsilon" else abar.sqrt() * eps - (1 - abar).sqrt() * x0

    return predict


def _sample(sched, predict, prediction_type="epsilon", n=20000, seed=0, stochastic=False):
    """Run the full loop over ``sched.timesteps``; return (samples, starting noise)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=g, dtype=torch.float64)
    x_start = x.clone()
    for t in sched.timesteps:
        out = predict(x, sched.alphas_cumprod[t], prediction_type)
        x, _ = sched.step(out, t, x, generator=g) if stochastic else sched.step(out, t, x)
    return x, x_start


def _exact_ode(x_start, abar_start, mu, s):
    """The probability-flow ODE maps Gaussians monotonically: the standardised coordinate is conserved."""
    abar_start = abar_start.double()
    z = (x_start - abar_start.sqrt() * mu) / (abar_start * s**2 + 1 - abar_start).sqrt()
    return mu + s * z


# ---------------------------------------------------------------- DDIM: step to the timestep actually used
def _ddim_first_step_error(sched) -> float:
    """|step() - closed-form DDIM (eta=0) from timesteps[0] to timesteps[1]|."""
    sched.set_timesteps(10)
    t, t_next = int(sched.timesteps[0]), int(sched.timesteps[1])
    g = torch.Generator().manual_seed(1)
    x, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    a_t, a_prev = sched.alphas_cumprod[t], sched.alphas_cumprod[t_next]
    x0_hat = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    expected = a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps
    got, x0 = sched.step(eps, t, x)
    assert torch.allclose(x0, x0_hat, atol=1e-5)
    return (got - expected).abs().max().item()


def test_ddim_steps_to_next_used_timestep():
    ours = DDIMScheduler(clip_sample=False, **PAPER)
    assert _ddim_first_step_error(ours) < 1e-5
    assert ours.timesteps[:2].tolist() == [999, 888]


def test_ddim_fault_exists_in_monai_1_6_1():
    """Canary: plain MONAI steps 999 -> 899 while the next call is at 888 (drop our override if this fails)."""
    assert _ddim_first_step_error(MonaiDDIM(clip_sample=False, **PAPER)) > 1e-3


def test_ddim_every_step_matches_closed_form_and_inversion_roundtrips():
    sched = build_scheduler("ddim", num_inference_steps=7)
    ts = sched.timesteps.tolist()
    g = torch.Generator().manual_seed(2)
    x, eps = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    for i, t in enumerate(ts):
        a_t = sched.alphas_cumprod[t]
        a_prev = sched.alphas_cumprod[ts[i + 1]] if i + 1 < len(ts) else torch.tensor(1.0)
        x0_hat = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
        got, _ = sched.step(eps, t, x)
        assert torch.allclose(got, a_prev.sqrt() * x0_hat + (1 - a_prev).sqrt() * eps, atol=1e-5)
    # inversion walks up to the next used timestep: with a constant eps it is the exact inverse of step
    t, t_up = ts[-2], ts[-3]
    up, _ = sched.reversed_step(eps, t, x)
    down, _ = sched.step(eps, t_up, up)
    assert torch.allclose(down, x, atol=1e-4)
    with pytest.raises(ValueError, match="last of the inference timesteps"):
        sched.reversed_step(eps, ts[0], x)


def test_ddim_gaussian_data_mean_std_at_20_steps():
    mu, s = 0.5, 1.0
    sched = build_scheduler("ddim", num_inference_steps=20)
    x, x_start = _sample(sched, _gaussian_denoiser(mu, s))
    exact = _exact_ode(x_start, sched.alphas_cumprod[sched.timesteps[0]], mu, s)
    assert abs(x.mean().item() - exact.mean().item()) < 0.02  # plain MONAI: 0.034
    assert abs(x.std().item() - exact.std().item()) < 0.1  # first-order solver: measured 0.917 vs 1.0


# ---------------------------------------------------------------- DDPM: posterior between the used timesteps
def _ddpm_step_error(sched) -> float:
    """|step() - closed-form posterior q(x_t' | x_t, x0) sample with the same noise| at 10 steps."""
    sched.set_timesteps(10)
    t, t_prev = int(sched.timesteps[0]), int(sched.timesteps[1])
    g = torch.Generator().manual_seed(3)
    x, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    a_t, a_p = sched.alphas_cumprod[t], sched.alphas_cumprod[t_prev]
    beta = 1 - a_t / a_p
    x0 = (x - (1 - a_t).sqrt() * eps) / a_t.sqrt()
    mean = a_p.sqrt() * beta / (1 - a_t) * x0 + (a_t / a_p).sqrt() * (1 - a_p) / (1 - a_t) * x
    var = (1 - a_p) / (1 - a_t) * beta
    noise = torch.randn(4, 3, generator=torch.Generator().manual_seed(9))
    got, _ = sched.step(eps, t, x, generator=torch.Generator().manual_seed(9))
    return (got - (mean + var.sqrt() * noise)).abs().max().item()


def test_ddpm_uses_posterior_between_used_timesteps():
    assert _ddpm_step_error(DDPMScheduler(clip_sample=False, **PAPER)) < 1e-5


def test_ddpm_fault_exists_in_monai_1_6_1():
    """Canary: plain MONAI uses betas[t] and abar[t-1] although the chain jumps t -> t'."""
    assert _ddpm_step_error(MonaiDDPM(clip_sample=False, **PAPER)) > 1e-2


def test_ddpm_all_steps_equals_monai():
    """With N = T the exact posterior is MONAI's single-step one: same numbers for the same noise."""
    ours, theirs = DDPMScheduler(clip_sample=False, **PAPER), MonaiDDPM(clip_sample=False, **PAPER)
    for sched in (ours, theirs):
        sched.set_timesteps(1000)
    x, eps = torch.randn(3, 2), torch.randn(3, 2)
    for t in (999, 500, 1):
        a, _ = ours.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        b, _ = theirs.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        assert torch.allclose(a, b, atol=1e-6)


def test_ddpm_gaussian_data_at_100_steps():
    mu, s = 1.5, 0.5
    x, _ = _sample(build_scheduler("ddpm", num_inference_steps=100), _gaussian_denoiser(mu, s), stochastic=True)
    assert abs(x.mean().item() - mu) < 0.03  # plain MONAI: mean 0.03, std 1.0 (pure noise left)
    assert abs(x.std().item() - s) < 0.06  # measured 0.462 (ancestral sampling with 100 of 1000 steps)


def test_ddim_eta_one_equals_ddpm_posterior():
    """DDIM with eta=1 is the DDPM posterior step (Song et al. 2021): the two fixes agree with each other."""
    ddim, ddpm = build_scheduler("ddim", num_inference_steps=10), build_scheduler("ddpm", num_inference_steps=10)
    assert torch.equal(ddim.timesteps, ddpm.timesteps)
    x, eps = torch.randn(3, 4, dtype=torch.float64), torch.randn(3, 4, dtype=torch.float64)
    for t in ddim.timesteps[:-1].tolist():
        a, _ = ddim.step(eps, t, x, eta=1.0, generator=torch.Generator().manual_seed(t))
        b, _ = ddpm.step(eps, t, x, generator=torch.Generator().manual_seed(t))
        assert torch.allclose(a, b, atol=1e-5), t


# ---------------------------------------------------------------- PNDM
@pytest.mark.parametrize("skip_prk_steps", [True, False])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_pndm_point_mass_lands_on_x0(skip_prk_steps, prediction_type):
    x0 = torch.tensor([0.7, -1.3, 2.0], dtype=torch.float64)
    sched = PNDMScheduler(skip_prk_steps=skip_prk_steps, prediction_type=prediction_type, **PAPER)
    sched.set_timesteps(10)
    for _ in range(2):  # a second run without set_timesteps starts fresh
        x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        for t in sched.timesteps:
            ab = sched.alphas_cumprod[t].double()
            eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
            out = eps if prediction_type == "epsilon" else ab.sqrt() * eps - (1 - ab).sqrt() * x0
            x, pred_x0 = sched.step(out, t, x)
        assert (x - x0).abs().max().item() < 1e-4
        assert (pred_x0 - x0).abs().max().item() < 1e-4


def test_pndm_fault_exists_in_monai_1_6_1():
    """Canary: plain MONAI's PLMS calls the model one timestep too low after the first step (error 0.34)."""
    x0 = torch.tensor([0.7, -1.3, 2.0])
    sched = MonaiPNDM(skip_prk_steps=True, set_alpha_to_one=True, **PAPER)
    sched.set_timesteps(10)
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    for t in sched.timesteps:
        ab = sched.alphas_cumprod[t]
        x, _ = sched.step((x - ab.sqrt() * x0) / (1 - ab).sqrt(), t, x)
    assert (x - x0).abs().max().item() > 0.1


# ---------------------------------------------------------------- DPM-Solver++ 2M
@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction", "sample"])
def test_dpmpp2m_point_mass_lands_on_x0_in_10_steps(prediction_type):
    x0 = torch.tensor([0.7, -1.3, 2.0], dtype=torch.float64)
    sched = build_scheduler("dpmpp2m", prediction_type=prediction_type, num_inference_steps=10)
    assert len(sched.timesteps) == 10 and int(sched.timesteps[0]) == 999 and int(sched.timesteps[-1]) == 0
    x = torch.randn(4, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for t in sched.timesteps:
        ab = sched.alphas_cumprod[t].double()
        eps = (x - ab.sqrt() * x0) / (1 - ab).sqrt()
        out = {"epsilon": eps, "v_prediction": ab.sqrt() * eps - (1 - ab).sqrt() * x0, "sample": x0.expand_as(x)}
        x, _ = sched.step(out[prediction_type], t, x)
    assert (x - x0).abs().max().item() < 1e-5


@pytest.mark.parametrize("prediction_type", ["epsilon", "v_prediction"])
def test_dpmpp2m_gaussian_data_matches_exact_ode(prediction_type):
    mu, s = 1.5, 0.5
    predict = _gaussian_denoiser(mu, s)
    errors = {}
    for name in ("dpmpp2m", "ddim"):
        sched = build_scheduler(name, prediction_type=prediction_type, num_inference_steps=15)
        x, x_start = _sample(sched, predict, prediction_type)
        exact = _exact_ode(x_start, sched.alphas_cumprod[sched.timesteps[0]], mu, s)
        errors[name] = (x - exact).abs().max().item()
        if name == "dpmpp2m":
            assert abs(x.mean().item() - exact.mean().item()) < 0.01
            assert abs(x.std().item() - exact.std().item()) < 0.02
    assert errors["dpmpp2m"] < 0.05  # measured 0.026 at 15 steps (0.031 at 10, 0.014 at 20)
    assert errors["dpmpp2m"] < errors["ddim"] / 5  # DDIM (first order, even t): 0.44


def test_dpmpp2m_restarts_history_and_rejects_foreign_timesteps():
    sched = build_scheduler("dpmpp2m", num_inference_steps=6)
    predict = _gaussian_denoiser(0.0, 1.0)
    a, _ = _sample(sched, predict, n=8, seed=5)
    b, _ = _sample(sched, predict, n=8, seed=5)  # no set_timesteps in between
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="not one of this scheduler's timesteps"):
        sched.step(torch.zeros(1), 998, torch.zeros(1))


# ---------------------------------------------------------------- factory and validation
def test_build_scheduler_defaults_and_types():
    expected = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "pndm": PNDMScheduler,
                "dpmpp2m": DPMSolverMultistepScheduler}
    ref = torch.linspace(0.0015**0.5, 0.0205**0.5, 1000, dtype=torch.float32) ** 2
    for name, cls in expected.items():
        sched = build_scheduler(name)
        assert type(sched) is cls
        assert torch.allclose(sched.betas, ref)
        x, n = torch.randn(2, 3), torch.randn(2, 3)
        t = torch.tensor([10, 900])
        assert torch.allclose(sched.add_noise(x, n, t)[1], sched.alphas_cumprod[900].sqrt() * x[1]
                              + (1 - sched.alphas_cumprod[900]).sqrt() * n[1])
        assert sched.get_velocity(x, n, t).shape == (2, 3)
    lin = build_scheduler("ddim", schedule="linear_beta", beta_start=1e-4, beta_end=0.02)
    assert math.isclose(float(lin.betas[-1]), 0.02, rel_tol=1e-6)
    assert build_scheduler("ddim").clip_sample is False  # latents are not in [-1, 1]
    assert build_scheduler("ddim", num_inference_steps=5).timesteps.tolist() == [999, 749, 500, 250, 0]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(name="euler"), "unknown scheduler 'euler'; valid names: ddpm, ddim, pndm, dpmpp2m"),
        (dict(name="ddim", schedule="cosine"), "valid schedules: scaled_linear_beta, linear_beta"),
        (dict(name="pndm", prediction_type="sample"), "not supported by pndm"),
        (dict(name="ddim", beta_start=0.03, beta_end=0.02), "beta_start < beta_end"),
        (dict(name="ddpm", num_train_timesteps=0), "positive integer"),
    ],
)
def test_build_scheduler_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        build_scheduler(**kwargs)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["ddpm", "ddim", "pndm", "dpmpp2m"])
@pytest.mark.parametrize("steps", [0, -3, 1001])
def test_steps_out_of_range(name, steps):
    sched = build_scheduler(name)
    with pytest.raises(ValueError, match=r"num_inference_steps=-?\d+ is out of range; use 1\.\.1000"):
        sched.set_timesteps(steps)


def test_import_is_light():
    import subprocess
    import sys

    code = "import sys, common.schedulers as s; assert 'torch' not in sys.modules; assert 'build_scheduler' in dir(s)"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("abar", [0.3, torch.tensor(0.91)])
def test_prediction_helper_matches_the_closed_forms(abar):
    from common.schedulers.prediction import predict_x0_eps

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64), torch.randn(2, 3, 5, 5, generator=g, dtype=torch.float64)
    alpha, sigma = float(abar) ** 0.5, (1 - float(abar)) ** 0.5
    x_t, v = alpha * x0 + sigma * eps, alpha * eps - sigma * x0
    for prediction_type, output in (("epsilon", eps), ("v_prediction", v), ("sample", x0)):
        got_x0, got_eps = predict_x0_eps(output, x_t, abar, prediction_type)
        torch.testing.assert_close(got_x0, x0, rtol=0, atol=1e-6)
        torch.testing.assert_close(got_eps, eps, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="not one of epsilon, v_prediction, sample"):
        predict_x0_eps(eps, x_t, abar, "velocity")
