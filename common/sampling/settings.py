"""Generation settings: the one place that validates what a user passes to a sampling run.

One rule per setting, each a one-line ``SettingsError`` naming the override and what to pass. Settings are
passed per call (``LatentDiffusionSampler.sample(..., num_inference_steps=..., guidance_scale=...)``), never
kept as sampler state that callers mutate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

MAX_INFERENCE_STEPS = 1000
MAX_GUIDANCE_SCALE = 50.0
MAX_NUM_SAMPLES = 100_000


class SettingsError(ValueError):
    """A generation setting has the wrong type or is out of range."""


def check_int(name: str, value: Any, low: int, high: int | None = None) -> int:
    """An integer (not a bool, not 2.5) in [low, high]."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise SettingsError(f"{name} must be an integer, got {value!r}: pass e.g. --{name} {max(low, 1)}")
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise SettingsError(f"{name} must be an integer {bound}, got {value}")
    return value


def check_float(name: str, value: Any, low: float, high: float, example: str) -> float:
    """A finite number in [low, high]."""
    if isinstance(value, bool):
        raise SettingsError(f"{name} must be a number, got {value!r}: pass e.g. --{name} {example}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise SettingsError(f"{name} must be a number, got {value!r}: pass e.g. --{name} {example}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise SettingsError(f"{name} must be a finite number in [{low:g}, {high:g}], got {value!r}: e.g. --{name} {example}")
    return number


def check_bool(name: str, value: Any) -> bool:
    """true / false (a bool, or the strings true/false/1/0/yes/no)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def check_num_samples(value: Any) -> int:
    """The one rule for num_samples, shared by the run settings and the conditioners."""
    return check_int("num_samples", value, 1, MAX_NUM_SAMPLES)


def check_num_inference_steps(value: Any) -> int:
    return check_int("num_inference_steps", value, 1, MAX_INFERENCE_STEPS)


def check_guidance_scale(value: Any) -> float:
    """0 = the null model alone, 1 = no guidance, > 1 = classifier-free guidance."""
    return check_float("guidance_scale", value, 0.0, MAX_GUIDANCE_SCALE, "3.0 (1.0 = no guidance)")


@dataclass(frozen=True)
class GenerationSettings:
    """Per-call settings of one sampling call, validated on construction."""

    num_inference_steps: int = 50
    guidance_scale: float = 1.0
    progress: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_inference_steps", check_num_inference_steps(self.num_inference_steps))
        object.__setattr__(self, "guidance_scale", check_guidance_scale(self.guidance_scale))
        object.__setattr__(self, "progress", check_bool("progress", self.progress))

    @property
    def guided(self) -> bool:
        return self.guidance_scale != 1.0

    @classmethod
    def from_config(cls, parser: Any, **overrides: Any) -> "GenerationSettings":
        """The settings a bundle config holds (its `num_inference_steps`, `guidance_scale`, `progress` ids)."""
        values = {f: parser.get_parsed_content(f) for f in ("num_inference_steps", "guidance_scale", "progress") if f in parser}
        return cls(**{**values, **overrides})


@dataclass(frozen=True)
class RunSettings:
    """What a sampling run writes: how many samples, from which seed, in batches of what size."""

    num_samples: int = 1
    seed: int = 0
    batch_size: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_samples", check_num_samples(self.num_samples))
        object.__setattr__(self, "seed", check_int("seed", self.seed, 0, 2**63 - 1))
        object.__setattr__(self, "batch_size", check_int("batch_size", self.batch_size, 1))
