"""``rnn-lightning tune``: check everything, search, then judge the best configuration honestly.

1. Every check before anything is written: the settings, the space (each choice and bound through the
   parser and the classes), the folds on the tuning period, the storage (a study of another config,
   space or data is refused).
2. The search (:mod:`rnn_lightning.tune.search`), in this process or ``--tune.workers`` forked ones.
3. The verdict, from the study alone (:mod:`rnn_lightning.tune.verdict`): for prices, Hansen's SPA test
   of "no trial beats the naive forecast" over every completed trial's per-day losses and Romano-Wolf's
   StepM set of those that do, the smallest ratio these days could detect, and the best configuration
   refit on everything before the held-out days and judged on them once; for images, the best trial's
   checkpoint tested once on the test split.
4. The outputs (:mod:`rnn_lightning.tune.outputs`) and one printed paragraph.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rnn_lightning import runs
from rnn_lightning.backtest import (
    BacktestSettings,
    check_workers,
    fold_results,
    folds_for,
    plan_folds,
    window_offset,
)
from rnn_lightning.backtest import check_settings as check_backtest_settings
from rnn_lightning.backtest.stats import diebold_mariano
from rnn_lightning.errors import UserInputError
from rnn_lightning.tune import outputs
from rnn_lightning.tune.search import (
    Search,
    TuneSettings,
    check_settings,
    data_digest,
    default_storage,
    holdout_days,
    open_study,
    redact,
    run_workers,
    study_name,
    study_signature,
    tuning_data,
)
from rnn_lightning.tune.space import SearchSpace
from rnn_lightning.tune.verdict import BootstrapSettings, detectable_ratio, spa_test, stepm, verdict_paragraph


def prepare(
    config: runs.RunConfig,
    datamodule: Any,
    backtest: BacktestSettings,
    settings: TuneSettings,
    run_dir: Path,
    trainer: Any = None,
) -> tuple[Search, str]:
    """Every check of a tune command, before its run folder exists; returns the search and its storage URL."""
    check_settings(settings)
    check_backtest_settings(backtest)
    if settings.workers > 1 and trainer is not None:
        try:  # forked processes of one CPU thread each, as the backtest's workers
            check_workers(trainer)
        except UserInputError as err:
            raise UserInputError(str(err).replace("backtest.workers", "tune.workers")) from None
    space = SearchSpace.read(str(settings.space))
    space.check(config)
    task = getattr(datamodule, "task", "regression")
    holdout = holdout_days(settings, backtest) if task == "regression" else 0
    if task == "regression":
        data = tuning_data(config, holdout)  # one-line errors: horizon, a hold-out that leaves nothing
        folds = folds_for(data, backtest)  # the folds must fit in the tuning period
        del folds
    digest = data_digest(datamodule)
    search = Search(
        config=config,
        space=space,
        backtest=dataclasses.replace(backtest, workers=1, shard=None, merge=None),
        settings=settings,
        task=task,
        holdout=holdout,
        run_dir=run_dir,
        signature=study_signature(config, space, backtest, holdout, digest),
    )
    url = settings.storage or default_storage(config, study_name(search))
    open_study(search, url, create=True)
    return search, url


def run_tune(
    config: runs.RunConfig, datamodule: Any, backtest: BacktestSettings, settings: TuneSettings, trainer: Any
) -> dict[str, Any]:
    """Search, judge and write the run folder; returns ``summary.json``'s contents with ``run_dir``.

    Args:
        config: The base config; each trial overrides it with its drawn values.
        datamodule: The base config's data module, read and checked.
        backtest: ``--backtest.*``: each price trial's folds on the tuning period.
        settings: ``--tune.*``.
        trainer: The command's Trainer: its logger names the run folder; no trial trains with it.
    """
    run_dir = Path(trainer.log_dir or ".")
    search, url = prepare(config, datamodule, backtest, settings, run_dir, trainer)
    run_dir.mkdir(parents=True, exist_ok=True)
    name = study_name(search)
    print(
        f"tune: study {name!r} in {redact(url)}: {settings.trials} trials over {', '.join(search.space.keys)}, "
        f"{settings.workers} at a time, into {run_dir}",
        flush=True,
    )
    run_workers(search, url, settings.workers)
    study = open_study(search, url, create=False)
    summary = judge(search, study)
    summary["study"] = name
    summary["storage"] = redact(url)
    write(search, study, summary)
    print(verdict_paragraph(summary), flush=True)
    print(f"tune: wrote {', '.join(summary['files'])} to {run_dir}", flush=True)
    return summary | {"run_dir": str(run_dir)}


def _counts(study: Any) -> dict[str, int]:
    states = [t.state.name for t in outputs.counted_trials(study)]
    return {
        "completed": states.count("COMPLETE"),
        "pruned": states.count("PRUNED"),
        "failed": states.count("FAIL"),
        "running": states.count("RUNNING"),
    }


def judge(search: Search, study: Any) -> dict[str, Any]:
    """The verdict's numbers (``summary.json``), from the study."""
    summary: dict[str, Any] = {"task": search.task, **_counts(study)}
    if summary["completed"] == 0:
        raise UserInputError("tune: no trial completed; see trials.csv and each trial's error above")
    best = study.best_trial
    summary.update(
        best_trial=best.number,
        best_params=best.params,
        best_score=best.value,
        best_dm_pvalue=best.user_attrs.get("dm_pvalue"),
        objective="rmse_ratio" if search.task == "regression" else "val_loss",
    )
    if search.task == "regression":
        summary.update(_price_verdict(search, study, best))
    else:
        summary.update(_image_verdict(search, best))
    return summary


