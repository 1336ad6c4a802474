"""Walk-forward (rolling-origin) backtesting: many fits of one config over consecutive test periods.

``rnn-lightning backtest`` takes the same config and data options as ``fit`` plus the ``--backtest.*``
settings of :class:`BacktestSettings`, and answers two questions: over many test periods, is the model's
one-day-ahead forecast better than the naive forecast (tomorrow's close = today's), and is the difference
more than luck? See docs/backtest.md for the options, the outputs and every statistic's formula.

How a run goes (:func:`run_backtest`):

1. :func:`plan_folds` turns the settings into folds, or a one-line :class:`UserInputError`, before any run
   folder exists. Fold ``k``'s test windows are ``[origin_k, origin_k + test_size)``; the folds' test
   periods tile the last ``folds x test_size`` windows. It trains on the windows before its origin (all
   of them, or the last ``train_size`` with ``window: sliding``), the last ``val_size`` of which validate.
2. Each fold gets a fresh model, Trainer and checkpoint callbacks, built from the run's config the way the
   CLI builds them for ``fit``, and a data module that is a *view* of the CLI's (already read) data
   module cut to the fold's training rows (:func:`fold_view`). The view holds no row at or after the
   first test day, so the fold's scaling (fitted by the model's ``setup("fit")`` from the view), its
   training, and its best-checkpoint choice cannot see the test period: the leak is impossible by
   construction, not by care.
3. The fold's best checkpoint predicts its test windows; the rows go to ``fold_KK/predictions.csv``.
   With ``--backtest.workers N`` (``refit scratch``, CPU), N forked processes run steps 2-3 for every N-th
   fold each (:func:`_run_workers`); the folds are seeded by their index, so the outputs do not change.
4. :func:`write_outputs` joins every fold's rows into ``backtest.csv``, ``folds.csv``, ``summary.json``,
   TensorBoard scalars and a plot, in the one run folder. ``--backtest.merge`` runs only this step over
   the fold folders of several shard runs (``--backtest.shard i/n``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import re
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import torch
from scipy import stats

from rnn_lightning.errors import UserInputError, check_choice, check_positive, print_error

if TYPE_CHECKING:
    from rnn_lightning.cli import RnnLightningCLI
    from rnn_lightning.data.daily import DailyPricesDataModule

WINDOWS = ("expanding", "sliding")
REFITS = ("scratch", "warm")
FOLD_FILE = "fold.json"  # per fold folder: the fold's bounds, dates, metrics and the run's signature
FOLD_ROWS = "predictions.csv"  # per fold folder: the fold's test days
# Config keys that do not change any fold's result, left out of the run's signature (merge compares it).
UNSIGNED_KEYS = (
    "config",
    "backtest.shard",
    "backtest.merge",
    "backtest.workers",
    "trainer.default_root_dir",
    "trainer.logger",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "plots",
    "predictions",
    "data.init_args.csv_path",
)


@dataclass
class BacktestSettings:
    """The ``--backtest.*`` arguments.

    Args:
        test_size: Test windows (days) per fold.
        folds: Number of folds; their test periods tile the last ``folds x test_size`` windows.
        window: ``expanding`` trains on every window before the fold's origin, ``sliding`` on the last
            ``train_size`` of them.
        train_size: Training windows per fold for ``sliding`` (validation included).
        refit: ``scratch`` trains every fold from a fresh model seeded with ``seed_everything + fold``;
            ``warm`` starts fold k from fold k-1's best checkpoint (with fold k's own scaling).
        warm_epochs: Epochs of every fold after the first with ``refit warm`` (None: ``trainer.max_epochs``).
        shard: ``i/n`` runs only folds ``k`` with ``k % n == i - 1`` (i in 1..n), e.g. one SLURM array
            task each; ``--backtest.merge`` joins the shards' run folders. Needs ``refit scratch``.
        merge: Run folders of shard runs to join into this run's folder (no training).
        confidence: Level of the RMSE ratio's bootstrap interval.
        bootstrap: Resamples of the moving-block bootstrap (0: no interval).
        block_length: Days per bootstrap block (None: ``round(n ** (1/3))`` of the n test days).
        workers: Folds trained at once, each in its own CPU process forked from this one (which has read
            the data). The folds are independent and seeded apart, so the outputs are the same as with
            one. Give each worker ``num_threads`` cores: 2 workers on 2 cores with the KOSPI configs'
            ``num_threads: 1``. Needs ``refit scratch`` and the CPU accelerator.
    """

    test_size: int = 20
    folds: int = 5
    window: Literal["expanding", "sliding"] = "expanding"
    train_size: int | None = None
    refit: Literal["scratch", "warm"] = "scratch"
    warm_epochs: int | None = None
    shard: str | None = None
    merge: list[str] | None = None
    confidence: float = 0.95
    bootstrap: int = 2000
    block_length: int | None = None
    workers: int = 1


@dataclass(frozen=True)
class Fold:
    """One fold's window indices (of the CLI's data module), half-open ``[a, b)`` ranges.

    Training ``[start, val_start)``, validation ``[val_start, train_stop)``, test ``[origin, stop)``.
    ``train_stop`` is ``origin`` for one-day-ahead targets; with ``horizon`` H targets it is ``origin - (H-1)``,
    so no training target falls on a test day.
    """

    index: int
    start: int
    val_start: int
    train_stop: int
    origin: int
    stop: int


# --- the plan: folds from the settings, every check before anything is written ---------------------------


def parse_shard(spec: str | None, folds: int) -> tuple[int, int] | None:
    """``"i/n"`` as ``(i, n)`` with ``1 <= i <= n <= folds``, or None for no shard."""
    if spec is None:
        return None
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(spec))
    if not match:
        raise UserInputError(f"backtest.shard must look like i/n (e.g. 2/4), got {spec!r}")
    i, n = int(match[1]), int(match[2])
    if not 1 <= i <= n:
        raise UserInputError(f"backtest.shard {spec}: i must lie in 1..{n} (shards are numbered from 1)")
    if n > folds:
        raise UserInputError(f"backtest.shard {spec}: {n} shards for {folds} folds leaves some shards no fold")
    return i, n


def check_settings(settings: BacktestSettings) -> None:
    """The checks that need no data: counts, choices and combinations of options."""
    check_positive("backtest.test_size", settings.test_size)
    check_positive("backtest.folds", settings.folds)
    check_choice("backtest.window", settings.window, WINDOWS)
    check_choice("backtest.refit", settings.refit, REFITS)
    if settings.window == "sliding":
        if settings.train_size is None:
            raise UserInputError("backtest.window sliding needs backtest.train_size (training windows per fold)")
        check_positive("backtest.train_size", settings.train_size)
    elif settings.train_size is not None:
        raise UserInputError(
            "backtest.train_size applies only to backtest.window sliding; drop it or add --backtest.window sliding"
        )
    if settings.warm_epochs is not None:
        check_positive("backtest.warm_epochs", settings.warm_epochs)
        if settings.refit != "warm":
            raise UserInputError("backtest.warm_epochs applies only to backtest.refit warm")
    shard = parse_shard(settings.shard, settings.folds)
    if shard is not None and settings.refit == "warm":
        raise UserInputError(
            "backtest.shard needs backtest.refit scratch: with warm each fold starts from the "
            "previous one, so folds cannot run apart"
        )
    check_positive("backtest.workers", settings.workers)
    if settings.workers > 1 and settings.refit == "warm":
        raise UserInputError(
            "backtest.workers > 1 needs backtest.refit scratch: with warm each fold starts from the "
            "previous one, so folds cannot run at once"
        )
    if shard is not None and settings.merge:
        raise UserInputError("backtest.shard and backtest.merge exclude each other: merge the shards afterwards")
    if not 0.0 < settings.confidence < 1.0:
        raise UserInputError(f"backtest.confidence must lie in (0, 1), got {settings.confidence}")
    if isinstance(settings.bootstrap, bool) or not isinstance(settings.bootstrap, int) or settings.bootstrap < 0:
        raise UserInputError(f"backtest.bootstrap must be an int >= 0, got {settings.bootstrap!r}")
    if settings.block_length is not None:
        check_positive("backtest.block_length", settings.block_length)


def check_workers(trainer: Any, threads: int | None = None) -> None:
    """``backtest.workers > 1`` forks CPU processes of one torch thread each.

    Not with GPUs (CUDA does not survive a fork) or DDP, and not with several intra-op threads: a forked
    child that uses the OpenMP pool its parent started hangs, so each worker is one thread on one core.
    """
    from lightning.pytorch.accelerators import CPUAccelerator

    if not isinstance(trainer.accelerator, CPUAccelerator) or trainer.world_size > 1:
        raise UserInputError(
            f"backtest.workers > 1 trains folds in parallel CPU processes, not on "
            f"{type(trainer.accelerator).__name__} x {trainer.world_size}; pass --trainer.accelerator cpu "
            "--trainer.devices 1, or run the folds as separate jobs with --backtest.shard i/n"
        )
    threads = torch.get_num_threads() if threads is None else threads
    if threads != 1:
        raise UserInputError(
            f"backtest.workers > 1 needs --num_threads 1 (one core per worker; torch's thread pool does not "
            f"survive a fork), got {threads} threads"
        )


def _val_count(val_size: int | float, train_part: int) -> int:
    """The data module's ``val_size`` (a count, or a fraction of the training part) for one fold."""
    if isinstance(val_size, float) and not isinstance(val_size, bool):
        return int(round(val_size * train_part)) if 0.0 < val_size < 1.0 else 0
    return int(val_size)


