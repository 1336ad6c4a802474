"""The row-sequence MNIST task's figures and prediction rows.

A confusion matrix, the misclassified images, and ``predictions.csv`` with every class's probability.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from torch import Tensor
from torchmetrics.functional.classification import multiclass_confusion_matrix

from rnn_lightning.data.batches import Images
from rnn_lightning.data.rows import RowMNISTDataModule
from rnn_lightning.reports.common import STAGE_SPLITS, Stage, predict_all


def figures(
    pl_module: pl.LightningModule, datamodule: RowMNISTDataModule, stage: Stage, max_images: int
) -> dict[str, Figure]:
    """A confusion matrix, and a grid of the first ``max_images`` misclassified images of the split."""
    split = STAGE_SPLITS[stage]
    if split == "val" and not datamodule.has_validation:
        return {}
    images, labels = datamodule.split_tensors(split)
    predicted = predict_all(pl_module, Images(images, labels))["prediction"]
    if not len(labels):
        return {}
    num_classes = int(pl_module.hparams.num_outputs)
    matrix = multiclass_confusion_matrix(predicted, labels, num_classes).numpy()  # row: true, column: predicted
    correct = int(np.trace(matrix))
    dataset = getattr(datamodule, "dataset", "")

    fig = Figure(figsize=(7, 6.2), layout="constrained")
    ax = fig.subplots()
    shown = ax.imshow(np.log1p(matrix), cmap="Blues")
    threshold = np.log1p(matrix).max() / 2
    for (i, j), count in np.ndenumerate(matrix):
        if count:
            ax.text(
                j,
                i,
                str(count),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if np.log1p(count) > threshold else "black",
            )
    ax.set_xticks(range(num_classes))
    ax.set_yticks(range(num_classes))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(shown, ax=ax, shrink=0.8, label="log(1 + count)")
    ax.set_title(f"{dataset} {split}: accuracy {correct / len(labels):.2%} ({correct:,}/{len(labels):,})")
    figures = {f"confusion_matrix_{stage}": fig}

    wrong = torch.nonzero(predicted != labels).flatten()[:max_images]
    if len(wrong):
        cols = min(len(wrong), 5)
        rows = math.ceil(len(wrong) / cols)
        grid = Figure(figsize=(1.6 * cols, 1.8 * rows + 0.4), layout="constrained")
        axes = np.atleast_1d(grid.subplots(rows, cols)).flatten()
        for ax, index in zip(axes, wrong.tolist(), strict=False):
            ax.imshow(images[index].numpy(), cmap="gray_r", vmin=0, vmax=255)
            ax.set_title(f"#{index}: true {int(labels[index])}, pred {int(predicted[index])}", fontsize=7)
        for ax in axes:
            ax.axis("off")
        total = int((predicted != labels).sum())
        grid.suptitle(f"{split}: first {len(wrong)} of {total:,} misclassified", fontsize=9)
        figures[f"misclassified_{stage}"] = grid
    return figures


def table(datamodule: RowMNISTDataModule, outputs: dict[str, Tensor]) -> pd.DataFrame:
    """Test-image index, predicted and true label, and the probability of every class."""
    probabilities = outputs["probabilities"].double().numpy()
    table = pd.DataFrame(
        {
            "index": np.arange(len(probabilities)),
            "predicted": outputs["prediction"].numpy(),
            "actual": outputs["actual"].numpy(),
        }
    )
    for k in range(probabilities.shape[1]):
        table[f"p{k}"] = probabilities[:, k]
    return table


def summary(table: pd.DataFrame) -> str:
    """The line ``predict`` prints: the accuracy over the predicted images."""
    return f"accuracy {(table['predicted'] == table['actual']).mean():.2%} on {len(table):,} images"
