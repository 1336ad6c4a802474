"""The plan of a panel's backtest: rolling origins over the last k horizons of every series.

Fold ``j`` of ``k`` (``j = 0 .. k-1``) forecasts, for every series, the ``horizon`` (H) steps from its
origin ``end - (k - j) * H``, ``end`` being the series' end (less a search's held-out horizons). Its data
is :meth:`~rnn_lightning.data.panel.module.PanelDataModule.cut_view`: every series cut after the fold's
test block, split as the data module splits a panel (test: that block; validation: the H steps before it,
when the data validates; training: the rest). So each fold's scaling, training windows and
best-checkpoint choice see only steps before its origin, by construction, and the series are cut per
series, as the competition protocol cuts them, not at one calendar date. A series too short to train
for a fold (fewer than ``season_length + 1`` steps before its validation and test blocks) is left out of
that fold's view, and of its model's per-series sizes (:func:`rnn_lightning.runs.build.sized_for`).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from rnn_lightning.backtest.plan import BacktestSettings
from rnn_lightning.errors import UserInputError

WARN_SERIES = 5  # series named in the line that counts the series sitting out the earliest folds


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

    A series takes part in a fold when it keeps ``season_length + 1`` training steps (one seasonal
    difference: its MASE scale) before the fold's validation and test blocks. A series too short for the
    earliest folds is left out of them, and one warning line names such series and the folds they join;
    a fold no series can hold is a one-line error naming the longest series, with the most folds it
    allows. Each fold's split and MASE scales are computed here (a season longer than a fold's history is
    its one-line error), before anything is written.
    """
    check_panel_settings(settings)
    H, K = data.horizon, settings.folds
    lengths = base_lengths(data, settings)
    before = H * (1 if data.validation else 0) + holdout * H  # steps besides the test blocks
    need = data.season_length + 1  # training steps for one seasonal difference (the MASE scale of the part)
    left = lengths - K * H - before  # training steps of fold 0; fold j has j * H more
    if left.max() < need:
        i = int(np.argmax(lengths))
        most = max(int((lengths[i] - before - need) // H), 0)
        held = f" and {holdout} held-out horizons" if holdout else ""
        raise UserInputError(
            f"backtest.folds {K} x horizon {H}{held} leave no series {need} training steps (season_length + 1) "
            f"before fold 0's {'validation and ' if data.validation else ''}test steps: the longest, "
            f"{data.panel.ids[i]!r} ({int(lengths[i])} steps), keeps {max(int(left[i]), 0)} and allows at most "
            f"{most} folds"
        )
    # The first fold each series can hold (K: none); the series with first > 0 sit out the folds before it.
    first = np.clip(-((left - need) // H), 0, K)
    late = np.flatnonzero(first > 0)
    if len(late):
        named = ", ".join(f"{data.panel.ids[i]!r} ({int(lengths[i])} steps)" for i in late[:WARN_SERIES])
        more = f" and {len(late) - WARN_SERIES} more" if len(late) > WARN_SERIES else ""
        gone = int((first == K).sum())
        warnings.warn(
            f"backtest.folds {K} x horizon {H}: {len(late)} of {len(lengths)} series are too short for the "
            f"earliest folds (each keeps season_length + 1 = {need} training steps before a fold's "
            f"{'validation and ' if data.validation else ''}test steps) and sit them out"
            f"{f', {gone} of them every fold' if gone else ''}: {named}{more}",
            stacklevel=2,
        )
    folds = []
    for j in range(K):
        cut = (holdout + K - 1 - j) * H
        with warnings.catch_warnings():
            if j:  # the short-series line is said once, for the first fold
                warnings.simplefilter("ignore")
            view = fold_data(data, cut, settings, first <= j if len(late) else None)
            _ = view.mase_scales  # splits it; a season longer than a fold's history is refused here
        folds.append(PanelFold(j, cut, view))
    return folds


def fold_data(data: Any, cut: int, settings: BacktestSettings, series: np.ndarray | None = None) -> Any:
    """``data`` with every series (of the ``series`` mask) cut ``cut`` steps before its end.

    The shipped test part is joined first when ``settings.shipped_test`` asks for it.
    """
    return data.cut_view(cut, shipped_test=bool(settings.shipped_test), series=series)
