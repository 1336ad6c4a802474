"""The verdict after a search: is the best of many trials better than the naive forecast, or only the luckiest?

A search over K configurations scored on the same tuning days reports its best trial, and the best of K is
optimistic: with K = 30 trials that are all exactly as good as the naive forecast (tomorrow's close =
today's), one of them usually beats it by chance, often with a small Diebold-Mariano p-value on its own.
This module holds the statistics that correct for the searching:

* :func:`spa_test`: Hansen's (2005) test of Superior Predictive Ability of the null "no trial beats the
  naive forecast", over every completed trial's per-day losses (``arch.bootstrap.SPA``).
* :func:`stepm`: Romano and Wolf's (2005) StepM, the trials that beat the naive forecast with the
  family-wise error rate held at ``size`` (``arch.bootstrap.StepM``).
* :func:`detectable_ratio`: how good a forecast must be (its RMSE ratio to the naive forecast) before these
  days could tell it from the naive forecast at all; the test's resolution, by simulation.

The paragraph printed from these numbers is :meth:`rnn_lightning.tune.summary.Verdict.paragraph`.

Losses are per-day squared errors in price units, lower is better. Plain functions over numpy and pandas:
no Optuna, no torch of their own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd
from arch.bootstrap import SPA, StepM
from scipy import signal, stats

from rnn_lightning.errors import UserInputError, check_choice, check_positive

__all__ = [
    "BOOTSTRAPS",
    "DEFAULT_GRID",
    "MIN_DAYS",
    "BootstrapSettings",
    "detectable_ratio",
    "spa_test",
    "stepm",
]

BOOTSTRAPS = ("stationary", "circular", "moving block")  # arch's names (it also takes sb, cbb, mbb)
MIN_DAYS = 10  # fewer tuning days than this and no bootstrap of them means anything
# The RMSE ratios detectable_ratio tries: 0.700, 0.705, ..., 0.995.
DEFAULT_GRID: tuple[float, ...] = tuple(round(0.70 + 0.005 * i, 3) for i in range(60))


@dataclass(frozen=True)
class BootstrapSettings:
    """How the tuning days are resampled for the SPA test, StepM and :func:`detectable_ratio`.

    Attributes:
        reps: Bootstrap replications. 1000 puts a p-value near 0.05 within about +-0.007 of its limit.
        block_size: Mean block length in days (fixed length for the block bootstraps). ``None``: resolved
            from the n days as ``max(1, round(n ** (1/3)))``, the rate that minimises the bootstrap
            variance estimator's error for weakly dependent data (Politis and White 2004), and the default
            of the backtest's block bootstrap interval. Squared errors of daily prices are dependent mostly
            through volatility clusters of a few days; arch's own default, ``sqrt(n)``, is longer than those
            need and makes the resamples less varied.
        bootstrap: ``stationary`` (Politis and Romano 1994: geometric block lengths, the resamples are
            stationary), ``circular`` or ``moving block``.
        seed: The seed of every resampling and simulation here: the same settings and data give the same
            numbers.
        size: StepM's family-wise error rate, and the level the verdict reads the SPA p-value against.
    """

    reps: int = 1000
    block_size: int | None = None
    bootstrap: str = "stationary"
    seed: int = 0
    size: float = 0.05

    def __post_init__(self) -> None:
        check_positive("bootstrap reps", self.reps)
        if self.block_size is not None:
            check_positive("bootstrap block_size", self.block_size)
        check_choice("bootstrap", self.bootstrap, BOOTSTRAPS)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise UserInputError(f"bootstrap seed must be an integer >= 0, got {self.seed!r}")
        if not 0.0 < self.size < 1.0:
            raise UserInputError(f"StepM size must lie in (0, 1), got {self.size!r}")

    def resolved_block_size(self, days: int) -> int:
        """The block length used on ``days`` days: ``block_size``, or ``max(1, round(days ** (1/3)))``."""
        length = self.block_size if self.block_size is not None else max(1, int(round(days ** (1 / 3))))
        return min(length, max(1, days))

    def as_dict(self, days: int | None = None) -> dict[str, Any]:
        """The settings for summary.json; with ``days``, also ``block_size_resolved``, the length actually used."""
        out: dict[str, Any] = asdict(self)
        if days is not None:
            out["block_size_resolved"] = self.resolved_block_size(days)
        return out


def _check_losses(naive: np.ndarray, losses: pd.DataFrame) -> tuple[np.ndarray, pd.DataFrame]:
    """The benchmark as float64 (n,) and the trials' losses as a float64 frame (n, K), or a one-line error."""
    benchmark = np.asarray(naive, np.float64)
    if benchmark.ndim != 1:
        raise UserInputError(f"the naive forecast's losses must be one per day, got shape {benchmark.shape}")
    if not isinstance(losses, pd.DataFrame):
        raise TypeError(f"losses must be a DataFrame with one column per trial, got {type(losses).__name__}")
    if losses.shape[1] == 0:
        raise UserInputError("no completed trials to test against the naive forecast")
    if len(losses) != len(benchmark):
        raise UserInputError(f"{len(losses)} days of trial losses but {len(benchmark)} of the naive forecast's")
    if len(benchmark) < MIN_DAYS:
        raise UserInputError(f"{len(benchmark)} tuning days are too few for the SPA test; it needs {MIN_DAYS}")
    if not losses.columns.is_unique:
        raise UserInputError("trial names (the loss columns) must be unique")
    models = losses.astype(np.float64)
    if not (np.isfinite(benchmark).all() and np.isfinite(models.to_numpy()).all()):
        raise UserInputError("the losses hold NaN or infinite values; every trial must be scored on every day")
    return benchmark, models


