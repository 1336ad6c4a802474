"""The search: an Optuna study whose trials are walk-forward backtests (prices) or validated fits (images).

Each trial draws a configuration from the space (:mod:`rnn_lightning.tune.space`), builds its runs with the
run factory and scores it:

* **prices**: the RMSE ratio to the naive forecast over every test day of a backtest on the *tuning
  period* (the data without its last ``holdout`` days), with the ``--backtest.*`` folds. After each fold
  the ratio so far is reported to Optuna, whose pruner may stop the trial there. The trial keeps its
  per-day squared errors (and the naive forecast's) in the study, so that every process, and every
  machine sharing a database, can build the verdict from the study alone.
* **images**: the best validation loss of a fit; the pruner sees each validation. The test split is
  not touched until the end (:mod:`rnn_lightning.tune.run`).

The study lives in an Optuna storage: by default a SQLite file under ``trainer.default_root_dir`` named
after the study, so that running the same command again continues it; ``--tune.storage URL`` takes a
PostgreSQL or MySQL database that many machines share. Trials send heartbeats: a process killed in the
middle of a trial leaves it RUNNING until its heartbeat is stale, then it is marked FAIL and a new trial
takes its slot. (Not Optuna's retry callbacks: they re-queue the parameters as a waiting trial, which two
processes on SQLite were seen to take at once, running one trial number twice into one folder.) The
number of *finished* trials (complete or pruned) stops at exactly ``--tune.trials`` across all processes
(:func:`work`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from lightning.pytorch.callbacks import Callback

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings, fold_results, folds_for, leading_view
from rnn_lightning.backtest.run import UNSIGNED_KEYS as BACKTEST_UNSIGNED_KEYS
from rnn_lightning.backtest.stats import diebold_mariano
from rnn_lightning.checkpointing import BestCheckpoint
from rnn_lightning.errors import UserInputError, check_choice, check_positive
from rnn_lightning.tune.space import SearchSpace
from rnn_lightning.tune.storage import cannot_open, open_storage, redact, startup_lock

FINISHED = ("COMPLETE", "PRUNED")
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "none")
# Config keys that do not change a trial's result, left out of the study's signature: the backtest's, and
# where image files are (their content is in the data digest).
UNSIGNED_KEYS = (*BACKTEST_UNSIGNED_KEYS, "data.init_args.data_dir")


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
        seed: Seed of the sampler (see :func:`make_sampler`: distinct per worker and per resumed run) and of
            the verdict's bootstraps.
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


# --- what a trial searches over, and what it must not see ------------------------------------------------


@dataclass(frozen=True)
class Search:
    """What every trial of one tune command shares."""

    config: runs.RunConfig
    space: SearchSpace
    backtest: BacktestSettings
    settings: TuneSettings
    task: str  # the data's task: "regression" (prices) or "classification" (images)
    holdout: int  # held-out days at the end of the series (prices; 0 for images)
    run_dir: Path
    signature: str

    def trial_config(self, params: dict[str, Any]) -> runs.RunConfig:
        return self.config.override(params)


def holdout_days(settings: TuneSettings, backtest: BacktestSettings) -> int:
    """The held-out days: ``tune.holdout``, or as many days as the folds test (``folds x test_size``)."""
    return backtest.folds * backtest.test_size if settings.holdout is None else settings.holdout


def tuning_data(config: runs.RunConfig, holdout: int) -> Any:
    """A trial's data: the config's data module, read, cut before the last ``holdout`` windows (days)."""
    with runs.quiet_lightning():
        run = runs.build(config, "backtest", save_config=False, logger=False)
        runs.prepare_data(run)
    data = run.datamodule
    if getattr(data, "horizon", 1) != 1:
        raise UserInputError("tune scores one-day-ahead forecasts: use data.horizon 1")
    if holdout >= data.num_windows:
        raise UserInputError(f"tune.holdout {holdout} leaves no window to tune on ({data.num_windows} windows)")
    return leading_view(data, data.num_windows - holdout) if holdout else data


def study_signature(
    config: runs.RunConfig, space: SearchSpace, backtest: BacktestSettings, holdout: int, data_digest: str
) -> str:
    """A hash of everything that decides the trials' scores: config, space, folds, hold-out and data."""
    values = config.namespace.clone()
    for key in UNSIGNED_KEYS:
        if key in values:
            del values[key]
    folds = {k: v for k, v in asdict(backtest).items() if k not in ("shard", "merge", "workers")}
    text = json.dumps(
        {"config": values.as_dict(), "space": space.digest(), "backtest": folds, "holdout": holdout},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256((text + data_digest).encode()).hexdigest()[:16]


def data_digest(datamodule: Any) -> str:
    """A hash of the read data (prices: every close and feature; images: the data set's name and sizes)."""
    digest = hashlib.sha256()
    for name in ("close", "raw_features"):
        value = getattr(datamodule, name, None)
        if value is not None:
            digest.update(value.numpy().tobytes())
    digest.update(str(getattr(datamodule, "dataset", "")).encode())
    return digest.hexdigest()[:16]


# --- the trials ------------------------------------------------------------------------------------------


def _price_trial(search: Search, trial: Any, config: runs.RunConfig) -> float:
    import optuna

    data = tuning_data(config, search.holdout)
    folds = folds_for(data, search.backtest)
    run_dir = search.run_dir / f"trial_{trial.number:04d}"
    dates: list[str] = []
    se: list[float] = []
    naive_se: list[float] = []
    naive_error: list[float] = []
    for fold, rows in fold_results(
        config, data, search.backtest, run_dir, folds, enable_progress_bar=False, enable_model_summary=False
    ):
        actual = rows["actual"].to_numpy(np.float64)
        naive_error += list(actual - rows["naive"].to_numpy(np.float64))
        dates += list(rows["date"])
        se += list((rows["predicted"].to_numpy(np.float64) - actual) ** 2)
        naive_se += list((rows["naive"].to_numpy(np.float64) - actual) ** 2)
        ratio = math.sqrt(sum(se) / sum(naive_se)) if sum(naive_se) > 0 else math.nan
        trial.report(ratio, fold.index)
        if fold.index < len(folds) - 1 and trial.should_prune():
            raise optuna.TrialPruned(f"after fold {fold.index}: RMSE ratio {ratio:.4f}")
    dm = diebold_mariano(np.asarray(se), np.asarray(naive_se))
    trial.set_user_attr("dates", dates)
    trial.set_user_attr("se", se)
    trial.set_user_attr("naive_se", naive_se)
    trial.set_user_attr("naive_error", naive_error)
    trial.set_user_attr("dm_pvalue", dm["pvalue"])
    trial.set_user_attr("dm_pvalue_model_better", dm["pvalue_model_better"])
    return math.sqrt(sum(se) / sum(naive_se))


class ReportValidation(Callback):
    """Reports each validation's ``val_loss`` to the trial, and stops the fit when the pruner says so."""

    def __init__(self, trial: Any) -> None:
        self.trial = trial

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        import optuna

        if trainer.sanity_checking or "val_loss" not in trainer.callback_metrics:
            return
        value = float(trainer.callback_metrics["val_loss"])
        self.trial.report(value, trainer.current_epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"epoch {trainer.current_epoch}: val_loss {value:.4f}")


def _image_trial(search: Search, trial: Any, config: runs.RunConfig) -> float:
    from lightning.pytorch.loggers import TensorBoardLogger

    run_dir = search.run_dir / f"trial_{trial.number:04d}"
    logger = TensorBoardLogger(save_dir=str(run_dir), name="", version="fit", default_hp_metric=False)
    run = runs.build(config, "fit", logger=logger, plots=False, enable_progress_bar=False, enable_model_summary=False)
    run.trainer.callbacks.append(ReportValidation(trial))
    runs.prepare_data(run)
    if not getattr(run.datamodule, "has_validation", False):
        raise UserInputError("tune on images scores the validation loss: set data.val_size > 0")
    runs.fit(run)
    best = runs.find_callback(run.trainer, BestCheckpoint)
    if best is None or best.best_model_score is None:
        raise UserInputError("tune on images needs the checkpoint callback's best val_loss (checkpoint.monitor)")
    trial.set_user_attr("checkpoint", str(Path(best.best_model_path).resolve()))
    return float(best.best_model_score)


def objective(search: Search) -> Any:
    """The function Optuna calls with each trial: draw, build, score."""

    def run_trial(trial: Any) -> float:
        from rnn_lightning.tune import quota

        quota.claim(trial, search.settings.trials)
        params = search.space.suggest(trial)
        config = search.trial_config(params)
        started = time.perf_counter()
        try:
            with runs.quiet_lightning():
                if search.task == "regression":
                    return _price_trial(search, trial, config)
                return _image_trial(search, trial, config)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)

    return run_trial


