"""The plan of a panel's backtest: rolling origins over the last k horizons of every series.

Fold ``j`` of ``k`` (``j = 0 .. k-1``) forecasts, for every series, the ``horizon`` (H) steps from its
origin ``end - (k - j) * H``, ``end`` being the series' end (less a search's held-out horizons). Its data
is :meth:`~rnn_lightning.data.panel.module.PanelDataModule.cut_view`: every series cut after the fold's
test block, split as the data module splits a panel (test: that block; validation: the H steps before it,
when the data validates; training: the rest). So each fold's scaling, training windows and
best-checkpoint choice see only steps before its origin, by construction, and the series are cut per
series, as the competition protocol cuts them, not at one calendar date.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnn_lightning.backtest.plan import BacktestSettings
from rnn_lightning.errors import UserInputError


@dataclass(frozen=True)
class PanelFold:
    """One fold: its index, the steps cut from the end of every series, and that view of the data.

    The view's test block (each series' last H steps) is the fold's test; see :func:`fold_data`.
    """

    index: int
    cut: int
    data: Any = field(compare=False, repr=False)


def check_panel_settings(settings: BacktestSettings) -> None:
    """The ``--backtest.*`` options a panel's backtest does not take, refused in one line."""
    if settings.shard is not None or settings.merge:
        raise UserInputError("backtest.shard and backtest.merge are for the price backtest; a panel's folds run here")
    if settings.window != "expanding":
        raise UserInputError("a panel's folds train on every step before their origin: use backtest.window expanding")
    if settings.refit != "scratch":
        raise UserInputError("a panel's folds are each trained from scratch: use backtest.refit scratch")
    if settings.workers is not None and settings.workers > 1:
        raise UserInputError("a panel's folds run one after another: drop backtest.workers")


def base_lengths(data: Any, settings: BacktestSettings) -> np.ndarray:
    """int64 (n_series,): each series' steps a backtest may cut (its training part; + the shipped test part)."""
    panel = data.panel
    return np.asarray(panel.lengths + (panel.test_lengths if settings.shipped_test else 0), dtype=np.int64)


def plan_panel_folds(data: Any, settings: BacktestSettings, holdout: int = 0) -> list[PanelFold]:
    """The ``settings.folds`` folds over ``data`` less its last ``holdout`` horizons, checked.

    Every series must keep ``season_length + 1`` training steps (one seasonal difference: its MASE scale)
    before fold 0's validation and test blocks; the first that does not is named, with the most folds it
    allows. Each fold's split and MASE scales are
    computed here (a season longer than a fold's history is its one-line error), before anything is written.
    """
    check_panel_settings(settings)
    H, K = data.horizon, settings.folds
    lengths = base_lengths(data, settings)
    before = H * (1 if data.validation else 0) + holdout * H  # steps besides the test blocks
    need = data.season_length + 1  # training steps for one seasonal difference (the MASE scale of the part)
    left = lengths - K * H - before  # training steps of fold 0
    if left.min() < need:
        i = int(np.argmin(left))
        most = max(int((lengths[i] - before - need) // H), 0)
        held = f" and {holdout} held-out horizons" if holdout else ""
        raise UserInputError(
            f"backtest.folds {K} x horizon {H}{held} leave series {data.panel.ids[i]!r} ({int(lengths[i])} steps) "
            f"{max(int(left[i]), 0)} training steps before fold 0's {'validation and ' if data.validation else ''}"
            f"test steps, fewer than season_length + 1 = {need}; it allows at most {most} folds"
        )
    folds = []
    for j in range(K):
        cut = (holdout + K - 1 - j) * H
        with warnings.catch_warnings():
            if j:  # the short-series line is said once, for the first fold
                warnings.simplefilter("ignore")
            view = fold_data(data, cut, settings)
            _ = view.mase_scales  # splits it; a season longer than a fold's history is refused here
        folds.append(PanelFold(j, cut, view))
    return folds


def fold_data(data: Any, cut: int, settings: BacktestSettings) -> Any:
    """``data`` with every series cut ``cut`` steps before its end (the shipped test part joined if asked)."""
    return data.cut_view(cut, shipped_test=bool(settings.shipped_test))
