"""What one pipeline step is, checked once when the pipeline starts (before anything runs).

A step is a dict in the pipeline config:

* ``name``: its output folder ``OUT/<name>`` (a plain file-name part, unique in the pipeline);
* ``bundle`` + ``configs`` (file names in the bundle's ``configs/``, default ``["inference.json"]``) +
  ``overrides``: a bundle run; ``foreach`` (a list of override dicts) runs the bundle once per item into the
  same folder (e.g. one run per condition);
* or ``call``: a glue function as a MONAI component with ``"_mode_": "callable"``, called with its keywords.

Strings in overrides and keywords may hold ``{out}`` (this step's folder) and ``{step:NAME}`` (an earlier step's
folder); the runner substitutes them, so a step only reads what earlier steps finished.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STEP_REF = re.compile(r"\{step:([^}]+)\}")


class PipelineError(RuntimeError):
    """A pipeline cannot run or a step failed; the message is one line naming the step and the fix."""


@dataclass(frozen=True)
class Step:
    """One checked step (see the module docstring)."""

    name: str
    bundle: str | None = None
    configs: tuple[str, ...] = ("inference.json",)
    overrides: dict[str, Any] = field(default_factory=dict)
    foreach: tuple[dict[str, Any], ...] = ()
    call: Callable[..., Any] | None = None

    @property
    def kind(self) -> str:
        return "bundle" if self.bundle else "call"

    @property
    def label(self) -> str:
        if self.bundle:
            return f"{self.bundle} ({', '.join(self.configs)})"
        func = self.call.func if isinstance(self.call, functools.partial) else self.call
        return f"{getattr(func, '__module__', '?')}.{getattr(func, '__qualname__', '?')}"

    def upstream(self) -> list[str]:
        """Names of the earlier steps whose folders this step reads (``{step:NAME}`` anywhere in its values)."""
        text = json.dumps(self.describe(), default=str)
        return sorted(set(_STEP_REF.findall(text)))

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (for the fingerprint and provenance)."""
        out: dict[str, Any] = {"kind": self.kind, "label": self.label}
        if self.bundle:
            out.update(bundle=self.bundle, configs=list(self.configs), overrides=self.overrides,
                       foreach=list(self.foreach))
        else:
            keywords = self.call.keywords if isinstance(self.call, functools.partial) else {}
            out.update(keywords=keywords)
        return out


def _check_config_names(name: str, configs: Any) -> tuple[str, ...]:
    if isinstance(configs, str):
        configs = [configs]
    if not isinstance(configs, Sequence) or not configs or not all(isinstance(c, str) and c for c in configs):
        raise PipelineError(f"step '{name}': configs must be a list of config file names, e.g. [\"inference.json\"]")
    if any(Path(c).name != c for c in configs):
        raise PipelineError(f"step '{name}': configs are file names inside the bundle's configs/ folder, got {list(configs)}")
    return tuple(configs)


def parse_steps(raw: Sequence[Mapping[str, Any]]) -> list[Step]:
    """Check every step (names, kinds, references to earlier steps) before the first one runs."""
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        raise PipelineError("a pipeline needs a non-empty list of steps")
    steps: list[Step] = []
    for i, item in enumerate(raw):
        if not isinstance(item, Mapping):
            raise PipelineError(f"step {i} is not an object with a name and a bundle or a call")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise PipelineError(f"step {i}: name must be a plain file-name part (letters, digits, _ . -), got {name!r}")
        if any(s.name == name for s in steps):
            raise PipelineError(f"step name '{name}' is used twice: give every step its own name")
        unknown = set(item) - {"name", "bundle", "configs", "overrides", "foreach", "call"}
        if unknown:
            raise PipelineError(f"step '{name}': unknown field(s) {sorted(unknown)}; use bundle, configs, overrides, "
                                "foreach or call")
        bundle, call = item.get("bundle"), item.get("call")
        if bool(bundle) == (call is not None):
            raise PipelineError(f"step '{name}': give exactly one of bundle (a bundle name) or call (a glue function)")
        if call is not None and not callable(call):
            raise PipelineError(f"step '{name}': call must be a component with \"_mode_\": \"callable\"")
        overrides = item.get("overrides") or {}
        foreach = item.get("foreach") or []
        if not isinstance(overrides, Mapping) or not isinstance(foreach, Sequence) or not all(
            isinstance(f, Mapping) for f in foreach
        ):
            raise PipelineError(f"step '{name}': overrides must be an object and foreach a list of objects")
        if bundle is not None and (not isinstance(bundle, str) or not _NAME.match(bundle)):
            raise PipelineError(f"step '{name}': bundle must be a bundle name, got {bundle!r}")
        step = Step(name=name, bundle=bundle, configs=_check_config_names(name, item.get("configs", ["inference.json"])),
                    overrides=dict(overrides), foreach=tuple(dict(f) for f in foreach), call=call)
        missing = [u for u in step.upstream() if u not in {s.name for s in steps}]
        if missing:
            raise PipelineError(f"step '{name}' reads {{step:{missing[0]}}}, which is not an earlier step")
        steps.append(step)
    return steps


def substitute(value: Any, out: str, folders: Mapping[str, str]) -> Any:
    """``value`` with ``{out}`` and ``{step:NAME}`` replaced in every string (recursively)."""
    if isinstance(value, str):
        text = value.replace("{out}", out)
        return _STEP_REF.sub(lambda m: folders[m.group(1)], text)
    if isinstance(value, Mapping):
        return {k: substitute(v, out, folders) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [substitute(v, out, folders) for v in value]
    return value


def pipeline_bundles(path: str | Path) -> list[str]:
    """The bundle names a pipeline config's steps use (read from the JSON, nothing evaluated)."""
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"pipeline {path} does not exist: see pipelines/ for the names") from None
    except json.JSONDecodeError as err:
        raise PipelineError(f"pipeline {path} is not valid JSON ({err.msg} at line {err.lineno})") from None
    steps = config.get("steps") if isinstance(config, dict) else None
    if not isinstance(steps, list):
        raise PipelineError(f"pipeline {path} has no list of steps")
    names: list[str] = []
    for step in steps:
        bundle = step.get("bundle") if isinstance(step, dict) else None
        if isinstance(bundle, str) and bundle not in names:
            names.append(bundle)
    return names