# --- the study and the processes that work on it ------------------------------------------------------


def default_storage(config: runs.RunConfig, study: str) -> str:
    """The embedded storage: ``<trainer.default_root_dir>/<study>.optuna.db`` (SQLite)."""
    root = Path(config.get("trainer.default_root_dir") or ".")
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(root / f'{study}.optuna.db').resolve()}"


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's "experimental feature" notes on heartbeats and its per-trial INFO lines (ours say more).

    Around the calls that make them only: the warning filters and Optuna's verbosity are restored after.
    """
    import optuna

    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        optuna.logging.set_verbosity(verbosity)


def open_study(search: Search, url: str, create: bool) -> Any:
    """The study (created on first use); a study of another config, space or data is refused.

    Any number of processes may call this at the same moment on a fresh database: the storage is opened and
    the study created or loaded under the database's start-up lock (:mod:`rnn_lightning.tune.storage`).
    """
    import optuna

    name = study_name(search)
    with cannot_open(url), startup_lock(url), optuna_quiet():
        storage = open_storage(url, search.settings.heartbeat)
        if not create:
            return optuna.load_study(study_name=name, storage=storage)
        # load_if_exists, and no "A new study created" line: ours names the study and its storage.
        study = optuna.create_study(storage=storage, study_name=name, direction="minimize", load_if_exists=True)
        signature = study.user_attrs.get("signature")
        if signature is None:
            study.set_user_attr("signature", search.signature)
            study.set_user_attr("task", search.task)
            study.set_user_attr("space", search.space.keys)
        elif signature != search.signature:
            raise UserInputError(
                f"study {name!r} in {redact(url)} was run with another config, space, folds or data; "
                "name a new one with --tune.study NAME, or run the command it was started with"
            )
        return study


def study_name(search: Search) -> str:
    """``tune.study``, or the name of the first config file (``kospi_gru_returns``)."""
    if search.settings.study:
        return search.settings.study
    configs = search.config.get("config") or []
    first = Path(str(configs[-1])).stem if configs else "tune"  # the file given last (nested ones come first)
    return re.sub(r"[^\w.-]", "_", first)


def make_sampler(settings: TuneSettings, worker: int, existing: int = 0) -> Any:
    """The sampler of one process: seeded so that no two processes, and no resumed run, draw the same values.

    ``seed + worker + 1000 * existing`` (``existing``: trials the study held when the process started), so
    a fresh study on one machine draws the same configurations every time, and a resumed one does not
    repeat the draws of the run it continues. On a shared database (``--tune.storage``) the processes of
    many machines start at once with the same counts, so the process id is added there.
    """
    import optuna

    seed = settings.seed + worker + 1000 * existing + (os.getpid() if settings.storage else 0)
    if settings.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(settings: TuneSettings) -> Any:
    """The pruner: Optuna's median rule (see :class:`TuneSettings`), or none."""
    import optuna

    if settings.pruner == "none":
        return optuna.pruners.NopPruner()
    # After 5 finished trials, from the second fold on: one fold's ratio says little on its own.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=1)


