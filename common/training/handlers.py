"""Ignite handlers of the training room: safetensors export, resume from the latest checkpoint, progress.

Periodic full checkpoints (networks, optimisers, losses, progress) are MONAI's CheckpointSaver; these
handlers add what it lacks: export of the inference weights as safetensors (with the latent scale factor in
the metadata), and resuming from whatever checkpoint is newest in a folder (a crashed run restarts with the
same command).
"""

from __future__ import annotations

import glob
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from ignite.engine import Engine, Events

from common.sampling.denoiser import unwrap

logger = logging.getLogger(__name__)


def _is_main_process() -> bool:
    return not (torch.distributed.is_available() and torch.distributed.is_initialized()) or (
        torch.distributed.get_rank() == 0
    )


class EngineProgress:
    """state_dict / load_state_dict of an engine's epoch and iteration only.

    Ignite's own Engine.state_dict() in MONAI's trainers includes the network objects themselves, which cannot
    be loaded with weights_only=True; this keeps checkpoints to plain tensors and ints.
    """

    def __init__(self) -> None:
        self.engine: Engine | None = None

    def attach(self, engine: Engine) -> None:
        self.engine = engine

    def state_dict(self) -> dict[str, int]:
        if self.engine is None:
            raise RuntimeError("EngineProgress is not attached to a trainer (add it to train_handlers)")
        return {"epoch": int(self.engine.state.epoch), "iteration": int(self.engine.state.iteration)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.engine is None:
            raise RuntimeError("EngineProgress is not attached to a trainer (add it to train_handlers)")
        self.engine.state.epoch = int(state["epoch"])
        self.engine.state.iteration = int(state["iteration"])


def checkpoints_newest_first(checkpoint_dir: str, pattern: str = "*.pt") -> list[str]:
    """Checkpoint files in a folder, newest (by modification time) first."""
    files = [f for f in glob.glob(os.path.join(checkpoint_dir, pattern)) if os.path.isfile(f)]
    return sorted(files, key=os.path.getmtime, reverse=True)


def _announce(message: str) -> None:
    """A line the user must see whatever the logging set-up (resume decisions), once per run (main process)."""
    if _is_main_process():
        print(message, flush=True)


class ResumeFromLatest:
    """At STARTED, load the newest checkpoint in `checkpoint_dir` (if any) into `load_dict`; else start from
    `init_weights` (if given); else from scratch.

    Uses MONAI's CheckpointLoader (torch.load with weights_only=True). `resume=False` ignores checkpoints.
    `init_weights`: exported inference weights (e.g. the bundle's shipped `models/*.safetensors`) loaded strictly
    into `network` with a fresh optimiser; the iteration and epoch counters continue from the weights' metadata,
    so later exports keep counting. Why: continuing the shipped weights on a new machine, which has no
    checkpoints, is how they were trained across sessions.
    """

    def __init__(
        self,
        checkpoint_dir: str,
        load_dict: Mapping[str, Any],
        resume: bool = True,
        pattern: str = "*.pt",
        init_weights: str | None = None,
        network: torch.nn.Module | None = None,
    ) -> None:
        if init_weights and network is None:
            raise ValueError("ResumeFromLatest: init_weights needs the network to load them into")
        from common.sampling.settings import check_bool

        self.checkpoint_dir = checkpoint_dir
        self.load_dict = dict(load_dict)
        self.resume = check_bool("resume", resume)
        self.pattern = pattern
        self.init_weights = init_weights or None
        self.network = network
        self.loaded_from: str | None = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine: Engine) -> None:
        from monai.handlers import CheckpointLoader

        from common.cli import one_line

        candidates = checkpoints_newest_first(self.checkpoint_dir, self.pattern) if self.resume else []
        if not candidates:
            if self.init_weights:
                self._start_from_weights(engine)
            else:
                _announce(f"no checkpoint in {self.checkpoint_dir}: training from scratch")
            return
        failures = []
        for path in candidates:  # a checkpoint cut short by a crash is skipped for the one before it
            try:
                CheckpointLoader(load_path=path, load_dict=self.load_dict, map_location="cpu", strict=True)(engine)
            except Exception as exc:
                why = one_line(exc).split(". ")[0][:80]  # torch's reasons run to several sentences
                failures.append(f"{os.path.basename(path)}: {why}")
                _announce(f"checkpoint {path} does not load ({why}): trying the one before it")
                continue
            self.loaded_from = path
            _announce(f"resumed from {path} at epoch {engine.state.epoch}, iteration {engine.state.iteration}")
            return
        raise TrainingError(f"no checkpoint in {self.checkpoint_dir} loads ({len(failures)} tried; "
                            f"{failures[0]}): delete them or pass --resume false to start from scratch")

    def _start_from_weights(self, engine: Engine) -> None:
        from common.weights import load_into

        metadata = load_into(unwrap(self.network), self.init_weights, strict=True)
        for key in ("epoch", "iteration"):
            if str(metadata.get(key, "")).isdigit():
                setattr(engine.state, key, int(metadata[key]))
        self.loaded_from = self.init_weights
        _announce(f"no checkpoint in {self.checkpoint_dir}: starting from the weights {self.init_weights} "
                  f"(iteration {engine.state.iteration}, fresh optimiser)")


