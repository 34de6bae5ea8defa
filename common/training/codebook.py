"""Dead-code restarts for a VQ-VAE's EMA codebook during stage-1 training.

A code that the encoder stops choosing keeps its EMA cluster size decaying towards 0 and is never chosen again,
so usage can collapse to a few codes. Every ``interval`` iterations this handler moves each code whose EMA
cluster size fell below ``min_cluster_size`` onto a randomly chosen encoder output of the latest batch (the
VQ inferer keeps them), which is the usual remedy (e.g. Jukebox, Dhariwal et al. 2020). Under DDP the codebook
chosen on rank 0 is broadcast, so every rank keeps the same one.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from common.sampling.denoiser import unwrap

logger = logging.getLogger(__name__)


class RestartDeadCodes:
    """Ignite handler: re-seed dead codes of ``network.quantizer.quantizer`` (a MONAI EMAQuantizer).

    Args:
        network: the VQVAE being trained (DDP-wrapped or not).
        inferer: the ``VQAutoencoderInferer`` of that trainer (holds ``last_encodings``: [N, D] encoder outputs).
        interval: iterations between checks (0 disables).
        min_cluster_size: EMA cluster size under which a code counts as dead.
    """

    def __init__(self, network: torch.nn.Module, inferer: Any, interval: int = 100, min_cluster_size: float = 0.03,
                 seed: int = 0) -> None:
        self.network = network
        self.inferer = inferer
        self.interval = int(interval)
        self.min_cluster_size = float(min_cluster_size)
        self.generator = torch.Generator().manual_seed(int(seed))
        self.restarted = 0

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        if self.interval > 0:
            engine.add_event_handler(Events.ITERATION_COMPLETED(every=self.interval), self)
            engine.add_event_handler(Events.ITERATION_COMPLETED, self._report)

    def _report(self, engine: Any) -> None:
        """The running count of restarted codes in the step output (console and TensorBoard logs)."""
        if isinstance(engine.state.output, dict):
            engine.state.output["codes_restarted"] = float(self.restarted)

    @torch.no_grad()
    def restart(self) -> int:
        """Move the dead codes onto encoder outputs; returns how many were moved."""
        quantizer = unwrap(self.network).quantizer.quantizer
        encodings = getattr(self.inferer, "last_encodings", None)
        dead = (quantizer.ema_cluster_size < self.min_cluster_size).nonzero().flatten()
        if encodings is None or dead.numel() == 0:
            return 0
        pick = torch.randint(0, encodings.shape[0], (dead.numel(),), generator=self.generator)
        vectors = encodings[pick].to(quantizer.embedding.weight)
        quantizer.embedding.weight.data[dead] = vectors
        quantizer.ema_w.data[dead] = vectors
        quantizer.ema_cluster_size.data[dead] = 1.0
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            for tensor in (quantizer.embedding.weight.data, quantizer.ema_w.data, quantizer.ema_cluster_size.data):
                torch.distributed.broadcast(tensor, src=0)
        return int(dead.numel())

    def __call__(self, engine: Any) -> None:
        moved = self.restart()
        self.restarted += moved
        if moved:
            logger.info("codebook: restarted %d dead codes at iteration %d (%d so far)", moved,
                               engine.state.iteration, self.restarted)
