"""Converting a diffusion model's output to its predicted clean sample x0 and noise epsilon: written once, used by
every scheduler here.

With abar = alpha_prod_t, alpha = sqrt(abar), sigma = sqrt(1 - abar) and x_t = alpha x0 + sigma eps:
``epsilon``: x0 = (x_t - sigma eps) / alpha; ``sample``: eps = (x_t - alpha x0) / sigma;
``v_prediction`` (v = alpha eps - sigma x0): x0 = alpha x_t - sigma v, eps = alpha v + sigma x_t.
"""

from __future__ import annotations

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def predict_x0_eps(model_output, sample, alpha_prod_t, prediction_type: str):
    """(x0, eps) from ``model_output`` at noisy ``sample`` with cumulative alpha ``alpha_prod_t``.

    ``alpha_prod_t`` may be a 0-dim tensor or a Python float; the arithmetic is done in its type, so a caller gets
    the same bits it got from the formulas written inline.
    """
    alpha, sigma = alpha_prod_t**0.5, (1 - alpha_prod_t) ** 0.5
    if prediction_type == "epsilon":
        return (sample - sigma * model_output) / alpha, model_output
    if prediction_type == "sample":
        return model_output, (sample - alpha * model_output) / sigma
    if prediction_type == "v_prediction":
        return alpha * sample - sigma * model_output, alpha * model_output + sigma * sample
    raise ValueError(f"prediction_type {prediction_type!r} is not one of {', '.join(PREDICTION_TYPES)}")
