"""Walk-forward (rolling-origin) backtesting: many fits of one config over consecutive test periods.

``rnn-lightning backtest`` takes the same config and data options as ``fit`` plus the ``--backtest.*``
settings below. (Work in progress: see issue 15.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from rnn_lightning.cli import RnnLightningCLI


@dataclass
class BacktestSettings:
    """The ``--backtest.*`` arguments.

    Args:
        test_size: Test windows per fold.
        folds: Number of folds; their test periods tile the last ``folds x test_size`` windows.
        window: ``expanding`` trains on every window before the fold's origin, ``sliding`` on the last
            ``train_size`` of them.
        train_size: Training windows per fold for ``sliding`` (validation included).
        refit: ``scratch`` trains every fold from a fresh, per-fold seeded model; ``warm`` starts from the
            previous fold's best checkpoint.
        warm_epochs: Epochs per fold after the first with ``refit warm``.
    """

    test_size: int = 20
    folds: int = 5
    window: Literal["expanding", "sliding"] = "expanding"
    train_size: int | None = None
    refit: Literal["scratch", "warm"] = "scratch"
    warm_epochs: int | None = None


def run_backtest(cli: RnnLightningCLI, model: Any, datamodule: Any, settings: BacktestSettings) -> None:
    """Run every fold and write the run folder's tables (issue 15)."""
    raise NotImplementedError("rnn-lightning backtest is not built yet")
