"""What every task's figures and prediction tables share: running a model over a whole split, on rank 0."""

from __future__ import annotations

from typing import Any, Literal

import lightning.pytorch as pl
import numpy as np
import torch
from torch import Tensor

Stage = Literal["fit", "test", "predict"]
# The split each stage's plot judges the model on; fit never looks at the test period.
STAGE_SPLITS: dict[str, str] = {"fit": "val", "test": "test", "predict": "test"}
FORWARD_CHUNK = 2048  # samples per forward pass when rank 0 runs a whole split


@torch.no_grad()
def predict_all(pl_module: pl.LightningModule, batch: Any) -> dict[str, Tensor]:
    """``predict_step``'s outputs for a whole raw batch (a NamedTuple of CPU tensors), in chunks, on CPU.

    Each chunk goes through the model's one forecast path, ``RecurrentModel.forecast``. Runs in eval mode
    under the Trainer's precision (autocast for ``bf16-mixed``), so the plotted
    predictions are those the test step scored; the training mode is restored afterwards.
    """
    try:
        precision = pl_module.trainer.precision_plugin
    except RuntimeError:  # not attached to a Trainer
        precision = None
    was_training = pl_module.training
    pl_module.eval()
    try:
        chunks: list[dict[str, Tensor]] = []
        for start in range(0, len(batch[0]), FORWARD_CHUNK):
            chunk = type(batch)(*(t[start : start + FORWARD_CHUNK].to(pl_module.device) for t in batch))
            if precision is None:
                rows = pl_module.forecast(chunk)
            else:
                with precision.forward_context():
                    rows = pl_module.forecast(chunk)
            chunks.append({k: v.detach().cpu() for k, v in rows.items()})
        return {key: torch.cat([c[key] for c in chunks]) for key in chunks[0]}
    finally:
        pl_module.train(was_training)


def rmse(prediction: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error, in the inputs' units (the one definition: reports and the backtest use it)."""
    return float(np.sqrt(np.mean((np.asarray(prediction) - np.asarray(actual)) ** 2)))
