"""``rnn-lightning tune``: check everything, search, then judge the best configuration honestly.

A plain function of the config (:func:`run_tune`): it reads the data once (:func:`rnn_lightning.runs.build_data`),
names its run folder as the config's Trainer would (:func:`rnn_lightning.runs.new_run_dir`) and builds no
Trainer of its own; every trial builds its runs from the config.

1. Every check before anything is written: the settings, the forked workers, the space (each choice and
   bound through the parser and the classes), the objective's checks on the data (for prices the folds on
   the tuning period), the storage (a study of another config, space or data is refused).
2. The search (:mod:`rnn_lightning.tune.search`), in this process or ``--tune.workers`` forked ones.
3. The verdict, from the study alone, by the data kind's objective (:mod:`rnn_lightning.tune.objectives`):
   for prices Hansen's SPA test and Romano-Wolf's StepM over every completed trial's per-day losses, the
   smallest ratio these days could detect, and the best configuration judged once on the held-out days;
   for images the best trial's checkpoint tested once on the test split.
4. The outputs (:mod:`rnn_lightning.tune.outputs`) and one printed paragraph
   (:meth:`rnn_lightning.tune.summary.Verdict.paragraph`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from rnn_lightning import runs
from rnn_lightning.backtest import BacktestSettings, check_workers
from rnn_lightning.backtest import check_settings as check_backtest_settings
from rnn_lightning.errors import UserInputError
from rnn_lightning.kinds import kind_of
from rnn_lightning.tune import outputs, quota
from rnn_lightning.tune.objectives import objective_of
from rnn_lightning.tune.search import run_workers
from rnn_lightning.tune.settings import TuneSettings, check_settings
from rnn_lightning.tune.space import SearchSpace
from rnn_lightning.tune.storage import redact
from rnn_lightning.tune.study import Search, data_digest, default_storage, open_study, study_name, study_signature
from rnn_lightning.tune.summary import Verdict


def check_tune_workers(config: runs.RunConfig, settings: TuneSettings) -> None:
    """``tune.workers > 1`` forks CPU processes of one thread each, as the backtest's workers do."""
    if settings.workers > 1:
        try:
            check_workers(runs.placement(config))
        except UserInputError as err:
            raise UserInputError(str(err).replace("backtest.workers", "tune.workers")) from None


def prepare(
    config: runs.RunConfig, backtest: BacktestSettings, settings: TuneSettings, run_dir: Path
) -> tuple[Search, str]:
    """Every check of a tune command, before its run folder exists; returns the search and its storage URL.

    The config's data is read here, once: the checks, the signature and every trial of the same data
    settings use it.
    """
    check_settings(settings)
    check_backtest_settings(backtest)
    if backtest.resume is not None:
        raise UserInputError(
            "backtest.resume is for `rnn-lightning backtest`; a search continues its study when the same tune "
            "command runs again"
        )
    check_tune_workers(config, settings)
    space = SearchSpace.read(str(settings.space))
    space.check(config)
    data = runs.build_data(config)
    objective = objective_of(data)
    holdout = objective.holdout(settings, backtest)
    objective.check(data, holdout, backtest)  # one-line errors: horizon, a hold-out that leaves nothing, folds
    search = Search(
        config=config,
        data=data,
        objective=objective,
        space=space,
        backtest=dataclasses.replace(backtest, workers=1, shard=None, merge=None),
        settings=settings,
        task=kind_of(data).task,
        holdout=holdout,
        run_dir=run_dir,
        signature=study_signature(config, space, backtest, holdout, data_digest(data)),
    )
    url = settings.storage or default_storage(config, study_name(search))
    open_study(search, url, create=True)
    return search, url


def run_tune(config: runs.RunConfig, backtest: BacktestSettings, settings: TuneSettings) -> dict[str, Any]:
    """Search, judge and write the run folder; returns ``summary.json``'s contents with ``run_dir``.

    Args:
        config: The base config; each trial overrides it with its drawn values.
        backtest: ``--backtest.*``: each price trial's folds on the tuning period.
        settings: ``--tune.*``.
    """
    run_dir = runs.new_run_dir(config)
    search, url = prepare(config, backtest, settings, run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = study_name(search)
    print(
        f"tune: study {name!r} in {redact(url)}: {settings.trials} trials over {', '.join(search.space.keys)}, "
        f"{settings.workers} at a time, into {run_dir}",
        flush=True,
    )
    run_workers(search, url, settings.workers)
    study = open_study(search, url, create=False)
    verdict = dataclasses.replace(judge(search, study), study=name, storage=redact(url))
    verdict = write(search, study, verdict)
    print(verdict.paragraph(), flush=True)
    print(f"tune: wrote {', '.join(verdict.files)} to {run_dir}", flush=True)
    return verdict.as_dict() | {"run_dir": str(run_dir)}


def judge(search: Search, study: Any) -> Verdict:
    """The verdict, from the study: the trials' tally, the best trial, then the objective's parts."""
    counts = quota.tally(study)
    if counts.complete == 0:
        raise UserInputError("tune: no trial completed; see trials.csv and each trial's error above")
    best = study.best_trial
    verdict = Verdict(
        task=search.task,
        completed=counts.complete,
        pruned=counts.pruned,
        failed=counts.failed,
        running=counts.running,
        best_trial=best.number,
        best_params=best.params,
        best_score=best.value,
        best_dm_pvalue=best.user_attrs.get("dm_pvalue"),
        objective=search.objective.score,
    )
    return search.objective.judge(search, study, verdict)


def write(search: Search, study: Any, verdict: Verdict) -> Verdict:
    """Every output file into the run folder; returns the verdict with its ``files``."""
    run_dir = search.run_dir
    files = [outputs.TRIALS_FILE]
    outputs.write_table(outputs.trials_table(study, search.space.keys), run_dir / outputs.TRIALS_FILE)
    files += search.objective.write(search, study, verdict)
    best_config = search.trial_config(study.best_trial.params)
    (run_dir / outputs.BEST_CONFIG_FILE).write_text(best_config.dump())
    files.append(outputs.BEST_CONFIG_FILE)
    files += outputs.optuna_plots(study, run_dir)
    outputs.hparams(study, search.space.keys, run_dir)
    files.append("hparams/")
    verdict = dataclasses.replace(verdict, files=[*files, outputs.SUMMARY_FILE])
    outputs.write_summary(verdict.as_dict(), run_dir / outputs.SUMMARY_FILE)
    return verdict
