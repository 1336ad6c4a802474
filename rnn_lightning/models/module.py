"""The one LightningModule: a recurrent backbone, a readout over its time steps, and a task head.

``task="regression"`` (KOSPI) trains with MSE on scaled targets and reports prices; ``task="classification"``
(row-sequence MNIST) trains with cross-entropy. The data module decides the task and the sizes and the
CLI links them in, so a config names only the model's own choices.

Metrics are torchmetrics objects: they accumulate on the device without host syncs inside a step, sync
across DDP ranks when computed (so every rank logs the same, exact value), and are logged once per
epoch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanAbsoluteError, MeanAbsolutePercentageError, MeanSquaredError, Metric
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from rnn_lightning.data.base import check_positive
from rnn_lightning.errors import UserInputError
from rnn_lightning.models.backbones import BACKBONES, RecurrentBackbone

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


class RegressionHead(nn.Module):
    """MSE on scaled targets; prices (via the data module's ``to_price``) for RMSE, MAE, MAPE and the
    naive persistence baseline, so every test run shows whether the model beats doing nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.loss = nn.ModuleDict({f"{stage}_loss": BatchMean() for stage in STAGES})
        self.val_rmse = MeanSquaredError(squared=False)
        self.test_rmse = MeanSquaredError(squared=False)
        self.test_naive_rmse = MeanSquaredError(squared=False)
        self.test_mae = MeanAbsoluteError()
        self.test_mape = MeanAbsolutePercentageError()
        self.test_direction_acc = _mean()

    def criterion(self, out: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(out, target)

    def update(self, stage: str, module: RecurrentModel, out: Tensor, loss: Tensor, batch: tuple) -> None:
        self.loss[f"{stage}_loss"].update(loss, len(out))
        if stage == "train":
            return
        to_price = module.to_price
        if to_price is None:
            return
        _, _, ref, close = batch
        price = to_price(out.detach(), ref)  # (B,)
        if stage == "val":
            self.val_rmse.update(price, close)
            return
        self.test_rmse.update(price, close)
        self.test_naive_rmse.update(ref, close)
        self.test_mae.update(price, close)
        self.test_mape.update(price, close)
        # Directional accuracy: did the model call the day's up/down move right?
        self.test_direction_acc.update((torch.sign(price - ref) == torch.sign(close - ref)).float())

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        metrics: dict[str, Metric] = {f"{stage}_loss": self.loss[f"{stage}_loss"]}
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

    def predict(self, module: RecurrentModel, out: Tensor, batch: tuple) -> dict[str, Tensor]:
        _, _, ref, close = batch
        prediction = module.to_price(out, ref) if module.to_price is not None else out.reshape(-1)
        return {"prediction": prediction, "actual": close, "naive": ref}


class ClassificationHead(nn.Module):
    """Cross-entropy over ``num_classes`` logits, with accuracy."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.loss = nn.ModuleDict({f"{stage}_loss": BatchMean() for stage in STAGES})
        self.acc = nn.ModuleDict(
            # validate_args=False: its checks count torch.unique() values, two host syncs a step on a GPU;
            # the data module already checks the labels, and argmax predictions are always in range.
            {
                f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False)
                for stage in STAGES
            }
        )

    def criterion(self, out: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(out, target)

    def update(self, stage: str, module: RecurrentModel, out: Tensor, loss: Tensor, batch: tuple) -> None:
        target = batch[1]
        self.loss[f"{stage}_loss"].update(loss, len(out))
        predicted = out.detach().argmax(dim=1)
        self.acc[f"{stage}_acc"].update(predicted, target)

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        return {f"{stage}_loss": self.loss[f"{stage}_loss"], f"{stage}_acc": self.acc[f"{stage}_acc"]}

    def predict(self, module: RecurrentModel, out: Tensor, batch: tuple) -> dict[str, Tensor]:
        probabilities = out.softmax(dim=1)
        return {"prediction": probabilities.argmax(dim=1), "probabilities": probabilities, "actual": batch[1]}


READOUTS = ("flatten", "last")
OUTPUT_ACTIVATIONS: dict[str, type[nn.Module]] = {"none": nn.Identity, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}
# task -> the head for ``num_outputs`` targets or classes.
HEADS: dict[str, Callable[[int], nn.Module]] = {
    "regression": lambda num_outputs: RegressionHead(),
    "classification": ClassificationHead,
}
TASKS = tuple(HEADS)


class RecurrentModel(pl.LightningModule):
    """A recurrent backbone chosen by name, a readout and a regression or classification head.

    Args:
        backbone: ``rnn``, ``lstm``, ``gru`` or ``bilstm``.
        hidden_size: Hidden units per layer and direction.
        num_layers: Stacked recurrent layers.
        dropout: Dropout between stacked layers, in [0, 1).
        bidirectional: Read sequences both ways (``bilstm`` implies it).
        parallel_directions: On the CPU, run the two directions of each bidirectional layer at once on
            two threads (best with ``num_threads: 1`` and two free cores); same weights and outputs.
        readout: ``flatten`` feeds every time step's output to the head (the tutorial's
            ``Linear(T*H, out)``); ``last`` feeds only the final step.
        output_activation: ``none``, or ``sigmoid`` after the head (the tutorial's RNN).
        zero_init_head: Start the head at exactly zero output; with a ``diff``/``log_return`` target
            that is the persistence forecast, which training must then improve on.
        lr: Adam's learning rate.
        weight_decay: Adam's L2 penalty.
        task: ``regression`` or ``classification``; linked from the data module.
        input_size: Features per time step; linked from the data module.
        sequence_length: Time steps per sample; linked from the data module.
        num_outputs: Regression targets or classes; linked from the data module.
    """

    def __init__(
        self,
        backbone: str = "gru",
        hidden_size: int = 8,
        num_layers: int = 2,
        dropout: float = 0.0,
        bidirectional: bool = False,
        parallel_directions: bool = False,
        readout: Literal["flatten", "last"] = "flatten",
        output_activation: Literal["none", "sigmoid", "tanh"] = "none",
        zero_init_head: bool = False,
        lr: float = 1e-3,
        weight_decay: float = 0.0,
        task: Literal["regression", "classification"] = "regression",
        input_size: int = 4,
        sequence_length: int = 5,
        num_outputs: int = 1,
    ) -> None:
        super().__init__()
        for name, value in (
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("input_size", input_size),
            ("sequence_length", sequence_length),
            ("num_outputs", num_outputs),
        ):
            check_positive(name, value)
        if not 0.0 <= dropout < 1.0:
            raise UserInputError(f"dropout must lie in [0, 1), got {dropout}")
        if lr <= 0:
            raise UserInputError(f"lr must be positive, got {lr}")
        for name, value, choices in (
            ("backbone", backbone, tuple(BACKBONES)),
            ("readout", readout, READOUTS),
            ("output_activation", output_activation, tuple(OUTPUT_ACTIVATIONS)),
            ("task", task, TASKS),
        ):
            if value not in choices:
                raise UserInputError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        self.save_hyperparameters()
        self.backbone = RecurrentBackbone(
            backbone, input_size, hidden_size, num_layers, dropout, bidirectional, parallel_directions
        )
        width = self.backbone.output_size * (sequence_length if readout == "flatten" else 1)
        self.fc = nn.Linear(width, num_outputs)
        if zero_init_head:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)
        self.activation = OUTPUT_ACTIVATIONS[output_activation]()
        self.head = HEADS[task](num_outputs)

    def __setattr__(self, name: str, value: Any) -> None:
        # Lightning sets this plain string twice around every hook call, ~50 times a training step;
        # nn.Module.__setattr__'s parameter/module/buffer checks then cost ~3% of a KOSPI fit.
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)

    def forward(self, x: Tensor) -> Tensor:
        """``x`` (B, T, F) -> (B, num_outputs): regression values or class logits."""
        out = self.backbone(x)  # (B, T, H*dirs)
        if self.hparams.readout == "flatten":
            out = out.reshape(out.shape[0], -1)  # (B, T*H*dirs)
        else:
            out = out[:, -1]  # (B, H*dirs)
        return self.activation(self.fc(out))

    @property
    def to_price(self):
        """The data module's inverse scaling for regression outputs, when there is one."""
        trainer = self._trainer
        datamodule = getattr(trainer, "datamodule", None) if trainer is not None else None
        return getattr(datamodule, "to_price", None)

    def _step(self, stage: str, batch: tuple) -> Tensor:
        x, target = batch[0], batch[1]
        out = self(x)
        loss = self.head.criterion(out, target)
        self.head.update(stage, self, out, loss, batch)
        return loss

    def training_step(self, batch: tuple, batch_idx: int) -> Tensor:
        return self._step("train", batch)

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._step("val", batch)

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._step("test", batch)

    def predict_step(self, batch: tuple, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        return self.head.predict(self, self(batch[0]), batch)

    def _log_epoch(self, stage: str) -> None:
        # Logging the Metric object: Lightning calls compute(), which sums the states across DDP ranks, so
        # every rank logs the same exact value (no sync_dist, and no warning asking for it), then resets it.
        for name, metric in self.head.epoch_metrics(stage).items():
            if metric.update_count:
                self.log(name, metric)

    def on_train_epoch_end(self) -> None:
        self._log_epoch("train")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # The fused kernel updates each parameter in one call instead of a dozen small ops: about 0.2 ms
        # less per step for the tiny KOSPI models on a CPU (benchmarks/bench_speed.py). Same Adam.
        fused = self.device.type in ("cpu", "cuda")
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay, fused=fused or None
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint of another task or other sizes with a message naming the difference."""
        trainer = self._trainer
        source = f"checkpoint {trainer.ckpt_path}" if trainer is not None else "the checkpoint"
        self.check_checkpoint(checkpoint, source)

    def check_checkpoint(self, checkpoint: dict[str, Any], source: str = "the checkpoint") -> None:
        """Raise :class:`UserInputError` naming every size or choice in which ``checkpoint`` differs from this model."""
        saved = checkpoint.get("hyper_parameters", {})
        keys = ("task", "backbone", "input_size", "sequence_length", "num_outputs", "hidden_size",
                "num_layers", "readout", "bidirectional")
        differ = [k for k in keys if k in saved and saved[k] != self.hparams[k]]
        if differ:
            pairs = ", ".join(f"{k}: checkpoint {saved[k]!r} vs config {self.hparams[k]!r}" for k in differ)
            raise UserInputError(
                f"{source} does not fit this model ({pairs}); pass the settings it was trained with, "
                "e.g. the config.yaml saved in its run folder"
            )