def finished_count(study: Any) -> int:
    """Complete and pruned trials of the study."""
    import optuna

    return len(
        study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))
    )


def work(search: Search, url: str, worker: int, announce: Any = None) -> None:
    """Run trials until the study has ``trials`` finished ones; one process's share of the search.

    Others may work on the same study at the same time (workers on this machine, other machines on a
    database). Before each trial the process asks the storage how many trials are finished or running;
    the claim itself is made again inside the trial (:mod:`rnn_lightning.tune.quota`), so two processes
    that start the last trial at the same moment cannot both count: the later one yields.
    """
    import optuna
    from optuna.storages import fail_stale_trials

    from rnn_lightning.tune import quota

    study = open_study(search, url, create=False)
    study.sampler = make_sampler(search.settings, worker, len(study.get_trials(deepcopy=False)))
    study.pruner = make_pruner(search.settings)
    while True:
        with optuna_quiet():
            fail_stale_trials(study)
        finished, running = quota.counts(study)
        if finished >= search.settings.trials:
            return
        if finished + running >= search.settings.trials:
            time.sleep(min(2.0, search.settings.heartbeat / 2))  # the last trials are running elsewhere
            continue
        callbacks = [announce] if announce is not None else []
        try:
            with optuna_quiet():
                study.optimize(
                    objective(search),
                    n_trials=1,
                    catch=(quota.Surplus,),
                    callbacks=callbacks,
                    gc_after_trial=False,
                    show_progress_bar=False,
                )
        except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as err:
            # Another process failed this trial while it ran (its heartbeat looked stale on a busy
            # machine): the storage keeps that state, a new trial takes the slot, this process goes on.
            if "finished" not in str(err) and "Cannot tell" not in str(err):
                raise
            print(f"tune: a trial was failed by another process while it ran ({err}); continuing", flush=True)


