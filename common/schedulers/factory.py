"""``build_scheduler(name, ...)``: one entry point for bundle configs and the ``scheduler`` override."""

from __future__ import annotations

from typing import Any

SCHEDULERS = ("ddpm", "ddim", "pndm", "dpmpp2m")
SCHEDULES = ("scaled_linear_beta", "linear_beta")
_PREDICTIONS = {
    "ddpm": ("epsilon", "v_prediction", "sample"),
    "ddim": ("epsilon", "v_prediction", "sample"),
    "pndm": ("epsilon", "v_prediction"),
    "dpmpp2m": ("epsilon", "v_prediction", "sample"),
}


def build_scheduler(
    name: str,
    num_train_timesteps: int = 1000,
    schedule: str = "scaled_linear_beta",
    beta_start: float = 0.0015,
    beta_end: float = 0.0205,
    prediction_type: str = "epsilon",
    num_inference_steps: int | None = None,
    **kw: Any,
):
    """A scheduler with MONAI's interface and the MONAI 1.6.1 faults fixed.

    Defaults are the paper's (scaled linear betas 0.0015..0.0205, T=1000). ``clip_sample`` defaults to False
    (latent diffusion: latents are not in [-1, 1]); other ``kw`` go to the scheduler class. With
    ``num_inference_steps`` the timesteps are set right away (handy in bundle configs).
    """
    key = str(name).strip().lower()
    if key not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; valid names: {', '.join(SCHEDULERS)}")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown noise schedule {schedule!r}; valid schedules: {', '.join(SCHEDULES)}")
    if isinstance(num_train_timesteps, bool) or not isinstance(num_train_timesteps, int) or num_train_timesteps < 1:
        raise ValueError(f"num_train_timesteps must be a positive integer, got {num_train_timesteps!r}")
    if not 0 < beta_start < beta_end < 1:
        raise ValueError(f"need 0 < beta_start < beta_end < 1, got beta_start={beta_start}, beta_end={beta_end}")
    if prediction_type not in _PREDICTIONS[key]:
        raise ValueError(
            f"prediction_type {prediction_type!r} is not supported by {key}; use one of {', '.join(_PREDICTIONS[key])}"
        )
    common = dict(num_train_timesteps=num_train_timesteps, schedule=schedule, beta_start=beta_start,
                  beta_end=beta_end, prediction_type=prediction_type)
    if key == "ddpm":
        from .ddpm import DDPMScheduler

        sched = DDPMScheduler(**common, **{"clip_sample": False, **kw})
    elif key == "ddim":
        from .ddim import DDIMScheduler

        sched = DDIMScheduler(**common, **{"clip_sample": False, **kw})
    elif key == "pndm":
        from .pndm import PNDMScheduler

        sched = PNDMScheduler(**common, **kw)
    else:
        from .dpm_solver import DPMSolverMultistepScheduler

        sched = DPMSolverMultistepScheduler(**common, **kw)
    if num_inference_steps is not None:
        sched.set_timesteps(num_inference_steps)
    return sched