def plan_folds(
    num_windows: int, settings: BacktestSettings, val_size: int | float = 0, gap: int = 0, source: str = "the data"
) -> list[Fold]:
    """Every fold's windows, or a one-line :class:`UserInputError` when the data cannot hold them.

    Args:
        num_windows: Windows of the whole series (W).
        settings: The backtest settings (already checked by :func:`check_settings`).
        val_size: The data module's ``val_size``: validation windows at the end of each fold's training part.
        gap: Windows between the last training window and the origin (``horizon - 1``), so that no
            training target lies in the test period.
        source: The data's name, for messages.
    """
    test_windows = settings.folds * settings.test_size
    first_origin = num_windows - test_windows
    folds = []
    for k in range(settings.folds):
        origin = first_origin + k * settings.test_size
        train_stop = origin - gap
        sliding = settings.train_size or 0  # check_settings: set exactly when the window slides
        start = 0 if settings.window == "expanding" else train_stop - sliding
        part = train_stop - start
        if k == 0 and (start < 0 or part < 2):
            need = (sliding if settings.window == "sliding" else 2) + gap
            raise UserInputError(
                f"backtest.folds x backtest.test_size = {settings.folds} x {settings.test_size} = {test_windows} "
                f"test windows leave {max(first_origin - gap, 0)} training windows before the first fold, "
                f"need at least {need}: {source} gives {num_windows} windows"
            )
        val = _val_count(val_size, part)
        if k == 0 and part - val < 1:
            raise UserInputError(
                f"data.val_size={val_size} leaves no training windows in fold 0 ({part} windows before its origin)"
            )
        folds.append(Fold(k, start, train_stop - val, train_stop, origin, origin + settings.test_size))
    return folds