def spa_test(naive: np.ndarray, losses: pd.DataFrame, settings: BootstrapSettings) -> dict[str, float]:
    """Hansen's SPA test of "no trial beats the naive forecast", over all trials at once.

    ``arch.bootstrap.SPA(benchmark=naive, models=losses)`` works on the loss differentials
    ``naive_t - losses_t[k]`` (positive: trial k was better that day). The null is that every trial's
    expected differential is <= 0; the statistic is the largest mean differential; its distribution under
    the null comes from block-resampling the n days (all trials' rows together, so their dependence is kept)
    and re-centring. The three p-values differ in which trials are re-centred: ``lower`` re-centres none
    that did worse than the naive forecast, ``upper`` re-centres all (White's Reality Check, conservative),
    the consistent one only those not clearly worse (within ``sqrt(2 log log n)`` standard errors) and is
    the one to report. A small p-value says the best trial's edge is larger than the best of K that are
    no better than the naive forecast would show.

    Note: arch 8.0 compares the plain (not studentised) mean differentials; ``studentize`` only sets the
    variances that decide which trials count as clearly worse.

    Args:
        naive: (n,) the naive forecast's squared error per tuning day.
        losses: (n, K) each trial's squared error per tuning day, columns the trial names.
        settings: Bootstrap, block length, replications and seed.

    Returns:
        ``spa_pvalue`` (consistent), ``spa_pvalue_lower`` and ``spa_pvalue_upper``.
    """
    benchmark, models = _check_losses(naive, losses)
    # Trials that forecast exactly what the naive forecast did carry a differential of 0 every day: they
    # cannot beat it, and with no variance at all they make the bootstrap degenerate (arch then returns
    # p = 0 when every trial is such a copy). They are left out; when nothing is left, p = 1.
    same = (models.to_numpy() == benchmark[:, None]).all(axis=0)
    models = models.loc[:, ~same]
    if models.shape[1] == 0:
        return {"spa_pvalue": 1.0, "spa_pvalue_lower": 1.0, "spa_pvalue_upper": 1.0}
    spa = SPA(
        benchmark,
        models,
        block_size=settings.resolved_block_size(len(benchmark)),
        reps=settings.reps,
        bootstrap=settings.bootstrap,  # type: ignore[arg-type]  # checked against BOOTSTRAPS
        seed=settings.seed,
    )
    spa.compute()
    pvalues = spa.pvalues
    return {
        "spa_pvalue": float(pvalues["consistent"]),
        "spa_pvalue_lower": float(pvalues["lower"]),
        "spa_pvalue_upper": float(pvalues["upper"]),
    }