class SafetensorsExport:
    """Write `network`'s weights to `path` as safetensors (atomic, via common.weights) for inference.

    Written every `interval` iterations (0: never) and when training completes, on the main process only.
    `scale_factor_from`: an object whose `scale_factor` attribute is stored as metadata["scale_factor"]
    (the latent scale of an LDM's diffusion weights). `metadata`: more str -> str entries.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        path: str,
        interval: int = 0,
        metadata: Mapping[str, Any] | None = None,
        scale_factor_from: Any = None,
    ) -> None:
        self.network = network
        self.path = path
        self.interval = int(interval)
        self.metadata = dict(metadata or {})
        self.scale_factor_from = scale_factor_from

    def attach(self, engine: Engine) -> None:
        if self.interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
        engine.add_event_handler(Events.COMPLETED, self)

    def current_metadata(self, engine: Engine | None = None) -> dict[str, str]:
        metadata = {str(k): str(v) for k, v in self.metadata.items()}
        if self.scale_factor_from is not None:
            scale = getattr(self.scale_factor_from, "scale_factor", None)
            if scale is None:
                raise RuntimeError("SafetensorsExport: the latent scale factor has not been computed yet")
            metadata["scale_factor"] = repr(float(scale))
        if engine is not None:
            metadata["iteration"] = str(engine.state.iteration)
            metadata["epoch"] = str(engine.state.epoch)
        return metadata

    def __call__(self, engine: Engine | None = None) -> None:
        if not _is_main_process():
            return
        from common.weights import save_weights

        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        state = unwrap(self.network).state_dict()
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise TrainingError(f"weights {bad[:3]} are not finite: not exported to {self.path}")
        save_weights(state, self.path, metadata=self.current_metadata(engine))
        logger.info("wrote %s", self.path)


class TermsToOutput:
    """Copy a loss object's `last_terms` dict (e.g. l1 / kl / perceptual) into engine.state.output each iteration,
    so StatsHandler / TensorBoardStatsHandler can log every term."""

    def __init__(self, loss: Any, prefix: str = "") -> None:
        self.loss = loss
        self.prefix = prefix

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if isinstance(engine.state.output, dict):
            for name, value in getattr(self.loss, "last_terms", {}).items():
                engine.state.output[f"{self.prefix}{name}"] = value


class TimeLimit:
    """Stop training cleanly (COMPLETED still fires, so weights are exported) after `minutes` of wall time.

    For a fixed compute budget on a shared machine; 0 disables it. Under DDP the ranks agree (all-reduce of
    the stop flag) so they stop at the same iteration. The log states the iteration reached.
    """

    def __init__(self, minutes: float = 0.0) -> None:
        self.minutes = float(minutes)
        self._start: float | None = None

    def attach(self, engine: Engine) -> None:
        if self.minutes > 0:
            engine.add_event_handler(Events.STARTED, self._started)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _started(self, engine: Engine) -> None:
        import time

        self._start = time.monotonic()

    def __call__(self, engine: Engine) -> None:
        import time

        assert self._start is not None
        stop = torch.tensor(float(time.monotonic() - self._start > 60.0 * self.minutes))
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(stop, op=torch.distributed.ReduceOp.MAX)
        if stop.item() > 0:
            engine.logger.warning("time limit of %.1f min reached at iteration %d: stopping", self.minutes,
                                  engine.state.iteration)
            engine.terminate()


class TrainingPlan:
    """Say at the start what a stage will do, and after a few iterations how long it will take.

    Why: the first loss line of a bundle's training comes after its first log interval (tens of seconds on a CPU),
    and nothing said where the weights would go or when the run would end.
    """

    def __init__(self, stage: str, export_path: str, checkpoint_dir: str, time_limit_minutes: float = 0.0,
                 probe_iterations: int = 10) -> None:
        self.stage, self.export_path, self.checkpoint_dir = stage, export_path, checkpoint_dir
        self.limit = float(time_limit_minutes)
        self.probe = max(int(probe_iterations), 1)
        self._t0 = 0.0
        self._first = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._eta)

    def _total(self, engine: Engine) -> int:
        return int(engine.state.max_epochs or 0) * int(engine.state.epoch_length or 0)

    def _start(self, engine: Engine) -> None:
        import time

        self._t0, self._first = time.monotonic(), int(engine.state.iteration)
        limit = f"; stops after {self.limit:g} min" if self.limit > 0 else ""
        _announce(f"{self.stage}: iterations {self._first} -> {self._total(engine)} ({engine.state.max_epochs} epochs of "
                  f"{engine.state.epoch_length}){limit}; checkpoints in {self.checkpoint_dir}; weights exported to "
                  f"{self.export_path}")

    def _eta(self, engine: Engine) -> None:
        import time

        if int(engine.state.iteration) - self._first != self.probe:
            return
        per = (time.monotonic() - self._t0) / self.probe
        left = per * max(self._total(engine) - int(engine.state.iteration), 0)
        if self.limit > 0:
            left = min(left, max(60.0 * self.limit - (time.monotonic() - self._t0), 0.0))
        _announce(f"{self.stage}: {per:.2f} s per iteration, about {left / 60:.1f} min to go")


class CreatedAtStart:
    """A handler built when the first step starts (resume done, the first batch loaded), not when the config is
    parsed.

    MONAI's TensorBoardStatsHandler writes its event file and CheckpointSaver creates its folder on construction:
    a run that fails before its first step (a missing init_weights, checkpoints that do not load, an image of the
    wrong dimensionality in the first batch), or a stage that is built but not run, would leave them behind.
    """

    def __init__(self, factory: Any, **kwargs: Any) -> None:
        self.factory, self.kwargs = factory, kwargs
        self.handler: Any = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)  # after the batch was fetched

    def _start(self, engine: Engine) -> None:
        if self.handler is None:
            self.handler = self.factory(**self.kwargs)
            self.handler.attach(engine)


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss or weights); nothing more is exported."""


