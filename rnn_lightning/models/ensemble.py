"""The head of an ensemble: the configured head applied to ``M`` members' outputs at once.

The members' raw outputs arrive as (M, B, K). Training minimises the *sum* of the members' losses (each
member's gradient is then its solo model's; a mean would shrink every gradient by ``M`` and change what
Adam's epsilon means). Everything else is about the ensemble's forecast, which the configured head's
:meth:`~rnn_lightning.models.heads.Head.combine` expresses as one raw output (B, K) in its own
parametrisation, so the solo head's metrics, prediction rows and exported outputs apply unchanged:

* ``point``: the members' mean forecast;
* ``quantile``: the members' quantiles averaged level by level;
* ``gaussian``: the Gaussian with the members' mixture's mean and variance;
* ``classification``: the members' mean class probabilities.

Beside them (test only) the members' own scores: ``test_member_rmse_mean`` / ``test_member_rmse_sd``
(mean and sample standard deviation over members of each member's RMSE, price units), or
``test_member_acc_mean`` / ``_sd`` for classification. A point ensemble also has a forecast interval:
the members' forecasts' quantiles at the model's ``quantiles`` levels (linear interpolation), scored by
``test_pinball``, ``test_coverage`` and ``test_width`` beside the naive distribution's ``test_naive_*``
as for the distribution heads; its prediction rows carry those quantiles, so ``predictions.csv``, the
plots' band and an exported file show them. The spread of members is model uncertainty only (no noise),
so expect its coverage to fall short of the nominal level (docs/ensembles.md).

``{stage}_loss`` is the members' mean loss: comparable with a solo model's and what checkpoints monitor.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from rnn_lightning.models.heads import DistributionHead, Head, PointHead, metric_of


def member_quantiles(values: Tensor, levels: Sequence[float]) -> Tensor:
    """Quantiles over the first (member) dimension, linearly interpolated: (M, ...) -> (..., Q).

    ``numpy.quantile``'s default ("linear") rule, written with a sort and fixed indices so that an
    exported graph needs no quantile operator.
    """
    ordered = values.sort(dim=0).values
    last = values.shape[0] - 1
    columns = []
    for level in levels:
        position = level * last
        lo = int(position)
        hi = min(lo + 1, last)
        weight = position - lo
        columns.append(ordered[lo] + weight * (ordered[hi] - ordered[lo]) if weight else ordered[lo])
    return torch.stack(columns, dim=-1)


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
        return each.mean() if self.reduce == "mean" else each.std()


class MemberInterval(DistributionHead):
    """A point ensemble's interval from its members: a distribution head's naive fit and interval metrics.

    Its quantiles come from :func:`member_quantiles`, not from network outputs: one point per member
    and day ahead.
    """

    @property
    def params_per_day(self) -> int:
        return 1


class EnsembleHead(Head):
    """``members`` members' outputs scored with ``inner`` (the configured head) as one ensemble.

    Args:
        inner: The configured head (point, quantile, gaussian or classification).
        members: The number of members (at least 2).
        quantiles: The model's quantile levels: a point ensemble's member interval.
    """

    inner: Head  # for the type checker (nn.Module.__getattr__ would say Tensor | Module)
    spread: MemberInterval | None

    def __init__(self, inner: Head, members: int, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.inner = inner
        self.members = members
        self.score = inner.member_score
        self.member_scores = nn.ModuleDict(
            {f"test_member_{self.score}_{r}": MemberScore(members, self.score, r) for r in ("mean", "sd")}
        )
        # A point ensemble's interval from its members, beside the naive distribution: a DistributionHead's
        # naive fit and interval metrics, used for those alone.
        self.spread = MemberInterval(cast(PointHead, inner).horizon, quantiles) if inner.member_interval else None
        self.needs_naive = self.spread is not None or inner.needs_naive
        levels = getattr(inner, "levels", None) or (self.spread.levels if self.spread is not None else None)
        if levels is not None:
            self.levels = levels  # the reports' band levels (rnn_lightning/reports/kospi.py)

    @property
    def export_outputs(self) -> tuple[str, ...] | None:
        if self.spread is not None:
            return ("prediction", "quantiles")
        return getattr(self.inner, "export_outputs", None)

    def output_size(self, num_outputs: int) -> int:
        return self.inner.output_size(num_outputs)

    def _naive_owner(self) -> DistributionHead:
        """Who holds the naive distribution (fitted on the training windows' moves): called when needs_naive."""
        return self.spread if self.spread is not None else cast(DistributionHead, self.inner)

    def fit_naive(self, moves: Tensor) -> None:
        self._naive_owner().fit_naive(moves)

    @property
    def naive_fitted(self) -> Tensor:
        return self._naive_owner().naive_fitted

    def _tiled(self, batch: Any) -> Any:
        """The batch's targets repeated for every member (the inputs are not needed)."""
        fields = {k: v.repeat(self.members, *([1] * (v.dim() - 1))) for k, v in batch._asdict().items() if k != "x"}
        return batch._replace(**fields)

    def loss(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        """The sum of the members' losses, computed as one: ``M`` times the mean over members and samples.

        Every solo loss is a mean over the batch's samples (and days, levels); with ``M`` equal batches
        the mean over all of them times ``M`` is the members' sum.
        """
        M, B = out.shape[:2]
        return self.inner.loss(out.reshape(M * B, -1), self._tiled(batch), scaling) * M

    def combine(self, out: Tensor) -> Tensor:
        return self.inner.combine(out)

    def _member_points(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        """Each member's point forecast in prices (M, B, H)."""
        M, B = out.shape[:2]
        tiled = self._tiled(batch)
        inner = cast(PointHead, self.inner)  # every regression head is one
        point = inner.scaled_point(out.reshape(M * B, -1))
        horizon = inner.horizon
        price = scaling.to_price(point.reshape(-1) if horizon == 1 else point, tiled.ref)
        return price.reshape(M, B, horizon)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        M, B = out.shape[:2]
        if stage == "train":  # only the loss is kept while training
            Head.update(self.inner, stage, out[0], loss / M, batch, scaling)
            return
        out = out.detach()
        self.inner.update(stage, self.inner.combine(out), loss / M, batch, scaling)
        if stage != "test":
            return
        if self.score == "acc":
            correct = (out.argmax(dim=-1) == batch.y).sum(dim=1)  # (M,)
            for name in self.member_scores:
                metric_of(self.member_scores, name).update(correct, B)
            return
        price = self._member_points(out, batch, scaling)  # (M, B, H)
        close = batch.close.reshape(B, -1).to(price.dtype)  # (B, H)
        squares = ((price - close) ** 2).sum(dim=(1, 2))  # (M,)
        for name in self.member_scores:
            metric_of(self.member_scores, name).update(squares, close.numel())
        if self.spread is not None:
            quantiles = member_quantiles(price, self.spread.levels)  # (B, H, Q)
            self.spread.score_interval("", quantiles, close)
            self.spread.score_interval("naive_", self.spread.naive_price_quantiles(batch.ref, scaling), close)

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        metrics = dict(self.inner.epoch_metrics(stage))
        if stage == "test":
            metrics.update(self.member_scores)
            if self.spread is not None:
                metrics.update(self.spread.dist_metrics)
        return metrics

    def predict(self, out: Tensor, batch: Any, scaling: Any) -> dict[str, Tensor]:
        rows = self.inner.predict(self.inner.combine(out), batch, scaling)
        if self.spread is not None:  # the members' interval, shaped as a quantile head's
            quantiles = member_quantiles(self._member_points(out, batch, scaling), self.spread.levels)  # (B, H, Q)
            rows["quantiles"] = quantiles[:, 0] if cast(PointHead, self.inner).horizon == 1 else quantiles
        return rows
