"""The base of every head: the loss metric, and every question an ensemble, an export or a report asks.

The answers are methods with defaults here (a head without an interval, a naive distribution or named
export outputs keeps them), so callers never probe a head's attributes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn
from torchmetrics import Metric

from rnn_lightning.models.heads.metrics import BatchMean, metric_of
from rnn_lightning.models.heads.scoring import DEFAULT_QUANTILES

if TYPE_CHECKING:
    from rnn_lightning.models.heads.point import MemberSpread

STAGES = ("train", "val", "test")


class Head(nn.Module):
    """What every head provides; ``{stage}_loss`` is common to all."""

    def __init__(self) -> None:
        super().__init__()
        self.losses = nn.ModuleDict({f"{stage}_loss": BatchMean() for stage in STAGES})

    @classmethod
    def outputs_setting(cls) -> str:
        """The data option that sets this head's number of outputs, as messages name it."""
        return "num_outputs"

    @classmethod
    def create(cls, num_outputs: int, quantiles: Sequence[float] = DEFAULT_QUANTILES) -> Head:
        """The head for a model's configuration: the one way every head family is built from a config.

        Args:
            num_outputs: Days ahead (H) of a regression head, classes of a classification head.
            quantiles: The model's quantile levels; a head without a distribution ignores them.

        Returns:
            The head.
        """
        raise NotImplementedError

    def output_size(self, num_outputs: int) -> int:
        """The network's output width for ``num_outputs`` targets (days ahead) or classes."""
        return num_outputs

    def loss(self, out: Tensor, batch: Any, scaling: Any) -> Tensor:
        """The training loss of raw outputs ``out`` (B, K) on ``batch``, in scaled units."""
        raise NotImplementedError

    def update_loss(self, stage: str, loss: Tensor, batch_size: int) -> None:
        """Add one batch's mean ``loss`` over ``batch_size`` samples to ``{stage}_loss``."""
        metric_of(self.losses, f"{stage}_loss").update(loss, batch_size)

    def update(self, stage: str, out: Tensor, loss: Tensor, batch: Any, scaling: Any) -> None:
        """Update the ``stage``'s metrics with one batch's raw outputs (B, K) and loss."""
        self.update_loss(stage, loss, len(out))

    def epoch_metrics(self, stage: str) -> dict[str, Metric]:
        """The metrics logged at the end of a ``stage`` epoch, by their logged names."""
        return {f"{stage}_loss": self.losses[f"{stage}_loss"]}

    def predict(self, out: Tensor, batch: Any, scaling: Any) -> dict[str, Tensor]:
        """The prediction rows of raw outputs ``out`` (B, K), in the data's units."""
        raise NotImplementedError

    def combine(self, out: Tensor) -> Tensor:
        """An ensemble's members' raw outputs (M, B, K) -> the ensemble's forecast as raw outputs (B, K).

        The result is in this head's own output parametrisation, so every metric, prediction row and
        export of a solo model applies to the ensemble unchanged (:mod:`rnn_lightning.models.heads.ensemble`).
        """
        raise NotImplementedError

    # --- what exports and reports ask --------------------------------------------------------------------

    def export_outputs(self) -> tuple[str, ...] | None:
        """The :meth:`predict` rows an exported file returns, in order; None: the task's default."""
        return None

    def interval_levels(self) -> list[float] | None:
        """The quantile levels of the forecast's ``quantiles`` rows (the reports' band); None: no interval."""
        return None

    def interval_from_members(self) -> bool:
        """Whether the forecast interval is the spread of an ensemble's members (not a forecast distribution)."""
        return False

    # --- the naive distribution (fitted on the training windows' moves) ----------------------------------

    def needs_naive(self) -> bool:
        """Whether the head scores against a naive distribution fitted on the training windows."""
        return False

    def naive_is_fitted(self) -> bool:
        """Whether the naive distribution has been fitted (or came with a checkpoint); False without one."""
        return False

    def fit_naive(self, moves: Tensor) -> None:
        """Fit the naive distribution on the training windows' unscaled targets ``moves`` (N, H); a no-op here."""

    # --- what an ensemble of this head reports beside its combined forecast ------------------------------

    def member_score(self) -> str:
        """The name of each member's own score, ``rmse`` (prices) or ``acc``: ``test_member_{score}_mean``."""
        return "rmse"

    def member_errors(self, out: Tensor, batch: Any, scaling: Any) -> tuple[Tensor, int]:
        """Each member's summed score terms for one batch, and how many terms each sum holds.

        Args:
            out: The members' raw outputs (M, B, K).
            batch: The batch.
            scaling: The model's scaling.

        Returns:
            Per-member sums (M,) (squared price errors for ``rmse``, correct answers for ``acc``) and
            their count.
        """
        raise NotImplementedError(f"{type(self).__name__} has no member scores")

    def member_spread(self, quantiles: Sequence[float]) -> MemberSpread | None:
        """What scores an ensemble's members' interval at ``quantiles``; None: the head has no such interval.

        A head whose combined forecast is a distribution (or a class) keeps None.
        """
        return None

    def member_interval(self, out: Tensor, batch: Any, scaling: Any, levels: Sequence[float]) -> Tensor:
        """The members' forecast interval: quantiles (B, H, Q) over members at ``levels``, in prices.

        Only for a head whose :meth:`member_spread` is not None.

        Args:
            out: The members' raw outputs (M, B, K).
            batch: The batch (its ``ref``, the last closes).
            scaling: The model's scaling.
            levels: Quantile levels.
        """
        raise NotImplementedError(f"{type(self).__name__} has no member interval")
