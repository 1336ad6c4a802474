"""The heads' epoch metrics: torchmetrics classes that accumulate on the device without host syncs.

Each sums its states across DDP ranks when computed. :class:`IntervalMetrics` is the set a forecast
interval is scored by (a distribution head's, a point ensemble's members' spread), beside the naive
distribution's; :class:`MemberScore` an ensemble's members' own scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.aggregation import MeanMetric

from rnn_lightning.models.heads.scoring import pinball

INTERVAL_NAMES = ("pinball", "coverage", "width")


def mean_metric() -> MeanMetric:
    """A ``MeanMetric`` without its NaN check, which would cost a host sync on every update."""
    return MeanMetric(nan_strategy="disable")


def metric_of(metrics: nn.ModuleDict, name: str) -> Any:
    """``metrics[name]``, typed loosely: each metric class has its own ``update`` arguments."""
    return metrics[name]


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
        mean: Tensor = self.total / self.count
        return mean


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
        mean: Tensor = self.total / self.count
        return mean


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


class MemberScore(Metric):
    """Each member's RMSE (or accuracy) over an epoch, reduced to their mean or sample standard deviation."""

    full_state_update = False

    def __init__(self, members: int, score: str, reduce: str) -> None:
        super().__init__()
        self.score, self.reduce = score, reduce
        self.add_state("total", torch.zeros(members, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor, count: int) -> None:
        """Per-member sums (M,) of squared errors (``rmse``) or of correct answers (``acc``) over ``count``."""
        self.total += values.detach().to(torch.float64)
        self.count += count

    def compute(self) -> Tensor:
        each = self.total / self.count
        if self.score == "rmse":
            each = each.sqrt()
        reduced: Tensor = each.mean() if self.reduce == "mean" else each.std()
        return reduced


class IntervalMetrics(nn.ModuleDict):
    """The test metrics of a forecast interval and of the naive distribution's, by name.

    ``test_{who}{name}{suffix}`` for ``who`` in '' and 'naive_', each of ``names`` (:data:`INTERVAL_NAMES`,
    plus ``crps`` for the Gaussian head) and the suffix '' (all days together) and ``_h1`` .. for H > 1.
    The metrics keep no persistent state, so they add no checkpoint keys.

    Args:
        horizon: Days ahead (H).
        levels: The quantile levels the interval's quantiles are forecast at.
        names: The scores to keep.
    """

    def __init__(self, horizon: int, levels: Sequence[float], names: Sequence[str] = INTERVAL_NAMES) -> None:
        super().__init__()
        self.horizon = horizon
        makers = {
            "pinball": lambda: PinballLoss(levels),
            "coverage": IntervalCoverage,
            "width": IntervalWidth,
            "crps": MeanScore,
        }
        for who in ("", "naive_"):
            for suffix, _ in self.days():
                for name in names:
                    self[f"test_{who}{name}{suffix}"] = makers[name]()

    def days(self) -> list[tuple[str, Any]]:
        """Metric name suffixes and day indices: all days together, then each day for H > 1."""
        each = [(f"_h{d}", d - 1) for d in range(1, self.horizon + 1)] if self.horizon > 1 else []
        return [("", slice(None)), *each]

    def score(self, who: str, quantiles: Tensor, close: Tensor) -> None:
        """Update the interval metrics of ``who`` ('' or 'naive_') from price quantiles (B, H, Q).

        Args:
            who: '' for the forecast, 'naive_' for the naive distribution.
            quantiles: Quantiles in prices (B, H, Q), increasing in Q; the interval runs from the first
                to the last.
            close: The actual closes (B, H).
        """
        for suffix, day in self.days():
            q, y = quantiles[:, day], close[:, day]
            metric_of(self, f"test_{who}pinball{suffix}").update(q, y)
            metric_of(self, f"test_{who}coverage{suffix}").update(q[..., 0], q[..., -1], y)
            metric_of(self, f"test_{who}width{suffix}").update(q[..., 0], q[..., -1])

    def score_values(self, who: str, name: str, values: Tensor) -> None:
        """Update the ``name`` metrics (``crps``) of ``who`` from per-sample scores ``values`` (B, H)."""
        for suffix, day in self.days():
            metric_of(self, f"test_{who}{name}{suffix}").update(values[:, day])
