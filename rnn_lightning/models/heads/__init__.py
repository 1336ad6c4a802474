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

The package: :mod:`~rnn_lightning.models.heads.scoring` (the scoring math as pure functions),
:mod:`~rnn_lightning.models.heads.metrics` (the metric classes), one module per head family
(:mod:`~rnn_lightning.models.heads.base`, ``point``, ``distribution``, ``classification``),
:mod:`~rnn_lightning.models.heads.ensemble` (an ensemble's head) and the registry below. Whatever an
ensemble, an export or a report asks of a head is a method of :class:`Head` with a default there.
"""

from __future__ import annotations

from rnn_lightning.models.heads.base import STAGES, Head
from rnn_lightning.models.heads.classification import ClassificationHead
from rnn_lightning.models.heads.distribution import DistributionHead, GaussianHead, QuantileHead
from rnn_lightning.models.heads.ensemble import EnsembleHead
from rnn_lightning.models.heads.metrics import (
    BatchMean,
    ElementMean,
    IntervalCoverage,
    IntervalMetrics,
    IntervalWidth,
    MeanScore,
    MemberScore,
    PinballLoss,
    metric_of,
)
from rnn_lightning.models.heads.naive import NaiveDistribution
from rnn_lightning.models.heads.point import MemberSpread, PointHead
from rnn_lightning.models.heads.scoring import (
    DEFAULT_QUANTILES,
    MIN_SCALE,
    SQRT_PI,
    check_quantiles,
    gaussian_crps,
    lognormal_crps,
    member_quantiles,
    pinball,
    price_crps,
)

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


__all__ = [
    "DEFAULT_QUANTILES",
    "HEADS",
    "MIN_SCALE",
    "SQRT_PI",
    "STAGES",
    "TASK_KINDS",
    "BatchMean",
    "ClassificationHead",
    "DistributionHead",
    "ElementMean",
    "EnsembleHead",
    "GaussianHead",
    "Head",
    "IntervalCoverage",
    "IntervalMetrics",
    "IntervalWidth",
    "MeanScore",
    "MemberScore",
    "MemberSpread",
    "NaiveDistribution",
    "PinballLoss",
    "PointHead",
    "QuantileHead",
    "check_quantiles",
    "default_head",
    "gaussian_crps",
    "lognormal_crps",
    "member_quantiles",
    "metric_of",
    "pinball",
    "price_crps",
]
