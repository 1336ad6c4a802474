"""Task heads chosen by name: the loss, the epoch metrics and the prediction rows of one kind of output.

A head sees the network's raw output ``out`` (B, K), the batch (named fields: ``x``, ``ref``, ``close`` for
prices; ``x``, ``y`` for images) and the model's scaling (:mod:`rnn_lightning.models.scaling`), which
turns outputs into the data's units. Metrics are torchmetrics objects: they accumulate on the device
without host syncs inside a step, sum their states across DDP ranks when computed, and are logged once
per epoch under the names below (all in price units unless said otherwise; docs/forecasting.md).

Regression heads forecast the closes of the next ``horizon`` (H) trading days at once; ``batch.close`` is
(B,) for H = 1 and (B, H) otherwise.

* ``point``: one value per day ahead, MSE on scaled targets; ``val_rmse`` and ``test_rmse``, ``test_mae``,
  ``test_mape``, ``test_naive_rmse`` (the persistence forecast: every future close is today's) and
  ``test_direction_acc``; for H > 1 also ``test_rmse_h1`` .. and ``test_naive_rmse_h1`` .. per day ahead.
* ``quantile``: ``quantiles`` (sorted levels, default 0.1, 0.5, 0.9) per day ahead that never cross,
  pinball loss on scaled targets. The point metrics above on the median, plus ``test_pinball``,
  ``test_coverage`` and ``test_width`` of the central interval (lowest to highest level) and the same of the
  naive distribution (``test_naive_pinball``, ...: today's close moved by the empirical quantiles of the
  training windows' moves); ``val_pinball``; per day ahead ``..._h1`` for H > 1.
* ``gaussian``: a mean and a scale per day ahead in the target transform's units, Gaussian negative
  log-likelihood on scaled targets. Everything ``quantile`` logs (at the Gaussian's quantiles) plus
  ``test_crps`` and ``test_naive_crps`` (a Gaussian with the training moves' mean and standard deviation),
  in closed form in price units.
* ``classification``: cross-entropy over the classes; ``{stage}_acc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError, Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from rnn_lightning.errors import UserInputError

STAGES = ("train", "val", "test")
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
MIN_SCALE = 1e-4  # the smallest Gaussian scale and quantile gap, in scaled target units
SQRT_PI = math.sqrt(math.pi)


def _mean() -> MeanMetric:
    # "disable" skips the NaN check, which would cost a host sync on every update.
    return MeanMetric(nan_strategy="disable")


def check_quantiles(quantiles: Sequence[float]) -> list[float]:
    """``quantiles`` as a list of floats: at least two, each in (0, 1), strictly increasing."""
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
    return scale * (z * (2 * torch.special.ndtr(z) - 1) + 2 * density - 1 / SQRT_PI)


def lognormal_crps(log_mean: Tensor, log_scale: Tensor, actual: Tensor) -> Tensor:
    """CRPS of the log-normal ``exp(N(log_mean, log_scale^2))`` at ``actual`` > 0, in closed form.

    ``y (2 Phi(w) - 1) - 2 exp(mu + s^2 / 2) (Phi(w - s) + Phi(s / sqrt 2) - 1)``, ``w = (log y - mu) / s``
    (Baran and Lerch 2015; the ``crps_lnorm`` of R's scoringRules).
    """
    mu, s = log_mean, log_scale
    w = (torch.log(actual) - mu) / s
    ndtr = torch.special.ndtr
    return actual * (2 * ndtr(w) - 1) - 2 * torch.exp(mu + s**2 / 2) * (ndtr(w - s) + ndtr(s / math.sqrt(2)) - 1)


def price_crps(transform: str, mean: Tensor, scale: Tensor, ref: Tensor, actual: Tensor) -> Tensor:
    """CRPS in price units of a Gaussian N(mean, scale^2) on the unscaled target of ``transform``.

    The price is ``y`` (``level``), ``ref + y`` (``diff``; both Gaussian) or ``ref * exp(y)``
    (``log_return``: log-normal), so the CRPS is exact in closed form for each. ``ref`` broadcasts.
    """
    if transform == "level":
        return gaussian_crps(mean, scale, actual)
    if transform == "diff":
        return gaussian_crps(ref + mean, scale, actual)
    if transform == "log_return":
        return lognormal_crps(torch.log(ref) + mean, scale, actual)
    raise ValueError(f"no CRPS for target transform {transform!r}")


def metric_of(metrics: nn.ModuleDict, name: str) -> Any:
    """``metrics[name]``, typed loosely: each metric class has its own ``update`` arguments."""
    return metrics[name]


def _by_day(close: Tensor, horizon: int) -> Tensor:
    """Closes or targets (B,) or (B, H) as (B, H): the day-ahead axis always present."""
    return close.reshape(close.shape[0], horizon)


class BatchMean(Metric):
    """The per-sample mean of a loss over an epoch, from each batch's mean loss and size.

    Every sample weighs the same, whatever the batch sizes (a last, shorter batch; a DDP rank's shorter
    shard), and the two sums travel across ranks at ``compute()``. Two in-place additions a step: a
    third of what ``MeanMetric`` spends per update on input checks and broadcasting.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, mean: Tensor, batch_size: int) -> None:
        self.total += mean.detach() * batch_size
        self.count += batch_size

    def compute(self) -> Tensor:
        return self.total / self.count