def _price_verdict(search: Search, study: Any, best: Any) -> dict[str, Any]:
    losses = outputs.losses_table(study)
    naive = losses["naive"].to_numpy(np.float64)
    models = losses.drop(columns=["date", "naive"])
    boot = BootstrapSettings(
        reps=search.settings.reps, block_size=search.settings.block_size, seed=search.settings.seed
    )
    result: dict[str, Any] = {"tuning_days": len(losses), "bootstrap": boot.as_dict(len(losses))}
    same = [int(c.removeprefix("trial_")) for c in models.columns if (models[c].to_numpy() == naive).all()]
    result["identical_to_naive"] = same  # left out of SPA and StepM: they cannot beat what they copy
    result.update(spa_test(naive, models, boot))
    result["stepm_superior"] = [int(c.removeprefix("trial_")) for c in stepm(naive, models, boot)]
    errors = np.asarray(best.user_attrs["naive_error"], np.float64)
    result["detectable_ratio"] = detectable_ratio(errors, boot)
    holdout = _holdout(search, best) if search.holdout else None
    if holdout is not None:
        se, naive_se = holdout["se"].to_numpy(), holdout["naive_se"].to_numpy()
        dm = diebold_mariano(se, naive_se)
        result.update(
            holdout_days=len(holdout),
            holdout_rmse_ratio=math.sqrt(se.sum() / naive_se.sum()),
            holdout_dm_pvalue=dm["pvalue"],
            holdout_start=str(holdout["date"].iloc[0]),
            holdout_end=str(holdout["date"].iloc[-1]),
        )
        result["_holdout_rows"] = holdout
    else:
        result.update(holdout_days=0, holdout_rmse_ratio=None, holdout_dm_pvalue=None)
    return result


def _holdout(search: Search, best: Any) -> pd.DataFrame:
    """The best configuration refit on every window before the held-out days, then forecast on them once."""
    config = search.trial_config(best.params)
    data = tuning_data(config, 0)  # the whole series this time
    settings = dataclasses.replace(search.backtest, folds=1, test_size=search.holdout)
    gap = window_offset(data) - data.sequence_length
    fold = plan_folds(data.num_windows, settings, data.val_size, gap=gap, source=data.csv_path)
    with runs.quiet_lightning():
        _, rows = next(
            fold_results(
                config,
                data,
                settings,
                search.run_dir / "holdout",
                fold,
                enable_progress_bar=False,
                enable_model_summary=False,
            )
        )
    actual = rows["actual"].to_numpy(np.float64)
    return pd.DataFrame(
        {
            "date": rows["date"],
            "actual": actual,
            "predicted": rows["predicted"],
            "naive": rows["naive"],
            "se": (rows["predicted"].to_numpy(np.float64) - actual) ** 2,
            "naive_se": (rows["naive"].to_numpy(np.float64) - actual) ** 2,
        }
    )


def _image_verdict(search: Search, best: Any) -> dict[str, Any]:
    """The best trial's checkpoint, tested once on the test split (untouched by every trial)."""
    path = best.user_attrs.get("checkpoint")
    result: dict[str, Any] = {"spa_pvalue": None, "stepm_superior": [], "detectable_ratio": None}
    if not path or not Path(path).is_file():
        result["test_note"] = "the best trial's checkpoint is on another machine; test it there"
        return result
    config = search.trial_config(best.params)
    run = runs.build(config, "test", logger=False, enable_progress_bar=False, enable_model_summary=False)
    checkpoint = runs.read_checkpoint(path)
    runs.prepare_data(run, checkpoint, source=f"checkpoint {path}")
    with runs.quiet_lightning():
        metrics = runs.test(run, path, checkpoint, verbose=False).results[0]
    result["test_metrics"] = {k: float(v) for k, v in metrics.items()}
    result["best_checkpoint"] = path
    return result


def write(search: Search, study: Any, summary: dict[str, Any]) -> None:
    """Every output file into the run folder; ``summary["files"]`` lists them."""
    run_dir = search.run_dir
    holdout = summary.pop("_holdout_rows", None)
    files = [outputs.TRIALS_FILE]
    outputs.write_table(outputs.trials_table(study, search.space.keys), run_dir / outputs.TRIALS_FILE)
    if search.task == "regression":
        losses = outputs.losses_table(study)
        outputs.write_table(losses, run_dir / outputs.LOSSES_FILE)
        files.append(outputs.LOSSES_FILE)
        if holdout is not None:
            outputs.write_table(holdout, run_dir / "holdout.csv")
            files.append("holdout.csv")
        outputs.cumulative_plot(losses, holdout, summary["best_trial"], summary, run_dir / "best_cumulative_se.png")
        files.append("best_cumulative_se.png")
    best_config = search.trial_config(study.best_trial.params)
    (run_dir / outputs.BEST_CONFIG_FILE).write_text(best_config.dump())
    files.append(outputs.BEST_CONFIG_FILE)
    files += outputs.optuna_plots(study, run_dir)
    outputs.hparams(study, search.space.keys, run_dir)
    files.append("hparams/")
    summary["files"] = [*files, outputs.SUMMARY_FILE]
    summary["verdict"] = verdict_paragraph(summary)
    outputs.write_summary(summary, run_dir / outputs.SUMMARY_FILE)