def loggable(output: Any) -> dict[str, float]:
    """The scalar entries of an engine's output (losses, codebook stats), as floats for the log handlers."""
    if not isinstance(output, Mapping):
        return {"loss": float(torch.as_tensor(output).detach())}
    out = {}
    for key, value in output.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[str(key)] = float(value)
        elif isinstance(value, torch.Tensor) and value.numel() == 1:
            out[str(key)] = float(value.detach())
    return out


class FiniteLoss:
    """Stop at the first non-finite logged value with one line (no export follows: COMPLETED never fires)."""

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        bad = {k: v for k, v in loggable(engine.state.output).items() if not math.isfinite(v)}
        if bad:
            raise TrainingError(
                f"non-finite loss {bad} at iteration {engine.state.iteration}: check the data for NaN/inf values "
                "or lower the learning rate; training stopped and no further weights were exported"
            )


def stage_handlers(
    stage: str,
    output_dir: str,
    network: torch.nn.Module,
    save_dict: Mapping[str, Any],
    export_path: str,
    export_metadata: Mapping[str, Any] | None = None,
    scale_factor_from: Any = None,
    loss: Any = None,
    before: Sequence[Any] = (),
    log_interval: int = 10,
    checkpoint_interval: int = 50,
    export_interval: int = 50,
    time_limit_minutes: float = 0.0,
    resume: bool = True,
    init_weights: str | None = None,
) -> list[Any]:
    """The ignite handlers of one training stage, the same for every stage of every bundle.

    In order: progress counters (saved in checkpoints), a time limit, `before` (e.g. `BuildLatents`), resume from
    the newest checkpoint under `output_dir/<stage>/checkpoints` (or `init_weights`), the loss object's terms
    copied to the output (`loss.last_terms`), a stop on non-finite losses, console and TensorBoard logs
    (`output_dir/<stage>/tensorboard`) of every scalar output, checkpoints, and the safetensors export of
    `network` to `export_path` with `export_metadata` (plus the latent scale factor of `scale_factor_from`).
    """
    from monai.handlers import CheckpointSaver, StatsHandler, TensorBoardStatsHandler

    stage_dir = os.path.join(output_dir, stage)
    checkpoint_dir = os.path.join(stage_dir, "checkpoints")
    progress = EngineProgress()
    full_save_dict = {**save_dict, "progress": progress}
    handlers: list[Any] = [progress, TimeLimit(time_limit_minutes), *before]
    handlers.append(ResumeFromLatest(checkpoint_dir, full_save_dict, resume=resume, init_weights=init_weights,
                                     network=network))
    handlers.append(TrainingPlan(stage, export_path, checkpoint_dir, time_limit_minutes))
    if loss is not None:
        handlers.append(TermsToOutput(loss))
    handlers += [
        FiniteLoss(),
        StatsHandler(tag_name=stage, output_transform=loggable,
                     iteration_log=lambda engine, iteration: iteration % max(int(log_interval), 1) == 0),
        CreatedAtStart(TensorBoardStatsHandler, log_dir=os.path.join(stage_dir, "tensorboard"), tag_name=stage,
                       output_transform=loggable),
        CreatedAtStart(CheckpointSaver, save_dir=checkpoint_dir, save_dict=full_save_dict, file_prefix=stage,
                       epoch_level=False, save_interval=int(checkpoint_interval), n_saved=2, save_final=True,
                       final_filename=f"{stage}_final.pt"),
        SafetensorsExport(network, export_path, interval=export_interval,
                          metadata={"stage": stage, **dict(export_metadata or {})},
                          scale_factor_from=scale_factor_from),
    ]
    return handlers
