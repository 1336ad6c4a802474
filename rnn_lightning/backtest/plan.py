"""The plan of a backtest: its settings, and the folds they give, checked before anything is written.

Fold ``k``'s test windows are ``[origin_k, origin_k + test_size)``; the folds' test periods tile the last
``folds x test_size`` windows. It trains on the windows before its origin (all of them, or the last
``train_size`` with ``window: sliding``), the last ``val_size`` of which validate. A fold's data is a
*view* of the read data module cut before its test period (:func:`fold_view`): the fold's scaling, its
training and its best-checkpoint choice cannot see the test period, by construction.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd
import torch

from rnn_lightning.errors import UserInputError, check_choice, check_positive

if TYPE_CHECKING:
    from rnn_lightning.data.daily import DailyPricesDataModule

WINDOWS = ("expanding", "sliding")
REFITS = ("scratch", "warm")


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
            one. None (the default) takes the machine's usable cores when the folds can run apart
            (``refit scratch``, one CPU device, ``num_threads: 1``, as the KOSPI configs set it) and 1
            otherwise; 1 runs every fold in this process.
        shipped_test: Panels whose data set ships a test part (Tourism): walk the origins through it too
            (its horizon is then the last fold's test). False (the default) backtests each series' training
            part only, leaving the competition's test part untouched. Not read by the price backtest.
        resume: The run folder (``lightning_logs/version_N``) of a backtest that was stopped, to continue in
            place: its finished folds (``fold_KK/`` holding ``predictions.csv`` and the fold's JSON file, signed
            by the same config, data and settings) are read back, not trained again; the others are trained
            into it, then the run's outputs are written as a full run writes them, equal to an uninterrupted
            run's. A folder of another config, data or settings is a one-line error. Needs ``refit scratch``.
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
    workers: int | None = None
    shipped_test: bool = False
    resume: str | None = None


@dataclass(frozen=True)
class Fold:
    """One fold's window indices (of the read data module), half-open ``[a, b)`` ranges.

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


# --- folds from the settings ---------------------------------------------------------------------------


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
    if settings.workers is not None:
        check_positive("backtest.workers", settings.workers)
    if settings.workers is not None and settings.workers > 1 and settings.refit == "warm":
        raise UserInputError(
            "backtest.workers > 1 needs backtest.refit scratch: with warm each fold starts from the "
            "previous one, so folds cannot run at once"
        )
    if shard is not None and settings.merge:
        raise UserInputError("backtest.shard and backtest.merge exclude each other: merge the shards afterwards")
    if settings.resume is not None and settings.merge:
        raise UserInputError("backtest.resume and backtest.merge exclude each other: resume each shard, then merge")
    if settings.resume is not None and settings.refit == "warm":
        raise UserInputError(
            "backtest.resume needs backtest.refit scratch: with warm each fold starts from the previous one's "
            "weights, which a run folder does not keep"
        )
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


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask, e.g. a SLURM or container limit)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def resolve_workers(settings: BacktestSettings, trainer: Any, folds: int) -> int:
    """How many worker processes run ``folds`` folds: the setting, checked, or the default.

    The default (``workers: None``) is the usable cores, at most one per fold, when the folds can run
    apart on the CPU (``refit scratch``, one CPU device, one torch thread); otherwise 1. An explicit
    ``workers > 1`` that cannot run is a one-line error (:func:`check_workers`).
    """
    if settings.workers is None:
        if settings.refit != "scratch" or folds < 2:
            return 1
        try:
            check_workers(trainer)
        except UserInputError:
            return 1
        return max(1, min(usable_cores(), folds))
    workers = min(settings.workers, folds)
    if workers > 1:
        check_workers(trainer)
    return workers


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


# --- a fold's data: a view of the read data module, cut before the test period ---------------------------


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
    view = source.window_view(fold.start, fold.val_start, fold.train_stop)
    # The view must be the source's windows, re-indexed: cheap to check, and it catches a data module whose
    # internals no longer match this construction.
    mine, theirs = view.windows(), source.windows(slice(fold.start, fold.train_stop))
    if not (torch.equal(mine.ref, theirs.ref) and torch.equal(mine.close, theirs.close)):
        raise RuntimeError(f"fold {fold.index}: the fold's data view does not match the data module's windows")
    return view


def leading_view(source: DailyPricesDataModule, num_windows: int) -> DailyPricesDataModule:
    """The read data cut after its first ``num_windows`` windows: no row of a later target day is in it.

    What a search sees when the last windows are held out (:mod:`rnn_lightning.tune`): its folds are
    planned over this view, so a held-out day can reach no trial.
    """
    cut = Fold(-1, 0, num_windows, num_windows, num_windows, num_windows)
    return fold_view(source, cut)


def fold_dates(source: DailyPricesDataModule, fold: Fold) -> dict[str, str]:
    """The first and last target day of the fold's training part and of its test period."""
    days = pd.to_datetime(source.dates.iloc[source.sequence_length :]).dt.strftime("%Y-%m-%d").to_numpy()
    return {
        "train_start": days[fold.start],
        "train_end": days[fold.train_stop - 1],
        "test_start": days[fold.origin],
        "test_end": days[fold.stop - 1],
    }
