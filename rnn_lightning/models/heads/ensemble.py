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
from typing import Any

from torch import Tensor, nn
from torchmetrics import Metric

from rnn_lightning.models.heads.base import Head
from rnn_lightning.models.heads.metrics import MemberScore, metric_of


class EnsembleHead(Head):
    """``members`` members' outputs scored with ``inner`` (the configured head) as one ensemble.

    Everything that differs between head families comes from ``inner``'s methods: how members are scored
    (:meth:`~Head.member_score`, :meth:`~Head.member_errors`) and whether the members' spread makes the
    ensemble's interval (:meth:`~Head.member_spread`, :meth:`~Head.member_interval`).

    Args:
        inner: The configured head (point, quantile, gaussian or classification).
        members: The number of members (at least 2).
        quantiles: The model's quantile levels: a point ensemble's member interval.
    """

    inner: Head  # for the type checker (nn.Module.__getattr__ would say Tensor | Module)

    def __init__(self, inner: Head, members: int, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.inner = inner
        self.members = members
        score = inner.member_score()
        self.member_scores = nn.ModuleDict(
            {f"test_member_{score}_{r}": MemberScore(members, score, r) for r in ("mean", "sd")}
        )
        # A point ensemble's interval from its members, scored beside the naive distribution (a checkpoint
        # carries it under ``spread``); None where the combined forecast has a distribution of its own.
        self.spread = inner.member_spread(quantiles)

    def output_size(self, num_outputs: int) -> int:
        return self.inner.output_size(num_outputs)

    def export_outputs(self) -> tuple[str, ...] | None:
        return ("prediction", "quantiles") if self.spread is not None else self.inner.export_outputs()

    def interval_levels(self) -> list[float] | None:
        return self.spread.levels if self.spread is not None else self.inner.interval_levels()

    def interval_from_members(self) -> bool:
        return self.spread is not None

    def member_score(self) -> str:
        return self.inner.member_score()

    def needs_naive(self) -> bool:
        return self.spread is not None or self.inner.needs_naive()

    def naive_is_fitted(self) -> bool:
        return self.spread.naive_is_fitted() if self.spread is not None else self.inner.naive_is_fitted()

    def fit_naive(self, moves: Tensor) -> None:
        if self.spread is not None:
            self.spread.fit_naive(moves)
        else:
            self.inner.fit_naive(moves)

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

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        M, B = out.shape[:2]
        if stage == "train":  # only the loss is kept while training
            self.inner.update_loss(stage, loss / M, B)
            return
        out = out.detach()
        self.inner.update(stage, self.inner.combine(out), loss / M, batch, scaling)
        if stage != "test":
            return
        errors, count = self.inner.member_errors(out, batch, scaling)  # (M,)
        for name in self.member_scores:
            metric_of(self.member_scores, name).update(errors, count)
        if self.spread is not None:
            quantiles = self.inner.member_interval(out, batch, scaling, self.spread.levels)  # (B, H, Q)
            close = batch.close.reshape(B, -1).to(quantiles.dtype)  # (B, H)
            self.spread.score(quantiles, close, batch.ref, scaling)

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
            quantiles = self.inner.member_interval(out, batch, scaling, self.spread.levels)  # (B, H, Q)
            rows["quantiles"] = quantiles[:, 0] if quantiles.shape[1] == 1 else quantiles
        return rows