def _worker_main(search: Search, url: str, worker: int) -> None:
    import torch

    torch.set_num_threads(1)
    try:
        work(search, url, worker, announce=announce_trial)
    except UserInputError as err:
        from rnn_lightning.errors import print_error

        print_error(err)
        raise SystemExit(2) from None


def announce_trial(study: Any, trial: Any, write: Any = None) -> None:
    """One line per finished trial: number, state, parameters, score and the best so far."""
    if trial.user_attrs.get("surplus"):
        return
    state = trial.state.name.lower()
    params = ", ".join(f"{k.split('.')[-1]}={_short(v)}" for k, v in trial.params.items())
    score = f"{trial.value:.4f}" if trial.value is not None else "-"
    try:
        best = f"{study.best_value:.4f} (trial {study.best_trial.number})"
    except ValueError:
        best = "-"
    seconds = trial.user_attrs.get("seconds")
    took = f" in {seconds:.0f} s" if seconds is not None else ""
    finished = finished_count(study)
    line = f"tune: trial {trial.number} {state}{took}: {params}: score {score}; best {best}; {finished} finished"
    if write is not None:
        write(line)
    else:
        print(line, flush=True)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_workers(search: Search, url: str, workers: int) -> None:
    """``workers`` forked processes each run :func:`work`; this one shows progress over all finished trials."""
    import multiprocessing

    from tqdm import tqdm

    if workers == 1:
        with tqdm(total=search.settings.trials, desc="tune", unit="trial", file=sys.stderr, leave=False) as bar:

            def announce(study: Any, trial: Any) -> None:
                announce_trial(study, trial, write=lambda line: bar.write(line, file=sys.stdout))
                bar.n = min(finished_count(study), search.settings.trials)
                bar.refresh()

            work(search, url, 0, announce=announce)
        return
    sys.stdout.flush()
    sys.stderr.flush()
    context = multiprocessing.get_context("fork")
    processes = [
        context.Process(target=_worker_main, args=(search, url, w), name=f"tune-worker-{w + 1}") for w in range(workers)
    ]
    for process in processes:
        process.start()
    study = open_study(search, url, create=False)
    try:
        with tqdm(total=search.settings.trials, desc="tune", unit="trial", file=sys.stderr, leave=False) as bar:
            while any(p.is_alive() for p in processes):
                bar.n = min(finished_count(study), search.settings.trials)
                bar.refresh()
                time.sleep(1.0)
    finally:
        for process in processes:
            process.join(timeout=0 if process.is_alive() else None)
            if process.is_alive():
                process.terminate()
                process.join()
    failed = [(w + 1, p.exitcode) for w, p in enumerate(processes) if p.exitcode]
    if failed:
        worker, code = failed[0]
        from rnn_lightning.errors import print_error

        print_error(f"tune worker {worker} of {workers} failed (exit status {code}); rerun the command to continue")
        raise SystemExit(2 if code == 2 else 1)