def stepm(naive: np.ndarray, losses: pd.DataFrame, settings: BootstrapSettings) -> list[str]:
    """Romano and Wolf's StepM: the trials that beat the naive forecast, family-wise error rate ``size``.

    Step by step, the trials whose mean loss differential (``naive - trial``) exceeds the SPA bootstrap's
    critical value of the maximum over the trials still in play are declared better than the naive forecast
    and removed, until no more are (``arch.bootstrap.StepM`` with the consistent p-value's re-centring).
    The chance that any trial no better than the naive forecast is named is at most ``settings.size``.

    Args:
        naive: (n,) the naive forecast's squared error per tuning day.
        losses: (n, K) each trial's squared error per tuning day, columns the trial names.
        settings: As :func:`spa_test`; the same seed gives the same bootstrap draws.

    Returns:
        The better trials' names (as ``str``), in the order of ``losses``' columns; empty if none.
    """
    benchmark, models = _check_losses(naive, losses)
    # A trial that forecast exactly what the naive forecast did (a zero-initialised head that never moved)
    # has a differential of 0 every day: it cannot be better, and its zero variance breaks StepM's steps.
    same = (models.to_numpy() == benchmark[:, None]).all(axis=0)
    models = models.loc[:, ~same]
    if models.shape[1] == 0:
        return []
    test = StepM(
        benchmark,
        models,
        size=settings.size,
        block_size=settings.resolved_block_size(len(benchmark)),
        reps=settings.reps,
        bootstrap=settings.bootstrap,  # type: ignore[arg-type]  # checked against BOOTSTRAPS
        seed=settings.seed,
    )
    try:
        test.compute()
    except ValueError:
        # arch 8.0's StepM loops while the *last* step found fewer than all trials, so when the steps
        # together have found every trial better, it re-runs the SPA on an empty subset and fails there
        # (np.max of nothing). The subset is empty only then: every trial was found better.
        return [str(name) for name in models.columns]
    better = set(test.superior_models)
    return [str(name) for name in models.columns if name in better]


def _resample_index(
    days: int, draws: int, length: int, bootstrap: str, rng: np.random.Generator, source: int
) -> np.ndarray:
    """(draws, days) indices into ``source`` values by the stationary, circular or moving-block bootstrap.

    A block starts on day 0 and, for the stationary bootstrap, on each later day with probability
    ``1 / length`` (geometric block lengths of mean ``length``), else every ``length`` days; a block starting
    on day t at index s continues as ``s + 1, s + 2, ...``, wrapping around the end (circular and
    stationary) or starting where it fits (moving block).
    """
    t = np.arange(days)
    if bootstrap == "stationary":
        new_block = rng.random((draws, days)) < 1.0 / length
        new_block[:, 0] = True
    else:
        new_block = np.broadcast_to(t % length == 0, (draws, days))
    block_start = np.maximum.accumulate(np.where(new_block, t, 0), axis=1)  # (draws, days): its block's first day
    high = source - length + 1 if bootstrap == "moving block" else source
    starts = rng.integers(0, max(1, high), size=(draws, days))
    index = np.take_along_axis(starts, block_start, axis=1) + (t - block_start)
    return index % source


def _dm_pvalues_model_better(loss_model: np.ndarray, loss_benchmark: np.ndarray) -> np.ndarray:
    """Row-wise ``diebold_mariano(model, benchmark)["pvalue_model_better"]`` (horizon 1) of (S, n) arrays.

    The same statistic as :func:`rnn_lightning.backtest.stats.diebold_mariano`, vectorised over the
    simulations: ``mean(d) / sqrt(g_0 / n)`` times the HLN factor ``sqrt((n - 1) / n)``, against Student's t
    with n - 1 degrees of freedom.
    """
    d = loss_benchmark - loss_model  # (S, n)
    n = d.shape[1]
    mean = d.mean(axis=1)
    variance = ((d - mean[:, None]) ** 2).mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        statistic = np.where(
            variance > 0.0,
            mean / np.sqrt(variance / n) * math.sqrt((n - 1) / n),
            np.where(mean == 0.0, 0.0, np.copysign(np.inf, mean)),
        )
    return np.asarray(stats.t.sf(statistic, df=n - 1), np.float64)


