"""Diffusion schedulers on MONAI's interface with MONAI 1.6.1's faults fixed, plus DPM-Solver++ 2M.

``build_scheduler(name, ...)`` with name in ddpm | ddim | pndm | dpmpp2m. Names resolve lazily so that
``import common.schedulers`` does not import torch / monai.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "build_scheduler": "factory",
    "SCHEDULERS": "factory",
    "SCHEDULES": "factory",
    "DDIMScheduler": "ddim",
    "DDPMScheduler": "ddpm",
    "PNDMScheduler": "pndm",
    "DPMSolverMultistepScheduler": "dpm_solver",
    "check_num_steps": "_timesteps",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
