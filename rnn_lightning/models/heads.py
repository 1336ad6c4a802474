"""Task heads chosen by name: the loss, the epoch metrics and the prediction rows of one kind of output.

A head sees the network's raw output ``out``, the batch (named fields: ``x``, ``ref``, ``close`` for
prices; ``x``, ``y`` for images) and the model's scaling (:mod:`rnn_lightning.models.scaling`), which
turns outputs into the data's units. Metrics are torchmetrics objects: they accumulate on the device
without host syncs inside a step, sum their states across DDP ranks when computed, and are logged once
per epoch under the names below.

* ``point`` (regression): MSE on scaled targets; ``val_rmse`` and ``test_rmse``, ``test_mae``,
  ``test_mape``, ``test_naive_rmse`` (the persistence forecast: tomorrow's close is today's) and
  ``test_direction_acc`` in price units.
* ``classification``: cross-entropy over the classes; ``{stage}_acc``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError, Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

STAGES = ("train", "val", "test")


def _mean() -> MeanMetric:
    # "disable" skips the NaN check, which would cost a host sync on every update.
    return MeanMetric(nan_strategy="disable")


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


class Head(nn.Module):
    """What every head provides; ``{stage}_loss`` is common to all."""

    def __init__(self) -> None:
        super().__init__()
        self.losses = nn.ModuleDict({f"{stage}_loss": BatchMean() for stage in STAGES})

    def output_size(self, num_outputs: int) -> int:
        """The network's output width for ``num_outputs`` targets or classes."""
        return num_outputs

    def loss(self, out: Tensor, batch: Any, scaling: nn.Module) -> Tensor:
        raise NotImplementedError

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: nn.Module) -> None:
        self.losses[f"{stage}_loss"].update(loss, len(out))

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        return {f"{stage}_loss": self.losses[f"{stage}_loss"]}

    def predict(self, out: Tensor, batch: Any, scaling: nn.Module) -> dict[str, Tensor]:
        raise NotImplementedError


class PointHead(Head):
    """One number per target: MSE on scaled targets, RMSE/MAE/MAPE and the naive baseline in prices."""

    def __init__(self) -> None:
        super().__init__()
        self.val_rmse = MeanSquaredError(squared=False)
        self.test_rmse = MeanSquaredError(squared=False)
        self.test_naive_rmse = MeanSquaredError(squared=False)
        self.test_mae = MeanAbsoluteError()
        self.test_mape = MeanAbsolutePercentageError()
        self.test_direction_acc = _mean()

    def loss(self, out: Tensor, batch: Any, scaling: nn.Module) -> Tensor:
        target = scaling.scale_targets(batch.close, batch.ref)  # (B,)
        return F.mse_loss(out.reshape(target.shape), target)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: nn.Module) -> None:
        super().update(stage, out, loss, batch, scaling)
        if stage == "train":
            return
        price = scaling.to_price(out.detach().reshape(-1), batch.ref)  # (B,)
        if stage == "val":
            self.val_rmse.update(price, batch.close)
            return
        ref, close = batch.ref, batch.close
        self.test_rmse.update(price, close)
        self.test_naive_rmse.update(ref, close)
        self.test_mae.update(price, close)
        self.test_mape.update(price, close)
        # Directional accuracy: did the model call the day's up/down move right?
        self.test_direction_acc.update((torch.sign(price - ref) == torch.sign(close - ref)).float())

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
        return metrics

    def predict(self, out: Tensor, batch: Any, scaling: nn.Module) -> dict[str, Tensor]:
        return {"prediction": scaling.to_price(out.reshape(-1), batch.ref), "actual": batch.close, "naive": batch.ref}


class ClassificationHead(Head):
    """Cross-entropy over ``num_classes`` logits, with accuracy."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.acc = nn.ModuleDict(
            # validate_args=False: its checks count torch.unique() values, two host syncs a step on a GPU;
            # the data module already checks the labels, and argmax predictions are always in range.
            {
                f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)
                for stage in STAGES
            }
        )

    def loss(self, out: Tensor, batch: Any, scaling: nn.Module) -> Tensor:
        return F.cross_entropy(out, batch.y)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: nn.Module) -> None:
        super().update(stage, out, loss, batch, scaling)
        self.acc[f"{stage}_acc"].update(out.detach().argmax(dim=1), batch.y)

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        return {**super().epoch_metrics(stage), f"{stage}_acc": self.acc[f"{stage}_acc"]}

    def predict(self, out: Tensor, batch: Any, scaling: nn.Module) -> dict[str, Tensor]:
        probabilities = out.softmax(dim=1)
        return {"prediction": probabilities.argmax(dim=1), "probabilities": probabilities, "actual": batch.y}


# head name -> (the task it serves, its class). The task is the data module's; ``head: auto`` takes the
# first head of that task.
HEADS: dict[str, tuple[str, type[Head]]] = {
    "point": ("regression", PointHead),
    "classification": ("classification", ClassificationHead),
}
TASKS = ("regression", "classification")


def default_head(task: str) -> str:
    return next(name for name, (serves, _) in HEADS.items() if serves == task)