def shard_folds(folds: list[Fold], shard: tuple[int, int] | None) -> list[Fold]:
    """The folds shard ``(i, n)`` runs: every n-th, starting at fold ``i - 1``."""
    if shard is None:
        return folds
    i, n = shard
    return [f for f in folds if f.index % n == i - 1]


# --- a fold's data: a view of the CLI's data module, cut before the test period ---------------------------


def window_offset(datamodule: DailyPricesDataModule) -> int:
    """Rows from a window's first row to its (last) target row, plus one: ``sequence_length + horizon - 1``."""
    return len(datamodule.close) - datamodule.num_windows


def fold_view(source: DailyPricesDataModule, fold: Fold) -> DailyPricesDataModule:
    """A copy of the read data module holding only fold ``fold``'s training and validation rows.

    Rows ``[start, train_stop + offset)``: the inputs and targets of the fold's training and validation
    windows, and nothing later; the first test day (row ``origin + sequence_length``) is not in it. Its
    ``train``/``val`` splits are the fold's, so the scaling its ``fitted_scaling()`` fits (and the model
    takes in ``setup("fit")``) uses the fold's training rows only. The CSV is not read again: the tensors
    are slices (views) of the source's.
    """
    offset = window_offset(source)
    rows = slice(fold.start, fold.train_stop + offset)
    view = copy.copy(source)  # the same class and settings, the frame already loaded
    view.dates = source.dates.iloc[rows].reset_index(drop=True)
    view.close = source.close[rows]
    view.raw_features = source.raw_features[rows]
    view.num_windows = fold.train_stop - fold.start
    view.num_train = fold.val_start - fold.start
    view.num_val = fold.train_stop - fold.val_start
    # The view must be the source's windows, re-indexed: cheap to check, and it catches a data module whose
    # internals no longer match this construction.
    mine, theirs = view.windows(), source.windows(slice(fold.start, fold.train_stop))
    if not (torch.equal(mine.ref, theirs.ref) and torch.equal(mine.close, theirs.close)):
        raise RuntimeError(f"fold {fold.index}: the fold's data view does not match the data module's windows")
    return view


