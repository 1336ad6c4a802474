"""The naive distribution a forecast interval is scored beside, fitted on the training windows' moves.

Today's close moved by the empirical quantiles of the training windows' moves in the target transform's
units (and their mean and standard deviation, for the Gaussian head's naive CRPS). It lives in buffers,
so a checkpoint carries it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from rnn_lightning.models.heads.scoring import naive_distribution


class NaiveDistribution(nn.Module):
    """The naive distribution's buffers and fit, for a module that also holds ``quantile_levels`` (Q,).

    A mixin without an ``__init__``: the module calls :meth:`register_naive` once its levels are set.
    The buffers' names (``naive_quantiles``, ``naive_mean``, ``naive_std``, ``naive_fitted``) are
    checkpoint keys.
    """

    # Buffers (typed for mypy: nn.Module's __getattr__ would say Tensor | Module).
    quantile_levels: Tensor
    naive_quantiles: Tensor
    naive_mean: Tensor
    naive_std: Tensor
    naive_fitted: Tensor

    def register_naive(self, horizon: int, levels: Sequence[float]) -> None:
        """Register the unfitted naive distribution's buffers for ``horizon`` days and the quantile ``levels``."""
        self.register_buffer("naive_quantiles", torch.zeros(horizon, len(levels), dtype=torch.float64))  # (H, Q)
        self.register_buffer("naive_mean", torch.zeros(horizon, dtype=torch.float64))  # (H,)
        self.register_buffer("naive_std", torch.ones(horizon, dtype=torch.float64))  # (H,)
        self.register_buffer("naive_fitted", torch.tensor(False))

    def naive_is_fitted(self) -> bool:
        """Whether the naive distribution has been fitted (or came with a checkpoint)."""
        return bool(self.naive_fitted)

    @torch.no_grad()
    def fit_naive(self, moves: Tensor) -> None:
        """Fit the naive distribution on the training windows' unscaled targets ``moves`` (N, H)."""
        horizon = self.naive_mean.shape[0]
        quantiles, mean, std = naive_distribution(moves, self.quantile_levels, horizon)
        self.naive_quantiles.copy_(quantiles)
        self.naive_mean.copy_(mean)
        self.naive_std.copy_(std)
        self.naive_fitted.fill_(True)

    def naive_price_quantiles(self, ref: Tensor, scaling: Any) -> Tensor:
        """The naive distribution's quantiles in prices (B, H, Q) for last closes ``ref`` (B,)."""
        prices: Tensor = scaling.target_to_price(self.naive_quantiles[None], ref)
        return prices
