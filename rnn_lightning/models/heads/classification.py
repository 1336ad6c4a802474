"""The classification head: cross-entropy over the classes' logits, with accuracy."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from rnn_lightning.models.heads.base import STAGES, Head
from rnn_lightning.models.heads.metrics import metric_of
from rnn_lightning.models.heads.scoring import DEFAULT_QUANTILES


class ClassificationHead(Head):
    """Cross-entropy over ``num_classes`` logits, with accuracy.

    Args:
        num_classes: The number of classes (the network's output width).
    """

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.acc = nn.ModuleDict(
            # validate_args=False: its checks count torch.unique() values, two host syncs a step on a GPU;
            # the data module already checks the labels, and argmax predictions are always in range.
            {f"{stage}_acc": MulticlassAccuracy(num_classes, average="micro", validate_args=False) for stage in STAGES}
        )

    @classmethod
    def create(cls, num_outputs: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Head:
        return cls(num_outputs)

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

    def member_score(self) -> str:
        return "acc"

    def member_errors(self, out: Tensor, batch: Any, scaling: Any) -> tuple[Tensor, int]:
        """Each member's number of correct answers (M,) in the batch, and the batch size."""
        return (out.argmax(dim=-1) == batch.y).sum(dim=1), out.shape[1]