def fold_dates(source: DailyPricesDataModule, fold: Fold) -> dict[str, str]:
    """The first and last target day of the fold's training part and of its test period."""
    days = pd.to_datetime(source.dates.iloc[source.sequence_length :]).dt.strftime("%Y-%m-%d").to_numpy()
    return {
        "train_start": days[fold.start],
        "train_end": days[fold.train_stop - 1],
        "test_start": days[fold.origin],
        "test_end": days[fold.stop - 1],
    }


# --- statistics --------------------------------------------------------------------------------------------


def rmse(prediction: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error, in the data's units."""
    return float(np.sqrt(np.mean((np.asarray(prediction) - np.asarray(actual)) ** 2)))


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


# --- outputs -------------------------------------------------------------------------------------------------


def fold_dir_name(index: int) -> str:
    """The fold's folder inside the run folder, e.g. ``fold_03``."""
    return f"fold_{index:02d}"


def read_fold_dirs(run_dirs: list[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every fold folder under ``run_dirs`` with its ``fold.json``, by fold index."""
    found: list[tuple[Path, dict[str, Any]]] = []
    for run_dir in run_dirs:
        if not run_dir.is_dir():
            raise UserInputError(f"backtest.merge: {run_dir} is not a folder")
        fold_dirs = sorted(p.parent for p in run_dir.glob(f"fold_*/{FOLD_FILE}"))
        if not fold_dirs:
            raise UserInputError(f"backtest.merge: {run_dir} holds no backtest fold (fold_*/{FOLD_FILE})")
        for fold_dir in fold_dirs:
            if not (fold_dir / FOLD_ROWS).is_file():
                raise UserInputError(f"backtest.merge: {fold_dir} has no {FOLD_ROWS}; did that fold finish?")
            found.append((fold_dir, json.loads((fold_dir / FOLD_FILE).read_text())))
    return sorted(found, key=lambda item: item[1]["fold"])


def check_merge(found: list[tuple[Path, dict[str, Any]]]) -> None:
    """The shards must be of one config and data, and hold every fold exactly once."""
    signatures = {meta["signature"] for _, meta in found}
    if len(signatures) > 1:
        names = ", ".join(sorted({str(d.parent) for d, meta in found if meta["signature"] != found[0][1]["signature"]}))
        raise UserInputError(
            f"backtest.merge: the folders come from different configs or data ({names} differs "
            f"from {found[0][0].parent})"
        )
    indices = [meta["fold"] for _, meta in found]
    duplicated = sorted({k for k in indices if indices.count(k) > 1})
    if duplicated:
        raise UserInputError(f"backtest.merge: fold(s) {duplicated} appear in more than one folder")
    folds = found[0][1]["settings"]["folds"]
    missing = sorted(set(range(folds)) - set(indices))
    if missing:
        raise UserInputError(f"backtest.merge: fold(s) {missing} of {folds} are missing; run their shards first")


def cumulative_plot(table: pd.DataFrame, summary: dict[str, Any]) -> Any:
    """The cumulative sum of ``naive SE - model SE`` over the test days, folds marked: up means the model wins."""
    from matplotlib.figure import Figure

    dates = pd.to_datetime(table["date"]).to_numpy()
    gain = ((table["naive"] - table["actual"]) ** 2 - (table["predicted"] - table["actual"]) ** 2).cumsum()
    fig = Figure(figsize=(12, 5))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.1)
    ax = fig.subplots()
    ax.plot(dates, gain.to_numpy(), color="tab:blue", lw=1.2)
    ax.axhline(0.0, color="black", lw=0.8)
    for k, rows in table.groupby("fold", sort=True):
        first = pd.Timestamp(rows["date"].iloc[0])
        ax.axvline(first, color="tab:gray", lw=0.8, ls="--")
        ax.text(first, 1.0, f" fold {k}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="tab:gray")
    ax.set_ylabel("cumulative naive SE - model SE (points^2)")
    ax.grid(alpha=0.3)
    ax.set_title(
        f"{summary['folds']} folds, {summary['days']} test days: RMSE ratio {summary['rmse_ratio']:.4f}, "
        f"DM p = {summary['dm_pvalue']:.3g} (above 0: the model has beaten the naive forecast so far)",
        fontsize=10,
    )
    return fig


def write_outputs(
    run_dir: Path, table: pd.DataFrame, metas: list[dict[str, Any]], settings: BacktestSettings, plots: bool = True
) -> dict[str, Any]:
    """``backtest.csv``, ``folds.csv``, ``summary.json``, TensorBoard scalars and the plot; returns the summary."""
    table = table.sort_values(["fold", "date"], kind="stable").reset_index(drop=True)
    per_fold, summary = summarise(table, settings)
    dates = pd.DataFrame([{"fold": m["fold"], **m["dates"]} for m in metas])
    per_fold = dates.merge(per_fold, on="fold").sort_values("fold")
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "backtest.csv", index=False, float_format="%.6f")
    per_fold.to_csv(run_dir / "folds.csv", index=False, float_format="%.6f")
    summary["settings"] = metas[0]["settings"]
    summary["signature"] = metas[0]["signature"]
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2, allow_nan=True) + "\n")
    image = None
    if plots:
        from rnn_lightning.callbacks import encode_png, render

        image = render(cumulative_plot(table, summary))
        (run_dir / "backtest_cumulative_se.png").write_bytes(encode_png(image))
    _write_scalars(run_dir, summary, per_fold, image)
    return summary


def _write_scalars(run_dir: Path, summary: dict[str, Any], per_fold: pd.DataFrame, image: np.ndarray | None) -> None:
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run_dir))
    try:
        for name in ("rmse", "naive_rmse", "rmse_ratio", "direction_acc", "dm_pvalue", "up_share"):
            writer.add_scalar(f"backtest_{name}", summary[name], 0)
        for row in per_fold.itertuples():
            for name in ("rmse", "naive_rmse", "rmse_ratio", "direction_acc", "up_share"):
                writer.add_scalar(f"backtest_fold_{name}", getattr(row, name), int(row.fold))
        if image is not None:
            writer.add_image("plots/backtest_cumulative_se", image, 0, dataformats="HWC")
    finally:
        writer.close()


def summary_lines(summary: dict[str, Any]) -> list[str]:
    """The few lines printed at the end of a run."""
    lines = [
        f"backtest: {summary['folds']} folds, {summary['days']} test days; RMSE model {summary['rmse']:,.3f}, "
        f"naive {summary['naive_rmse']:,.3f}, ratio {summary['rmse_ratio']:.4f}"
        + (
            f" ({summary['ci_level']:.0%} block-bootstrap CI {summary['rmse_ratio_ci_low']:.4f}"
            f"..{summary['rmse_ratio_ci_high']:.4f})"
            if "rmse_ratio_ci_low" in summary
            else ""
        ),
        f"backtest: fold ratios {summary['fold_rmse_ratio_mean']:.4f} +- {summary['fold_rmse_ratio_std']:.4f} "
        f"(min {summary['fold_rmse_ratio_min']:.4f}, max {summary['fold_rmse_ratio_max']:.4f}); "
        f"{summary['folds_better_than_naive']} of {summary['folds']} folds beat the naive forecast",
        f"backtest: Diebold-Mariano (HLN) {summary['dm_statistic']:.3f}, p = {summary['dm_pvalue']:.4f} "
        f"(one-sided, model better: {summary['dm_pvalue_model_better']:.4f}); direction {summary['direction_acc']:.3f} "
        f"vs up share {summary['up_share']:.3f}, binomial p = {summary['direction_pvalue']:.4f}",
    ]
    return lines


# --- running the folds -----------------------------------------------------------------------------------------


def _signature(cli: RnnLightningCLI, source: DailyPricesDataModule, settings: BacktestSettings) -> str:
    """A hash of everything that decides the folds' results: the config (less :data:`UNSIGNED_KEYS`) and the data."""
    config = cli.config[cli.subcommand].clone()
    for key in UNSIGNED_KEYS:
        if key in config:
            del config[key]
    text = json.dumps(config.as_dict(), sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode())
    digest.update(source.close.numpy().tobytes())
    digest.update(source.raw_features.numpy().tobytes())
    return digest.hexdigest()[:16]


@contextmanager
def _quiet_lightning() -> Iterator[None]:
    """Lightning's per-Trainer info lines (GPU available, max_epochs reached ...) off while folds run."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def _best_state(trainer: Any) -> dict[str, torch.Tensor] | None:
    from rnn_lightning.checkpointing import BestCheckpoint

    best = next((c for c in trainer.callbacks if isinstance(c, BestCheckpoint)), None)
    path = best.best_model_path if best is not None else ""
    if not path:
        return None
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _fold_rows(model: Any, source: DailyPricesDataModule, fold: Fold) -> pd.DataFrame:
    """The fold's test days: date, fold, actual, predicted (the best model's), naive (today's close)."""
    from rnn_lightning.reports.common import predict_all

    test = source.windows(slice(fold.origin, fold.stop))
    out = predict_all(model, test)
    first = {k: (v[:, 0] if v.dim() == 2 else v) for k, v in out.items() if k in ("prediction", "actual", "naive")}
    days = source.dates.iloc[fold.origin + source.sequence_length : fold.stop + source.sequence_length]
    return pd.DataFrame(
        {
            "date": pd.to_datetime(days).dt.strftime("%Y-%m-%d").to_numpy(),
            "fold": fold.index,
            "actual": first["actual"].double().numpy(),
            "predicted": first["prediction"].double().numpy(),
            "naive": test.ref.double().numpy(),
        }
    )


def _run_fold(
    cli: RnnLightningCLI,
    source: DailyPricesDataModule,
    fold: Fold,
    run_dir: Path,
    settings: BacktestSettings,
    seed: int | None,
    warm_state: dict[str, torch.Tensor] | None,
) -> tuple[pd.DataFrame, dict | None]:
    """Fit one fold with fresh objects built as the CLI builds them, and predict its test days."""
    from lightning.pytorch import seed_everything
    from lightning.pytorch.loggers import TensorBoardLogger

    from rnn_lightning.callbacks import PredictionPlots

    if seed is not None:
        seed_everything(seed + fold.index, workers=True, verbose=False)
    epochs = settings.warm_epochs if warm_state is not None and settings.warm_epochs is not None else None
    init = cli.parser.instantiate_classes(cli.config)  # fresh model, callbacks, logger ... (data unused)
    model = init[cli.subcommand]["model"]
    if warm_state is not None:
        model.load_state_dict(warm_state)  # the scaling buffers are replaced by this fold's in setup("fit")
    view = fold_view(source, fold)
    fold_dir = run_dir / fold_dir_name(fold.index)
    kwargs: dict[str, Any] = {}
    if cli.config_init[cli.subcommand]["trainer"].get("logger") is False:
        kwargs.update(logger=False, default_root_dir=str(fold_dir))
    else:
        kwargs["logger"] = TensorBoardLogger(
            save_dir=str(run_dir), name="", version=fold_dir.name, default_hp_metric=False
        )
    if epochs is not None:
        kwargs["max_epochs"] = epochs
    saved = cli.config_init, cli.model, cli.datamodule, cli.trainer
    try:
        cli.config_init, cli.model, cli.datamodule = init, model, view
        trainer = cli.instantiate_trainer(**kwargs)
        # The fold's plots would draw its validation period only; the run's plot covers every fold.
        trainer.callbacks = [c for c in trainer.callbacks if not isinstance(c, PredictionPlots)]
        cli.trainer = trainer
        cli.fit(model, datamodule=view)
        best = _best_state(trainer)
        if best is not None:
            model.load_state_dict(best)
        rows = _fold_rows(model, source, fold)
    finally:
        cli.config_init, cli.model, cli.datamodule, cli.trainer = saved
    return rows, best


@dataclass(frozen=True)
class _Run:
    """What every fold of one backtest command shares: the CLI (config, parser), the read data, the run folder."""

    cli: RnnLightningCLI
    source: DailyPricesDataModule
    run_dir: Path
    settings: BacktestSettings
    seed: int | None
    signature: str


def _backtest_fold(
    run: _Run, fold: Fold, warm_state: dict[str, torch.Tensor] | None
) -> tuple[Path, dict[str, Any], dict[str, torch.Tensor] | None]:
    """Fit and test one fold, write its folder (``predictions.csv``, ``fold.json``) and print its line."""
    rows, best = _run_fold(run.cli, run.source, fold, run.run_dir, run.settings, run.seed, warm_state)
    fold_dir = run.run_dir / fold_dir_name(fold.index)
    fold_dir.mkdir(parents=True, exist_ok=True)
    rows.to_csv(fold_dir / FOLD_ROWS, index=False)  # full precision: merge rebuilds the outputs from it
    metrics = fold_metrics(rows)
    dates = fold_dates(run.source, fold)
    settings = {k: v for k, v in asdict(run.settings).items() if k != "workers"}
    meta: dict[str, Any] = {
        "fold": fold.index,
        "windows": asdict(fold),
        "dates": dates,
        "rmse": metrics["rmse"],
        "naive_rmse": metrics["naive_rmse"],
        # How the folds were spread over processes is not a setting of their results.
        "settings": settings | {"shard": None, "merge": None},
        "signature": run.signature,
    }
    (fold_dir / FOLD_FILE).write_text(json.dumps(meta, indent=2) + "\n")
    print(
        f"backtest: fold {fold.index} ({dates['test_start']}..{dates['test_end']}): "
        f"RMSE {metrics['rmse']:,.3f}, naive {metrics['naive_rmse']:,.3f}, "
        f"ratio {metrics['rmse_ratio']:.4f}",
        flush=True,
    )
    return fold_dir, meta, best


def _run_folds(run: _Run, folds: list[Fold]) -> tuple[list[Path], list[dict[str, Any]]]:
    """Run ``folds`` one after another in this process; with ``refit warm`` each starts from the last's best."""
    warm: dict[str, torch.Tensor] | None = None
    fold_dirs, metas = [], []
    with _quiet_lightning():
        for fold in folds:
            fold_dir, meta, best = _backtest_fold(run, fold, warm if run.settings.refit == "warm" else None)
            warm = best
            fold_dirs.append(fold_dir)
            metas.append(meta)
    return fold_dirs, metas


def _worker(run: _Run, folds: list[Fold]) -> None:
    """One worker process's folds; a bad input found only now ends it with the CLI's one-line error."""
    try:
        _run_folds(run, folds)
    except UserInputError as err:
        print_error(err)
        raise SystemExit(2) from None


def _run_workers(run: _Run, folds: list[Fold], workers: int) -> tuple[list[Path], list[dict[str, Any]]]:
    """Run ``folds`` in ``workers`` forked processes (every ``workers``-th fold each) and read their folders.

    Forked, so that every worker starts with this process's imports, config and read data: nothing is
    parsed, imported or read again. Each fold is seeded by its index and writes only its own folder, so the
    outputs are those of one process. A failed worker ends the run with a one-line error (exit status 1,
    or 2 for a bad input); the folders of the folds that finished stay.
    """
    import multiprocessing

    sys.stdout.flush()  # or the children would print what this process buffered, again
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_worker, args=(run, folds[w::workers]), name=f"backtest-worker-{w + 1}")
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    try:
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():  # interrupted: take the others down too
                process.terminate()
                process.join()
    failed = [(w + 1, p.exitcode) for w, p in enumerate(processes) if p.exitcode]
    if failed:
        worker, code = failed[0]
        print_error(
            f"backtest worker {worker} of {workers} failed (exit status {code}); "
            f"the finished folds' folders are in {run.run_dir}"
        )
        raise SystemExit(2 if code == 2 else 1)
    wanted = {fold.index for fold in folds}
    found = [(d, m) for d, m in read_fold_dirs([run.run_dir]) if m["fold"] in wanted]
    return [d for d, _ in found], [m for _, m in found]


def run_backtest(cli: RnnLightningCLI, model: Any, datamodule: Any, settings: BacktestSettings) -> dict[str, Any]:
    """Run every fold (or one shard's, or merge shards) and write the run folder's outputs.

    ``model`` is the CLI's model, unused but for its type: every fold builds its own. ``datamodule`` is the
    CLI's data module, already read and checked by ``before_backtest``.
    """
    from rnn_lightning.data.daily import DailyPricesDataModule

    check_settings(settings)
    if settings.merge:
        found = read_fold_dirs([Path(p) for p in settings.merge])
        check_merge(found)
        run_dir = Path(cli.trainer.log_dir)
        for fold_dir, _ in found:
            shutil.copytree(fold_dir, run_dir / fold_dir.name, dirs_exist_ok=True)
        return _finish(
            cli, run_dir, [d for d, _ in found], [m for _, m in found], BacktestSettings(**found[0][1]["settings"])
        )
    if not isinstance(datamodule, DailyPricesDataModule):
        raise UserInputError(
            f"backtest needs a daily price data module (DailyPricesDataModule), not {type(datamodule).__name__}"
        )
    config = cli.config[cli.subcommand]
    if config.get("optimizer") or config.get("lr_scheduler"):
        # LightningCLI attaches those to its one model through a private method; every fold builds its own.
        raise UserInputError(
            "backtest trains each fold with the model's own Adam (model.lr, model.weight_decay); "
            "--optimizer and --lr_scheduler are not supported here"
        )
    folds = plan_folds(
        datamodule.num_windows,
        settings,
        datamodule.val_size,
        gap=window_offset(datamodule) - datamodule.sequence_length,
        source=datamodule.csv_path,
    )
    mine = shard_folds(folds, parse_shard(settings.shard, settings.folds))
    workers = min(settings.workers, len(mine))
    if workers > 1:
        check_workers(cli.trainer)
    seed = cli.config[cli.subcommand].get("seed_everything")
    seed = None if seed is False or seed is None else int(seed)
    signature = _signature(cli, datamodule, settings)
    run_dir = Path(cli.trainer.log_dir)  # lightning_logs/version_N: created only now, after every check
    run_dir.mkdir(parents=True, exist_ok=True)
    print(
        f"backtest: {len(mine)} of {len(folds)} folds of {settings.test_size} test days, {settings.window} "
        f"window, refit {settings.refit}, into {run_dir}" + (f", {workers} at a time" if workers > 1 else "")
    )
    run = _Run(cli, datamodule, run_dir, settings, seed, signature)
    fold_dirs, metas = _run_workers(run, mine, workers) if workers > 1 else _run_folds(run, mine)
    if settings.shard is not None:
        print(f"backtest: shard {settings.shard} done; join the shards with --backtest.merge '[DIR, ...]'")
        return {"folds": len(mine), "run_dir": str(run_dir)}
    return _finish(cli, run_dir, fold_dirs, metas, settings)


def _finish(
    cli: RnnLightningCLI, run_dir: Path, fold_dirs: list[Path], metas: list[dict[str, Any]], settings: BacktestSettings
) -> dict[str, Any]:
    table = pd.concat([pd.read_csv(d / FOLD_ROWS, dtype={"date": str}) for d in fold_dirs], ignore_index=True)
    plots = cli.config_init[cli.subcommand].get("plots")
    summary = write_outputs(run_dir, table, metas, settings, plots=bool(getattr(plots, "enabled", True)))
    for line in summary_lines(summary):
        print(line)
    print(f"backtest: wrote backtest.csv, folds.csv, summary.json to {run_dir}")
    return summary
