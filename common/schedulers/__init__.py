"""Diffusion schedulers on MONAI's interface with MONAI 1.6.1's faults fixed, plus DPM-Solver++ 2M.

``build_scheduler(name, ...)`` with name in ddpm | ddim | pndm | dpmpp2m. Names resolve lazily so that
``import common.schedulers`` does not import torch / monai.
"""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {
    "build_scheduler": "factory",
    "SCHEDULERS": "factory",
    "SCHEDULES": "factory",
    "DDIMScheduler": "ddim",
    "DDPMScheduler": "ddpm",
    "PNDMScheduler": "pndm",
    "DPMSolverMultistepScheduler": "dpm_solver",
    "check_num_steps": "_timesteps",
    "predict_x0_eps": "prediction",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
