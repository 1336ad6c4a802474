"""The point head, and the interval a point ensemble draws from its members' forecasts."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError, Metric

from rnn_lightning.models.heads.base import Head
from rnn_lightning.models.heads.metrics import IntervalMetrics, mean_metric, metric_of
from rnn_lightning.models.heads.naive import NaiveDistribution
from rnn_lightning.models.heads.scoring import (
    DEFAULT_QUANTILES,
    check_quantiles,
    member_quantiles,
)


class PointHead(Head):
    """One number per day ahead: MSE on scaled targets, RMSE/MAE/MAPE and the naive baseline in prices.

    Args:
        horizon: Days ahead (H); the network outputs one value per day.

    The regression heads derive from it and score their median the same way. An ensemble of point heads
    takes its forecast interval from its members' forecasts (:class:`MemberSpread`).
    """

    @classmethod
    def outputs_setting(cls) -> str:
        """A forecasting head's outputs are its steps ahead: the data's ``horizon``."""
        return "horizon"

    def __init__(self, horizon: int = 1) -> None:
        super().__init__()
        self.horizon = horizon
        self.val_rmse = MeanSquaredError(squared=False)
        self.test_rmse = MeanSquaredError(squared=False)
        self.test_naive_rmse = MeanSquaredError(squared=False)
        self.test_mae = MeanAbsoluteError()
        self.test_mape = MeanAbsolutePercentageError()
        self.test_direction_acc = mean_metric()
        days = range(1, horizon + 1) if horizon > 1 else ()
        self.per_day = nn.ModuleDict(
            {f"test_{name}_h{d}": MeanSquaredError(squared=False) for d in days for name in ("rmse", "naive_rmse")}
        )

    @classmethod
    def create(cls, num_outputs: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Head:
        return cls(num_outputs)

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

    def member_points(self, out: Tensor, ref: Tensor, scaling: Any) -> Tensor:
        """Each member's point forecast in prices (M, B, H), from their raw outputs (M, B, K) and ``ref`` (B,)."""
        M, B = out.shape[:2]
        point = self.scaled_point(out.reshape(M * B, -1))  # (M*B, H)
        tiled_ref = ref.repeat(M)  # (M*B,)
        price = scaling.to_price(point.reshape(-1) if self.horizon == 1 else point, tiled_ref)
        per_member: Tensor = price.reshape(M, B, self.horizon)
        return per_member

    def member_errors(self, out: Tensor, batch: Any, scaling: Any) -> tuple[Tensor, int]:
        """Each member's sum of squared price errors (M,) over the batch's closes, and their count."""
        price = self.member_points(out, batch.ref, scaling)  # (M, B, H)
        close = batch.close.reshape(out.shape[1], -1).to(price.dtype)  # (B, H)
        return ((price - close) ** 2).sum(dim=(1, 2)), close.numel()

    def member_spread(self, quantiles: Sequence[float]) -> MemberSpread | None:
        return MemberSpread(self.horizon, quantiles)

    def member_interval(self, out: Tensor, batch: Any, scaling: Any, levels: Sequence[float]) -> Tensor:
        return member_quantiles(self.member_points(out, batch.ref, scaling), levels)  # (B, H, Q)


class MemberSpread(NaiveDistribution):
    """The scores of a point ensemble's interval (its members' spread) and of the naive distribution.

    Holds the quantile levels, the naive distribution fitted on the training windows (buffers named as a
    distribution head's, under the ensemble head's ``spread``) and the interval metrics.

    Args:
        horizon: Days ahead (H).
        quantiles: The interval's quantile levels (the model's ``quantiles``).
    """

    def __init__(self, horizon: int, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.levels = check_quantiles(quantiles)
        self.register_buffer("quantile_levels", torch.tensor(self.levels, dtype=torch.float64), persistent=False)
        self.register_naive(horizon, self.levels)
        self.dist_metrics = IntervalMetrics(horizon, self.levels)

    def score(self, quantiles: Tensor, close: Tensor, ref: Tensor, scaling: Any) -> None:
        """Score the members' quantiles (B, H, Q) and the naive distribution's against ``close`` (B, H).

        Args:
            quantiles: The members' quantiles in prices (B, H, Q).
            close: The actual closes (B, H).
            ref: The last closes (B,).
            scaling: The model's scaling.
        """
        self.dist_metrics.score("", quantiles, close)
        self.dist_metrics.score("naive_", self.naive_price_quantiles(ref, scaling), close)
