"""The search: processes that run trials until the study has ``--tune.trials`` finished ones.

Each trial draws a configuration from the space (:mod:`rnn_lightning.tune.space`) and is scored by the
search's objective (:mod:`rnn_lightning.tune.objectives`: walk-forward backtests for prices, validated
fits for images). Trials send heartbeats: a process killed in the middle of a trial leaves it RUNNING
until its heartbeat is stale, then it is marked FAIL and a new trial takes its slot. (Not Optuna's retry
callbacks: they re-queue the parameters as a waiting trial, which two processes on SQLite were seen to
take at once, running one trial number twice into one folder.) The number of *finished* trials (complete
or pruned) stops at exactly ``--tune.trials`` across all processes (:func:`work`,
:mod:`rnn_lightning.tune.quota`).
"""

from __future__ import annotations

import sys
import time
from typing import Any

from rnn_lightning import runs
from rnn_lightning.tune import quota
from rnn_lightning.tune.settings import TuneSettings
from rnn_lightning.tune.study import Search, make_pruner, make_sampler, open_study, optuna_quiet
from rnn_lightning.workers import run_forked

__all__ = ["TuneSettings", "announce_trial", "run_trial", "run_workers", "work"]


def run_trial(search: Search) -> Any:
    """The function Optuna calls with each trial: claim a slot, draw, score by the search's objective."""

    def trial_function(trial: Any) -> float:
        quota.claim(trial, search.settings.trials)
        params = search.space.suggest(trial)
        config = search.trial_config(params)
        started = time.perf_counter()
        try:
            with runs.quiet_lightning():
                return search.objective.run_trial(search, trial, config)
        finally:
            trial.set_user_attr("seconds", time.perf_counter() - started)

    return trial_function


def work(search: Search, url: str, worker: int, announce: Any = None) -> None:
    """Run trials until the study has ``trials`` finished ones; one process's share of the search.

    Others may work on the same study at the same time (workers on this machine, other machines on a
    database). Before each trial the process asks the storage how many trials are finished or running;
    the claim itself is made again inside the trial (:mod:`rnn_lightning.tune.quota`), so two processes
    that start the last trial at the same moment cannot both count: the later one yields.
    """
    import optuna
    from optuna.storages import fail_stale_trials

    study = open_study(search, url, create=False)
    study.sampler = make_sampler(search.settings, worker, len(study.get_trials(deepcopy=False)))
    study.pruner = make_pruner(search.settings)
    while True:
        with optuna_quiet():
            fail_stale_trials(study)
        counts = quota.tally(study)
        if counts.finished >= search.settings.trials:
            return
        if counts.finished + counts.running >= search.settings.trials:
            time.sleep(min(2.0, search.settings.heartbeat / 2))  # the last trials are running elsewhere
            continue
        callbacks = [announce] if announce is not None else []
        try:
            with optuna_quiet(), quota.surplus_unlogged():
                study.optimize(
                    run_trial(search),
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
    work(search, url, worker, announce=announce_trial)


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
    finished = quota.tally(study).finished
    line = f"tune: trial {trial.number} {state}{took}: {params}: score {score}; best {best}; {finished} finished"
    if write is not None:
        write(line)
    else:
        print(line, flush=True)


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_workers(search: Search, url: str, workers: int) -> None:
    """``workers`` forked processes each run :func:`work`; this one shows progress over all finished trials."""
    if workers == 1:
        with _bar(search) as bar:

            def announce(study: Any, trial: Any) -> None:
                announce_trial(study, trial, write=lambda line: bar.write(line, file=sys.stdout))
                bar.n = min(quota.tally(study).finished, search.settings.trials)
                bar.refresh()

            work(search, url, 0, announce=announce)
        return
    progress = _Progress(search, url)
    try:
        run_forked(
            "tune",
            _worker_main,
            [(search, url, w) for w in range(workers)],
            after_failure="rerun the command to continue",
            progress=progress,
        )
    finally:
        progress.close()


def _bar(search: Search) -> Any:
    from tqdm import tqdm

    return tqdm(total=search.settings.trials, desc="tune", unit="trial", file=sys.stderr, leave=False)


class _Progress:
    """The parent's bar over every worker's finished trials, opened once they run.

    The study's connection and the bar's thread are opened only after the fork: none is shared with a child.
    """

    def __init__(self, search: Search, url: str) -> None:
        self.search, self.url = search, url
        self.study: Any = None
        self.bar: Any = None

    def __call__(self) -> None:
        if self.bar is None:
            self.study = open_study(self.search, self.url, create=False)
            self.bar = _bar(self.search)
        self.bar.n = min(quota.tally(self.study).finished, self.search.settings.trials)
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
