"""The distribution heads: quantiles that never cross, and a Gaussian per day ahead.

Both forecast a distribution per day ahead, summarised by its quantiles, scored by the point metrics on
its median, the pinball loss and the central interval's coverage and width, each beside the naive
distribution fitted on the training windows (the Gaussian also by its CRPS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from rnn_lightning.models.heads.base import Head
from rnn_lightning.models.heads.metrics import INTERVAL_NAMES, IntervalMetrics, PinballLoss
from rnn_lightning.models.heads.naive import NaiveDistribution
from rnn_lightning.models.heads.point import PointHead
from rnn_lightning.models.heads.scoring import (
    DEFAULT_QUANTILES,
    MIN_SCALE,
    by_day,
    check_quantiles,
    median_weights,
    pinball,
    price_crps,
    softplus_inverse,
)


class DistributionHead(NaiveDistribution, PointHead):
    """A forecast distribution per day ahead, summarised by its quantiles at ``quantiles``.

    Scored by the point metrics on its median, the pinball loss and the central interval's coverage and
    width, each beside the naive distribution.

    The naive distribution is today's close moved by the empirical quantiles (at the same levels) of the
    training windows' moves in the target transform's units (``fit_naive``); it lives in buffers, so a
    checkpoint carries it. Subclasses define :meth:`scaled_quantiles` and the loss.

    Args:
        horizon: Days ahead (H).
        quantiles: Increasing levels in (0, 1), at least two; the central interval runs from the lowest
            to the highest.
    """

    distribution_names: tuple[str, ...] = INTERVAL_NAMES
    median_weights: Tensor  # a buffer (typed for mypy: nn.Module's __getattr__ would say Tensor | Module)

    def __init__(self, horizon: int = 1, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> None:
        super().__init__(horizon)
        self.levels = check_quantiles(quantiles)
        self.register_buffer("quantile_levels", torch.tensor(self.levels, dtype=torch.float64), persistent=False)
        self.register_buffer("median_weights", median_weights(self.levels), persistent=False)  # (Q,)
        # The naive distribution, fitted on the training windows: unscaled target quantiles, mean and std.
        self.register_naive(horizon, self.levels)
        self.val_pinball = PinballLoss(self.levels)
        self.dist_metrics = IntervalMetrics(horizon, self.levels, self.distribution_names)

    @classmethod
    def create(cls, num_outputs: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Head:
        return cls(num_outputs, quantiles)

    def output_size(self, num_outputs: int) -> int:
        return self.horizon * self.params_per_day

    @property
    def params_per_day(self) -> int:
        raise NotImplementedError

    def scaled_quantiles(self, out: Tensor) -> Tensor:
        """Raw outputs (B, K) -> forecast quantiles in scaled target units (B, H, Q), non-decreasing in Q."""
        raise NotImplementedError

    def scaled_point(self, out: Tensor) -> Tensor:
        return self.scaled_quantiles(out) @ self.median_weights.to(out.dtype)  # (B, H)

    def needs_naive(self) -> bool:
        return True

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        super().update(stage, out, loss, batch, scaling)
        if stage == "train":
            return
        close = by_day(batch.close, self.horizon)  # (B, H)
        quantiles = scaling.to_price(self.scaled_quantiles(out.detach()), batch.ref)  # (B, H, Q)
        if stage == "val":
            self.val_pinball.update(quantiles, close)
            return
        self.dist_metrics.score("", quantiles, close)
        self.dist_metrics.score("naive_", self.naive_price_quantiles(batch.ref, scaling), close)

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        metrics = super().epoch_metrics(stage)
        if stage == "val":
            metrics["val_pinball"] = self.val_pinball
        elif stage == "test":
            metrics.update(self.dist_metrics)
        return metrics

    def forecast(self, out: Tensor, ref: Tensor, scaling: Any) -> dict[str, Tensor]:
        """The point forecast (the median) and ``quantiles`` in prices: (B, Q) for H = 1, (B, H, Q) otherwise."""
        quantiles = scaling.to_price(self.scaled_quantiles(out), ref)  # (B, H, Q)
        median = quantiles @ self.median_weights.to(quantiles.dtype)  # (B, H); monotone: median of prices
        if self.horizon == 1:
            return {"prediction": median[:, 0], "quantiles": quantiles[:, 0]}
        return {"prediction": median, "quantiles": quantiles}

    def export_outputs(self) -> tuple[str, ...]:
        """The median and every quantile, in prices (rnn_lightning/export.py)."""
        return ("prediction", "quantiles")

    def interval_levels(self) -> list[float]:
        return self.levels

    def member_spread(self, quantiles: Sequence[float]) -> None:
        """None: an ensemble's combined distribution has quantiles of its own."""
        return None


