"""Token models over a VQ-VAE's codebook: the reading order stored with the weights, per-token likelihoods, and
the likelihood-scoring run of the bundles' score.json (out-of-distribution detection). Names resolve lazily."""

from __future__ import annotations

from common._lazy import lazy_exports

_EXPORTS = {
    "TokenOrdering": "ordering",
    "OrderingError": "ordering",
    "read_ordering": "ordering",
    "ORDERING_TYPES": "ordering",
    "token_log_likelihoods": "likelihood",
    "reconstruction_error": "likelihood",
    "run_scoring": "score",
    "log_likelihoods_of": "score",
    "ScoreInputError": "score",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