def detectable_ratio(
    naive_errors: np.ndarray,
    settings: BootstrapSettings,
    power: float = 0.8,
    level: float = 0.05,
    simulations: int = 300,
    grid: Sequence[float] | np.ndarray = DEFAULT_GRID,
) -> float:
    """The RMSE ratio a forecast would need for these n days to tell it from the naive forecast.

    The smallest edge the test can see: the largest ratio ``rho`` (closest to 1) on ``grid`` at which a
    forecast with true RMSE ratio ``rho`` is detected at ``level`` with probability >= ``power``, by
    simulation on n days like the data's. A search whose best trial's ratio is above this number could not
    have shown anything on these days, whatever the search found.

    Design. For a target ratio ``rho`` let ``phi = sqrt(1 - rho^2)``. Simulated one-day moves follow the
    AR(1) ``r_t = phi * r_{t-1} + sqrt(1 - phi^2) * u_t``, started from its stationary law (``r_0 = u_0``),
    so ``var(r) = var(u)``. The innovations ``u_t`` are a bootstrap resample (``settings.bootstrap``, its
    block length) of the demeaned naive errors, so their scale, fat tails and volatility clusters are the
    data's, each with an independent random sign: blocks would also carry the sample's chance
    autocorrelation of the moves (about +-2 / sqrt(n)), which a model could exploit and which would move the
    true ratio away from ``rho``; the signs leave the ``u_t`` serially uncorrelated and their sizes as the
    data's. The naive forecast's error is ``r_t``; a near-oracle model that knows ``phi`` forecasts
    ``phi * r_{t-1}`` and errs by ``sqrt(1 - phi^2) * u_t``, so its true RMSE ratio to the naive forecast is
    ``sqrt(1 - phi^2) = rho``. The test is the one-sided Diebold-Mariano test with the HLN correction of that
    one model's squared errors against the naive forecast's
    (``diebold_mariano(...)["pvalue_model_better"] < level``); the power at ``rho`` is the share of
    ``simulations`` series on which it rejects.

    The power falls as ``rho`` rises to 1; the search bisects the grid on that monotone curve. Every
    ``rho`` reuses the same resampled innovations (common random numbers), which keeps the simulated curve
    monotone up to little noise and the answer smooth in the data. Seeded from ``settings.seed``: the same
    errors and settings give the same ratio. Its cost is measured in docs/performance.md.

    This is the resolution for ONE pre-specified model. The SPA test over many trials has to allow for the
    best of them being lucky, so it needs at least this edge, and usually more: the number is an optimistic
    bound on what the search's verdict could detect. (The near-oracle's loss differential is also as
    regular as a forecast's can be; a real model's is noisier.)

    Args:
        naive_errors: (n,) the naive forecast's errors (``naive - actual``, price units) on the tuning days.
        settings: Bootstrap kind, block length and seed of the innovations' resampling.
        power: The detection probability asked for.
        level: The one-sided test's level.
        simulations: Series simulated for each ``rho``; 300 puts a power near 0.8 within about +-0.023.
        grid: The ratios tried, each in (0, 1); searched in increasing order.

    Returns:
        The largest ratio on the grid detected with ``power``; the grid's largest if even that one is (the
        resolution is finer than the grid); NaN if not even the grid's smallest ratio is: too few or too
        noisy days to detect any edge on the grid.
    """
    errors = np.asarray(naive_errors, np.float64)
    if errors.ndim != 1 or len(errors) < MIN_DAYS:
        raise UserInputError(f"detectable_ratio needs at least {MIN_DAYS} days of naive errors, got {errors.shape}")
    if not np.isfinite(errors).all():
        raise UserInputError("the naive errors hold NaN or infinite values")
    centred = errors - errors.mean()
    if not np.any(centred != 0.0):
        raise UserInputError("the naive errors are constant: the prices never moved differently")
    if not (0.0 < power < 1.0 and 0.0 < level < 1.0):
        raise ValueError(f"power and level must lie in (0, 1), got {power} and {level}")
    check_positive("simulations", simulations)
    ratios = np.sort(np.asarray(grid, np.float64))
    if ratios.size == 0 or not (0.0 < ratios[0] and ratios[-1] < 1.0):
        raise ValueError("the grid of RMSE ratios must be non-empty and lie in (0, 1)")

    n = len(errors)
    rng = np.random.default_rng(settings.seed)
    index = _resample_index(n + 1, simulations, settings.resolved_block_size(n), settings.bootstrap, rng, n)
    signs = rng.choice(np.array([-1.0, 1.0]), size=index.shape)
    u = signs * centred[index]  # (S, n + 1): day 0 starts the AR(1), days 1..n are scored
    naive_loss_scale = u[:, 1:] ** 2

    def detected(rho: float) -> bool:
        phi = math.sqrt(1.0 - rho**2)
        shocks = rho * u  # sqrt(1 - phi^2) * u_t
        shocks[:, 0] = u[:, 0]  # r_0 = u_0: the stationary start
        r = signal.lfilter([1.0], [1.0, -phi], shocks, axis=1)  # r_t = phi r_{t-1} + shocks_t
        pvalues = _dm_pvalues_model_better(rho**2 * naive_loss_scale, r[:, 1:] ** 2)
        return float(np.mean(pvalues < level)) >= power

    if not detected(float(ratios[0])):
        return math.nan
    low, high = 0, len(ratios) - 1  # detected at low; find the last detected index
    if detected(float(ratios[high])):
        return float(ratios[high])
    while high - low > 1:  # invariant: detected(low), not detected(high)
        middle = (low + high) // 2
        if detected(float(ratios[middle])):
            low = middle
        else:
            high = middle
    return float(ratios[low])
