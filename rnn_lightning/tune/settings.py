"""The ``--tune.*`` settings and the checks that need no data."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from rnn_lightning.backtest import BacktestSettings
from rnn_lightning.errors import UserInputError, check_choice, check_positive

SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")


@dataclass
class TuneSettings:
    """The ``--tune.*`` arguments.

    Args:
        space: The search space file (YAML: dotted config keys to ``{choices: [...]}`` or
            ``{low, high[, log, step]}``); see configs/tune/.
        trials: Finished trials (complete or pruned) the study stops at, across every process and machine.
        holdout: Prices: the last days, never seen by any trial, on which the best configuration is
            judged once at the end (None: ``backtest.folds x backtest.test_size``; 0: none). Images
            always keep their test split for the end.
        workers: Trials run at once on this machine, each in its own process of one CPU thread.
        storage: An Optuna storage URL shared by many processes or machines
            (``postgresql://user:password@host/db``); None keeps the study in a SQLite file under
            ``trainer.default_root_dir`` named after it.
        study: The study's name (None: the config file's name).
        seed: Seed of the sampler (see :func:`rnn_lightning.tune.study.make_sampler`: distinct per worker
            and per resumed run) and of the verdict's bootstraps.
        sampler: ``tpe`` (Optuna's default) or ``random``.
        pruner: ``median`` stops a trial whose score after a fold is worse than the median of the
            finished trials at that fold (after 5 finished trials and from the second fold on);
            ``none`` runs every trial to the end.
        heartbeat: Seconds between a running trial's heartbeats; a trial silent for ``2 x heartbeat + 10``
            seconds is marked failed and a new trial takes its slot (the 10 s keep a busy machine's
            late heartbeat from failing a trial that is still running).
        reps: Bootstrap resamples of the SPA and StepM tests.
        block_size: Mean block length of their stationary bootstrap (None: ``n ** (1/3)`` of the n days).
    """

    space: str | None = None
    trials: int = 20
    holdout: int | None = None
    workers: int = 1
    storage: str | None = None
    study: str | None = None
    seed: int = 0
    sampler: Literal["tpe", "random"] = "tpe"
    pruner: Literal["median", "none"] = "median"
    heartbeat: int = 10
    reps: int = 1000
    block_size: int | None = None


def check_settings(settings: TuneSettings) -> None:
    """The checks that need no data: counts, choices, the space file's existence."""
    if not settings.space:
        raise UserInputError("tune needs a search space: pass --tune.space FILE (see configs/tune/)")
    check_positive("tune.trials", settings.trials)
    check_positive("tune.workers", settings.workers)
    check_positive("tune.heartbeat", settings.heartbeat)
    check_positive("tune.reps", settings.reps)
    if settings.block_size is not None:
        check_positive("tune.block_size", settings.block_size)
    if settings.holdout is not None and (
        isinstance(settings.holdout, bool) or not isinstance(settings.holdout, int) or settings.holdout < 0
    ):
        raise UserInputError(f"tune.holdout must be an int >= 0, got {settings.holdout!r}")
    check_choice("tune.sampler", settings.sampler, SAMPLERS)
    check_choice("tune.pruner", settings.pruner, PRUNERS)
    if settings.study is not None and not re.fullmatch(r"[\w.-]+", settings.study):
        raise UserInputError(f"tune.study {settings.study!r}: use letters, digits, '.', '-' and '_' only")


def holdout_days(settings: TuneSettings, backtest: BacktestSettings) -> int:
    """The held-out days: ``tune.holdout``, or as many days as the folds test (``folds x test_size``)."""
    return backtest.folds * backtest.test_size if settings.holdout is None else settings.holdout
