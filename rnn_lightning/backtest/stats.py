"""The statistics of a backtest: RMSEs, Diebold-Mariano (HLN), a binomial direction test, a block-bootstrap interval.

Each is checked against independent computations in tests/test_backtest.py; docs/backtest.md gives the
formulas.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

from rnn_lightning.reports.common import rmse

if TYPE_CHECKING:
    from rnn_lightning.backtest.plan import BacktestSettings

__all__ = ["block_bootstrap_ratio", "diebold_mariano", "direction_test", "fold_metrics", "rmse", "summarise"]


def diebold_mariano(loss_model: np.ndarray, loss_benchmark: np.ndarray, horizon: int = 1) -> dict[str, float]:
    """Diebold-Mariano test of equal expected loss, with the Harvey-Leybourne-Newbold correction.

    ``d_t = loss_benchmark_t - loss_model_t`` (positive: the model is better). With n days,
    ``DM = mean(d) / sqrt(V / n)``, ``V = g_0 + 2 sum_{k=1}^{h-1} g_k`` and ``g_k`` the lag-k sample
    autocovariance of ``d`` (divided by n): the truncated long-run variance of an h-step forecast's loss
    differential, which is MA(h-1) under the null (Diebold and Mariano 1995). Harvey, Leybourne and Newbold
    (1997) multiply by ``sqrt((n + 1 - 2h + h(h-1)/n) / n)`` and compare with Student's t with n-1 degrees
    of freedom, which keeps the test's size right in small samples.

    Returns:
        ``statistic`` (the corrected DM), ``pvalue`` (two-sided), ``pvalue_model_better`` (one-sided,
        alternative: the model's expected loss is lower), ``mean_differential`` and ``n``.
    """
    d = np.asarray(loss_benchmark, np.float64) - np.asarray(loss_model, np.float64)  # (n,)
    n, h = len(d), horizon
    if n < 2:
        raise ValueError("the Diebold-Mariano test needs at least 2 days")
    mean = float(d.mean())
    centred = d - mean
    variance = float(centred @ centred) / n
    for k in range(1, h):
        variance += 2.0 * float(centred[k:] @ centred[:-k]) / n
    correction = math.sqrt((n + 1 - 2 * h + h * (h - 1) / n) / n)
    if variance <= 0.0:  # a constant differential: no difference at all, or a difference without noise
        statistic = 0.0 if mean == 0.0 else math.copysign(math.inf, mean)
    else:
        statistic = mean / math.sqrt(variance / n) * correction
    t = stats.t(df=n - 1)
    return {
        "statistic": statistic,
        "pvalue": float(2.0 * t.sf(abs(statistic))),
        "pvalue_model_better": float(t.sf(statistic)),
        "mean_differential": mean,
        "n": n,
    }


def direction_test(predicted: np.ndarray, actual: np.ndarray, naive: np.ndarray) -> dict[str, float]:
    """Directional accuracy and a one-sided binomial test of it against the share of up days.

    A day's direction is called right when ``sign(predicted - naive) == sign(actual - naive)`` (as
    ``test_direction_acc``). The benchmark is the share of up days ``p0``: the accuracy of always calling
    "up". The p-value is ``P(X >= hits)`` for ``X ~ Binomial(n, p0)`` (scipy's ``binomtest``).
    """
    hits = int(np.sum(np.sign(predicted - naive) == np.sign(actual - naive)))
    n = len(actual)
    up = float(np.mean(actual > naive))
    pvalue = float(stats.binomtest(hits, n, up, alternative="greater").pvalue) if 0.0 < up < 1.0 else math.nan
    calls = int(np.sum(predicted != naive))  # days the forecast moved at all; "no change" only hits flat days
    return {
        "direction_acc": hits / n,
        "up_share": up,
        "direction_hits": hits,
        "direction_calls": calls,
        "direction_pvalue": pvalue,
    }


def block_bootstrap_ratio(
    loss_model: np.ndarray,
    loss_benchmark: np.ndarray,
    resamples: int,
    confidence: float,
    block_length: int | None = None,
    seed: int = 0,
) -> tuple[float, float, int]:
    """Percentile interval of ``sqrt(sum loss_model / sum loss_benchmark)`` by the moving-block bootstrap.

    Each resample joins ``ceil(n / L)`` blocks of ``L`` consecutive days, drawn with replacement from the
    ``n - L + 1`` possible starts, cut to n days (Kuensch 1989); the days' pairs stay together and
    blocks keep the short-range dependence of squared errors (volatility clusters). ``L`` defaults to
    ``round(n ** (1/3))``. Returns ``(low, high, L)``.
    """
    a, b = np.asarray(loss_model, np.float64), np.asarray(loss_benchmark, np.float64)
    n = len(a)
    length = max(1, min(n, block_length or int(round(n ** (1 / 3)))))
    rng = np.random.default_rng(seed)
    blocks = -(-n // length)
    starts = rng.integers(0, n - length + 1, size=(resamples, blocks))  # (B, blocks)
    index = (starts[:, :, None] + np.arange(length)).reshape(resamples, -1)[:, :n]  # (B, n)
    ratios = np.sqrt(a[index].sum(axis=1) / b[index].sum(axis=1))  # (B,)
    alpha = 1.0 - confidence
    low, high = np.quantile(ratios, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high), length


def fold_metrics(rows: pd.DataFrame) -> dict[str, float]:
    """RMSEs, their ratio, directional accuracy and the DM p-value of one fold's (or all) test days."""
    predicted, actual, naive = (rows[c].to_numpy(np.float64) for c in ("predicted", "actual", "naive"))
    model, benchmark = rmse(predicted, actual), rmse(naive, actual)
    out = {
        "days": len(rows),
        "rmse": model,
        "naive_rmse": benchmark,
        "rmse_ratio": model / benchmark if benchmark > 0 else math.nan,
        "mae": float(np.mean(np.abs(predicted - actual))),
    }
    out.update(direction_test(predicted, actual, naive))
    if len(rows) >= 2:
        dm = diebold_mariano((predicted - actual) ** 2, (naive - actual) ** 2)
        out.update(dm_statistic=dm["statistic"], dm_pvalue=dm["pvalue"])
    return out


def summarise(table: pd.DataFrame, settings: BacktestSettings) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Per-fold metrics and the run's statistics from every test day's row (date, fold, actual, predicted, naive)."""
    per_fold = pd.DataFrame([{"fold": k, **fold_metrics(rows)} for k, rows in table.groupby("fold", sort=True)])
    predicted, actual, naive = (table[c].to_numpy(np.float64) for c in ("predicted", "actual", "naive"))
    se_model, se_naive = (predicted - actual) ** 2, (naive - actual) ** 2
    overall = fold_metrics(table)
    dm = diebold_mariano(se_model, se_naive)
    summary: dict[str, Any] = {
        "folds": int(len(per_fold)),
        **overall,
        "dm_statistic": dm["statistic"],
        "dm_pvalue": dm["pvalue"],
        "dm_pvalue_model_better": dm["pvalue_model_better"],
        "mean_se_differential": dm["mean_differential"],
        "fold_rmse_ratio_mean": float(per_fold["rmse_ratio"].mean()),
        "fold_rmse_ratio_std": float(per_fold["rmse_ratio"].std(ddof=1)) if len(per_fold) > 1 else 0.0,
        "fold_rmse_ratio_min": float(per_fold["rmse_ratio"].min()),
        "fold_rmse_ratio_max": float(per_fold["rmse_ratio"].max()),
        "folds_better_than_naive": int((per_fold["rmse_ratio"] < 1).sum()),
    }
    if settings.bootstrap and len(table) >= 2:
        low, high, length = block_bootstrap_ratio(
            se_model, se_naive, settings.bootstrap, settings.confidence, settings.block_length
        )
        summary.update(
            rmse_ratio_ci_low=low,
            rmse_ratio_ci_high=high,
            ci_level=settings.confidence,
            bootstrap_resamples=settings.bootstrap,
            bootstrap_block_length=length,
        )
    return per_fold, summary
