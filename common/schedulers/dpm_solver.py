"""DPM-Solver++ 2M (Lu et al. 2022, "DPM-Solver++", multistep second order, data prediction) on MONAI's
scheduler interface, so that a few-step sampler (10-20 UNet calls) drops in where DDIM is used.

Update from s to t with h = lambda_t - lambda_s, lambda = log(alpha / sigma), alpha = sqrt(abar), sigma = sqrt(1-abar):
first order  x_t = sigma_t / sigma_s x_s - alpha_t (e^{-h} - 1) D0;
second order adds - 0.5 alpha_t (e^{-h} - 1) D1, D1 = (D0 - D_prev) h / h_prev,
where D are the model's x0 predictions. The first step has no history and the last step (to the clean end,
sigma = 0) is first order ("lower order final"), as in the reference algorithm.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.networks.schedulers import Scheduler

from ._timesteps import check_num_steps
from .prediction import PREDICTION_TYPES, predict_x0_eps


def lambda_uniform_timesteps(alphas_cumprod: torch.Tensor, n: int) -> np.ndarray:
    """``n`` strictly decreasing integer timesteps from T-1 to 0, evenly spaced in lambda = log(alpha / sigma)."""
    abar = alphas_cumprod.double().cpu().numpy()
    lam = 0.5 * (np.log(abar) - np.log1p(-abar))  # decreasing in t
    t_grid = np.arange(len(abar), dtype=np.float64)
    targets = np.linspace(lam[-1], lam[0], n) if n > 1 else lam[-1:]
    steps = np.interp(targets, lam[::-1], t_grid[::-1]).round().astype(np.int64)  # descending in t
    for i in range(n - 2, -1, -1):  # rounding can repeat small timesteps: keep them strictly decreasing
        steps[i] = max(steps[i], steps[i + 1] + 1)
    steps = np.minimum(steps, len(abar) - 1 - np.arange(n))
    return steps


class DPMSolverMultistepScheduler(Scheduler):
    """DPM-Solver++ 2M: ``set_timesteps(n)``, ``timesteps``, ``step(model_output, t, sample) -> (prev, x0)``.

    Args:
        num_train_timesteps: training timesteps T.
        schedule: MONAI noise schedule name (``scaled_linear_beta`` / ``linear_beta``).
        prediction_type: what the network predicts: ``epsilon``, ``v_prediction`` or ``sample``.
        clip_sample: clamp predicted x0 to [clip_sample_min, clip_sample_max] (pixel-space models only).
        schedule_args: ``beta_start``, ``beta_end`` for the schedule.
    """

    def __init__(
        self,
        num_train_timesteps: int = 1000,
        schedule: str = "scaled_linear_beta",
        prediction_type: str = "epsilon",
        clip_sample: bool = False,
        clip_sample_min: float = -1.0,
        clip_sample_max: float = 1.0,
        **schedule_args,
    ) -> None:
        super().__init__(num_train_timesteps, schedule, **schedule_args)
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
        self.prediction_type = prediction_type
        self.clip_sample = clip_sample
        self.clip_sample_values = [clip_sample_min, clip_sample_max]
        self.init_noise_sigma = 1.0
        self.set_timesteps(num_train_timesteps)

    def set_timesteps(self, num_inference_steps: int, device: str | torch.device | None = None) -> None:
        """N timesteps from T-1 to 0, uniform in log-SNR (lambda); the last step goes from t=0 to clean.

        Why lambda-uniform ("logSNR" spacing of Lu et al.): the solver is exact in lambda up to its order, and the
        paper's schedule (beta 0.0015..0.0205) moves lambda fast near t=0. On Gaussian data with the exact
        denoiser, 10 steps land within 0.03 of the exact ODE solution this way, against 0.59 with evenly
        spaced timesteps (tests/test_schedulers.py).
        """
        n = check_num_steps(num_inference_steps, self.num_train_timesteps)
        self.num_inference_steps = n
        self.timesteps = torch.from_numpy(lambda_uniform_timesteps(self.alphas_cumprod, n)).to(device)
        self._history: list[tuple[int, float, torch.Tensor]] = []  # (index, lambda, x0) of the previous step

    def _abar(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else 1.0

    def _alpha_sigma(self, t: int) -> tuple[float, float]:
        abar = self._abar(t)
        return abar**0.5, (1.0 - abar) ** 0.5

    def _x0(self, model_output: torch.Tensor, sample: torch.Tensor, t: int) -> torch.Tensor:
        x0, _ = predict_x0_eps(model_output, sample, self._abar(t), self.prediction_type)
        if self.clip_sample:
            x0 = torch.clamp(x0, self.clip_sample_values[0], self.clip_sample_values[1])
        return x0

    def step(
        self, model_output: torch.Tensor, timestep: int | torch.Tensor, sample: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One solver step from ``timestep`` to the next timestep (or to clean after the last); (prev, x0)."""
        t = int(timestep)
        steps = self.timesteps.tolist()
        if t not in steps:
            raise ValueError(f"timestep {t} is not one of this scheduler's timesteps; iterate over .timesteps")
        i = steps.index(t)
        t_next = steps[i + 1] if i + 1 < len(steps) else -1
        alpha_s, sigma_s = self._alpha_sigma(t)
        alpha_t, sigma_t = self._alpha_sigma(t_next)
        x0 = self._x0(model_output, sample, t)
        lam_s = float(np.log(alpha_s) - np.log(sigma_s))
        if t_next < 0:  # clean end: sigma_t = 0, first-order update gives x0 exactly
            prev = x0
        else:
            lam_t = float(np.log(alpha_t) - np.log(sigma_t))
            h = lam_t - lam_s
            phi = float(np.expm1(-h))  # e^{-h} - 1
            d = x0
            if self._history and self._history[-1][0] == i - 1:  # second order only right after step i-1
                _, lam_prev, x0_prev = self._history[-1]
                r = (lam_s - lam_prev) / h
                d = x0 + 0.5 * (x0 - x0_prev) / r
            prev = (sigma_t / sigma_s) * sample - alpha_t * phi * d
        self._history = [(i, lam_s, x0)]
        return prev, x0