class QuantileHead(DistributionHead):
    """Quantiles that never cross, trained on the pinball loss in scaled target units.

    Per day ahead the network gives the quantile nearest level 0.5 and the Q-1 gaps between neighbouring
    quantiles; each gap passes through softplus (plus ``MIN_SCALE``), so the quantiles increase with their
    level whatever the weights. A zero output (``zero_init_head``) is a standard normal's quantiles in
    scaled units around the persistence forecast (the scaled targets have unit RMS).
    """

    gap_bias: Tensor

    @property
    def params_per_day(self) -> int:
        return len(self.levels)

    def __init__(self, horizon: int = 1, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> None:
        super().__init__(horizon, quantiles)
        normal = torch.distributions.Normal(0.0, 1.0)
        z = normal.icdf(torch.tensor(self.levels, dtype=torch.float64))  # (Q,)
        gap_bias = [softplus_inverse(max(float(g) - MIN_SCALE, MIN_SCALE)) for g in z.diff()]
        self.register_buffer("gap_bias", torch.tensor(gap_bias), persistent=False)  # (Q-1,)
        self.centre = min(range(len(self.levels)), key=lambda i: abs(self.levels[i] - 0.5))

    def scaled_quantiles(self, out: Tensor) -> Tensor:
        raw = out.reshape(out.shape[0], self.horizon, len(self.levels))  # (B, H, Q)
        centre = raw[..., self.centre : self.centre + 1]  # (B, H, 1)
        raw_gaps = torch.cat([raw[..., : self.centre], raw[..., self.centre + 1 :]], dim=-1)  # (B, H, Q-1)
        gaps = F.softplus(raw_gaps + self.gap_bias.to(raw.dtype)) + MIN_SCALE  # (B, H, Q-1) > 0
        position = F.pad(gaps.cumsum(dim=-1), (1, 0))  # (B, H, Q): 0, g1, g1+g2, ...
        return centre + position - position[..., self.centre : self.centre + 1]

    def loss(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        target = by_day(scaling.scale_targets(batch.close, batch.ref), self.horizon).to(out.dtype)  # (B, H)
        quantiles = self.scaled_quantiles(out)  # (B, H, Q)
        return pinball(quantiles, target, self.quantile_levels.to(quantiles.dtype)).mean()

    def combine(self, out: Tensor) -> Tensor:
        """The members' quantiles averaged level by level (Vincentization), as raw outputs (B, H*Q).

        Averages of increasing quantiles still increase, so the inverse of :meth:`scaled_quantiles`
        exists: the centre quantile, and each gap through the inverse softplus (in float64).
        """
        M, B = out.shape[:2]
        quantiles = self.scaled_quantiles(out.reshape(M * B, -1).double()).reshape(M, B, self.horizon, -1).mean(0)
        gaps = (quantiles.diff(dim=-1) - MIN_SCALE).clamp(min=1e-12)  # (B, H, Q-1)
        raw_gaps = gaps + torch.log(-torch.expm1(-gaps)) - self.gap_bias.to(gaps.dtype)
        c = self.centre
        raw = torch.cat([raw_gaps[..., :c], quantiles[..., c : c + 1], raw_gaps[..., c:]], dim=-1)  # (B, H, Q)
        return raw.reshape(B, -1).to(out.dtype)


class GaussianHead(DistributionHead):
    """A Gaussian per day ahead on the target transform's values (a log-normal price for ``log_return``).

    Trained on the negative log-likelihood in scaled target units.

    Per day the network gives the mean and a raw scale, ``scale = softplus(raw + softplus^-1(1)) +
    MIN_SCALE``: a zero output is N(0, 1) in scaled units, the persistence forecast with the training
    moves' RMS. Its quantiles (at ``quantiles``) map exactly to price quantiles, as every target inverse
    increases; the CRPS is exact in closed form in price units (:func:`price_crps`).
    """

    distribution_names = ("pinball", "coverage", "width", "crps")
    z: Tensor

    @property
    def params_per_day(self) -> int:
        return 2

    def __init__(self, horizon: int = 1, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> None:
        super().__init__(horizon, quantiles)
        z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(self.levels, dtype=torch.float64))
        self.register_buffer("z", z, persistent=False)  # (Q,)

    def scaled_params(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """Raw outputs (B, K) -> mean and scale (B, H) in scaled target units."""
        raw = out.reshape(out.shape[0], self.horizon, 2)  # (B, H, 2)
        scale = F.softplus(raw[..., 1] + softplus_inverse(1.0)) + MIN_SCALE
        return raw[..., 0], scale

    def target_params(self, out: Tensor, scaling: Any) -> tuple[Tensor, Tensor]:
        """Mean and scale (B, H) in the unscaled target's units (index points or log returns), float64."""
        mean, scale = self.scaled_params(out)
        return (
            mean.to(torch.float64) * scaling.target_scale + scaling.target_offset,
            scale.to(torch.float64) * scaling.target_scale,
        )

    def scaled_quantiles(self, out: Tensor) -> Tensor:
        mean, scale = self.scaled_params(out)
        return mean[..., None] + scale[..., None] * self.z.to(out.dtype)  # (B, H, Q)

    def scaled_point(self, out: Tensor) -> Tensor:
        return self.scaled_params(out)[0]  # the mean, which is the median

    def loss(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        target = by_day(scaling.scale_targets(batch.close, batch.ref), self.horizon).to(out.dtype)  # (B, H)
        mean, scale = self.scaled_params(out)
        return (torch.log(scale) + 0.5 * ((target - mean) / scale) ** 2).mean() + 0.5 * math.log(2 * math.pi)

    def combine(self, out: Tensor) -> Tensor:
        """The Gaussian with the members' mixture's mean and variance, as raw outputs (B, H*2).

        Mean: the members' mean; variance: the mean of their variances plus the variance of their means
        (Lakshminarayanan et al. 2017), in scaled target units, back through the inverse softplus.
        """
        M, B = out.shape[:2]
        mean, scale = self.scaled_params(out.reshape(M * B, -1).double())
        mean, scale = mean.reshape(M, B, self.horizon), scale.reshape(M, B, self.horizon)
        centre = mean.mean(0)
        spread = ((scale**2).mean(0) + ((mean - centre) ** 2).mean(0)).sqrt()  # (B, H)
        y = (spread - MIN_SCALE).clamp(min=1e-12)
        raw_scale = y + torch.log(-torch.expm1(-y)) - softplus_inverse(1.0)
        return torch.stack([centre, raw_scale], dim=-1).reshape(B, -1).to(out.dtype)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        super().update(stage, out, loss, batch, scaling)
        if stage != "test":
            return
        close = by_day(batch.close, self.horizon).to(torch.float64)  # (B, H)
        ref = batch.ref.to(torch.float64)[:, None]  # (B, 1)
        mean, scale = self.target_params(out.detach(), scaling)
        transform = str(scaling.target_transform)
        model = price_crps(transform, mean, scale, ref, close)  # (B, H)
        naive = price_crps(transform, self.naive_mean, self.naive_std, ref, close)  # (B, H)
        for who, crps in (("", model), ("naive_", naive)):
            self.dist_metrics.score_values(who, "crps", crps)

    def forecast(self, out: Tensor, ref: Tensor, scaling: Any) -> dict[str, Tensor]:
        """As :meth:`DistributionHead.forecast`, plus ``mean`` and ``scale`` of the unscaled target."""
        rows = super().forecast(out, ref, scaling)
        mean, scale = self.target_params(out, scaling)  # (B, H)
        if self.horizon == 1:
            mean, scale = mean[:, 0], scale[:, 0]
        return {**rows, "mean": mean, "scale": scale}
