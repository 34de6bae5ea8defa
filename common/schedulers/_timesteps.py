"""Timestep bookkeeping shared by the fixed schedulers: validate step counts, find the next timestep used."""

from __future__ import annotations

import torch


def check_num_steps(num_inference_steps: int, num_train_timesteps: int) -> int:
    """Validate an inference step count (1..T) with a one-line error naming the fix."""
    if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int):
        try:
            as_int = int(num_inference_steps)
        except (TypeError, ValueError):
            as_int = None
        if as_int is None or as_int != num_inference_steps:
            raise ValueError(f"num_inference_steps must be an integer, got {num_inference_steps!r}")
        num_inference_steps = as_int
    if not 1 <= num_inference_steps <= num_train_timesteps:
        raise ValueError(
            f"num_inference_steps={num_inference_steps} is out of range; use 1..{num_train_timesteps} "
            "(the number of training timesteps)"
        )
    return num_inference_steps


def _as_int(timestep: int | torch.Tensor) -> int:
    return int(timestep.item()) if isinstance(timestep, torch.Tensor) else int(timestep)


def prev_timestep(timesteps: torch.Tensor, timestep: int | torch.Tensor) -> int:
    """The next timestep the sampling loop will actually use after ``timestep`` (``-1``: the clean end).

    ``timesteps`` is descending; a timestep not in it steps to the largest used timestep below it.
    """
    t = _as_int(timestep)
    below = timesteps[timesteps < t]
    return int(below.max().item()) if below.numel() else -1


def next_timestep(timesteps: torch.Tensor, timestep: int | torch.Tensor) -> int:
    """The smallest used timestep above ``timestep`` (for inversion, which walks the chain upwards)."""
    t = _as_int(timestep)
    above = timesteps[timesteps > t]
    if not above.numel():
        raise ValueError(
            f"timestep {t} is the last of the inference timesteps; inversion cannot step past it "
            "(stop the loop one step earlier)"
        )
    return int(above.min().item())