class ElementMean(Metric):
    """The mean of per-element scores over an epoch: a float64 sum and a count, summed across ranks."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def _add(self, scores: Tensor) -> None:
        self.total += scores.detach().to(torch.float64).sum()
        self.count += scores.numel()

    def compute(self) -> Tensor:
        return self.total / self.count


class PinballLoss(ElementMean):
    """Mean pinball loss over samples, days ahead and quantile levels (each level weighs the same)."""

    levels: Tensor

    def __init__(self, levels: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("levels", torch.tensor(list(levels), dtype=torch.float64), persistent=False)

    def update(self, quantiles: Tensor, actual: Tensor) -> None:
        """``quantiles`` (..., Q) forecast at ``levels``; ``actual`` (...)."""
        self._add(pinball(quantiles.to(torch.float64), actual.to(torch.float64), self.levels))


class IntervalCoverage(ElementMean):
    """Share of actual values inside ``[lower, upper]`` (both ends included)."""

    def update(self, lower: Tensor, upper: Tensor, actual: Tensor) -> None:
        self._add(((actual >= lower) & (actual <= upper)).to(torch.float64))


class IntervalWidth(ElementMean):
    """Mean width ``upper - lower`` of an interval."""

    def update(self, lower: Tensor, upper: Tensor) -> None:
        self._add(upper - lower)


class MeanScore(ElementMean):
    """The mean of scores computed elsewhere (CRPS values)."""

    def update(self, scores: Tensor) -> None:
        self._add(scores)


class Head(nn.Module):
    """What every head provides; ``{stage}_loss`` is common to all."""

    # What an ensemble of this head reports beside its combined forecast (rnn_lightning/models/ensemble.py):
    # each member's ``rmse`` or ``acc``, and whether the members' spread makes its interval (a head
    # without an interval of its own).
    member_score = "rmse"
    member_interval = False
    # Whether the head scores against a naive distribution fitted on the training windows (fit_naive).
    needs_naive = False

    def __init__(self) -> None:
        super().__init__()
        self.losses = nn.ModuleDict({f"{stage}_loss": BatchMean() for stage in STAGES})

    def output_size(self, num_outputs: int) -> int:
        """The network's output width for ``num_outputs`` targets (days ahead) or classes."""
        return num_outputs

    def loss(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        raise NotImplementedError

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        metric_of(self.losses, f"{stage}_loss").update(loss, len(out))

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        return {f"{stage}_loss": self.losses[f"{stage}_loss"]}

    def predict(self, out: Tensor, batch: Any, scaling: Any) -> dict[str, Tensor]:
        raise NotImplementedError

    def combine(self, out: Tensor) -> Tensor:
        """An ensemble's members' raw outputs (M, B, K) -> the ensemble's forecast as raw outputs (B, K).

        The result is in this head's own output parametrisation, so every metric, prediction row and
        export of a solo model applies to the ensemble unchanged (:mod:`rnn_lightning.models.ensemble`).
        """
        raise NotImplementedError


class PointHead(Head):
    """One number per day ahead: MSE on scaled targets, RMSE/MAE/MAPE and the naive baseline in prices.

    Args:
        horizon: Days ahead (H); the network outputs one value per day.

    The regression heads below derive from it and score their median the same way.
    """

    member_interval = True  # a point ensemble's interval comes from its members

    def __init__(self, horizon: int = 1) -> None:
        super().__init__()
        self.horizon = horizon
        self.val_rmse = MeanSquaredError(squared=False)
        self.test_rmse = MeanSquaredError(squared=False)
        self.test_naive_rmse = MeanSquaredError(squared=False)
        self.test_mae = MeanAbsoluteError()
        self.test_mape = MeanAbsolutePercentageError()
        self.test_direction_acc = _mean()
        days = range(1, horizon + 1) if horizon > 1 else ()
        self.per_day = nn.ModuleDict(
            {f"test_{name}_h{d}": MeanSquaredError(squared=False) for d in days for name in ("rmse", "naive_rmse")}
        )

    def output_size(self, num_outputs: int) -> int:
        return self.horizon

    def scaled_point(self, out: Tensor) -> Tensor:
        """The point forecast (the median for the distribution heads) in scaled target units (B, H)."""
        return out.reshape(out.shape[0], self.horizon)

    def loss(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        target = scaling.scale_targets(batch.close, batch.ref)  # (B,) or (B, H)
        return F.mse_loss(out.reshape(target.shape), target.to(out.dtype))

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        super().update(stage, out, loss, batch, scaling)
        if stage == "train":
            return
        close = batch.close  # (B,) or (B, H)
        price = scaling.to_price(self.scaled_point(out.detach()).reshape(close.shape), batch.ref)  # like close
        if stage == "val":
            self.val_rmse.update(price.reshape(-1), close.reshape(-1))
            return
        ref = batch.ref.reshape(-1, *([1] * (close.dim() - 1))).expand_as(close)  # like close
        flat_price, flat_ref, flat_close = price.reshape(-1), ref.reshape(-1), close.reshape(-1)  # (B*H,)
        self.test_rmse.update(flat_price, flat_close)
        self.test_naive_rmse.update(flat_ref, flat_close)
        self.test_mae.update(flat_price, flat_close)
        self.test_mape.update(flat_price, flat_close)
        # Directional accuracy: did the model call the move from today's close right?
        self.test_direction_acc.update((torch.sign(price - ref) == torch.sign(close - ref)).float())
        for d in range(1, len(self.per_day) // 2 + 1):
            metric_of(self.per_day, f"test_rmse_h{d}").update(price[:, d - 1], close[:, d - 1])
            metric_of(self.per_day, f"test_naive_rmse_h{d}").update(ref[:, d - 1], close[:, d - 1])

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        metrics = super().epoch_metrics(stage)
        if stage == "val":
            metrics["val_rmse"] = self.val_rmse
        elif stage == "test":
            metrics.update(
                test_rmse=self.test_rmse,
                test_mae=self.test_mae,
                test_mape=self.test_mape,
                test_naive_rmse=self.test_naive_rmse,
                test_direction_acc=self.test_direction_acc,
            )
            metrics.update(self.per_day)
        return metrics

    def forecast(self, out: Tensor, ref: Tensor, scaling: Any) -> dict[str, Tensor]:
        """Raw outputs (B, K) and last closes ``ref`` (B,) -> the forecast in prices.

        ``prediction`` is (B,) for H = 1, (B, H) otherwise. Needs no actual closes: what an exported model
        returns.
        """
        point = self.scaled_point(out)  # (B, H)
        return {"prediction": scaling.to_price(point.reshape(-1) if self.horizon == 1 else point, ref)}

    def predict(self, out: Tensor, batch: Any, scaling: Any) -> dict[str, Tensor]:
        return {**self.forecast(out, batch.ref, scaling), "actual": batch.close, "naive": batch.ref}

    def combine(self, out: Tensor) -> Tensor:
        """The members' mean point forecast in scaled target units (linear in the output)."""
        return out.mean(dim=0)


class DistributionHead(PointHead):
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

    # What an exported file returns (rnn_lightning/export.py): the median and every quantile, in prices.
    export_outputs = ("prediction", "quantiles")
    member_interval = False  # the ensemble's distribution has its own quantiles
    needs_naive = True

    distribution_names: tuple[str, ...] = ("pinball", "coverage", "width")
    # Buffers (typed for mypy: nn.Module's __getattr__ would say Tensor | Module).
    quantile_levels: Tensor
    median_weights: Tensor
    naive_quantiles: Tensor
    naive_mean: Tensor
    naive_std: Tensor
    naive_fitted: Tensor

    def __init__(self, horizon: int = 1, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> None:
        super().__init__(horizon)
        self.levels = check_quantiles(quantiles)
        self.register_buffer("quantile_levels", torch.tensor(self.levels, dtype=torch.float64), persistent=False)
        self.register_buffer("median_weights", _median_weights(self.levels), persistent=False)  # (Q,)
        Q = len(self.levels)
        # The naive distribution, fitted on the training windows: unscaled target quantiles, mean and std.
        self.register_buffer("naive_quantiles", torch.zeros(horizon, Q, dtype=torch.float64))  # (H, Q)
        self.register_buffer("naive_mean", torch.zeros(horizon, dtype=torch.float64))  # (H,)
        self.register_buffer("naive_std", torch.ones(horizon, dtype=torch.float64))  # (H,)
        self.register_buffer("naive_fitted", torch.tensor(False))
        self.val_pinball = PinballLoss(self.levels)
        suffixes = [""] + ([f"_h{d}" for d in range(1, horizon + 1)] if horizon > 1 else [])
        self.dist_metrics = nn.ModuleDict()
        for who in ("", "naive_"):
            for suffix in suffixes:
                for name in self.distribution_names:
                    self.dist_metrics[f"test_{who}{name}{suffix}"] = self._metric(name)

    def _metric(self, name: str) -> Metric:
        return {
            "pinball": lambda: PinballLoss(self.levels),
            "coverage": IntervalCoverage,
            "width": IntervalWidth,
            "crps": MeanScore,
        }[name]()

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

    @torch.no_grad()
    def fit_naive(self, moves: Tensor) -> None:
        """Fit the naive distribution on the training windows' unscaled targets ``moves`` (N, H)."""
        moves = moves.to(torch.float64).reshape(len(moves), self.horizon)
        self.naive_quantiles.copy_(torch.quantile(moves, self.quantile_levels.cpu(), dim=0).T)  # (H, Q)
        self.naive_mean.copy_(moves.mean(dim=0))
        self.naive_std.copy_(moves.std(dim=0) if len(moves) > 1 else torch.ones(self.horizon))
        self.naive_fitted.fill_(True)

    def naive_price_quantiles(self, ref: Tensor, scaling: Any) -> Tensor:
        """The naive distribution's quantiles in prices (B, H, Q) for last closes ``ref`` (B,)."""
        return scaling.target_to_price(self.naive_quantiles[None], ref)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        super().update(stage, out, loss, batch, scaling)
        if stage == "train":
            return
        close = _by_day(batch.close, self.horizon)  # (B, H)
        quantiles = scaling.to_price(self.scaled_quantiles(out.detach()), batch.ref)  # (B, H, Q)
        if stage == "val":
            self.val_pinball.update(quantiles, close)
            return
        self.score_interval("", quantiles, close)
        self.score_interval("naive_", self.naive_price_quantiles(batch.ref, scaling), close)

    def _days(self) -> list[tuple[str, Any]]:
        """Metric name suffixes and day indices: all days together, then each day for H > 1."""
        each = [(f"_h{d}", d - 1) for d in range(1, self.horizon + 1)] if self.horizon > 1 else []
        return [("", slice(None)), *each]

    def score_interval(self, who: str, quantiles: Tensor, close: Tensor) -> None:
        """Update the interval metrics of ``who`` ('' or 'naive_') from price quantiles (B, H, Q)."""
        for suffix, day in self._days():
            q, y = quantiles[:, day], close[:, day]
            metric_of(self.dist_metrics, f"test_{who}pinball{suffix}").update(q, y)
            metric_of(self.dist_metrics, f"test_{who}coverage{suffix}").update(q[..., 0], q[..., -1], y)
            metric_of(self.dist_metrics, f"test_{who}width{suffix}").update(q[..., 0], q[..., -1])

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


def _median_weights(levels: Sequence[float]) -> Tensor:
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


def _softplus_inverse(x: float) -> float:
    return x + math.log(-math.expm1(-x))


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
        gap_bias = [_softplus_inverse(max(float(g) - MIN_SCALE, MIN_SCALE)) for g in z.diff()]
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
        target = _by_day(scaling.scale_targets(batch.close, batch.ref), self.horizon).to(out.dtype)  # (B, H)
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
        scale = F.softplus(raw[..., 1] + _softplus_inverse(1.0)) + MIN_SCALE
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
        target = _by_day(scaling.scale_targets(batch.close, batch.ref), self.horizon).to(out.dtype)  # (B, H)
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
        raw_scale = y + torch.log(-torch.expm1(-y)) - _softplus_inverse(1.0)
        return torch.stack([centre, raw_scale], dim=-1).reshape(B, -1).to(out.dtype)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        super().update(stage, out, loss, batch, scaling)
        if stage != "test":
            return
        close = _by_day(batch.close, self.horizon).to(torch.float64)  # (B, H)
        ref = batch.ref.to(torch.float64)[:, None]  # (B, 1)
        mean, scale = self.target_params(out.detach(), scaling)
        transform = str(scaling.target_transform)
        model = price_crps(transform, mean, scale, ref, close)  # (B, H)
        naive = price_crps(transform, self.naive_mean, self.naive_std, ref, close)  # (B, H)
        for who, crps in (("", model), ("naive_", naive)):
            for suffix, day in self._days():
                metric_of(self.dist_metrics, f"test_{who}crps{suffix}").update(crps[:, day])

    def forecast(self, out: Tensor, ref: Tensor, scaling: Any) -> dict[str, Tensor]:
        """As :meth:`DistributionHead.forecast`, plus ``mean`` and ``scale`` of the unscaled target."""
        rows = super().forecast(out, ref, scaling)
        mean, scale = self.target_params(out, scaling)  # (B, H)
        if self.horizon == 1:
            mean, scale = mean[:, 0], scale[:, 0]
        return {**rows, "mean": mean, "scale": scale}


class ClassificationHead(Head):
    """Cross-entropy over ``num_classes`` logits, with accuracy."""

    member_score = "acc"

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.acc = nn.ModuleDict(
            # validate_args=False: its checks count torch.unique() values, two host syncs a step on a GPU;
            # the data module already checks the labels, and argmax predictions are always in range.
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False) for stage in STAGES}
        )

    def loss(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        return F.cross_entropy(out, batch.y)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        super().update(stage, out, loss, batch, scaling)
        metric_of(self.acc, f"{stage}_acc").update(out.detach().argmax(dim=1), batch.y)

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        return {**super().epoch_metrics(stage), f"{stage}_acc": self.acc[f"{stage}_acc"]}

    def combine(self, out: Tensor) -> Tensor:
        """The log of the members' mean class probabilities: logits whose softmax is that mean."""
        return out.log_softmax(dim=-1).logsumexp(dim=0) - math.log(out.shape[0])

    def predict(self, out: Tensor, batch: Any, scaling: Any) -> dict[str, Tensor]:
        probabilities = out.softmax(dim=1)
        return {"prediction": probabilities.argmax(dim=1), "probabilities": probabilities, "actual": batch.y}


# head name -> (the task it serves, its class). The task is the data module's; ``head: auto`` takes the
# first head of that task.
HEADS: dict[str, tuple[str, type[Head]]] = {
    "point": ("regression", PointHead),
    "quantile": ("regression", QuantileHead),
    "gaussian": ("regression", GaussianHead),
    "classification": ("classification", ClassificationHead),
}
TASK_KINDS = ("regression", "classification")


def default_head(task: str) -> str:
    """The head ``head: auto`` stands for: the first registered head serving ``task``."""
    return next(name for name, (serves, _) in HEADS.items() if serves == task)
