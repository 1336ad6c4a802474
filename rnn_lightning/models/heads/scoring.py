"""The scoring math of the heads, as pure functions of tensors: no modules, no state.

Pinball loss and closed-form CRPS (Gaussian, log-normal, in price units for each target transform),
the quantile-level checks and the small transforms the distribution heads and ensembles share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from rnn_lightning.errors import UserInputError

DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
MIN_SCALE = 1e-4  # the smallest Gaussian scale and quantile gap, in scaled target units
SQRT_PI = math.sqrt(math.pi)


def check_quantiles(quantiles: Sequence[float]) -> list[float]:
    """``quantiles`` as a list of floats: at least two, each in (0, 1), strictly increasing.

    Args:
        quantiles: The levels as configured.

    Returns:
        The levels as floats.

    Raises:
        UserInputError: Fewer than two levels, a level outside (0, 1), a repeated or an unsorted level.
    """
    levels = [float(q) for q in quantiles]
    if len(levels) < 2:
        raise UserInputError(f"quantiles needs at least two levels (a central interval), got {levels}")
    outside = [q for q in levels if not 0.0 < q < 1.0]
    if outside:
        raise UserInputError(f"quantiles must lie in (0, 1), got {outside[0]} in {levels}")
    if len(set(levels)) != len(levels):
        raise UserInputError(f"quantiles must not repeat a level, got {levels}")
    if levels != sorted(levels):
        raise UserInputError(f"quantiles must be sorted in increasing order, got {levels}")
    return levels


def pinball(quantiles: Tensor, actual: Tensor, levels: Tensor) -> Tensor:
    """The pinball (quantile) loss of each forecast quantile: ``quantiles`` (..., Q) against ``actual`` (...).

    ``max(tau * (y - q), (tau - 1) * (y - q))`` for each level ``tau`` of ``levels`` (Q,); shape (..., Q).
    """
    error = actual[..., None] - quantiles  # (..., Q)
    return torch.maximum(levels * error, (levels - 1) * error)


def gaussian_crps(mean: Tensor, scale: Tensor, actual: Tensor) -> Tensor:
    """CRPS of N(mean, scale^2) at ``actual``, in closed form (Gneiting et al. 2005); shapes broadcast."""
    z = (actual - mean) / scale
    density = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    crps: Tensor = scale * (z * (2 * torch.special.ndtr(z) - 1) + 2 * density - 1 / SQRT_PI)
    return crps


def lognormal_crps(log_mean: Tensor, log_scale: Tensor, actual: Tensor) -> Tensor:
    """CRPS of the log-normal ``exp(N(log_mean, log_scale^2))`` at ``actual`` > 0, in closed form.

    ``y (2 Phi(w) - 1) - 2 exp(mu + s^2 / 2) (Phi(w - s) + Phi(s / sqrt 2) - 1)``, ``w = (log y - mu) / s``
    (Baran and Lerch 2015; the ``crps_lnorm`` of R's scoringRules).
    """
    mu, s = log_mean, log_scale
    w = (torch.log(actual) - mu) / s
    ndtr = torch.special.ndtr
    crps: Tensor = actual * (2 * ndtr(w) - 1) - 2 * torch.exp(mu + s**2 / 2) * (
        ndtr(w - s) + ndtr(s / math.sqrt(2)) - 1
    )
    return crps


def price_crps(transform: str, mean: Tensor, scale: Tensor, ref: Tensor, actual: Tensor) -> Tensor:
    """CRPS in price units of a Gaussian N(mean, scale^2) on the unscaled target of ``transform``.

    The price is ``y`` (``level``), ``ref + y`` (``diff``; both Gaussian) or ``ref * exp(y)``
    (``log_return``: log-normal), so the CRPS is exact in closed form for each. ``ref`` broadcasts.

    Raises:
        ValueError: An unknown target transform.
    """
    if transform == "level":
        return gaussian_crps(mean, scale, actual)
    if transform == "diff":
        return gaussian_crps(ref + mean, scale, actual)
    if transform == "log_return":
        return lognormal_crps(torch.log(ref) + mean, scale, actual)
    raise ValueError(f"no CRPS for target transform {transform!r}")


def member_quantiles(values: Tensor, levels: Sequence[float]) -> Tensor:
    """Quantiles over the first (member) dimension, linearly interpolated: (M, ...) -> (..., Q).

    ``numpy.quantile``'s default ("linear") rule, written with a sort and fixed indices so that an
    exported graph needs no quantile operator.
    """
    ordered = values.sort(dim=0).values
    last = values.shape[0] - 1
    columns = []
    for level in levels:
        position = level * last
        lo = int(position)
        hi = min(lo + 1, last)
        weight = position - lo
        columns.append(ordered[lo] + weight * (ordered[hi] - ordered[lo]) if weight else ordered[lo])
    return torch.stack(columns, dim=-1)


def naive_distribution(moves: Tensor, levels: Tensor, horizon: int) -> tuple[Tensor, Tensor, Tensor]:
    """The naive distribution of the training windows' unscaled targets ``moves`` (N, H), in float64.

    Args:
        moves: The training windows' moves in the target transform's units (N, H) or (N,).
        levels: Quantile levels (Q,).
        horizon: Days ahead (H).

    Returns:
        The empirical quantiles (H, Q), the mean (H,) and the sample standard deviation (H,; ones for a
        single window).
    """
    moves = moves.to(torch.float64).reshape(len(moves), horizon)
    quantiles = torch.quantile(moves, levels.to(torch.float64).cpu(), dim=0).T
    std = moves.std(dim=0) if len(moves) > 1 else torch.ones(horizon, dtype=torch.float64)
    return quantiles, moves.mean(dim=0), std


def median_weights(levels: Sequence[float]) -> Tensor:
    """Weights (Q,) that interpolate sorted quantiles linearly at level 0.5 (the nearest end outside them)."""
    weights = torch.zeros(len(levels), dtype=torch.float64)
    above = next((i for i, q in enumerate(levels) if q >= 0.5), None)
    if above is None:
        weights[-1] = 1.0
    elif above == 0 or levels[above] == 0.5:
        weights[above] = 1.0
    else:
        lo, hi = levels[above - 1], levels[above]
        weights[above] = (0.5 - lo) / (hi - lo)
        weights[above - 1] = 1.0 - weights[above]
    return weights


def softplus_inverse(x: float) -> float:
    """The ``y`` with ``softplus(y) == x`` for ``x`` > 0."""
    return x + math.log(-math.expm1(-x))


def by_day(close: Tensor, horizon: int) -> Tensor:
    """Closes or targets (B,) or (B, H) as (B, H): the day-ahead axis always present."""
    return close.reshape(close.shape[0], horizon)
